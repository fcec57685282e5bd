"""Deterministic virtual time: advanced by guest instructions and by guest sleeps only."""
from __future__ import annotations

NS_PER_INSN = 1          # a 1 GHz, one-instruction-per-cycle guest


class VirtualClock:
    """now = instructions executed x NS_PER_INSN + time slept. Never reads the wall clock."""

    def __init__(self, ns_per_insn: int = NS_PER_INSN) -> None:
        self.ns_per_insn = ns_per_insn
        self.slept_ns = 0
        self.instructions = 0

    def now_ns(self) -> int:
        return self.instructions * self.ns_per_insn + self.slept_ns

    def sleep(self, ns: int) -> None:
        self.slept_ns += max(0, ns)
