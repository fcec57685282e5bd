"""The stage-1 TLB (DDI 0406C B3.10, B4.2.2): ASID- and VA-scoped invalidation against a dict
model, and stale translations through MMU.fill when a guest skips its TLB maintenance.

Scopes: TLBIALL every entry of the VMID; TLBIASID the non-global entries of one ASID;
TLBIMVA the entries of that ASID *and* global ones whose mapping contains the VA; TLBIMVAA
any ASID's. A section, supersection or block is one TLB entry on hardware: invalidating any
VA in it drops every page of it. Entries made with the MMU off (FLAT) go only with TLBIALL and
the hypervisor's flushes.
"""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from hyp.arch.descriptors import Prot
from hyp.arch.fault import Access
from hyp.arch.s1 import PL1, S1Fault, S1Leaf, S1Regime
from hyp.arch.tlb import FLAT, GLOBAL, TLB, TLBEntry
from s1tables import (IPA_BASE, SCTLR_M, TTBCR_A1, Guest, ld_block, ld_table, sd_section,
                      sd_small, sd_table, ttbcr_ld)

SIZES = [1 << 12, 1 << 16, 1 << 20, 1 << 21, 1 << 24, 1 << 30]
ASIDS = [1, 2, 3]


def make_entry(vmid, tag, va_page, base, size, pa):
    leaf = None if tag == FLAT else S1Leaf(
        va=va_page, ipa=pa, base_va=base, size=size, pl1=Prot.RWX, pl0=Prot.RWX, domain=0,
        global_=tag == GLOBAL, level=1)
    return TLBEntry(vmid=vmid, va_page=va_page, ipa_page=pa, pa_page=pa, prot=Prot.RWX,
                    level=3, s1=leaf, tag=tag)


# A few VA pages that mappings of every size share, so that one page gets cached through
# mappings of different sizes (its descriptor changed, the MMU walked again).
POOL = [0x0, 0x1000, 0xF000, 0x10_0000, 0x10_5000, 0x1F_F000, 0x40_0000, 0xC000_0000]
VMIDS = st.sampled_from([1, 2])
OPS = st.one_of(
    st.tuples(st.just("insert"), VMIDS, st.sampled_from([FLAT, GLOBAL, *ASIDS]),
              st.sampled_from(POOL), st.sampled_from(SIZES), st.integers(0, 0xFF)),
    # a cached page (by index) filled again through a mapping of another size
    st.tuples(st.just("rewalk"), st.integers(0, 99), st.sampled_from(SIZES),
              st.integers(0, 0xFF)),
    st.tuples(st.just("tlbiall"), VMIDS),
    st.tuples(st.just("tlbiasid"), VMIDS, st.sampled_from(ASIDS)),
    # TLBIMVA(A) of a VA one bit away from a cached page (or of the page itself)
    st.tuples(st.just("tlbimva"), st.integers(0, 99), st.integers(11, 31),
              st.sampled_from([None, *ASIDS])),
    st.tuples(st.just("flush_vmid"), VMIDS),
    st.tuples(st.just("flush_all_nsnh")))


class TLBModel:
    """The TLB against {(vmid, tag, va page): (pa, mapping base, mapping size)}."""

    def __init__(self):
        self.tlb, self.model = TLB(), {}

    def insert(self, vmid, tag, page, size, pa):
        size = 1 << 12 if tag == FLAT else size
        base = page & ~(size - 1)
        self.tlb.insert(make_entry(vmid, tag, page, base, size, pa << 12))
        self.model[(vmid, tag, page)] = (pa << 12, base, size)

    def cached(self, i):
        keys = sorted(self.model)
        return keys[i % len(keys)] if keys else None

    def rewalk(self, i, size, pa):
        key = self.cached(i)
        if key is not None and key[1] != FLAT:
            self.insert(*key, size, pa)

    def _drop(self, pred) -> int:
        gone = [k for k, v in self.model.items() if pred(k, v)]
        for k in gone:
            del self.model[k]
        return len(gone)

    def tlbiall(self, vmid):
        assert self.tlb.invalidate_all(vmid) == self._drop(lambda k, v: k[0] == vmid)

    def tlbiasid(self, vmid, asid):
        n = self._drop(lambda k, v: k[0] == vmid and k[1] == asid)
        assert self.tlb.invalidate_asid(vmid, asid) == n

    def tlbimva(self, i, bit, asid):
        key = self.cached(i)
        flip = 0 if bit == 11 else 1 << bit           # 11: the page itself
        vmid, va = (1, 0x10_5123) if key is None else (key[0], key[2] ^ flip)
        n = self._drop(lambda k, v: k[0] == vmid and k[1] != FLAT
                       and (asid is None or k[1] in (asid, GLOBAL))
                       and v[1] <= va < v[1] + v[2])
        assert self.tlb.invalidate_va(vmid, va, asid) == n

    def flush_vmid(self, vmid):
        self._drop(lambda k, v: k[0] == vmid)
        self.tlb.flush_vmid(vmid)

    def flush_all_nsnh(self):
        self.model.clear()
        self.tlb.flush_all_nsnh()

    def check(self):
        got = {(e.vmid, e.tag, e.va_page): e.pa_page for e in self.tlb.entries()}
        assert got == {k: v[0] for k, v in self.model.items()}
        # white box: the by-mapping index holds each cached page exactly once (no stale keys)
        assert sum(map(len, self.tlb._by_block.values())) == len(self.tlb)
        for vmid, _, page in self.model:
            for asid in (None, *ASIDS):
                want = self.model.get((vmid, FLAT, page)) if asid is None else \
                    self.model.get((vmid, asid, page), self.model.get((vmid, GLOBAL, page)))
                e = self.tlb.lookup(vmid, page, asid)
                assert (e.pa_page if e else None) == (want[0] if want else None)


