"""Two-stage translation (DDI 0406C B3.3, B3.12): MMU.fill against a deliberately simple
reference, random stage-1 tables of either format in guest RAM, random stage-2 tables.

The reference reads no memory: it walks the *model* the tables were written from, and
translates every stage-1 descriptor address through its own stage-2 model first, so a stage-2
fault on a walk comes out as S1PTW with the stage-2 level and the descriptor's IPA in HPFAR
(B3.12, VMSA memory aborts; QEMU 7.2 reports the stage-1 level instead). HCR.PTW: a walk
into memory stage 2 makes Device is a stage-2 permission fault (B4.1.65). Outcomes are
compared as what software reads: the PA, the guest's DFSR/IFSR and FAR, or HSR/HPFAR/HDFAR.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings, strategies as st

from hyp.arch.descriptors import Prot
from hyp.arch.fault import Access
from hyp.arch.s1 import PL0, PL1, S1Fault, S1Regime
from hyp.arch.syndrome import Syndrome
from hyp.arch.tlb import TLBEntry
from s1tables import (HCR_PTW, HCR_VM, IPA_BASE, RAM, SCTLR_AFE, SCTLR_M, Guest, ld_block,
                      ld_page, ld_table, sd_large, sd_section, sd_small, sd_table, ttbcr_ld)

RD, WR, FE = Access.READ, Access.WRITE, Access.FETCH
NEED = {RD: Prot.R, WR: Prot.W, FE: Prot.R | Prot.X}
GIB = 1 << 30
CHUNK = 2 << 20


def observe(mmu, va: int, access: Access, priv: int):
    """MMU.fill's outcome as software reads it."""
    r = mmu.fill(va, access, priv)
    if isinstance(r, TLBEntry):
        return ("pa", r.pa_page | va & 0xFFF)
    if isinstance(r, S1Fault):
        return ("guest", r.fsr(), r.va)
    syn = Syndrome.for_fault(r)
    return ("hyp", syn.hsr, syn.hpfar, syn.far, r.ipa)


# ---- the reference ----------------------------------------------------------------------
@dataclass(frozen=True)
class S2Attr:
    prot: Prot = Prot.RWX
    af: bool = True
    device: bool = False


@dataclass
class World:
    """chunks[i]: stage 2 of IPA_BASE + i * 2 MiB - None (unmapped), an S2Attr (a block), or
    a list of 16 optional S2Attr (pages 0-15 at level 3; the others unmapped)."""
    chunks: list
    ptw: bool
    lpae: bool
    sctlr: int = SCTLR_M
    dacr: int = 0
    l1: dict = field(default_factory=dict)      # stage-1 model: index -> entry (a dict)


class Abort(Exception):
    pass


def hyp_abort(access, kind, level, ipa, va, s1ptw):
    fsc = {"TR": 0b0001, "AF": 0b0010, "PERM": 0b0011}[kind] << 2 | level
    ec = 0x20 if access == FE else 0x24
    hsr = ec << 26 | s1ptw << 7 | (access == WR) << 6 | fsc
    raise Abort(("hyp", hsr, (ipa >> 12) << 4, va, ipa))


SHORT_FS = {("TR", 1): 0x005, ("TR", 2): 0x007, ("AF", 1): 0x003, ("AF", 2): 0x006,
            ("DOM", 1): 0x009, ("DOM", 2): 0x00B, ("PERM", 1): 0x00D, ("PERM", 2): 0x00F}
LONG_STATUS = {"TR": 0x04, "AF": 0x08, "PERM": 0x0C}


def guest_abort(w: World, access, kind, level, va, domain=0):
    if w.lpae:
        fsr = 0x200 | LONG_STATUS[kind] + level
    else:
        fsr = SHORT_FS[(kind, level)] | domain << 4
    raise Abort(("guest", fsr | (0x800 if access == WR else 0), va))


def ref_s2(w: World, ipa: int, need: Prot, access, va, s1ptw: bool):
    """Stage 2 of one IPA for `need`: its PA, or a hypervisor abort."""
    # a chunk of pages none of which is mapped has no table: as if the chunk were unmapped
    chunks = [c if isinstance(c, S2Attr) or c and any(c) else None for c in w.chunks]
    chunk = (ipa - IPA_BASE) // CHUNK
    if not (IPA_BASE <= ipa < IPA_BASE + GIB) or chunks == [None, None]:
        hyp_abort(access, "TR", 1, ipa, va, s1ptw)
    c = chunks[chunk] if chunk < len(chunks) else None
    if c is None:
        hyp_abort(access, "TR", 2, ipa, va, s1ptw)
    attr, level = (c, 2) if isinstance(c, S2Attr) else (None, 3)
    if level == 3:
        page = (ipa >> 12) & 0x1FF
        attr = c[page] if page < 16 else None
        if attr is None:
            hyp_abort(access, "TR", 3, ipa, va, s1ptw)
    if not attr.af:
        hyp_abort(access, "AF", level, ipa, va, s1ptw)
    if attr.prot & need != need or (s1ptw and w.ptw and attr.device):
        hyp_abort(access, "PERM", level, ipa, va, s1ptw)
    return ipa - IPA_BASE                        # the home offset: any PA will do


