"""Dirty page logging state of a memslot (KVM's dirty_bitmap / mark_page_dirty)."""
from __future__ import annotations


def mark_dirty(vm, slot, gfn: int, source: str = "guest") -> None:
    """mark_page_dirty: record a write to page `gfn` of `slot` if the slot is being logged."""
    if not slot.log_dirty:
        return
    if not slot.dirty[gfn]:
        slot.dirty[gfn] = True
        vm.stats["dirty_pages"] += 1
        for fn in vm.dirty_ring_observers:
            fn(slot, gfn, source)
