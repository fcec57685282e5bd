"""Stage-2 faults on stage-1 table walks (S1PTW) and HCR.PTW, with exact HSR/HPFAR/HDFAR.

HSR (B4.1.61, B3.13.6): EC [31:26] 0x24 data / 0x20 prefetch abort from a lower mode, ISV [24]
= 0 for every S1PTW fault, S1PTW [7], WnR [6] (the instruction's access, as QEMU writes it),
DFSC/IFSC [5:0] = 0bTTTTLL with LL the *stage-2* level where the descriptor's IPA faulted
(B3.12; QEMU 7.2 reports the stage-1 lookup level instead). HPFAR (B4.1.66) [31:4] = the
descriptor's IPA[39:12]. A walk into memory stage 2 makes Device faults as a stage-2
permission fault when HCR.PTW is set (B4.1.65); walks need read permission only.
"""
from __future__ import annotations

import pytest

from hyp.arch.descriptors import Prot
from hyp.arch.fault import Access, Fault
from hyp.arch.s1 import PL1, S1Fault, S1Regime
from hyp.arch.syndrome import Syndrome
from hyp.arch.tlb import TLBEntry
from s1tables import (HCR_PTW, HCR_VM, IPA_BASE, SCTLR_M, Guest, ld_page, ld_table, sd_section,
                      sd_small, sd_table, ttbcr_ld)

RD, WR, FE = Access.READ, Access.WRITE, Access.FETCH
CHUNK0, CHUNK1 = IPA_BASE, IPA_BASE + (2 << 20)
# Short descriptors: VA_S -> L1 @ IPA 0x4000_048C (page table at 0x4020_1000, domain 0) -> L2 @
# 0x4020_1114 -> small page IPA 0x4000_5000; VA_SEC -> L1 @ 0x4000_0004 -> section 0x4010_0000.
VA_S, VA_SEC = 0x1234_5678, 0x0010_0ABC
# Long descriptors: VA_L -> L1 @ 0x4000_0008 -> L2 @ 0x4020_2488 -> L3 @ 0x4000_3A28 -> page
# IPA 0x4000_6000.
VA_L = 0x5234_5678


def guest(lpae: bool, s2: dict, hcr: int = HCR_VM) -> Guest:
    """Stage 2 of the window: each chunk's pages 0-15 mapped RWX at level 3, except where
    `s2` says: {("chunk", IPA): None | dict(block kwargs)}, {("page", IPA): None | kwargs}."""
    g = Guest(hcr=hcr)
    for chunk in (CHUNK0, CHUNK1):
        spec = s2.get(("chunk", chunk), "pages")
        if isinstance(spec, dict):
            g.map(chunk, 2, **spec)
        elif spec == "pages":
            for p in range(16):
                page = s2.get(("page", chunk + (p << 12)), {})
                if page is not None:
                    g.map(chunk + (p << 12), 3, **page)
    if lpae:
        g.w64(0x4000_0008, ld_table(0x4020_2000))
        g.w64(0x4020_2488, ld_table(0x4000_3000))
        g.w64(0x4000_3A28, ld_page(0x4000_6000))
        g.mmu.set_stage1(S1Regime(sctlr=SCTLR_M, ttbcr=ttbcr_ld(), ttbr0=IPA_BASE))
    else:
        g.w32(0x4000_048C, sd_table(0x4020_1000))
        g.w32(0x4020_1114, sd_small(0x4000_5000))
        g.w32(0x4000_0004, sd_section(0x4010_0000))
        g.mmu.set_stage1(S1Regime(sctlr=SCTLR_M, ttbr0=IPA_BASE, dacr=0x1))
    return g


def page(ipa, **kw):
    return {("page", ipa): kw}


def hole(ipa):
    return {("page", ipa): None}


def block(ipa, **kw):
    return {("chunk", ipa): kw}


def gone(ipa):
    return {("chunk", ipa): None}


def hyp_view(r: Fault) -> tuple:
    syn = Syndrome.for_fault(r)
    return syn.hsr, syn.hpfar, syn.far, r.ipa, r.s1ptw