AP_SHORT = {0b000: ("", ""), 0b001: ("rw", ""), 0b010: ("rw", "r"), 0b011: ("rw", "rw"),
            0b101: ("r", ""), 0b110: ("r", "r"), 0b111: ("r", "r")}     # Table B3-8
AP_AFE = {0b00: ("rw", ""), 0b01: ("rw", "rw"), 0b10: ("r", ""), 0b11: ("r", "r")}  # B3-9


def permitted(perm: str, access, xn: bool) -> bool:
    return {RD: "r" in perm, WR: "w" in perm, FE: "r" in perm and not xn}[access]


def ref_short(w: World, va: int, access, priv) -> int:
    desc = lambda ipa: ref_s2(w, ipa, Prot.R, access, va, True)        # noqa: E731
    desc(IPA_BASE + 4 * (va >> 20))
    e = w.l1.get(va >> 20)
    if e is None:
        guest_abort(w, access, "TR", 1, va)
    if e["kind"] == "section":
        level, leaf, out = 1, e, e["out"] | va & 0xF_FFFF
    else:
        level = 2
        desc(e["table"] + 4 * (va >> 12 & 0xFF))
        leaf = e["l2"].get(va >> 12 & 0xFF)
        if leaf is None:
            guest_abort(w, access, "TR", 2, va, e["domain"])
        out = leaf["out"] | va & (0xFFFF if leaf["kind"] == "large" else 0xFFF)
    ap, domain = leaf["ap"], e["domain"]
    if w.sctlr & SCTLR_AFE and not ap & 1:
        guest_abort(w, access, "AF", level, va, domain)
    dacr = w.dacr >> 2 * domain & 3
    if dacr in (0, 2):
        guest_abort(w, access, "DOM", level, va, domain)
    if dacr == 1:
        perm = (AP_AFE[ap >> 1] if w.sctlr & SCTLR_AFE else AP_SHORT[ap])[priv == PL0]
        xn = leaf["xn"] or (priv == PL1 and e["pxn"])
        if not permitted(perm, access, xn):
            guest_abort(w, access, "PERM", level, va, domain)
    return out


def ref_long(w: World, va: int, access, priv) -> int:
    table, entries, shift = IPA_BASE, w.l1, 30
    no_pl0 = no_write = xn_limit = pxn_limit = False
    for level in (1, 2, 3):
        idx = va >> shift & (3 if level == 1 else 0x1FF)
        ref_s2(w, table + 8 * idx, Prot.R, access, va, True)
        e = entries.get(idx)
        if e is None or e["kind"] == "invalid":
            guest_abort(w, access, "TR", level, va)
        if e["kind"] != "table":
            break
        no_pl0 |= bool(e["aptable"] & 1)
        no_write |= bool(e["aptable"] & 2)
        xn_limit |= e["xntable"]
        pxn_limit |= e["pxntable"]
        table, entries, shift = e["table"], e["next"], shift - 9
    if not e["af"]:
        guest_abort(w, access, "AF", level, va)
    perm = AP_AFE[e["ap"]][priv == PL0]
    if (priv == PL0 and no_pl0) or (access == WR and no_write):
        perm = ""
    xn = e["xn"] or xn_limit or (priv == PL1 and (e["pxn"] or pxn_limit))
    if not permitted(perm, access, xn):
        guest_abort(w, access, "PERM", level, va)
    return e["out"] | va & ((1 << shift) - 1)


def reference(w: World, va: int, access, priv):
    try:
        ipa = (ref_long if w.lpae else ref_short)(w, va, access, priv)
        offset = ref_s2(w, ipa & ~0xFFF, NEED[access], access, va, False)
        return ("pa", RAM + offset | va & 0xFFF)
    except Abort as a:
        return a.args[0]