@settings(max_examples=300, deadline=None)
@given(st.lists(OPS, min_size=10, max_size=60))
def test_tlb_scopes_match_dict_model(ops):
    m = TLBModel()
    for op, *args in ops:
        getattr(m, op)(*args)
        m.check()


def test_reinserted_page_leaves_no_trace_of_its_old_mapping():
    # a page first cached through a section, then (descriptor changed, re-walked) through a
    # 64 KiB large page: TLBIMVA elsewhere in the old section must not drop it
    tlb = TLB()
    tlb.insert(make_entry(1, GLOBAL, 0x10_5000, 0x10_0000, 1 << 20, 0x1000))
    tlb.insert(make_entry(1, GLOBAL, 0x10_5000, 0x10_0000, 1 << 16, 0x2000))
    assert tlb.invalidate_va(1, 0x18_0000, None) == 0
    assert tlb.lookup(1, 0x10_5000, 1).pa_page == 0x2000
    assert tlb.invalidate_va(1, 0x10_F000, None) == 1 and len(tlb) == 0


# ---- stale translations through MMU.fill -------------------------------------------------
VA_PAGE = 0x0020_3000          # small page, nG, via the page table at IPA 0x4000_4000
VA_SEC = 0x0010_0000           # section, global
L2_DESC = 0x4000_4000 + 4 * 0x03


def short_guest(asid: int = 5) -> Guest:
    g = Guest()
    g.map_ram()
    g.w32(IPA_BASE + 4 * 0x001, sd_section(0x4010_0000))
    g.w32(IPA_BASE + 4 * 0x002, sd_table(0x4000_4000))
    g.w32(L2_DESC, sd_small(0x4000_8000, ng=1))
    g.mmu.set_stage1(S1Regime(sctlr=SCTLR_M, ttbr0=IPA_BASE, dacr=1, contextidr=asid))
    return g


def pa(g: Guest, va: int, access=Access.READ):
    r = g.mmu.fill(va, access, PL1)
    return r.pa_page | va & 0xFFF if isinstance(r, TLBEntry) else r


def test_stale_page_until_the_right_tlbimva():
    g = short_guest()
    assert pa(g, VA_PAGE + 0x10) == g.home(0x4000_8010)
    g.w32(L2_DESC, sd_small(0x4000_9000, ng=1))           # no maintenance
    assert pa(g, VA_PAGE + 0x10) == g.home(0x4000_8010)
    tlb = g.mmu.tlb
    assert tlb.invalidate_va(1, VA_PAGE + 0x1000, 5) == 0   # another page
    assert tlb.invalidate_va(1, VA_PAGE, 6) == 0            # another ASID (nG entry)
    assert tlb.invalidate_asid(1, 6) == 0
    assert tlb.invalidate_va(2, VA_PAGE, 5) == 0            # another VMID
    assert pa(g, VA_PAGE + 0x10) == g.home(0x4000_8010)
    assert tlb.invalidate_va(1, VA_PAGE + 0xFFF, 5) == 1
    assert pa(g, VA_PAGE + 0x10) == g.home(0x4000_9010)


def test_global_section_survives_tlbiasid_and_goes_with_any_va_in_it():
    g = short_guest()
    for off in (0x0, 0x1000, 0xF_F000):
        assert pa(g, VA_SEC + off) == g.home(0x4010_0000 + off)
    g.w32(IPA_BASE + 4 * 0x001, sd_section(0x4020_0000))
    assert g.mmu.tlb.invalidate_asid(1, 5) == 0
    assert pa(g, VA_SEC + 0x1000) == g.home(0x4010_1000)
    assert g.mmu.tlb.invalidate_va(1, VA_SEC + 0x8_0123, 9) == 3   # any ASID: it is global
    assert pa(g, VA_SEC + 0x1000) == g.home(0x4020_1000)


