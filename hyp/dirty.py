"""Dirty page logging (KVM: kvm_vm_ioctl_get_dirty_log, KVM_CLEAR_DIRTY_LOG, the dirty ring;
arch/arm/kvm/mmu.c after the ARMv7 dirty-logging series).

Every dirty bit comes from a real stage-2 permission fault on a guest store (hyp.abort), or
from a write the hypervisor itself makes into guest memory (VM.write_guest).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arch.descriptors import LEVEL_SIZE
from .memslot import Memslot


class DirtyLogError(Exception):
    pass


def mark_dirty(vm, slot: Memslot, gfn: int, source: str = "guest") -> None:
    """mark_page_dirty: record a write to page `gfn` of `slot` if the slot is being logged."""
    if not slot.log_dirty:
        return
    ring = vm.dirty_ring
    if ring is not None:
        ring.push(slot, gfn)
        vm.stats["dirty pages"] += 1
    elif not slot.dirty[gfn]:
        slot.dirty[gfn] = True
        vm.stats["dirty pages"] += 1
    for fn in vm.dirty_observers:
        fn(slot, gfn, source)


def enable_logging(vm, slot: Memslot, *, manual_protect: bool = False,
                   initially_set: bool = False) -> None:
    """KVM_MEM_LOG_DIRTY_PAGES on: write-protect every present leaf of the slot (pages and
    blocks), then one VMID flush (kvm_mmu_wp_memory_region). With the `eager` split policy,
    blocks are first split into pages (arm64 eager page splitting). With `initially_set`
    (KVM_DIRTY_LOG_INITIALLY_SET, needs manual protect) every bit starts set and nothing is
    protected now: protection happens as the user clears bits."""
    if initially_set and not manual_protect:
        raise DirtyLogError("initially-all-set needs manual protect (KVM_CLEAR_DIRTY_LOG)")
    slot.log_dirty = True
    slot.manual_protect = manual_protect
    if vm.split == "eager":
        vm.stats["eager splits"] += vm.stage2.split_blocks(slot.ipa, slot.end)
    if initially_set:
        slot.dirty[:] = True
        return
    slot.dirty[:] = False
    vm.stage2.wrprotect(slot.ipa, slot.end)


def disable_logging(vm, slot: Memslot) -> None:
    """Logging off (migration done or cancelled): faults map huge leaves again, lazily; or
    call `rebuild_huge` to do it now."""
    slot.log_dirty = False
    slot.manual_protect = False


def get_dirty_log(vm, slot: Memslot) -> np.ndarray:
    """KVM_GET_DIRTY_LOG: the slot's bitmap (one bool per 4 KiB page). Without manual protect
    it is taken and cleared atomically and exactly the reported pages are write-protected,
    with one VMID flush if anything was dirty. With manual protect it is only read."""
    if not slot.log_dirty:
        raise DirtyLogError(f"memslot {slot.name} is not logging dirty pages")
    bitmap = slot.dirty.copy()
    if not slot.manual_protect:
        slot.dirty[:] = False
        vm.stage2.wrprotect_pages(slot.ipa, bitmap)
    vm.stats["harvests"] += 1
    return bitmap


def collect(vm, slot: Memslot) -> np.ndarray:
    """One harvest of `slot` in whatever way the VM logs: the pages dirtied since the last
    harvest (bool per page), re-protected - the dirty ring (harvest, then reset), manual
    protect (GET_DIRTY_LOG, then CLEAR_DIRTY_LOG of what it reported) or GET_DIRTY_LOG."""
    if vm.dirty_ring is not None:
        bitmap = np.zeros(slot.npages, dtype=bool)
        gfns = [g for s, g in vm.dirty_ring.harvest() if s == slot.slot]
        bitmap[np.asarray(gfns, dtype=np.int64)] = True
        reset_dirty_ring(vm)
        return bitmap
    bitmap = get_dirty_log(vm, slot)
    if slot.manual_protect:
        clear_dirty_log(vm, slot, 0, slot.npages, bitmap)
    return bitmap


def clear_dirty_log(vm, slot: Memslot, first: int, count: int,
                    bits: np.ndarray | None = None) -> int:
    """KVM_CLEAR_DIRTY_LOG: clear the bits of pages [first, first + count) that are set in
    `bits` (all of them if None) and write-protect exactly those pages; one flush."""
    if not slot.manual_protect:
        raise DirtyLogError("clear_dirty_log needs manual protect mode")
    if first < 0 or count < 0 or first + count > slot.npages:
        raise DirtyLogError(f"pages [{first}, {first + count}) outside memslot {slot.name}")
    mask = np.ones(count, dtype=bool) if bits is None else np.asarray(bits, dtype=bool)
    if mask.size != count:
        raise DirtyLogError("bits must have `count` entries")
    window = slot.dirty[first:first + count]
    cleared = window & mask
    window &= ~cleared
    full = np.zeros(slot.npages, dtype=bool)
    full[first:first + count] = cleared
    vm.stage2.wrprotect_pages(slot.ipa, full)
    return int(cleared.sum())


def rebuild_huge(vm, slot: Memslot) -> int:
    """After logging: replace every table under the slot by the largest block that fits,
    freeing the table pages, with break-before-make (the Linux 5.1 fix). Returns blocks made."""
    if slot.log_dirty:
        raise DirtyLogError("cannot rebuild huge mappings while logging")
    before = vm.host.pool.in_use
    made = 0
    ipa = slot.ipa
    while ipa < slot.end:
        level = vm.leaf_level(slot, ipa)
        size = LEVEL_SIZE[level]
        if level < 3 and vm.stage2.has_table_at(ipa, level):
            vm.stage2.map(ipa, slot.pa_of(ipa), level, vm.prot_for(slot))
            made += 1
        ipa += size
    vm.stats["rebuilt blocks"] += made
    vm.stats["tables freed"] += before - vm.host.pool.in_use
    return made


# KVM's limits (kvm_vm_ioctl_enable_dirty_log_ring): a power-of-two number of 16-byte
# kvm_dirty_gfn entries, at least one page (256) and at most KVM_DIRTY_RING_MAX_ENTRIES; the
# last KVM_DIRTY_RING_RSVD_ENTRIES stay free for writes made while the vCPU cannot exit.
RING_MIN, RING_MAX, RING_RESERVE = 256, 65536, 64


@dataclass
class DirtyRing:
    """A per-vCPU dirty ring (Linux 5.11 KVM_CAP_DIRTY_LOG_RING): GFNs appended as pages are
    dirtied; when it is soft-full (all but the reserve used) the vCPU exits until the user
    harvests and resets. The reserve absorbs the pages of hypervisor writes made before the
    vCPU can exit; should even that overflow, the entries are kept (`overflowed` counts
    them) and harvested with the rest: a dirty page is never lost."""
    size: int
    reserve: int = RING_RESERVE
    entries: list[tuple[int, int]] = field(default_factory=list)    # (slot, gfn)
    harvested: list[tuple[int, int]] = field(default_factory=list)
    overflowed: int = 0

    def push(self, slot: Memslot, gfn: int) -> None:
        if len(self.entries) >= self.size:
            self.overflowed += 1
        self.entries.append((slot.slot, gfn))

    @property
    def soft_full(self) -> bool:
        return len(self.entries) >= self.size - self.reserve

    def harvest(self) -> list[tuple[int, int]]:
        """Collect every entry (the user marks them harvested); reset() re-protects them."""
        out, self.entries = self.entries, []
        self.harvested += out
        return out


def check_ring_size(size: int) -> None:
    """DirtyLogError unless `size` is a ring KVM would accept."""
    if size < RING_MIN or size > RING_MAX or size & (size - 1):
        raise DirtyLogError(f"dirty ring size {size} must be a power of two from {RING_MIN} "
                            f"to {RING_MAX} entries (KVM: 16-byte entries, at least one page; "
                            f"{RING_RESERVE} are kept in reserve)")


def enable_dirty_ring(vm, size: int) -> DirtyRing:
    check_ring_size(size)
    vm.dirty_ring = DirtyRing(size)
    return vm.dirty_ring


def reset_dirty_ring(vm) -> int:
    """KVM_RESET_DIRTY_RINGS: write-protect the harvested pages again; one flush."""
    ring = vm.dirty_ring
    done = 0
    by_slot: dict[int, list[int]] = {}
    for s, gfn in ring.harvested:
        by_slot.setdefault(s, []).append(gfn)
    for s, gfns in by_slot.items():
        slot = vm.memslots[s]
        mask = np.zeros(slot.npages, dtype=bool)
        mask[np.asarray(gfns)] = True
        vm.stage2.wrprotect_pages(slot.ipa, mask)
        done += int(mask.sum())
    ring.harvested = []
    return done
