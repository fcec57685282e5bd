"""The low-level entry point: caller-written stage-2 tables, every abort returned as an exit;
and the VMID-tagged TLB seen from real guest code (stale translations included)."""
import struct

import pytest

from emu.machine import BareMachine
from hyp.arch import descriptors as d
from hyp.arch.descriptors import Prot
from hyp.exits import Hypercall, Stage2Abort
from hyp.stage2 import Stage2

CODE_IPA, DATA_IPA = 0x4000_0000, 0x4000_1000
PROGRAM = [0xE5901000,   # ldr r1, [r0]
           0xE5801004,   # str r1, [r0, #4]
           0xE890000C,   # ldm r0, {r2, r3}
           0xE1400070,   # hvc #0
           0xEAFFFFFE]   # b .
HCR_VM = 1


class Guest:
    """A VM built by hand on a BareMachine: tables via hyp.stage2, code and data in host RAM."""

    def __init__(self, bm: BareMachine, vmid: int, data_value: int):
        self.bm, self.vmid = bm, vmid
        self.s2 = Stage2(bm.mem, bm.host.pool, bm.host.tlb, lambda: self.vmid)
        self.code_pa = bm.host.alloc_backing(0x1000)
        self.data_pa = bm.host.alloc_backing(0x1000)
        bm.mem.write(self.code_pa, struct.pack(f"<{len(PROGRAM)}I", *PROGRAM))
        bm.mem.write(self.data_pa, struct.pack("<2I", data_value, 0))
        self.s2.map(CODE_IPA, self.code_pa, 3, Prot.RX)
        self.s2.map(DATA_IPA, self.data_pa, 3, Prot.RW)

    def enter(self):
        cpu = self.bm.cpu
        cpu.load_stage2(HCR_VM, self.s2.vtcr, self.s2.vttbr)
        cpu.set_pc(CODE_IPA, False)
        cpu.set_reg(0, DATA_IPA)

    def run_to_hvc(self):
        ex = self.bm.cpu.run(1000)
        assert isinstance(ex, Hypercall), ex
        return self.bm.cpu.reg(1)


def test_access_flag_fault_is_an_exit_and_caller_fixes_it():
    bm = BareMachine()
    g = Guest(bm, 1, 0x1234)
    _clear_af(g, DATA_IPA)          # the caller's own descriptor edit: the access must exit
    g.enter()
    ex = bm.cpu.run(1000)
    assert isinstance(ex, Stage2Abort)
    # EC=0x24 IL=1 ISV=1 SAS=word SRT=r1 WnR=0 DFSC=0b001011 (access flag, level 3)
    assert ex.syndrome.hsr == 0x9381000B
    assert (ex.syndrome.hpfar, ex.syndrome.far, ex.pc) == (0x00400010, DATA_IPA, CODE_IPA)
    g.s2.set_af(DATA_IPA)                                  # the caller decides: fix, retry
    assert g.run_to_hvc() == 0x1234
    assert bm.mem.read(g.data_pa + 4, 4) == struct.pack("<I", 0x1234)


def _clear_af(g, ipa):
    """Write the leaf's descriptor with AF=0 directly into host memory (a caller's own table)."""
    last = g.s2.lookup(ipa).steps[-1]
    g.bm.mem.write64(last.desc_pa, d.S2_AF.set(last.desc, 0))


def test_caller_can_skip_a_faulting_instruction():
    bm = BareMachine()
    g = Guest(bm, 1, 7)
    g.s2.unmap(DATA_IPA, DATA_IPA + 0x1000)              # data now unmapped
    g.enter()
    seen = []
    while True:
        ex = bm.cpu.run(1000)
        if isinstance(ex, Hypercall):
            break
        seen.append((ex.fault.type.name, ex.fault.level, ex.syndrome.hsr, ex.info.mnemonic))
        bm.skip(ex)
    assert seen == [
        ("TRANSLATION", 3, 0x93810007, "ldr"),     # ISV=1 SAS=word SRT=1 WnR=0 DFSC=7
        ("TRANSLATION", 3, 0x93810047, "str"),     # same with WnR=1
        ("TRANSLATION", 3, 0x90000007, "ldm"),     # ISV=0 (LDM): EC=0x24, IL=0, WnR=0, DFSC=7
    ]


