"""Test helpers for stage 1: descriptors and control bits encoded by hand from the ARM ARM
bit layouts (DDI 0406C B3.5.1 short descriptors, B3.6.1-B3.6.2 long descriptors, B4.1.130
SCTLR, B4.1.153 TTBCR), independent of hyp.arch; and a guest (host RAM, stage-2 tables, MMU)
for the two-stage and TLB tests. Not a test module: the test files import it.
"""
from __future__ import annotations

from typing import NamedTuple

from hyp.arch.descriptors import MEMATTR_DEVICE, MEMATTR_NORMAL_WB, Prot, make_leaf
from hyp.arch.fault import Access
from hyp.arch.mmu import MMU
from hyp.arch.regs import make_vtcr, make_vttbr
from hyp.arch.s1 import S1Fault, S1Leaf, S1Regime, check
from hyp.arch.tlb import TLB
from test_walk import Tables          # the stage-2 table builder of tests/arch/test_walk.py

# SCTLR (B4.1.130)
SCTLR_M = 1 << 0
SCTLR_WXN = 1 << 19
SCTLR_UWXN = 1 << 20
SCTLR_AFE = 1 << 29
# TTBCR (B4.1.153): short format N [2:0], PD0 [4], PD1 [5]; long format T0SZ [2:0], EPD0 [7],
# T1SZ [18:16], A1 [22], EPD1 [23]; EAE [31]
TTBCR_PD0 = 1 << 4
TTBCR_PD1 = 1 << 5
TTBCR_EPD0 = 1 << 7
TTBCR_A1 = 1 << 22
TTBCR_EPD1 = 1 << 23
TTBCR_EAE = 1 << 31
# HCR (B4.1.65)
HCR_VM = 1 << 0
HCR_PTW = 1 << 2


def ttbcr_ld(t0sz: int = 0, t1sz: int = 0, extra: int = 0) -> int:
    return TTBCR_EAE | t0sz | t1sz << 16 | extra


class Abort(NamedTuple):
    """The guest's own abort: the DFSR/IFSR value it must read."""
    fsr: int


def memory(descs: dict[int, int], log: list | None = None):
    """read(addr, level) for a walker: only the listed addresses may be read (KeyError)."""
    def read(addr, level):
        if log is not None:
            log.append((addr, level))
        return descs[addr]
    return read


def outcome(walk, regime: S1Regime, va: int, access: Access, priv: int, read):
    """What the guest sees from a walk plus the access-time check: the output address, or
    Abort(DFSR/IFSR) - whose FAR must be `va`."""
    r = walk(regime, va, access, read)
    if isinstance(r, S1Leaf):
        f = check(r, regime, access, priv)
        if f is None:
            return r.ipa | (va & 0xFFF)
        r = f
    assert isinstance(r, S1Fault), r
    assert r.va == va                          # DFAR / IFAR
    return Abort(r.fsr())


# ---- short-descriptor format (B3.5.1, Figures B3-4 and B3-5) ------------------------------
def sd_table(pa: int, domain: int = 0, pxn: int = 0) -> int:
    """First level, page table: base [31:10], domain [8:5], PXN [2], 0b01."""
    return pa & 0xFFFF_FC00 | domain << 5 | pxn << 2 | 0b01


def sd_section(pa: int, ap: int = 0b011, domain: int = 0, xn: int = 0, pxn: int = 0,
               ng: int = 0) -> int:
    """Section: base [31:20], nG [17], AP[2] [15], AP[1:0] [11:10], domain [8:5], XN [4],
    0b1:PXN in [1:0]."""
    return (pa & 0xFFF0_0000 | ng << 17 | (ap >> 2) << 15 | (ap & 3) << 10 | domain << 5
            | xn << 4 | 0b10 | pxn)


def sd_supersection(pa: int, ap: int = 0b011, xn: int = 0, pxn: int = 0, ng: int = 0) -> int:
    """Supersection: PA[31:24] at [31:24], PA[35:32] at [23:20], bit 18 set, PA[39:36] at
    [8:5] (no domain field: domain 0)."""
    return (pa & 0xFF00_0000 | (pa >> 32 & 0xF) << 20 | 1 << 18 | ng << 17 | (ap >> 2) << 15
            | (ap & 3) << 10 | (pa >> 36 & 0xF) << 5 | xn << 4 | 0b10 | pxn)