# ---- writing the model out: stage 2, then the stage-1 tables at their home PAs ------------
def build(w: World) -> Guest:
    g = Guest(hcr=HCR_VM | (HCR_PTW if w.ptw else 0))
    for i, c in enumerate(w.chunks):
        if isinstance(c, S2Attr):
            g.map(IPA_BASE + i * CHUNK, 2, c.prot, c.af, c.device)
        elif c is not None:
            for page, a in enumerate(c):
                if a is not None:
                    g.map(IPA_BASE + i * CHUNK + (page << 12), 3, a.prot, a.af, a.device)
    if w.lpae:
        _write_long(g, IPA_BASE, w.l1, 1)
        regime = S1Regime(sctlr=w.sctlr, ttbcr=ttbcr_ld(), ttbr0=IPA_BASE)
    else:
        for idx, e in w.l1.items():
            if e["kind"] == "section":
                d = sd_section(e["out"], e["ap"], e["domain"], e["xn"], e["pxn"])
            else:
                d = sd_table(e["table"], e["domain"], e["pxn"])
                for j, p in e["l2"].items():
                    enc = sd_large if p["kind"] == "large" else sd_small
                    g.w32(e["table"] + 4 * j, enc(p["out"], p["ap"], p["xn"]))
            g.w32(IPA_BASE + 4 * idx, d)
        regime = S1Regime(sctlr=w.sctlr, ttbr0=IPA_BASE, dacr=w.dacr)
    g.mmu.set_stage1(regime)
    return g


def _write_long(g: Guest, table: int, entries: dict, level: int) -> None:
    for idx, e in entries.items():
        if e["kind"] == "table":
            d = ld_table(e["table"], e["aptable"], e["xntable"], e["pxntable"])
            _write_long(g, e["table"], e["next"], level + 1)
        elif e["kind"] == "invalid":
            d = ld_block(e["out"])                 # 0b01 at level 3: invalid
        else:
            enc = ld_page if level == 3 else ld_block
            d = enc(e["out"], e["ap"], e["xn"], e["pxn"], int(e["af"]))
        g.w64(table + 8 * idx, d)


# ---- strategies -------------------------------------------------------------------------
def weighted(*choices):
    """sampled_from with weights: weighted((3, a), (1, b))."""
    return st.sampled_from([v for n, v in choices for _ in range(n)])


s2attr = st.builds(S2Attr, weighted((8, Prot.RWX), (1, Prot.RW), (1, Prot.R), (1, Prot.RX),
                                    (1, Prot.W), (1, Prot.NONE)),
                   weighted((9, True), (1, False)), weighted((7, False), (1, True)))
page_attr = weighted((6, "good"), (2, "any"), (1, "none")).flatmap(
    lambda kind: {"good": st.just(S2Attr()), "any": s2attr, "none": st.none()}[kind])
chunk = weighted((1, "none"), (2, "block"), (3, "pages")).flatmap(
    lambda kind: {"none": st.none(), "block": s2attr,
                  "pages": st.lists(page_attr, min_size=16, max_size=16)}[kind])
WINDOW_PAGES = [IPA_BASE + (c << 21) + (p << 12) for c in (0, 1) for p in range(9)]
PAGES = weighted((8, "in"), (1, "out")).flatmap(lambda where: st.sampled_from(
    WINDOW_PAGES if where == "in" else [IPA_BASE + 2 * CHUNK, 0x8000_0000]))
SECTIONS = weighted((6, "in"), (1, "out")).flatmap(lambda where: st.sampled_from(
    [IPA_BASE + (i << 20) for i in range(4)] if where == "in" else
    [IPA_BASE + 2 * CHUNK, 0x8000_0000, 0]))
BLOCKS = {1: weighted((4, IPA_BASE), (1, 0), (1, 0x8000_0000)),
          2: weighted((3, IPA_BASE), (3, IPA_BASE + CHUNK), (1, IPA_BASE + 2 * CHUNK),
                      (1, 0x8000_0000)),
          3: PAGES}
SD_L1_IDX = [0x000, 0x001, 0x3FF, 0x400, 0x801, 0xC00, 0xFFF]
SD_L2_SLOTS = [0x4000_4000, 0x4000_4400, 0x4020_0000, 0x4020_0400, 0x4020_5000, 0x4020_5800]
SD_L2_IDX = [0x00, 0x01, 0x05, 0x13, 0xFF]
LD_IDX = [0x000, 0x001, 0x1FF]
LD_TABLE_PAGES = [IPA_BASE + (c << 21) + (p << 12) for p in range(1, 9) for c in (0, 1)]
bit = weighted((3, 0), (1, 1))
sd_ap = weighted((6, 0b011), (1, 0b000), (1, 0b001), (1, 0b010), (1, 0b101), (1, 0b110),
                 (1, 0b111))
