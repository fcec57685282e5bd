"""The long-descriptor (LPAE) stage-1 walk (DDI 0406C B3.6): TTBR0/TTBR1 split by
TTBCR.T0SZ/T1SZ, 1 GiB and 2 MiB blocks and 4 KiB pages, hierarchical APTable/XNTable/
PXNTable limits, AP[2:1], XN, PXN, AF, nG; the ASID lives in TTBR0 or TTBR1 (TTBCR.A1).

Region selection (Table B3-32): with T0SZ and T1SZ both 0, TTBR0 covers everything; otherwise
TTBR0 covers VA < 2^(32-T0SZ) and TTBR1 VA >= 2^32 - 2^(32-T1SZ) (all of the rest when T1SZ is
0 but T0SZ is not, and vice versa); a VA between the two is a level-1 translation fault, as is
a region whose TTBCR.EPDn disables walks. A region of 2^(32-TnSZ) bytes starts at level 1 when
TnSZ <= 1, else at level 2. Faults in walk order: address size (TTBR or descriptor output
bits [47:40] non-zero), translation, access flag; permissions are checked at access time.
"""
from __future__ import annotations

from typing import Callable

from . import fsr
from .descriptors import Prot
from .fault import Access, Fault
from .s1 import S1Fault, S1Leaf, S1Regime, apply_wxn

T0SZ, T1SZ = 0x7, 0x7 << 16
EPD0, EPD1 = 1 << 7, 1 << 23
_ADDR = ((1 << 40) - 1) & ~0xFFF
_HIGH = ((1 << 48) - 1) & ~((1 << 40) - 1)
_SHIFT = {1: 30, 2: 21, 3: 12}
# AP[2:1] -> (PL1, PL0) (B3.7.1, Table B3-9)
_AP = {0b00: (Prot.RW, Prot.NONE), 0b01: (Prot.RW, Prot.RW),
       0b10: (Prot.R, Prot.NONE), 0b11: (Prot.R, Prot.R)}

Read = Callable[[int, int], "int | Fault"]      # (descriptor IPA, level) -> value | S2 fault


def select_region(regime: S1Regime, va: int) -> tuple[int, int] | None:
    """(TTBR value, TnSZ) of the region holding `va`, or None (a translation fault)."""
    c = regime.ttbcr
    t0, t1 = c & T0SZ, (c & T1SZ) >> 16
    in0 = va < (1 << (32 - t0)) if t0 else not t1 or va < (1 << 32) - (1 << (32 - t1))
    in1 = not in0 and (va >= (1 << 32) - (1 << (32 - t1)) if t1 else bool(t0))
    if in0:
        return None if c & EPD0 else (regime.ttbr0, t0)
    if in1:
        return None if c & EPD1 else (regime.ttbr1, t1)
    return None


def walk(regime: S1Regime, va: int, access: Access, read: Read,
         steps: list | None = None) -> S1Leaf | S1Fault | Fault:
    """Translate `va` (stage 1 only). `read(ipa, level)` reads a 64-bit descriptor."""
    va &= 0xFFFFFFFF

    def fault(status: fsr.Status, level: int) -> S1Fault:
        return S1Fault(status, level, True, va, access)

    sel = select_region(regime, va)
    if sel is None:
        return fault(fsr.Status.TRANSLATION, 1)
    ttbr, tsz = sel
    if ttbr & _HIGH:
        return fault(fsr.Status.ADDRESS_SIZE, 0)
    start = level = 1 if tsz <= 1 else 2
    top = 32 - tsz                                   # VA bits this region resolves
    x = top - _SHIFT[start] + 3                      # the first table is 2^x bytes (<= 4 KiB)
    table = ttbr & ((1 << 40) - 1) & ~((1 << x) - 1)
    ap_limit, xn_limit, pxn_limit = 0, False, False
    while True:
        shift = _SHIFT[level]
        width = top - shift if level == start else 9
        addr = table + 8 * ((va >> shift) & ((1 << width) - 1))
        desc = read(addr, level)
        if isinstance(desc, Fault):
            return desc
        if steps is not None:
            steps.append((level, addr, desc))
        if not desc & 1 or (level == 3 and not desc & 2):
            return fault(fsr.Status.TRANSLATION, level)
        if desc & _HIGH:
            return fault(fsr.Status.ADDRESS_SIZE, level)
        if desc & 2 and level < 3:                   # a table: limits for what follows
            ap_limit |= desc >> 61 & 3
            xn_limit |= bool(desc >> 60 & 1)
            pxn_limit |= bool(desc >> 59 & 1)
            table = desc & _ADDR
            level += 1
            continue
        if not desc >> 10 & 1:
            return fault(fsr.Status.ACCESS_FLAG, level)
        size = 1 << shift
        pl1, pl0 = _AP[desc >> 6 & 3]
        if ap_limit & 1:                             # APTable[0]: no PL0 access below
            pl0 = Prot.NONE
        if ap_limit & 2:                             # APTable[1]: no writes below
            pl1, pl0 = pl1 & ~Prot.W, pl0 & ~Prot.W
        xn = bool(desc >> 54 & 1) or xn_limit
        pxn = bool(desc >> 53 & 1) or pxn_limit
        if pl1 & Prot.R and not (xn or pxn):
            pl1 |= Prot.X
        if pl0 & Prot.R and not xn:
            pl0 |= Prot.X
        pl1, pl0 = apply_wxn(regime, Prot(pl1), Prot(pl0))
        out = (desc & _ADDR & ~(size - 1)) | (va & (size - 1) & ~0xFFF)
        attr = (regime.mair1 << 32 | regime.mair0) >> (8 * (desc >> 2 & 7)) & 0xFF
        return S1Leaf(va=va, ipa=out, base_va=va & ~(size - 1), size=size, pl1=pl1, pl0=pl0,
                      domain=None, global_=not desc >> 11 & 1, level=level,
                      device=attr >> 4 == 0)