def test_asid_switch_tlbimvaa_tlbiall():
    g = short_guest(asid=5)
    assert pa(g, VA_PAGE) == g.home(0x4000_8000)
    g.w32(L2_DESC, sd_small(0x4000_9000, ng=1))
    g.mmu.set_stage1(S1Regime(sctlr=SCTLR_M, ttbr0=IPA_BASE, dacr=1, contextidr=6))
    assert pa(g, VA_PAGE) == g.home(0x4000_9000)            # ASID 6 walks afresh
    g.w32(L2_DESC, sd_small(0x4000_A000, ng=1))
    g.mmu.set_stage1(S1Regime(sctlr=SCTLR_M, ttbr0=IPA_BASE, dacr=1, contextidr=5))
    assert pa(g, VA_PAGE) == g.home(0x4000_8000)            # ASID 5's entry is still there
    assert g.mmu.tlb.invalidate_va(1, VA_PAGE, None) == 2   # TLBIMVAA: both ASIDs
    assert pa(g, VA_PAGE) == g.home(0x4000_A000)
    g.w32(L2_DESC, sd_small(0x4000_B000, ng=1))
    assert g.mmu.tlb.invalidate_all(2) == 0
    assert pa(g, VA_PAGE) == g.home(0x4000_A000)
    assert g.mmu.tlb.invalidate_all(1) == 1
    assert pa(g, VA_PAGE) == g.home(0x4000_B000)


def test_faults_are_not_cached_and_dacr_needs_no_maintenance():
    g = short_guest()
    g.w32(L2_DESC, 0)
    assert isinstance(pa(g, VA_PAGE), S1Fault)
    g.w32(L2_DESC, sd_small(0x4000_8000, ng=1))            # no maintenance: none is needed
    assert pa(g, VA_PAGE) == g.home(0x4000_8000)
    g.mmu.set_stage1(S1Regime(sctlr=SCTLR_M, ttbr0=IPA_BASE, dacr=0, contextidr=5))
    assert pa(g, VA_PAGE).fsr() == 0x00B                   # domain fault, page, domain 0


def test_lpae_ng_asid_from_ttbr_and_block_as_one_entry():
    g = Guest()
    g.map_ram()
    g.w64(IPA_BASE, ld_table(0x4000_1000))                  # VA [0, 1 GiB) via L2 at 0x4000_1000
    g.w64(0x4000_1000 + 8 * 1, ld_block(0x4020_0000, ng=1))    # VA [2 MiB, 4 MiB)
    for a1, asid in ((0, 0x12), (TTBCR_A1, 0x34)):
        g.mmu.set_stage1(S1Regime(sctlr=SCTLR_M, ttbcr=ttbcr_ld(extra=a1),
                                  ttbr0=0x0012 << 48 | IPA_BASE, ttbr1=0x0034 << 48))
        for va in (0x20_0000, 0x20_1000, 0x3F_F000):
            e = g.mmu.fill(va, Access.READ, PL1)
            assert e.tag == asid and e.pa_page == g.home(0x4020_0000 + va - 0x20_0000)
        assert g.mmu.tlb.invalidate_va(1, 0x30_0000, asid) == 3
        assert len(g.mmu.tlb) == 0


def test_a_cached_section_serves_its_other_pages_without_a_walk():
    """A section is one TLB entry on hardware: a miss on another of its pages hits it - no
    stage-1 walk, the section's stale descriptor included - until an invalidation of any VA
    in it; a cached entry that lacks the permission is walked again."""
    g = short_guest()
    mmu = g.mmu
    assert pa(g, VA_SEC) == g.home(0x4010_0000)
    walks = mmu.s1_walks
    assert pa(g, VA_SEC + 0x5_4321) == g.home(0x4015_4321)
    assert mmu.s1_walks == walks and mmu.s1_block_hits == 1
    g.w32(IPA_BASE + 4 * 0x001, sd_section(0x4020_0000))     # remap, no maintenance
    assert pa(g, VA_SEC + 0x6_0000) == g.home(0x4016_0000)   # stale: the cached section
    assert mmu.s1_walks == walks
    assert mmu.tlb.invalidate_va(1, VA_SEC + 0xF_F000, None) == 3
    assert pa(g, VA_SEC + 0x6_0000) == g.home(0x4026_0000)   # walked afresh
    assert mmu.s1_walks == walks + 1
    # Read-only now, again without maintenance: a write misses on a new page, the cached
    # section says read-only, so the MMU walks (the descriptor says read-write again: ok).
    g.w32(IPA_BASE + 4 * 0x001, sd_section(0x4020_0000, ap=0b111))
    mmu.tlb.invalidate_va(1, VA_SEC, None)
    assert pa(g, VA_SEC) == g.home(0x4020_0000)              # cached read-only section
    g.w32(IPA_BASE + 4 * 0x001, sd_section(0x4020_0000))
    r = mmu.fill(VA_SEC + 0x7_0000, Access.WRITE)
    assert not isinstance(r, S1Fault) and mmu.s1_walks == walks + 3
