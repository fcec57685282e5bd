"""Parallel flash seen through a read-only memslot: reads are RAM-speed, writes trap as MMIO
(KVM_MEM_READONLY) and are ignored by this model (no CFI command set)."""
from __future__ import annotations


class Flash:
    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.writes = 0

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes += 1
