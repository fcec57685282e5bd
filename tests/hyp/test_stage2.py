"""Stage-2 table management: map, dissolve, split, collapse, unmap, and their TLB maintenance."""
import pytest
from hypothesis import given, settings, strategies as st

from hyp.arch import descriptors as d
from hyp.arch.descriptors import Prot
from hyp.arch.fault import Access, Fault, FaultType
from hyp.arch.tlb import TLB, TLBEntry
from hyp.arch.walk import Translation, translate
from hyp.pgalloc import TablePool
from hyp.physmem import PhysMem
from hyp.stage2 import Stage2

BASE = 0x1_0000_0000
G, M2, K4 = 1 << 30, 2 << 20, 4 << 10


class Env:
    def __init__(self, vmid=1):
        self.mem = PhysMem(8 << 20, base=BASE)
        self.pool = TablePool(self.mem, BASE, 8 << 20)
        self.tlb = TLB()
        self.vmid = vmid
        self.s2 = Stage2(self.mem, self.pool, self.tlb, lambda: self.vmid)
        self.events = []
        self.s2.observers.append(lambda kind, **kw: self.events.append((kind, kw)))

    def tr(self, ipa, access=Access.READ):
        return translate(self.mem, self.s2.cfg, ipa, access)

    def flushes(self):
        return self.tlb.stats["flush_vmid"]


def test_map_page_builds_tables_and_unmap_frees_them():
    e = Env()
    e.s2.map(0x4000_3000, 0x2_0000_0000, 3, Prot.RW)
    assert e.pool.in_use == 2 + 2                  # 2-page root + L2 + L3
    assert e.tr(0x4000_3abc).pa == 0x2_0000_0abc
    assert e.flushes() == 0                        # invalid -> valid needs no flush
    e.s2.unmap(0, 1 << 40)
    assert e.pool.in_use == 2 and e.s2.table_pages() == 2
    assert e.tr(0x4000_3000).type is FaultType.TRANSLATION
    assert e.flushes() == 1


def test_permission_upgrade_needs_no_flush_downgrade_does():
    e = Env()
    e.s2.map(0x4000_0000, 0x2_0000_0000, 3, Prot.R)
    e.s2.map(0x4000_0000, 0x2_0000_0000, 3, Prot.RW)
    assert e.flushes() == 0
    e.s2.wrprotect(0x4000_0000, 0x4000_1000)
    assert e.flushes() == 1
    assert e.tr(0x4000_0000, Access.WRITE).type is FaultType.PERMISSION


def test_wrprotect_range_is_one_flush():
    e = Env()
    for i in range(64):
        e.s2.map(0x4000_0000 + i * K4, 0x2_0000_0000 + i * K4, 3, Prot.RWX)
    e.s2.map(0x4020_0000, 0x2_0020_0000, 2, Prot.RWX)
    e.s2.wrprotect(0x4000_0000, 0x4040_0000)
    assert e.flushes() == 1
    assert all(not (m.prot & Prot.W) for m in e.s2.dump())


def test_dissolve_block_lazily_keeps_only_the_faulting_page():
    e = Env()
    e.s2.map(0x4000_0000, 0x2_0000_0000, 2, Prot.R | Prot.X)
    before = e.pool.in_use
    e.s2.map(0x4000_5000, 0x2_0000_5000, 3, Prot.RWX)
    assert e.pool.in_use == before + 1
    assert e.flushes() == 1                        # break-before-make on the block entry
    assert [k for k, _ in e.events if k in ("dissolve", "tlb_flush")] == ["tlb_flush", "dissolve"]
    assert e.tr(0x4000_5000, Access.WRITE).pa == 0x2_0000_5000
    f = e.tr(0x4000_6000)
    assert (f.type, f.level) == (FaultType.TRANSLATION, 3)


