"""Translation faults as values (QEMU ptw.c style): what went wrong, where, at which level."""
from __future__ import annotations

import enum
from typing import NamedTuple


class Access(enum.IntEnum):
    """The kind of memory access being translated."""
    READ = 0
    WRITE = 1
    FETCH = 2


class FaultType(enum.Enum):
    """Long-descriptor fault status classes (DDI 0406C B3.13.3, Table B3-24)."""
    ADDRESS_SIZE = 0b0000
    TRANSLATION = 0b0001
    ACCESS_FLAG = 0b0010
    PERMISSION = 0b0011
    EXTERNAL = 0b0100           # synchronous external abort (0b010000: no level)
    EXTERNAL_WALK = 0b0101      # synchronous external abort on a translation table walk


class Fault(NamedTuple):
    """A stage-2 (or stage-1) fault produced by a walk (immutable; a NamedTuple because a
    walk that faults builds one on every denied fill).

    ipa: the intermediate physical address whose translation faulted (for an S1PTW fault,
    the IPA of the stage-1 descriptor). va: the guest virtual address of the access
    (filled in by the machine, which knows it; None for a bare IPA walk). desc_pa: where the
    walk found the leaf that refused the access, so software can fix that very entry (as KVM
    does with the PTE pointer its walk returns).
    """
    type: FaultType
    level: int
    access: Access
    ipa: int
    stage: int = 2
    s1ptw: bool = False
    va: int | None = None
    desc_pa: int | None = None     # host PA of the leaf descriptor (permission/AF faults)

    @property
    def fsc(self) -> int:
        """Long-descriptor fault status code: 0bTTTTLL (DFSC/IFSC, B3.13.3); a synchronous
        external abort that is not on a walk has no level: 0b010000."""
        if self.type is FaultType.EXTERNAL:
            return 0b010000
        return (self.type.value << 2) | (self.level & 3)

    @property
    def write(self) -> bool:
        return self.access == Access.WRITE

    @property
    def fetch(self) -> bool:
        return self.access == Access.FETCH

    def describe(self) -> str:
        what = {FaultType.ADDRESS_SIZE: "address size", FaultType.TRANSLATION: "translation",
                FaultType.ACCESS_FLAG: "access flag", FaultType.PERMISSION: "permission",
                FaultType.EXTERNAL: "external abort",
                FaultType.EXTERNAL_WALK: "external abort on walk"}[self.type]
        kind = "fetch" if self.fetch else ("write" if self.write else "read")
        s = f"stage-{self.stage} {what} fault, level {self.level}, {kind} IPA {self.ipa:#x}"
        if self.va is not None:
            s += f" VA {self.va:#x}"
        if self.s1ptw:
            s += " (stage-1 walk)"
        return s