ld_ap = weighted((3, 0b01), (1, 0b00), (1, 0b10), (1, 0b11))
two_bits = weighted((5, 0), (1, 1), (1, 2), (1, 3))


@st.composite
def short_world(draw):
    l1, slots = {}, iter(SD_L2_SLOTS)
    for idx in draw(st.lists(st.sampled_from(SD_L1_IDX), unique=True, min_size=1, max_size=6)):
        e = dict(domain=draw(two_bits), pxn=draw(bit))
        if draw(st.booleans()):
            e.update(kind="section", ap=draw(sd_ap), xn=draw(bit), out=draw(SECTIONS))
        else:
            l2 = {j: dict(kind=draw(weighted((3, "small"), (1, "large"))), xn=draw(bit),
                          ap=draw(sd_ap), out=draw(PAGES))
                  for j in draw(st.lists(st.sampled_from(SD_L2_IDX), unique=True, max_size=4))}
            for j, p in sorted(l2.items()):
                if p["kind"] == "large":
                    # a large page's descriptor fills its 16 aligned entries (B3.5.1: one
                    # copy alone is UNPREDICTABLE - hardware may cache it for all 64 KiB)
                    p["out"] &= ~0xFFFF
                    for k in range(j & ~15, (j & ~15) + 16):
                        l2[k] = p
            e.update(kind="table", table=next(slots), l2=l2)
        l1[idx] = e
    dacr = draw(weighted((3, "clients"), (1, "any")).flatmap(
        lambda d: st.just(0x55) if d == "clients" else st.integers(0, 0xFF)))
    return World(chunks=[draw(chunk), draw(chunk)], ptw=draw(st.booleans()), lpae=False,
                 sctlr=SCTLR_M | draw(weighted((3, 0), (1, SCTLR_AFE))), dacr=dacr, l1=l1)


@st.composite
def long_world(draw):
    tables = iter(LD_TABLE_PAGES)

    def level(n):
        entries = {}
        for idx in draw(st.lists(st.sampled_from(range(4) if n == 1 else LD_IDX), unique=True,
                                 min_size=1, max_size=3)):
            kind = draw(weighted((1, "leaf"), (2, "table")) if n < 3 else
                        weighted((4, "leaf"), (1, "invalid")))
            if kind == "table":
                e = dict(kind="table", table=next(tables), aptable=draw(two_bits),
                         xntable=draw(bit), pxntable=draw(bit))
                e["next"] = level(n + 1)
            else:
                e = dict(kind=kind, out=draw(BLOCKS[n]), ap=draw(ld_ap), xn=draw(bit),
                         pxn=draw(bit), af=draw(weighted((9, True), (1, False))))
            entries[idx] = e
        return entries
    return World(chunks=[draw(chunk), draw(chunk)], ptw=draw(st.booleans()), lpae=True,
                 l1=level(1))


@st.composite
def probe(draw, w: World):
    """A VA, mostly along a path the model maps (else anywhere the tables can index)."""
    def index(entries: dict, choices):
        return draw(st.sampled_from(sorted(entries)) if entries and draw(weighted((3, True),
                    (1, False))) else st.sampled_from(choices))
    if w.lpae:
        va, entries = 0, w.l1
        for shift, choices in ((30, range(4)), (21, LD_IDX), (12, [0, 1, 5, 0x1FF])):
            idx = index(entries, choices)
            va |= idx << shift
            e = entries.get(idx)
            entries = e["next"] if e is not None and e["kind"] == "table" else {}
    else:
        idx = index(w.l1, SD_L1_IDX)
        e = w.l1.get(idx)
        va = idx << 20 | index(e["l2"] if e and e["kind"] == "table" else {}, SD_L2_IDX) << 12
    return (va | draw(st.integers(0, 0xFFF)), draw(st.sampled_from([RD, WR, FE])),
            draw(st.sampled_from([PL1, PL0])))


def check_world(w: World, data) -> None:
    g = build(w)
    for va, access, priv in data.draw(st.lists(probe(w), min_size=1, max_size=12)):
        assert observe(g.mmu, va, access, priv) == reference(w, va, access, priv), \
            (hex(va), access, priv)


@settings(max_examples=150, deadline=None)
@given(short_world(), st.data())
def test_two_stage_short_descriptor_matches_reference(w, data):
    check_world(w, data)


@settings(max_examples=150, deadline=None)
@given(long_world(), st.data())
def test_two_stage_long_descriptor_matches_reference(w, data):
    check_world(w, data)