def case(id_, lpae, s2, va, access, hsr, hpfar, ipa, s1ptw=True, hcr=HCR_VM):
    return pytest.param(lpae, s2, va, access, hcr, (hsr, hpfar, va, ipa, s1ptw), id=id_)


CASES = [
    # a stage-1 level-1 read whose page stage 2 leaves out of its level-3 table: level 3
    case("sd-l1-desc-page-unmapped", False, hole(CHUNK0), VA_S, RD,
         0x9000_0087, 0x0040_0000, 0x4000_048C),
    case("sd-l1-desc-page-unmapped-write", False, hole(CHUNK0), VA_S, WR,
         0x9000_00C7, 0x0040_0000, 0x4000_048C),
    case("sd-l1-desc-page-unmapped-fetch", False, hole(CHUNK0), VA_S, FE,
         0x8000_0087, 0x0040_0000, 0x4000_048C),
    # the second-level table's whole 2 MiB unmapped: a level-2 stage-2 fault
    case("sd-l2-desc-chunk-unmapped", False, gone(CHUNK1), VA_S, WR,
         0x9000_00C6, 0x0040_2010, 0x4020_1114),
    case("sd-l2-desc-page-af", False, page(CHUNK1 + 0x1000, af=False), VA_S, FE,
         0x8000_008B, 0x0040_2010, 0x4020_1114),
    case("sd-l2-desc-block-af", False, block(CHUNK1, af=False), VA_S, RD,
         0x9000_008A, 0x0040_2010, 0x4020_1114),
    case("sd-l1-desc-write-only", False, page(CHUNK0, prot=Prot.W), VA_SEC, RD,
         0x9000_008F, 0x0040_0000, 0x4000_0004),
    case("sd-l1-desc-no-access-block", False, block(CHUNK0, prot=Prot.NONE), VA_SEC, WR,
         0x9000_00CE, 0x0040_0000, 0x4000_0004),
    case("ptw-device-block", False, block(CHUNK0, device=True), VA_SEC, RD,
         0x9000_008E, 0x0040_0000, 0x4000_0004, hcr=HCR_VM | HCR_PTW),
    case("ptw-device-l2-table-page", False, page(CHUNK1 + 0x1000, device=True), VA_S, FE,
         0x8000_008F, 0x0040_2010, 0x4020_1114, hcr=HCR_VM | HCR_PTW),
    # the final IPA, not a walk: S1PTW = 0, HPFAR = the output IPA's page
    case("sd-output-page-unmapped", False, hole(CHUNK0 + 0x5000), VA_S, RD,
         0x9000_0007, 0x0040_0050, 0x4000_5000, s1ptw=False),
    case("sd-output-page-read-only", False, page(CHUNK0 + 0x5000, prot=Prot.R), VA_S, WR,
         0x9000_004F, 0x0040_0050, 0x4000_5000, s1ptw=False),
    case("sd-output-xn", False, page(CHUNK0 + 0x5000, prot=Prot.RW), VA_S, FE,
         0x8000_000F, 0x0040_0050, 0x4000_5000, s1ptw=False),
    # long descriptors: each of the three reads
    case("ld-l1-desc-page-unmapped", True, hole(CHUNK0), VA_L, RD,
         0x9000_0087, 0x0040_0000, 0x4000_0008),
    case("ld-l2-desc-block-af-fetch", True, block(CHUNK1, af=False), VA_L, FE,
         0x8000_008A, 0x0040_2020, 0x4020_2488),
    case("ld-l3-desc-page-unmapped", True, hole(CHUNK0 + 0x3000), VA_L, WR,
         0x9000_00C7, 0x0040_0030, 0x4000_3A28),
    case("ld-l3-desc-ptw-device", True, page(CHUNK0 + 0x3000, device=True), VA_L, RD,
         0x9000_008F, 0x0040_0030, 0x4000_3A28, hcr=HCR_VM | HCR_PTW),
    case("ld-output-page-unmapped", True, hole(CHUNK0 + 0x6000), VA_L, RD,
         0x9000_0007, 0x0040_0060, 0x4000_6000, s1ptw=False),
]


