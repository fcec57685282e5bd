"""The guest's TLB maintenance on a real run (issue 9): a guest that changes a stage-1
descriptor keeps seeing the old translation until it invalidates it with an operation whose
architectural scope covers the entry (B3.10, B4.2.2) - TLBIMVA by VA and ASID (or a global
entry), TLBIASID by ASID, TLBIMVAA for any ASID, TLBIALL. Trapped by HCR.TTLB and done on the
model's TLB; Unicorn's TLB follows it."""
import pytest

from snippet import DATA, OFF, Snippet, arm

L1 = 0x40004000                    # short-descriptor first-level table (16 KiB aligned)
VA = 0x10000000
FRAME_A, FRAME_B = 0x40100000, 0x40200000
ASID = 5


def section(pa: int, ng: bool) -> int:
    """A short-descriptor section, AP=0b11 (PL1 and PL0 read/write), domain 0."""
    return pa | 0b11 << 10 | (1 << 17 if ng else 0) | 0b10


def mcr_tlbi(opc2: int, rt: int) -> int:
    """MCR p15, 0, Rt, c8, c7, opc2."""
    return 0xEE080F17 | rt << 12 | opc2 << 5


NOP = 0xE320F000
CASES = [
    pytest.param(NOP, False, True, id="no maintenance: stale"),
    pytest.param(mcr_tlbi(0, 0), True, False, id="TLBIALL"),
    pytest.param(mcr_tlbi(1, 9), True, False, id="TLBIMVA own ASID, nG"),
    pytest.param(mcr_tlbi(1, 10), True, True, id="TLBIMVA other ASID, nG: stale"),
    pytest.param(mcr_tlbi(1, 10), False, False, id="TLBIMVA other ASID, global"),
    pytest.param(mcr_tlbi(2, 11), True, False, id="TLBIASID own"),
    pytest.param(mcr_tlbi(2, 8), True, True, id="TLBIASID other: stale"),
    pytest.param(mcr_tlbi(2, 11), False, True, id="TLBIASID spares global: stale"),
    pytest.param(mcr_tlbi(3, 1), True, False, id="TLBIMVAA"),
]


@pytest.mark.parametrize("tlbi,ng,stale", CASES)
def test_stale_until_invalidated(tlbi, ng, stale):
    code = arm(0xE5912000,           # ldr r2, [r1]     fills the TLB: frame A
               0xE5865000,           # str r5, [r6]     remap VA to frame B (no maintenance)
               0xE5913000,           # ldr r3, [r1]     the cached translation: A
               tlbi,
               0xF57FF04F, 0xF57FF06F,   # dsb; isb
               0xE5914000,           # ldr r4, [r1]
               *OFF)
    s = Snippet(code, regs={1: VA, 5: section(FRAME_B, ng), 6: L1 + (VA >> 20) * 4,
                            8: 7, 9: VA | ASID, 10: VA | 7, 11: ASID})
    m, cpu = s.m, s.cpu
    ram = m.ram.pa - 0x40000000
    m.host.mem.write32(ram + FRAME_A, 0xAAAA)
    m.host.mem.write32(ram + FRAME_B, 0xBBBB)
    m.host.mem.write32(ram + L1 + (0x400 << 2), section(0x40000000, False))   # the code
    m.host.mem.write32(ram + L1 + (VA >> 20) * 4, section(FRAME_A, ng))
    cpu.cp15_write("TTBR0", L1)
    cpu.cp15_write("DACR", 1)                       # domain 0: client
    cpu.cp15_write("CONTEXTIDR", ASID)
    cpu.cp15_write("SCTLR", cpu.cp15_read("SCTLR") | 1)
    cpu.sync_stage1()
    r = s.run()
    assert r.reason == "off", r
    assert (cpu.reg(2), cpu.reg(3)) == (0xAAAA, 0xAAAA)
    assert cpu.reg(4) == (0xAAAA if stale else 0xBBBB)
    if tlbi != NOP:
        assert cpu.stats["trap tlbi"] == 1
