"""The short-descriptor stage-1 walk (DDI 0406C B3.5): sections, supersections, large and
small pages, domains, AP[2:0] with the access-flag model (SCTLR.AFE), XN, PXN, nG.

TTBR0 covers VA[31:32-N] == 0 when TTBCR.N > 0, TTBR1 the rest; TTBCR.PD0/PD1 disable a
walk (a section translation fault). First-level descriptors ([1:0]): 00 fault, 01 page table,
1x section (bit 18 set: supersection; bit 0: PXN). Second-level: 00 fault, 01 large page (64
KiB), 1x small page (4 KiB; bit 0: XN). Faults found here, in walk order: translation
(level 1 or 2), access flag (AFE=1 and AP[0]=0); domain and permission are checked against the
DACR at access time (hyp.arch.s1.check), as a TLB caches the domain, not its access.

Supersections' extended base (PA[39:32]) is honoured: the output address can exceed 32 bits,
and stage 2 translates it like any IPA.
"""
from __future__ import annotations

from typing import Callable

from . import fsr
from .descriptors import Prot
from .fault import Access, Fault
from .s1 import SCTLR_AFE, S1Fault, S1Leaf, S1Regime, apply_wxn

TTBCR_N = 0x7
TTBCR_PD0 = 1 << 4
TTBCR_PD1 = 1 << 5

# AP[2:0] -> (PL1, PL0) permissions, without the access-flag model (B3.7.1, Table B3-8).
_AP = {0b000: (Prot.NONE, Prot.NONE), 0b001: (Prot.RW, Prot.NONE),
       0b010: (Prot.RW, Prot.R), 0b011: (Prot.RW, Prot.RW), 0b100: (Prot.NONE, Prot.NONE),
       0b101: (Prot.R, Prot.NONE), 0b110: (Prot.R, Prot.R), 0b111: (Prot.R, Prot.R)}
# AP[2:1] with SCTLR.AFE = 1 (the simplified model, Table B3-9); AP[0] is the access flag.
_AP_AFE = {0b00: (Prot.RW, Prot.NONE), 0b01: (Prot.RW, Prot.RW),
           0b10: (Prot.R, Prot.NONE), 0b11: (Prot.R, Prot.R)}

Read = Callable[[int, int], "int | Fault"]      # (descriptor IPA, level) -> value | S2 fault


def select_ttbr(regime: S1Regime, va: int) -> tuple[int, int] | None:
    """(table base IPA, N for the index width) for `va`, or None if PD0/PD1 disables it."""
    n = regime.ttbcr & TTBCR_N
    if n == 0 or va >> (32 - n) == 0:
        if regime.ttbcr & TTBCR_PD0:
            return None
        return regime.ttbr0 & ~((1 << (14 - n)) - 1) & 0xFFFFFFFF, n
    if regime.ttbcr & TTBCR_PD1:
        return None
    return regime.ttbr1 & ~0x3FFF & 0xFFFFFFFF, 0


def _perms(regime: S1Regime, ap: int, xn: bool, pxn: bool) -> tuple[Prot, Prot]:
    """PL1/PL0 permissions: readable and not XN (PXN for PL1) is executable (B3.7.2)."""
    pl1, pl0 = (_AP_AFE[ap >> 1] if regime.sctlr & SCTLR_AFE else _AP[ap])
    if pl1 & Prot.R and not (xn or pxn):
        pl1 |= Prot.X
    if pl0 & Prot.R and not xn:
        pl0 |= Prot.X
    return apply_wxn(regime, pl1, pl0)


def walk(regime: S1Regime, va: int, access: Access, read: Read,
         steps: list | None = None) -> S1Leaf | S1Fault | Fault:
    """Translate `va` (stage 1 only). `read(ipa, level)` reads a 32-bit descriptor."""
    va &= 0xFFFFFFFF

    def fault(status: fsr.Status, level: int, domain: int = 0) -> S1Fault:
        return S1Fault(status, level, False, va, access, domain)

    sel = select_ttbr(regime, va)
    if sel is None:
        return fault(fsr.Status.TRANSLATION, 1)
    base, n = sel
    l1_addr = base | ((va >> 20) & ((1 << (12 - n)) - 1)) << 2
    l1 = read(l1_addr, 1)
    if isinstance(l1, Fault):
        return l1
    if steps is not None:
        steps.append((1, l1_addr, l1))
    kind = l1 & 3
    if kind == 0:
        return fault(fsr.Status.TRANSLATION, 1)
    if kind == 1:                                   # a page table
        domain = l1 >> 5 & 0xF
        pxn = bool(l1 >> 2 & 1)
        l2_addr = (l1 & 0xFFFFFC00) | ((va >> 12) & 0xFF) << 2
        l2 = read(l2_addr, 2)
        if isinstance(l2, Fault):
            return l2
        if steps is not None:
            steps.append((2, l2_addr, l2))
        if l2 & 3 == 0:
            return fault(fsr.Status.TRANSLATION, 2, domain)
        ng = bool(l2 >> 11 & 1)
        ap = (l2 >> 4 & 3) | (l2 >> 7 & 4)
        if l2 & 3 == 1:                             # large page, 64 KiB
            size, out = 1 << 16, (l2 & 0xFFFF0000) | (va & 0xF000)
            xn = bool(l2 >> 15 & 1)
        else:                                       # small page, 4 KiB
            size, out = 1 << 12, l2 & 0xFFFFF000
            xn = bool(l2 & 1)
        level = 2
    else:                                           # a section or supersection
        pxn = bool(l1 & 1)
        xn = bool(l1 >> 4 & 1)
        ng = bool(l1 >> 17 & 1)
        ap = (l1 >> 10 & 3) | (l1 >> 13 & 4)
        if l1 >> 18 & 1:                            # supersection, 16 MiB, domain 0
            domain, size = 0, 1 << 24
            out = ((l1 & 0xFF000000) | (va & 0x00FFF000) | (l1 >> 20 & 0xF) << 32
                   | (l1 >> 5 & 0xF) << 36)
        else:
            domain, size = l1 >> 5 & 0xF, 1 << 20
            out = (l1 & 0xFFF00000) | (va & 0x000FF000)
        level = 1
    if regime.sctlr & SCTLR_AFE and not ap & 1:
        return fault(fsr.Status.ACCESS_FLAG, level, domain)
    pl1, pl0 = _perms(regime, ap, xn, pxn)
    return S1Leaf(va=va, ipa=out & ~0xFFF, base_va=va & ~(size - 1), size=size, pl1=pl1,
                  pl0=pl0, domain=domain, global_=not ng, level=level)