def test_eager_split_then_collapse_restores_block_and_frees_tables():
    e = Env()
    e.s2.map(0x4000_0000, 0x2_0000_0000, 1, Prot.RWX)
    base_pages = e.pool.in_use
    assert e.s2.split_blocks(0x4000_0000, 0x8000_0000) == 1 + 512
    assert e.pool.in_use == base_pages + 1 + 512
    for ipa in (0x4000_0000, 0x4123_4567, 0x7FFF_FFFC):
        t = e.tr(ipa, Access.WRITE)
        assert t.level == 3 and t.pa == 0x2_0000_0000 + ipa - 0x4000_0000
    e.s2.wrprotect(0x4000_0000, 0x8000_0000)
    e.s2.set_prot(0x4000_0000, 0x8000_0000, add=Prot.W)
    flushes = e.flushes()
    assert e.s2.collapse(0x4000_0000, 0x8000_0000) == 512 + 1
    assert e.pool.in_use == base_pages and e.s2.table_pages() == base_pages
    assert e.flushes() > flushes                   # table -> block is break-before-make
    m, = e.s2.dump()
    assert (m.ipa, m.size, m.level, m.prot) == (0x4000_0000, G, 1, Prot.RWX)


def test_collapse_refuses_mixed_permissions():
    e = Env()
    for i in range(512):
        e.s2.map(0x4000_0000 + i * K4, 0x2_0000_0000 + i * K4, 3, Prot.RW if i else Prot.R)
    assert e.s2.collapse(0x4000_0000, 0x4020_0000) == 0


def test_map_block_over_table_frees_subtree():
    e = Env()
    e.s2.map(0x4000_1000, 0x2_0000_1000, 3, Prot.RW)
    e.s2.map(0x4000_0000, 0x2_0000_0000, 2, Prot.RW)
    assert e.pool.in_use == e.s2.table_pages() == 2 + 1
    assert ("table_free", {"pa": pytest.approx(0, abs=1 << 40), "level": 3})[0] in [k for k, _ in e.events]


def test_skip_flush_leaves_stale_tlb_entry():
    e = Env()
    e.s2.map(0x4000_0000, 0x2_0000_0000, 3, Prot.RW)
    e.tlb.insert(TLBEntry(1, 0x4000_0000, 0x4000_0000, 0x2_0000_0000, Prot.RW, 3))
    e.s2.skip_flush = True
    e.s2.wrprotect(0x4000_0000, 0x4000_1000)
    assert e.tlb.lookup(1, 0x4000_0000).prot & Prot.W          # stale: still writable
    e.s2.skip_flush = False
    e.s2.wrprotect(0x4000_0000, 0x4000_2000)                   # nothing changes: no flush
    e.s2.flush("explicit")
    assert e.tlb.lookup(1, 0x4000_0000) is None


# ---- property test: random operations against a page-granular reference model -------
op_st = st.one_of(
    st.tuples(st.just("map"), st.sampled_from([1, 2, 3]), st.integers(0, 1), st.integers(0, 3),
              st.integers(0, 7), st.sampled_from([Prot.R, Prot.RW, Prot.RWX, Prot.RX])),
    st.tuples(st.just("wp"), st.integers(0, 1), st.integers(0, 3)),
    st.tuples(st.just("unmap"), st.integers(0, 1), st.integers(0, 3)),
    st.tuples(st.just("split"), st.integers(0, 1)),
    st.tuples(st.just("collapse"), st.integers(0, 1)),
)


PROBES = [G * (1 + a) + b * M2 + c * K4 for a in (0, 1) for b in (0, 3) for c in (0, 7, 511)]


