"""Hyp-mode registers that control stage 2: HCR, VTCR, VTTBR (DDI 0406C B4.1.65/159/160)."""
from __future__ import annotations

from dataclasses import dataclass

from .descriptors import LEVEL_SHIFT
from .fields import Field

HCR_VM = Field(0, 0)             # stage-2 translation enable

VTCR_T0SZ = Field(3, 0)          # signed 4-bit: input size = 32 - T0SZ
VTCR_S = Field(4, 4)             # must equal T0SZ[3]
VTCR_SL0 = Field(7, 6)           # 0: start at level 2, 1: start at level 1
VTCR_IRGN0 = Field(9, 8)
VTCR_ORGN0 = Field(11, 10)
VTCR_SH0 = Field(13, 12)
VTCR_RES1 = 1 << 31

VTTBR_BADDR = Field(39, 0)       # low bits below x are ignored (B4.1.160)
VTTBR_HIGH = Field(47, 40)       # non-zero: address size fault, level 0
VTTBR_VMID = Field(55, 48)

IPA_MAX_BITS = 40


def make_vtcr(t0sz: int = -8, sl0: int = 1) -> int:
    """VTCR for a given T0SZ (-8..7) and SL0, inner-shareable write-back walks."""
    enc = t0sz & 0xF
    v = VTCR_T0SZ.set(VTCR_RES1, enc)
    v = VTCR_S.set(v, (enc >> 3) & 1)
    v = VTCR_SL0.set(v, sl0)
    v = VTCR_IRGN0.set(v, 1)
    v = VTCR_ORGN0.set(v, 1)
    return VTCR_SH0.set(v, 3)


def make_vttbr(baddr: int, vmid: int) -> int:
    return VTTBR_VMID.set(baddr & VTTBR_BADDR.mask, vmid & 0xFF)


@dataclass(frozen=True)
class S2Config:
    """VTCR + VTTBR decoded into what a stage-2 walk needs."""
    t0sz: int
    sl0: int
    input_bits: int
    start_level: int
    root_pa: int
    vmid: int
    bad_vttbr_high: bool
    valid: bool          # T0SZ/SL0 consistent (else: translation fault, level 1)

    @property
    def root_entries(self) -> int:
        """Entries in the (possibly concatenated) root table: up to 16 x 512 (B3.6.6)."""
        return 1 << (self.input_bits - LEVEL_SHIFT[self.start_level])

    @property
    def root_tables(self) -> int:
        return max(1, self.root_entries // 512)

    @classmethod
    def decode(cls, vtcr: int, vttbr: int) -> "S2Config":
        raw = VTCR_T0SZ.get(vtcr)
        t0sz = raw - 16 if raw & 8 else raw
        sl0 = VTCR_SL0.get(vtcr)
        input_bits = 32 - t0sz
        start = {0: 2, 1: 1}.get(sl0, 0)
        valid = start != 0 and VTCR_S.get(vtcr) == (raw >> 3) & 1
        if valid:
            # Same rule as the ARM ARM pseudo-code: the start level must resolve 1..13 bits.
            span = input_bits - LEVEL_SHIFT[start]
            valid = 1 <= span <= 13
        root_size_log2 = (input_bits - LEVEL_SHIFT[start] + 3) if valid else 12
        baddr = VTTBR_BADDR.get(vttbr) & ~((1 << max(root_size_log2, 3)) - 1)
        return cls(t0sz=t0sz, sl0=sl0, input_bits=input_bits, start_level=start or 1,
                   root_pa=baddr, vmid=VTTBR_VMID.get(vttbr),
                   bad_vttbr_high=VTTBR_HIGH.get(vttbr) != 0, valid=valid)
