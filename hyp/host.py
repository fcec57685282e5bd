"""The host's resources the hypervisor manages: physical memory, table pages, TLB, VMIDs."""
from __future__ import annotations

from .arch.tlb import TLB
from .pgalloc import TablePool
from .physmem import PhysMem
from .vmid import VmidAllocator

HOST_BASE = 0x1_0000_0000       # host RAM above 4 GiB: PAs are visibly not IPAs (LPAE: 40-bit)
TABLE_POOL = 32 << 20
MAX_ALIGN = 1 << 30


class OutOfHostMemory(Exception):
    pass


def backing_align(size: int) -> int:
    """Alignment that lets a slot of `size` use the largest blocks it can hold."""
    align = 2 << 20
    while align < MAX_ALIGN and align * 2 <= size:
        align *= 2
    return align


class Host:
    """Host physical memory [HOST_BASE, +size): a table-page pool, then memslot backing."""

    def __init__(self, ram_size: int, table_pool: int = TABLE_POOL, *,
                 vmid_bits: int = 8) -> None:
        size = table_pool + ram_size
        self.mem = PhysMem(size, base=HOST_BASE)
        self.pool = TablePool(self.mem, HOST_BASE, table_pool)
        self.tlb = TLB()
        self.vmids = VmidAllocator(self.tlb, bits=vmid_bits)
        self._next = HOST_BASE + table_pool

    def alloc_backing(self, size: int) -> int:
        """Host PA for a memslot of `size` bytes, aligned for block mappings."""
        align = backing_align(size)
        pa = (self._next + align - 1) & ~(align - 1)
        if pa + size > self.mem.end:
            raise OutOfHostMemory(f"host memory exhausted allocating {size >> 20} MiB")
        self._next = pa + size
        return pa

    @staticmethod
    def size_for(slot_sizes: list[int]) -> int:
        """Host RAM enough for these memslots whatever their order (alignment padding)."""
        return sum(s + backing_align(s) for s in slot_sizes)
