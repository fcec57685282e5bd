"""Bugs in emu/ and hyp/ found while building the guest and stage-2 fuzz targets, each as a
minimal reproducer marked xfail(strict=True): when a fix lands the test passes, strict xfail
turns that into a failure, and the marker should go.
"""
import struct

import pytest

from emu.cpu import GuestCrash
from emu.machine import RAM_BASE, BareMachine, Machine
from hyp.arch.descriptors import Prot
from hyp.exits import Stage2Abort
from hyp.stage2 import Stage2

RAM = 16 << 20
RAM_END = RAM_BASE + RAM
LDR_R1_R0_8 = 0xE5901008                        # ldr r1, [r0, #8]
LDR_R1_R0_4 = 0xE5901004                        # ldr r1, [r0, #4]


@pytest.mark.xfail(strict=True, raises=ValueError, reason=(
    "BUG: a store that overwrites its own encoding and then faults on the next page (STM/STRD "
    "in the last bytes of RAM) is decoded from the new bytes: if they decode as a single load "
    "touching the faulting page, hsr_data_abort raises ValueError ('ldr decoded as load but "
    "the fault is a write') out of Machine.run"))
@pytest.mark.parametrize("at, insn, regs", [
    # stm r0, {r1-r4} at RAM_END-8, r0 = RAM_END-8: r1 overwrites the STM, r3 faults
    pytest.param(RAM_END - 8, 0xE880001E, {0: RAM_END - 8, 1: LDR_R1_R0_8}, id="stm"),
    # strd r2, r3, [r0] at RAM_END-4, r0 = RAM_END-4: r2 overwrites the STRD, r3 faults
    pytest.param(RAM_END - 4, 0xE1C020F0, {0: RAM_END - 4, 2: LDR_R1_R0_4}, id="strd"),
])
def test_self_overwriting_store_at_end_of_ram(at, insn, regs):
    m = Machine(RAM)
    m.host.mem.write(m.ram.pa + (at - RAM_BASE), struct.pack("<I", insn))
    for n, v in regs.items():
        m.cpu.set_reg(n, v)
    m.cpu.set_pc(at, False)
    try:
        result = m.run(max_insns=10, timeout=5)
    except GuestCrash:
        return                                  # a documented outcome
    assert result.reason == "error"             # the IPA past RAM is no device


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "BUG: an undefined instruction reached by a branch, whose preceding word encodes WFE or "
    "YIELD (never executed), is taken for a completed hint (emu/undef.hint_before): one "
    "instruction too many is counted and stats['wfe'] counts a WFE that did not run"))
def test_undefined_after_a_wfe_word_that_did_not_run():
    # b 1f; .word wfe; 1: udf #0 - the UNDEF vector (VBAR + 4) returns past the UDF;
    # then movw/movt r0 = SYSTEM_OFF, hvc #0.
    code = [0xEA000000, 0xE320F002, 0xE7F000F0, 0xE3000008, 0xE3480400, 0xE1400070]
    m = Machine(RAM)
    m.host.mem.write(m.ram.pa, struct.pack(f"<{len(code)}I", *code))
    m.host.mem.write(m.ram.pa + 0x1004, struct.pack("<I", 0xE1B0F00E))     # movs pc, lr
    m.cpu.cp15_write("VBAR", RAM_BASE + 0x1000)
    m.cpu.set_pc(RAM_BASE, False)
    result = m.run(max_insns=100)
    assert result.reason == "off"
    # retired: b, movs pc lr, movw, movt, hvc; plus the UNDEF entry
    assert (m.cpu.instructions, m.cpu.entries, m.cpu.stats["wfe"]) == (5, 1, 0)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "BUG: HDFAR of an LDRD Rt, Rt2, [Rn] with Rt == Rn whose second word's page faults is "
    "computed (emu/decode) from the base register after the fault, which Unicorn has already "
    "overwritten with the first word loaded: 0x40002010 instead of 0x40002000"))
@pytest.mark.parametrize("insn, thumb", [
    pytest.param(struct.pack("<I", 0xE1C000D0), False, id="A32-ldrd-r0-r1-[r0]"),
    pytest.param(struct.pack("<HH", 0xE9D0, 0x0100), True, id="T32-ldrd-r0-r1-[r0]")])
def test_hdfar_of_a_cross_page_ldrd_that_overwrites_its_base(insn, thumb):
    bm = BareMachine()
    s2 = Stage2(bm.mem, bm.host.pool, bm.host.tlb, lambda: 1)
    code, data = bm.host.alloc_backing(0x1000), bm.host.alloc_backing(0x1000)
    bm.mem.write(code, insn)
    bm.mem.write(data + 0xFFC, struct.pack("<I", 0x4000_2010))   # the first word loaded
    s2.map(0x4000_0000, code, 3, Prot.RX)
    s2.map(0x4000_1000, data, 3, Prot.RW)                       # 0x40002000: unmapped
    bm.cpu.load_stage2(1, s2.vtcr, s2.vttbr)
    bm.cpu.set_pc(0x4000_0000, thumb)
    bm.cpu.set_reg(0, 0x4000_1FFC)
    ex = bm.cpu.run(1)
    assert isinstance(ex, Stage2Abort) and ex.page_fault.ipa == 0x4000_2000
    assert ex.syndrome.far == 0x4000_2000, hex(ex.syndrome.far)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "BUG: LDRD Rt, Rt2, [Rn] with Rt == Rn across a stage-2 block boundary into a block not "
    "mapped yet (an ordinary lazy fault) is not restartable: Unicorn has already written the "
    "first word into Rn when the second word's page faults, the hypervisor maps the block and "
    "the retried LDRD loads from that word (here IPA 0x11111111: the VM stops with 'MMIO "
    "access ... ISV=0'). Same cause as the HDFAR bug above"))
@pytest.mark.parametrize("insn, thumb", [
    pytest.param(struct.pack("<I", 0xE1C000D0) + struct.pack("<I", 0xEAFFFFFE), False,
                 id="A32-ldrd-r0-r1-[r0]"),
    pytest.param(struct.pack("<HHH", 0xE9D0, 0x0100, 0xE7FE), True, id="T32-ldrd-r0-r1-[r0]")])
def test_lazily_mapped_ldrd_overwriting_its_base_restarts(insn, thumb):
    m = Machine(RAM)
    m.host.mem.write(m.ram.pa, insn)                               # ldrd; b .
    m.host.mem.write(m.ram.pa + 0x1F_FFFC, struct.pack("<I", 0x1111_1111))   # block 0's end
    m.host.mem.write(m.ram.pa + 0x20_0000, struct.pack("<I", 0x2222_2222))   # block 1
    m.cpu.set_reg(0, RAM_BASE + 0x1F_FFFC)
    m.cpu.set_pc(RAM_BASE, thumb)
    result = m.run(max_insns=3)
    assert (result.reason, m.cpu.reg(0), m.cpu.reg(1)) == ("budget", 0x1111_1111, 0x2222_2222)