@settings(max_examples=60, deadline=None)
@given(st.lists(op_st, max_size=10))
def test_stage2_ops_match_reference(ops):
    """Reference: for each probe page, the leaf that maps it (ipa, level, pa, prot) or None.
    Leaf-granular semantics: wrprotect/unmap act on whole leaves overlapping the range; mapping
    a page inside a block dissolves the block (its other pages fault in later)."""
    e = Env()
    model = {p: None for p in PROBES}

    def region(a, b=0, c=0):
        return G * (1 + a) + b * M2 + c * K4

    def overlaps(leaf, lo, hi):
        ipa, level = leaf[0], leaf[1]
        return ipa < hi and lo < ipa + d.LEVEL_SIZE[level]

    for op in ops:
        before = {p: e.tr(p) for p in PROBES}
        if op[0] == "map":
            _, level, a, b, c, prot = op
            ipa = region(a, b if level > 1 else 0, c if level == 3 else 0)
            size = d.LEVEL_SIZE[level]
            e.s2.map(ipa, 0x40_0000_0000 + ipa, level, prot)
            for p, leaf in model.items():
                if ipa <= p < ipa + size:
                    model[p] = (ipa, level, 0x40_0000_0000 + ipa, prot)
                elif leaf and leaf[1] < level and overlaps(leaf, ipa, ipa + 1):
                    model[p] = None                       # dissolved block: lazily refaulted
        elif op[0] in ("wp", "unmap"):
            lo = region(op[1], op[2])
            hi = lo + M2
            (e.s2.wrprotect if op[0] == "wp" else e.s2.unmap)(lo, hi)
            for p, leaf in model.items():
                if leaf and overlaps(leaf, lo, hi):
                    model[p] = None if op[0] == "unmap" else (*leaf[:3], leaf[3] & ~Prot.W)
        elif op[0] == "split":
            lo = region(op[1])
            e.s2.split_blocks(lo, lo + G)
            for p, leaf in model.items():
                if leaf and leaf[1] < 3 and overlaps(leaf, lo, lo + G):
                    model[p] = (p, 3, leaf[2] + (p - leaf[0]), leaf[3])
        else:
            lo = region(op[1])
            e.s2.collapse(lo, lo + G)
        for p in PROBES:
            r = translate(e.mem, e.s2.cfg, p, Access.READ, check_perm=False)
            leaf = model[p]
            if leaf is None:
                assert isinstance(r, Fault) and r.type is FaultType.TRANSLATION, (op, hex(p), r)
                continue
            assert isinstance(r, Translation), (op, hex(p), r)
            assert (r.pa, r.prot) == (leaf[2] + (p - leaf[0]), leaf[3]), (op, hex(p))
            if op[0] == "collapse":
                # collapsing never changes a translation; the model learns the new leaf size
                assert (before[p].pa, before[p].prot) == (r.pa, r.prot)
                lsize = d.LEVEL_SIZE[r.level]
                model[p] = (p & ~(lsize - 1), r.level, r.pa & ~(lsize - 1), r.prot)
            else:
                assert r.level == leaf[1], (op, hex(p))
        assert e.s2.table_pages() == e.pool.in_use        # no leaked table pages


_DESC = st.integers(0, (1 << 64) - 1) | st.sampled_from([0, 1, 3, 0x4C3, 0x443, 0x483, 0x4C1])


@given(st.lists(st.tuples(_DESC, _DESC), min_size=1, max_size=8))
def test_maintenance_of_one_descriptor_in_ints_matches_the_array_rule(pairs):
    """The fault path decides a single descriptor's TLB maintenance in Python ints; it must
    be the rule the batch path applies to numpy arrays."""
    import numpy as np
    from hyp.stage2 import _MASKS_INT, _maintenance
    old = np.array([o for o, _ in pairs], dtype=np.uint64)
    new = np.array([n for _, n in pairs], dtype=np.uint64)
    bbm, down = _maintenance(old, new)
    for i, (o, n) in enumerate(pairs):
        assert _maintenance(o, n, _MASKS_INT) == (bool(bbm[i]), bool(down[i]))


def test_relax_in_place_makes_only_changes_that_need_no_maintenance():
    """The fault fast path's relax (hyp.abort.resolve_in_place) cannot flush mid-fill."""
    e = Env()
    e.s2.map(0x4000_0000, 0x2_0000_0000, 3, Prot.R)
    f = e.tr(0x4000_0000, Access.WRITE)
    assert f.type is FaultType.PERMISSION and f.desc_pa is not None
    assert e.s2.relax_in_place(f.desc_pa, Prot.W)            # an upgrade: done, no flush
    assert e.tr(0x4000_0000, Access.WRITE).pa == 0x2_0000_0000 and e.flushes() == 0
    assert not e.s2.relax_in_place(0x1_0070_0000, Prot.W)     # an empty slot: nothing
    assert not e.s2.relax_in_place(0x9_0000_0000, Prot.W)     # outside host memory
    # a change that needs maintenance (losing W) is refused, and nothing changes
    idx = (f.desc_pa - e.mem.base) >> 3
    before = int(e.mem.q[idx])
    assert not e.s2._store_at(idx, before & ~(1 << 7), unless_maintenance=True)
    assert int(e.mem.q[idx]) == before and e.flushes() == 0
