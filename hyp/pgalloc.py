"""Host pages for stage-2 tables: KVM takes them from the kernel, we keep a counted pool."""
from __future__ import annotations

import numpy as np

from .physmem import PAGE_SIZE, PhysMem


class OutOfTablePages(Exception):
    pass


class TablePool:
    """A page allocator over [base, base + size) of host memory; every page handed out is zeroed."""

    def __init__(self, mem: PhysMem, base: int, size: int) -> None:
        self.mem = mem
        self.base = base
        self.npages = size // PAGE_SIZE
        self.used = np.zeros(self.npages, dtype=bool)
        self.allocs = 0
        self.frees = 0
        self._hint = 0

    @property
    def in_use(self) -> int:
        return int(self.used.sum())

    def alloc(self, npages: int = 1, align_pages: int = 1) -> int:
        """Allocate `npages` contiguous zeroed pages aligned to `align_pages` pages."""
        if npages == 1 and align_pages == 1:
            free = np.flatnonzero(~self.used[self._hint:])
            if free.size == 0:
                free = np.flatnonzero(~self.used)
                first = int(free[0]) if free.size else None
            else:
                first = self._hint + int(free[0])
            if first is None:
                raise OutOfTablePages("stage-2 table pool exhausted")
            self._hint = first + 1
            return self._take(first, 1)
        for first in range(0, self.npages - npages + 1, align_pages):
            if not self.used[first:first + npages].any():
                return self._take(first, npages)
        raise OutOfTablePages(f"no {npages} contiguous table pages left")

    def _take(self, first: int, npages: int) -> int:
        self.used[first:first + npages] = True
        self.allocs += npages
        pa = self.base + first * PAGE_SIZE
        self.mem.zero(pa, npages * PAGE_SIZE)
        return pa

    def free(self, pa: int, npages: int = 1) -> None:
        first = (pa - self.base) // PAGE_SIZE
        if not (0 <= first and first + npages <= self.npages) or not self.used[first:first + npages].all():
            raise ValueError(f"freeing table page {pa:#x} that is not allocated")
        self.used[first:first + npages] = False
        self.frees += npages
        self._hint = min(self._hint, first)

    def owns(self, pa: int) -> bool:
        first = (pa - self.base) // PAGE_SIZE
        return 0 <= first < self.npages and bool(self.used[first])