@pytest.mark.parametrize("lpae, s2, va, access, hcr, expect", CASES)
def test_s1ptw_and_output_faults(lpae, s2, va, access, hcr, expect):
    r = guest(lpae, s2, hcr).mmu.fill(va, access, PL1)
    assert isinstance(r, Fault), r
    assert hyp_view(r) == expect


def test_table_outside_any_stage2_mapping_is_level1():
    g = guest(False, {})
    g.mmu.set_stage1(S1Regime(sctlr=SCTLR_M, ttbr0=0x8000_0000, dacr=1))
    # L1 @ IPA 0x8000_048C: nothing in that GiB at stage 2
    assert hyp_view(g.mmu.fill(VA_S, RD, PL1)) == (0x9000_0085, 0x0080_0000, VA_S,
                                                   0x8000_048C, True)


@pytest.mark.parametrize("s2, hcr", [
    pytest.param(page(CHUNK0, prot=Prot.R) | page(CHUNK1 + 0x1000, prot=Prot.R), HCR_VM,
                 id="tables-read-only"),
    pytest.param(block(CHUNK1, device=True), HCR_VM, id="tables-device-ptw-clear"),
    pytest.param(page(CHUNK0 + 0x5000, device=True), HCR_VM | HCR_PTW,
                 id="ptw-set-output-device"),
])
@pytest.mark.parametrize("access", [RD, WR, FE])
def test_walks_need_read_only_and_ptw_concerns_walks(s2, hcr, access):
    g = guest(False, s2, hcr)
    r = g.mmu.fill(VA_S, access, PL1)
    assert isinstance(r, TLBEntry) and r.pa_page | VA_S & 0xFFF == g.home(0x4000_5678)


def test_s1ptw_faults_are_not_cached_and_walk_cache_obeys_flush_vmid():
    g = guest(True, hole(CHUNK0 + 0x3000))
    assert g.mmu.fill(VA_L, RD, PL1).s1ptw
    g.map(CHUNK0 + 0x3000, 3)                     # the hypervisor maps the table page
    assert isinstance(g.mmu.fill(VA_L, RD, PL1), TLBEntry)
    # unmap it again: the walk cache keeps its stage-2 translation until the hypervisor's
    # flush of the VMID, so the next page's walk reads the (empty) descriptor beside it
    g.s2.raw(CHUNK0 + 0x3000, 3, 0)
    stale = g.mmu.fill(VA_L + 0x1000, RD, PL1)
    assert isinstance(stale, S1Fault) and stale.fsr() == 0x207
    g.mmu.tlb.flush_vmid(1)
    r = g.mmu.fill(VA_L, RD, PL1)
    assert isinstance(r, Fault) and hyp_view(r) == (0x9000_0087, 0x0040_0030, VA_L,
                                                     0x4000_3A28, True)


@pytest.mark.parametrize("lpae, va, ipa", [
    pytest.param(False, VA_S, 0x4000_5678, id="short"),
    pytest.param(True, VA_L, 0x4000_6678, id="long"),
])
def test_debug_walk_translates_both_stages_without_side_effects(lpae, va, ipa):
    g = guest(lpae, {})
    steps = []
    got, leaf = g.mmu.debug_walk(va, steps)
    assert got == g.home(ipa) and leaf.ipa == ipa & ~0xFFF
    assert len(steps) == (3 if lpae else 2)
    assert len(g.mmu.tlb) == 0 and not g.mmu.tlb.s2_walk      # no TLB fill, no walk cache
    # a table page unmapped at stage 2: the debugger sees the S1PTW fault, nothing is cached
    g.s2.raw(CHUNK0, 3, 0)
    got, why = g.mmu.debug_walk(va)
    assert got is None and isinstance(why, Fault) and why.s1ptw
    assert len(g.mmu.tlb) == 0 and not g.mmu.tlb.s2_walk
