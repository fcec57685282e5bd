"""Stage-2 walker: every fault kind at every level, and a property test against a reference."""
import pytest
from hypothesis import given, settings, strategies as st

from hyp.arch import descriptors as d
from hyp.arch.descriptors import Prot
from hyp.arch.fault import Access, Fault, FaultType
from hyp.arch.regs import S2Config, make_vtcr, make_vttbr
from hyp.arch.walk import Translation, translate
from hyp.physmem import PhysMem

BASE = 0x1_0000_0000
G, M2, K4 = 1 << 30, 2 << 20, 4 << 10


class Tables:
    """A deliberately simple table builder: writes raw descriptors, independent of hyp.stage2."""

    def __init__(self, t0sz=-8, sl0=1, vmid=1):
        self.mem = PhysMem(8 << 20, base=BASE)
        self.next = BASE + 0x10000           # root at BASE (16 pages reserved for concatenation)
        self.cfg = S2Config.decode(make_vtcr(t0sz, sl0), make_vttbr(BASE, vmid))

    def _alloc(self):
        pa = self.next
        self.next += 0x1000
        return pa

    def _slot(self, ipa, level):
        table, lvl = self.cfg.root_pa, self.cfg.start_level
        while True:
            shift = d.LEVEL_SHIFT[lvl]
            top = self.cfg.input_bits if lvl == self.cfg.start_level else shift + 9
            idx = (ipa >> shift) & ((1 << (top - shift)) - 1)
            pa = table + 8 * idx
            if lvl == level:
                return pa
            desc = self.mem.read64(pa)
            if not desc & 1:
                desc = self._alloc() | 3
                self.mem.write64(pa, desc)
            table, lvl = desc & d.ADDR_MASK, lvl + 1

    def leaf(self, ipa, level, pa, prot=Prot.RWX, af=True):
        self.mem.write64(self._slot(ipa, level), d.make_leaf(pa, level, prot, af=af))

    def raw(self, ipa, level, desc):
        self.mem.write64(self._slot(ipa, level), desc)


def _t():
    t = Tables()
    t.leaf(0x4000_0000, 1, 0x80_0000_0000 - G)                       # 1 GiB block
    t.leaf(0x8000_0000, 2, 0x2_0000_0000)                             # 2 MiB block
    t.leaf(0x8020_0000, 3, 0x3_0000_1000, Prot.R)                    # 4 KiB read-only
    t.leaf(0x8020_1000, 3, 0x3_0000_2000, Prot.RW)                   # no execute
    t.leaf(0x8020_2000, 3, 0x3_0000_3000, Prot.RWX, af=False)        # AF clear
    t.leaf(0x8020_3000, 3, 0x3_0000_4000, Prot.W | Prot.X)           # write-only (no read)
    t.raw(0x8020_4000, 3, 0x3_0000_5000 | 0b01 | (1 << 10) | (3 << 6))  # 0b01 at L3: invalid
    t.raw(0xC000_0000, 2, (1 << 40) | 0x3_0000_0000 | 0b01 | (1 << 10) | (3 << 6))
    return t


CASES = [
    # ipa, access, expected (pa) or (fault type, level)
    pytest.param(0x4000_1234, Access.WRITE, 0x80_0000_0000 - G + 0x1234, id="1G-block-write"),
    pytest.param(0x8012_3456, Access.FETCH, 0x2_0012_3456, id="2M-block-fetch"),
    pytest.param(0x8020_0010, Access.READ, 0x3_0000_1010, id="4K-page-read"),
    pytest.param(0x1_0000_0000, Access.READ, (FaultType.TRANSLATION, 1), id="trans-L1"),
    pytest.param(0x8040_0000, Access.READ, (FaultType.TRANSLATION, 2), id="trans-L2"),
    pytest.param(0x8020_5000, Access.WRITE, (FaultType.TRANSLATION, 3), id="trans-L3"),
    pytest.param(0x8020_4000, Access.READ, (FaultType.TRANSLATION, 3), id="L3-0b01-invalid"),
    pytest.param(0x8020_0000, Access.WRITE, (FaultType.PERMISSION, 3), id="perm-L3-write-ro"),
    pytest.param(0x8020_1000, Access.FETCH, (FaultType.PERMISSION, 3), id="perm-L3-xn"),
    pytest.param(0x8020_3000, Access.READ, (FaultType.PERMISSION, 3), id="perm-L3-read-wo"),
    pytest.param(0x8020_3000, Access.FETCH, (FaultType.PERMISSION, 3), id="perm-fetch-needs-read"),
    pytest.param(0x8020_2000, Access.READ, (FaultType.ACCESS_FLAG, 3), id="af-L3"),
    pytest.param(0xC000_0000, Access.READ, (FaultType.ADDRESS_SIZE, 2), id="oa-above-40-bits-L2"),
    pytest.param(1 << 40, Access.READ, (FaultType.TRANSLATION, 1), id="ipa-beyond-t0sz"),
]


@pytest.mark.parametrize("ipa,access,expect", CASES)
def test_walk_cases(ipa, access, expect):
    t = _t()
    r = translate(t.mem, t.cfg, ipa, access)
    if isinstance(expect, tuple):
        assert isinstance(r, Fault), r
        assert (r.type, r.level, r.ipa, r.access) == (*expect, ipa, access)
    else:
        assert isinstance(r, Translation), r
        assert r.pa == expect


