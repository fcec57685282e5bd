"""LPAE long-descriptor format (DDI 0406C B3.6.1-B3.6.2), stage-2 view.

Descriptor bits are read and written only through `Field`s named as in the ARM ARM. Stage-2
access permissions are an abstract `Prot` converted to S2AP/XN bits in exactly one place
(`prot_to_bits`) and back in one place (`bits_to_prot`).
"""
from __future__ import annotations

import enum
from .fields import Field


# Descriptor type, bits [1:0] (B3.6.1).
DESC_VALID = Field(0, 0)
DESC_TYPE = Field(1, 1)          # 1: table (levels 1-2) / page (level 3); 0: block (levels 1-2)
# Output / next-level table address, bits [39:12].
DESC_ADDR = Field(39, 12)
# Stage-2 leaf attributes (B3.6.2 / B3.8.2 for MemAttr).
S2_MEMATTR = Field(5, 2)
S2_S2AP = Field(7, 6)            # HAP[2:1]
S2_SH = Field(9, 8)
S2_AF = Field(10, 10)
S2_CONT = Field(52, 52)
S2_XN = Field(54, 54)

ADDR_MASK = DESC_ADDR.mask       # bits [39:12]
LEVEL_SHIFT = {1: 30, 2: 21, 3: 12}
LEVEL_SIZE = {lvl: 1 << s for lvl, s in LEVEL_SHIFT.items()}
BLOCK_LEVELS = (1, 2)

# MemAttr for stage 2: 0b1111 Normal write-back cacheable, 0b0001 Device-nGnRE (B3.8.2).
MEMATTR_NORMAL_WB = 0b1111
MEMATTR_DEVICE = 0b0001
SH_INNER = 0b11


class Prot(enum.IntFlag):
    """Abstract stage-2 permissions of a leaf."""
    NONE = 0
    R = 1
    W = 2
    X = 4
    RW = R | W
    RX = R | X
    RWX = R | W | X


def prot_to_bits(prot: Prot) -> int:
    """Prot -> S2AP (HAP) and XN bits of a stage-2 leaf descriptor."""
    s2ap = (1 if prot & Prot.R else 0) | (2 if prot & Prot.W else 0)
    bits = S2_S2AP.set(0, s2ap)
    if not prot & Prot.X:
        bits = S2_XN.set(bits, 1)
    return bits


def bits_to_prot(desc: int) -> Prot:
    """Stage-2 leaf descriptor -> Prot (S2AP 01 read-only, 10 write-only, 11 read/write)."""
    return _PROTS[((desc >> 6) & 3) | (0 if desc & S2_XN.mask else 4)]


PROT_BITS_MASK = S2_S2AP.mask | S2_XN.mask
_PROTS = [Prot(v) for v in range(8)]       # S2AP (R=bit0, W=bit1) | X=bit2 -> Prot


class Kind(enum.Enum):
    INVALID = "invalid"
    TABLE = "table"
    BLOCK = "block"
    PAGE = "page"


def kind(desc: int, level: int) -> Kind:
    """Classify a descriptor read at `level` (0b01 at level 3 is invalid, B3.6.1)."""
    if not desc & 1:
        return Kind.INVALID
    if desc & 2:
        return Kind.PAGE if level == 3 else Kind.TABLE
    return Kind.BLOCK if level in BLOCK_LEVELS else Kind.INVALID


def out_addr(desc: int, level: int) -> int:
    """Output address of a block/page (bits below the level's size are ignored)."""
    return desc & ADDR_MASK & ~(LEVEL_SIZE[level] - 1)


def make_table(table_pa: int) -> int:
    return (table_pa & ADDR_MASK) | 0b11


def make_leaf(pa: int, level: int, prot: Prot, *, af: bool = True,
              memattr: int = MEMATTR_NORMAL_WB, sh: int = SH_INNER) -> int:
    """A stage-2 block (levels 1-2) or page (level 3) descriptor."""
    if pa & (LEVEL_SIZE[level] - 1):
        raise ValueError(f"PA {pa:#x} not aligned to a level-{level} leaf")
    desc = (pa & ADDR_MASK) | (0b11 if level == 3 else 0b01)
    desc = S2_MEMATTR.set(desc, memattr)
    desc = S2_SH.set(desc, sh)
    desc = S2_AF.set(desc, 1 if af else 0)
    return desc | prot_to_bits(prot)


def with_prot(desc: int, prot: Prot) -> int:
    """The same leaf with other permissions."""
    return (desc & ~PROT_BITS_MASK) | prot_to_bits(prot)


def describe(desc: int, level: int) -> str:
    k = kind(desc, level)
    if k is Kind.INVALID:
        return f"{desc:#018x} invalid"
    if k is Kind.TABLE:
        return f"{desc:#018x} table -> {desc & ADDR_MASK:#x}"
    p = bits_to_prot(desc)
    perm = ("r" if p & Prot.R else "-") + ("w" if p & Prot.W else "-") + ("x" if p & Prot.X else "-")
    return (f"{desc:#018x} {k.value} -> {out_addr(desc, level):#x} S2AP={S2_S2AP.get(desc):02b} "
            f"{perm} AF={S2_AF.get(desc)} XN={S2_XN.get(desc)} MemAttr={S2_MEMATTR.get(desc):04b}")
