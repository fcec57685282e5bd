"""Bit fields of registers and descriptors, named as the ARM ARM writes them: Field(hi, lo)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Field:
    """Bits [hi:lo] of a register or descriptor."""
    hi: int
    lo: int
    mask: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", ((1 << (self.hi - self.lo + 1)) - 1) << self.lo)

    @property
    def width(self) -> int:
        return self.hi - self.lo + 1

    def get(self, value: int) -> int:
        """The field's value in `value`."""
        return (value & self.mask) >> self.lo

    def set(self, value: int, field_value: int) -> int:
        """`value` with this field replaced (extra bits of `field_value` dropped)."""
        return (value & ~self.mask) | ((field_value << self.lo) & self.mask)

    def put(self, field_value: int) -> int:
        """The field holding `field_value`, in place; ValueError if it does not fit."""
        if not 0 <= field_value < 1 << self.width:
            raise ValueError(f"{field_value:#x} does not fit in bits [{self.hi}:{self.lo}]")
        return int(field_value) << self.lo
