"""Memslots: guest-physical ranges backed by host memory (KVM's struct kvm_memory_slot)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .physmem import PAGE_SHIFT, PAGE_SIZE


@dataclass
class Memslot:
    """IPA [ipa, ipa + size) -> host PA [pa, pa + size).

    readonly: writes are MMIO exits (KVM_MEM_READONLY). noexec: mapped XN at stage 2 (our
    own flag, to show execute-never faults). max_level: the largest leaf the backing allows
    (1: 1 GiB blocks, 2: 2 MiB blocks, 3: 4 KiB pages only - like THP/hugetlbfs backing).
    """
    slot: int
    name: str
    ipa: int
    size: int
    pa: int
    readonly: bool = False
    noexec: bool = False
    max_level: int = 1
    log_dirty: bool = False
    manual_protect: bool = False
    dirty: np.ndarray = field(default=None, repr=False)   # one bool per 4 KiB page

    def __post_init__(self) -> None:
        if self.ipa % PAGE_SIZE or self.size % PAGE_SIZE or self.size <= 0:
            raise ValueError(f"memslot {self.name}: IPA and size must be 4 KiB aligned")
        if self.dirty is None:
            self.dirty = np.zeros(self.npages, dtype=bool)

    @property
    def npages(self) -> int:
        return self.size >> PAGE_SHIFT

    @property
    def end(self) -> int:
        return self.ipa + self.size

    def contains(self, ipa: int) -> bool:
        return 0 <= ipa - self.ipa < self.size

    def pa_of(self, ipa: int) -> int:
        return self.pa + (ipa - self.ipa)

    def gfn(self, ipa: int) -> int:
        """Page index of `ipa` within the slot (the bit in its dirty bitmap)."""
        return (ipa - self.ipa) >> PAGE_SHIFT
