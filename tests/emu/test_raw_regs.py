"""emu.raw_regs: the exit path's register access through the library must read and write
exactly what the binding's reg_read/reg_write do."""
import pytest
from unicorn import UC_ARCH_ARM, UC_MODE_ARM, Uc, UcError
from unicorn import arm_const as A

from emu.cp15 import CP15, HCR
from emu.raw_regs import RawRegs

CORE = [pytest.param(r, id=n) for n, r in (
    ("r0", A.UC_ARM_REG_R0), ("r7", A.UC_ARM_REG_R7), ("r12", A.UC_ARM_REG_R12),
    ("sp", A.UC_ARM_REG_SP), ("lr", A.UC_ARM_REG_LR), ("pc", A.UC_ARM_REG_PC))]
CP = [pytest.param(CP15[n], id=n) for n in ("TTBR0", "DACR", "CONTEXTIDR", "TTBR0_64")] + \
    [pytest.param(HCR, id="HCR")]


@pytest.fixture
def uc():
    return Uc(UC_ARCH_ARM, UC_MODE_ARM)


@pytest.mark.parametrize("reg", CORE)
@pytest.mark.parametrize("value", [0, 0x1234_5678, 0xFFFF_FFFC])
def test_core_registers_agree_with_the_binding(uc, reg, value):
    raw = RawRegs(uc)
    raw.write(reg, value)
    assert uc.reg_read(reg) == value == raw.read(reg)
    uc.reg_write(reg, value ^ 0x8000_0000)
    assert raw.read(reg) == value ^ 0x8000_0000


def test_cpsr_agrees_with_the_binding(uc):
    raw = RawRegs(uc)
    assert raw.read(A.UC_ARM_REG_CPSR) == uc.reg_read(A.UC_ARM_REG_CPSR)
    raw.write(A.UC_ARM_REG_CPSR, 0x6000_01D3)
    assert uc.reg_read(A.UC_ARM_REG_CPSR) == 0x6000_01D3


@pytest.mark.parametrize("cp", CP)
def test_cp15_registers_agree_with_the_binding(uc, cp):
    raw = RawRegs(uc)
    value = 0x0000_0012_3456_7000 if cp[1] else 0x0456_7000
    raw.cp_write(cp, value)
    assert uc.reg_read(A.UC_ARM_REG_CP_REG, cp) == value == raw.cp_read(cp)
    uc.reg_write(A.UC_ARM_REG_CP_REG, cp + (value | 0x40,))
    assert raw.cp_read(cp) == value | 0x40


def test_an_error_status_raises(uc, monkeypatch):
    """A non-zero uc_err from the library is a UcError, as from the binding."""
    raw = RawRegs(uc)
    monkeypatch.setattr(raw, "_read_fn", lambda *a: 2)          # UC_ERR_HANDLE
    monkeypatch.setattr(raw, "_write_fn", lambda *a: 2)
    for call in (lambda: raw.read(A.UC_ARM_REG_R0), lambda: raw.write(A.UC_ARM_REG_R0, 1),
                 lambda: raw.cp_read(HCR), lambda: raw.cp_write(HCR, 1)):
        with pytest.raises(UcError):
            call()
