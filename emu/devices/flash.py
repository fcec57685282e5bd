"""Parallel flash seen through a read-only memslot: reads are RAM-speed, writes trap as MMIO
(KVM_MEM_READONLY) and are ignored by this model (no CFI command set)."""
from __future__ import annotations


class Flash:
    state_version = 1

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.writes = 0

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes += 1

    # ---- migration: the contents travel as memslot pages; the device has only a counter ----
    def save(self) -> dict:
        return {"writes": self.writes}

    def load(self, state) -> None:
        writes = state.get("writes") if isinstance(state, dict) else None
        if not isinstance(writes, int) or writes < 0:
            raise ValueError(f"{self.name} state {state!r}")
        self.writes = writes
