"""Exception entry to the guest's PL1 vectors (DDI 0406C B1.8.3, B1.9)."""
import pytest

from hyp.arch.exception import (CPSR_A, CPSR_F, CPSR_I, CPSR_T, GuestException, SCTLR_EE,
                                SCTLR_TE, SCTLR_V, enter, lr_offset)

USR_ARM = 0x10                     # user mode, ARM, interrupts enabled
SVC_THUMB_IT = 0x13 | CPSR_T | (0x3 << 25) | (0x1F << 10)


class FakeCPU:
    def __init__(self, cpsr, sctlr=0, vbar=0x4000_0000):
        self.cpsr, self.cp = cpsr, {"SCTLR": sctlr, "VBAR": vbar}
        self.log = []

    def get_cpsr(self):
        return self.cpsr

    def set_cpsr(self, v):
        self.log.append("cpsr")
        self.cpsr = v

    def set_spsr(self, v):
        self.log.append("spsr")
        self.spsr = v

    def set_lr(self, v):
        self.log.append("lr")
        self.lr = v

    def set_pc(self, v, thumb):
        self.pc, self.pc_thumb = v, thumb

    def cp15_read(self, name):
        return self.cp[name]


@pytest.mark.parametrize("exc,old,sctlr,mode,masks,vector,thumb", [
    pytest.param(GuestException.SVC, USR_ARM, 0, 0x13, CPSR_I, 0x4000_0008, False, id="svc"),
    pytest.param(GuestException.UNDEFINED, USR_ARM, 0, 0x1B, CPSR_I, 0x4000_0004, False, id="und"),
    pytest.param(GuestException.PREFETCH_ABORT, USR_ARM, 0, 0x17, CPSR_I | CPSR_A, 0x4000_000C,
                 False, id="pabt"),
    pytest.param(GuestException.DATA_ABORT, SVC_THUMB_IT, 0, 0x17, CPSR_I | CPSR_A, 0x4000_0010,
                 False, id="dabt-from-thumb-it"),
    pytest.param(GuestException.FIQ, USR_ARM, 0, 0x11, CPSR_I | CPSR_A | CPSR_F, 0x4000_001C,
                 False, id="fiq"),
    pytest.param(GuestException.SVC, USR_ARM, SCTLR_V, 0x13, CPSR_I, 0xFFFF_0008, False,
                 id="high-vectors"),
    pytest.param(GuestException.UNDEFINED, USR_ARM, SCTLR_TE, 0x1B, CPSR_I | CPSR_T, 0x4000_0004,
                 True, id="thumb-exceptions-TE"),
])
def test_exception_entry(exc, old, sctlr, mode, masks, vector, thumb):
    cpu = FakeCPU(old, sctlr)
    assert enter(cpu, exc, 0x1234) == vector
    assert cpu.log[0] == "cpsr"                    # bank switch before SPSR/LR are written
    assert cpu.cpsr & 0x1F == mode
    assert cpu.cpsr & (CPSR_I | CPSR_A | CPSR_F | CPSR_T) == masks
    assert cpu.cpsr & ((0x3 << 25) | (0x3F << 10)) == 0     # IT state cleared
    assert (cpu.spsr, cpu.lr, cpu.pc, cpu.pc_thumb) == (old, 0x1234, vector, thumb)


def test_big_endian_exceptions_set_E():
    cpu = FakeCPU(USR_ARM, SCTLR_EE)
    enter(cpu, GuestException.SVC, 0)
    assert cpu.cpsr & (1 << 9)


@pytest.mark.parametrize("exc,thumb,off", [
    (GuestException.UNDEFINED, False, 4), (GuestException.UNDEFINED, True, 2),
    (GuestException.PREFETCH_ABORT, True, 4), (GuestException.DATA_ABORT, False, 8),
])
def test_lr_offsets(exc, thumb, off):
    assert lr_offset(exc, thumb) == off