def test_vttbr_high_bits_give_address_size_fault_level0():
    bm = BareMachine()
    g = Guest(bm, 1, 0)
    bm.cpu.load_stage2(HCR_VM, g.s2.vtcr, g.s2.vttbr | (1 << 40))
    bm.cpu.set_pc(CODE_IPA, False)
    ex = bm.cpu.run(10)
    assert isinstance(ex, Stage2Abort) and ex.fault.fetch
    assert ex.syndrome.hsr == 0x80000000 and ex.syndrome.far == CODE_IPA   # IFSC 0b000000


def test_two_vms_share_the_vmid_tagged_tlb():
    bm = BareMachine()
    a, b = Guest(bm, 1, 0xAAAA), Guest(bm, 2, 0xBBBB)
    tlb = bm.host.tlb
    a.enter()
    assert a.run_to_hvc() == 0xAAAA
    b.enter()
    assert b.run_to_hvc() == 0xBBBB
    assert {e.vmid for e in tlb.entries()} == {1, 2}
    b.s2.flush("test")                                      # flush VMID 2 only
    assert {e.vmid for e in tlb.entries()} == {1}
    a.enter()
    assert a.run_to_hvc() == 0xAAAA


@pytest.mark.parametrize("skip_flush,expect", [
    pytest.param(True, 0xAAAA, id="missing-flush-stale"),
    pytest.param(False, 0xCCCC, id="with-flush-fresh"),
])
def test_missing_flush_leaves_stale_translation_visible_to_guest(skip_flush, expect):
    bm = BareMachine()
    a, b = Guest(bm, 1, 0xAAAA), Guest(bm, 2, 0xBBBB)
    a.enter()
    assert a.run_to_hvc() == 0xAAAA
    b.enter()
    assert b.run_to_hvc() == 0xBBBB                          # VM switch: Unicorn TLB dropped
    new_pa = bm.host.alloc_backing(0x1000)
    bm.mem.write(new_pa, struct.pack("<I", 0xCCCC))
    a.s2.skip_flush = skip_flush
    a.s2.map(DATA_IPA, new_pa, 3, Prot.RW)                  # remap: break-before-make
    a.enter()
    assert a.run_to_hvc() == expect


def test_a_stage1_walk_into_unmapped_stage2_is_an_s1ptw_exit():
    """The guest turns its MMU on with TTBR0 at an IPA stage 2 does not map: the next fetch
    walks stage 1, whose first descriptor read faults at stage 2 - a prefetch abort to Hyp
    mode with S1PTW=1, HPFAR = the descriptor's IPA, HIFAR = the VA (B3.12.2, B4.1.66)."""
    bm = BareMachine()
    g = Guest(bm, 1, 0)
    # mrc p15,0,r0,c1,c0,0; orr r0,r0,#1; mcr p15,0,r0,c1,c0,0 (SCTLR.M = 1); isb; hvc #0
    code = [0xEE110F10, 0xE3800001, 0xEE010F10, 0xF57FF06F, 0xE1400070]
    bm.mem.write(g.code_pa, struct.pack("<5I", *code))
    g.enter()
    bm.cpu.cp15_write("TTBR0", 0x4010_0000)          # L1 table: not mapped at stage 2
    ex = bm.cpu.run(100)
    assert isinstance(ex, Stage2Abort) and ex.page_fault.s1ptw
    # EC 0x20 (prefetch abort, lower EL), S1PTW=1, IFSC 0b000111 (translation, level 3)
    assert ex.syndrome.hsr == 0x80000087
    # the L1 descriptor of VA 0x4000000C: 0x40100000 + 4 * 0x400
    assert (ex.syndrome.hpfar, ex.syndrome.far) == (0x00401010, CODE_IPA + 12)
