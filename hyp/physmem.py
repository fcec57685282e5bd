"""Host physical memory: the only way the hypervisor and the walker touch memory.

The machine (emu/) maps the same numpy buffer into Unicorn, so what the walker reads is
exactly what the guest's table walks and stores see.
"""
from __future__ import annotations

import numpy as np

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT


class PhysMemError(Exception):
    """An access outside host physical memory (a bug in the caller, not a guest fault)."""


class PhysMem:
    """A contiguous range of host physical addresses [base, base + size) backed by numpy."""

    def __init__(self, size: int, base: int = 0) -> None:
        if size <= 0 or size % PAGE_SIZE or base % PAGE_SIZE:
            raise ValueError("host memory base and size must be page aligned and non-zero")
        self.base = base
        self.size = size
        # np.zeros is lazily allocated by the OS: 1 GiB of untouched RAM costs nothing.
        self.buf = np.zeros(size, dtype=np.uint8)
        self.q = self.buf.view("<u8")   # 64-bit view for descriptors
        self.w = self.buf.view("<u4")   # 32-bit view

    @property
    def end(self) -> int:
        return self.base + self.size

    def contains(self, pa: int, length: int = 1) -> bool:
        return self.base <= pa and pa + length <= self.end

    def _off(self, pa: int, length: int) -> int:
        if not self.contains(pa, length):
            raise PhysMemError(f"PA {pa:#x}+{length} outside host memory "
                               f"[{self.base:#x}, {self.end:#x})")
        return pa - self.base

    def read64(self, pa: int) -> int:
        off = self._off(pa, 8)
        if off & 7:
            raise PhysMemError(f"unaligned 64-bit read at PA {pa:#x}")
        return int(self.q[off >> 3])

    def write64(self, pa: int, value: int) -> None:
        off = self._off(pa, 8)
        if off & 7:
            raise PhysMemError(f"unaligned 64-bit write at PA {pa:#x}")
        self.q[off >> 3] = value & 0xFFFF_FFFF_FFFF_FFFF

    def read32(self, pa: int) -> int:
        off = self._off(pa, 4)
        return int.from_bytes(self.buf[off:off + 4].tobytes(), "little")

    def write32(self, pa: int, value: int) -> None:
        self.write(pa, (value & 0xFFFF_FFFF).to_bytes(4, "little"))

    def read(self, pa: int, length: int) -> bytes:
        off = self._off(pa, length)
        return self.buf[off:off + length].tobytes()

    def write(self, pa: int, data: bytes) -> None:
        off = self._off(pa, len(data))
        self.buf[off:off + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def table(self, pa: int, entries: int = 512) -> np.ndarray:
        """A writable uint64 view of a descriptor table (bulk, vectorised edits)."""
        off = self._off(pa, entries * 8)
        return self.q[off >> 3:(off >> 3) + entries]

    def zero(self, pa: int, length: int) -> None:
        off = self._off(pa, length)
        self.buf[off:off + length] = 0