def sd_large(pa: int, ap: int = 0b011, xn: int = 0, ng: int = 0) -> int:
    """Second level, large page: base [31:16], XN [15], nG [11], AP[2] [9], AP[1:0] [5:4], 0b01."""
    return pa & 0xFFFF_0000 | xn << 15 | ng << 11 | (ap >> 2) << 9 | (ap & 3) << 4 | 0b01


def sd_small(pa: int, ap: int = 0b011, xn: int = 0, ng: int = 0) -> int:
    """Second level, small page: base [31:12], nG [11], AP[2] [9], AP[1:0] [5:4], 0b1:XN."""
    return pa & 0xFFFF_F000 | ng << 11 | (ap >> 2) << 9 | (ap & 3) << 4 | 0b10 | xn


# ---- long-descriptor format (B3.6.1, B3.6.2) -------------------------------------------
def ld_table(pa: int, aptable: int = 0, xntable: int = 0, pxntable: int = 0) -> int:
    """Table: APTable [62:61], XNTable [60], PXNTable [59], address [39:12], 0b11."""
    return aptable << 61 | xntable << 60 | pxntable << 59 | pa & 0xFF_FFFF_F000 | 0b11


def _ld_leaf(pa: int, ap: int, xn: int, pxn: int, af: int, ng: int, attr: int) -> int:
    """Leaf attributes: XN [54], PXN [53], nG [11], AF [10], AP[2:1] [7:6], AttrIndx [4:2].
    `pa` is taken whole: tests put bits above 39 in on purpose."""
    return xn << 54 | pxn << 53 | pa | ng << 11 | af << 10 | ap << 6 | attr << 2


def ld_block(pa: int, ap: int = 0b00, xn: int = 0, pxn: int = 0, af: int = 1, ng: int = 0,
             attr: int = 0) -> int:
    return _ld_leaf(pa, ap, xn, pxn, af, ng, attr) | 0b01


def ld_page(pa: int, ap: int = 0b00, xn: int = 0, pxn: int = 0, af: int = 1, ng: int = 0,
            attr: int = 0) -> int:
    return _ld_leaf(pa, ap, xn, pxn, af, ng, attr) | 0b11


# ---- a guest: host RAM, stage-2 tables (tests/arch/test_walk.py's builder), an MMU --------
BASE = 0x1_0000_0000          # host RAM, as test_walk.Tables lays it out (8 MiB)
IPA_BASE = 0x4000_0000        # the guest's RAM window: two 2 MiB chunks of IPA ...
RAM = BASE + 0x40_0000        # ... backed by the upper 4 MiB of host RAM


class Guest:
    """A VM: stage-2 tables in host RAM, the guest's IPA window [IPA_BASE, +4 MiB) backed
    at RAM, an MMU with stage 2 on. Stage-1 tables are written at their home PA."""

    def __init__(self, vmid: int = 1, hcr: int = HCR_VM) -> None:
        self.s2 = Tables(vmid=vmid)
        self.mem = self.s2.mem
        self.mmu = MMU(self.mem, TLB())
        self.mmu.set_stage2(hcr, make_vtcr(-8, 1), make_vttbr(BASE, vmid))

    @staticmethod
    def home(ipa: int) -> int:
        assert IPA_BASE <= ipa < IPA_BASE + (4 << 20), hex(ipa)
        return RAM + ipa - IPA_BASE

    def map(self, ipa: int, level: int, prot: Prot = Prot.RWX, af: bool = True,
            device: bool = False) -> None:
        """Stage 2: the 2 MiB block (level 2) or 4 KiB page (level 3) of `ipa` to its home."""
        ipa &= ~((1 << (21 if level == 2 else 12)) - 1)
        attr = MEMATTR_DEVICE if device else MEMATTR_NORMAL_WB
        self.s2.raw(ipa, level, make_leaf(self.home(ipa), level, prot, af=af, memattr=attr))

    def map_ram(self) -> None:
        """Stage 2: the whole window, two 2 MiB blocks RWX."""
        self.map(IPA_BASE, 2)
        self.map(IPA_BASE + (2 << 20), 2)

    def w32(self, ipa: int, value: int) -> None:
        self.mem.write32(self.home(ipa), value)

    def w64(self, ipa: int, value: int) -> None:
        self.mem.write64(self.home(ipa), value)