def test_block_at_level1_and_af_and_perm_on_blocks():
    t = Tables()
    t.leaf(0x0, 1, 0x0, Prot.R, af=False)
    assert translate(t.mem, t.cfg, 0x10, Access.READ).type is FaultType.ACCESS_FLAG
    t.leaf(0x0, 1, 0x0, Prot.R)
    f = translate(t.mem, t.cfg, 0x10, Access.WRITE)
    assert (f.type, f.level) == (FaultType.PERMISSION, 1)


def test_vttbr_high_bits_address_size_level0():
    t = _t()
    cfg = S2Config.decode(make_vtcr(-8, 1), make_vttbr(BASE, 1) | (1 << 40))
    f = translate(t.mem, cfg, 0x4000_0000, Access.READ)
    assert (f.type, f.level) == (FaultType.ADDRESS_SIZE, 0)


@pytest.mark.parametrize("t0sz,sl0,valid,start,roots", [
    pytest.param(-8, 1, True, 1, 2, id="40bit-L1-2-concat"),
    pytest.param(0, 1, True, 1, 1, id="32bit-L1"),
    pytest.param(1, 1, True, 1, 1, id="31bit-L1"),
    pytest.param(2, 1, False, 1, None, id="30bit-L1-invalid"),
    pytest.param(-2, 0, True, 2, 16, id="34bit-L2-16-concat"),
    pytest.param(7, 0, True, 2, 1, id="25bit-L2"),
    pytest.param(-3, 0, False, 2, None, id="35bit-L2-invalid"),
])
def test_vtcr_start_level_and_concatenation(t0sz, sl0, valid, start, roots):
    cfg = S2Config.decode(make_vtcr(t0sz, sl0), 0)
    assert cfg.valid == valid
    assert cfg.input_bits == 32 - t0sz
    if valid:
        assert (cfg.start_level, cfg.root_tables) == (start, roots)
    else:
        f = translate(PhysMem(4096, base=0), cfg, 0, Access.READ)
        assert (f.type, f.level) == (FaultType.TRANSLATION, 1)


def test_start_level2_concatenated_walk():
    t = Tables(t0sz=-2, sl0=0)              # 34-bit IPA, 16 concatenated level-2 tables
    t.leaf(0x3_C000_0000, 2, 0x2_0000_0000)
    t.leaf(0x0_0020_0000, 3, 0x2_0040_0000)
    assert translate(t.mem, t.cfg, 0x3_C000_0042, Access.READ).pa == 0x2_0000_0042
    assert translate(t.mem, t.cfg, 0x20_0abc, Access.READ).pa == 0x2_0040_0abc
    f = translate(t.mem, t.cfg, 0x4_0000_0000, Access.READ)
    assert (f.type, f.level) == (FaultType.TRANSLATION, 1)


# ---- property test against a reference model ------------------------------------------
leaf_st = st.tuples(st.sampled_from([1, 2, 3]), st.integers(0, 3), st.integers(0, 3),
                    st.integers(0, 3), st.sampled_from(list(Prot)), st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.lists(leaf_st, max_size=12), st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3),
       st.integers(0, 3), st.integers(0, 4095), st.sampled_from(list(Access))), min_size=1, max_size=20))
def test_walker_matches_reference(leaves, probes):
    def ipa_of(a, b, c):
        return (a << 30) | (b << 21) | (c << 12)

    t = Tables()
    model = {}                                     # (level, prefix) -> (pa, prot, af)
    for level, a, b, c, prot, af in leaves:
        ipa = ipa_of(a, b if level > 1 else 0, c if level == 3 else 0)
        covered = any(ipa >> d.LEVEL_SHIFT[lv] == k >> d.LEVEL_SHIFT[lv] or
                      k >> d.LEVEL_SHIFT[level] == ipa >> d.LEVEL_SHIFT[level]
                      for (lv, k) in model)
        if covered:
            continue                               # keep leaves disjoint and tables consistent
        pa = 0x40_0000_0000 + ipa
        t.leaf(ipa, level, pa, prot, af)
        model[(level, ipa)] = (pa, prot, af)
    for a, b, c, off, access in probes:
        ipa = ipa_of(a, b, c) + off
        r = translate(t.mem, t.cfg, ipa, access)
        hit = [(lv, k) for (lv, k) in model if k >> d.LEVEL_SHIFT[lv] == ipa >> d.LEVEL_SHIFT[lv]]
        if not hit:
            # The walk descends below level x iff some deeper leaf shares the level-x entry.
            reached = 1
            for x in (1, 2):
                if any(lv > x and k >> d.LEVEL_SHIFT[x] == ipa >> d.LEVEL_SHIFT[x]
                       for (lv, k) in model):
                    reached = x + 1
            assert isinstance(r, Fault) and (r.type, r.level) == (FaultType.TRANSLATION, reached)
            continue
        (lv, k), = hit
        pa, prot, af = model[(lv, k)]
        need = {Access.READ: Prot.R, Access.WRITE: Prot.W, Access.FETCH: Prot.R | Prot.X}[access]
        if not af:
            assert (r.type, r.level) == (FaultType.ACCESS_FLAG, lv)
        elif (prot & need) != need:
            assert (r.type, r.level) == (FaultType.PERMISSION, lv)
        else:
            assert isinstance(r, Translation) and r.pa == pa + (ipa - k) and r.level == lv
