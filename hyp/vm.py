"""A virtual machine: memslots, stage-2 tables, VMID, MMIO bus, virtual clock (KVM's struct kvm)."""
from __future__ import annotations

from collections import Counter

from .arch.descriptors import LEVEL_SIZE, Prot
from .dirty import mark_dirty
from .host import Host
from .memslot import Memslot
from .mmio import Bus
from .physmem import PAGE_SIZE
from .stage2 import Stage2
from .vtime import VirtualClock

class GuestMemoryError(ValueError):
    """A hypervisor access to guest memory outside (writable) RAM: nothing was done."""


HCR_VM_ON = 1                   # HCR.VM (B4.1.65); KVM also sets TSC/TWI/AMO/IMO/FMO...


class VM:
    """One guest: `add_memslot`, `attach` devices, then run vCPUs on it (hyp.vcpu)."""

    def __init__(self, host: Host, name: str = "vm", *, split: str = "lazy") -> None:
        if split not in ("lazy", "eager"):
            raise ValueError("split policy must be 'lazy' or 'eager'")
        self.host = host
        self.name = name
        self.split = split
        self.vmid = 0
        self.vmid_gen = 0
        self.memslots: list[Memslot] = []
        self.bus = Bus()
        self.clock = VirtualClock()
        self.args = ""
        self.stats: Counter[str] = Counter()
        self.stage2 = Stage2(host.mem, host.pool, host.tlb, lambda: self.vmid)
        self.hcr = HCR_VM_ON
        self.dirty_ring = None                   # hyp.dirty.DirtyRing when the ring is on
        self.last_mmio = None                    # hyp.mmio.MmioAccess of the last MMIO exit
        self.dirty_observers: list = []          # called (slot, gfn, source) on each new dirty page
        self.on_dirty_ring_full = None           # userspace's harvest; None: the run returns
        self.exit_request: str | None = None     # a timer asks the vCPU loop to return

    # ---- memory layout --------------------------------------------------------------
    def add_memslot(self, ipa: int, size: int, *, name: str = "ram", readonly: bool = False,
                    noexec: bool = False, max_level: int = 1) -> Memslot:
        """KVM_SET_USER_MEMORY_REGION: back [ipa, ipa + size) with fresh host memory."""
        for s in self.memslots:
            if ipa < s.end and s.ipa < ipa + size:
                raise ValueError(f"memslot {name} overlaps {s.name}")
        pa = self.host.alloc_backing(size)
        slot = Memslot(slot=len(self.memslots), name=name, ipa=ipa, size=size, pa=pa,
                       readonly=readonly, noexec=noexec, max_level=max_level)
        self.memslots.append(slot)
        return slot

    def memslot(self, ipa: int) -> Memslot | None:
        for s in self.memslots:
            if s.contains(ipa):
                return s
        return None

    def attach(self, base: int, device) -> None:
        self.bus.attach(base, device)

    def request_exit(self, reason: str) -> None:
        """Make the vCPU loop return `reason` before it next enters the guest (KVM: a
        request that kicks the vCPU out to userspace); e.g. pre-copy's switch-over."""
        self.exit_request = reason

    def update_vmid(self) -> int:
        return self.host.vmids.update(self)

    # ---- stage-2 fault-in (user_mem_abort) ------------------------------------------
    def leaf_level(self, slot: Memslot, ipa: int) -> int:
        """The largest leaf that fits: the slot's backing allows it and IPA/PA align."""
        if slot.log_dirty:
            return 3                          # dirty logging tracks 4 KiB pages
        for level, size in ((1, 1 << 30), (2, 2 << 20)):
            if level < slot.max_level:
                continue
            base = ipa & ~(size - 1)
            if base >= slot.ipa and base + size <= slot.end and \
                    (slot.pa_of(base) & (size - 1)) == 0:
                return level
        return 3

    def prot_for(self, slot: Memslot, writable: bool = True) -> Prot:
        prot = Prot.R
        if writable and not slot.readonly:
            prot |= Prot.W
        if not slot.noexec:
            prot |= Prot.X
        return prot

    def map_fault(self, slot: Memslot, ipa: int, *, writable: bool = True) -> int:
        """Map the leaf covering `ipa`; returns its level."""
        level = self.leaf_level(slot, ipa)
        size = LEVEL_SIZE[level]
        base = ipa & ~(size - 1)
        self.stage2.map(base, slot.pa_of(base), level, self.prot_for(slot, writable))
        return level

    def map_all(self) -> None:
        """Pre-fault every memslot with the largest leaves possible (like MAP_POPULATE)."""
        for slot in self.memslots:
            self.map_slot(slot)

    def map_slot(self, slot: Memslot) -> None:
        """Pre-fault one memslot (QEMU's -mem-prealloc, or a guest that touched all of it)."""
        ipa = slot.ipa
        while ipa < slot.end:
            size = LEVEL_SIZE[self.map_fault(slot, ipa)]
            ipa = (ipa & ~(size - 1)) + size

    # ---- guest memory from the hypervisor's side ------------------------------------
    def _slot_for_range(self, ipa: int, length: int, *, write: bool = False) -> Memslot:
        slot = self.memslot(ipa)
        if slot is None or ipa + length > slot.end:
            raise GuestMemoryError(f"IPA range {ipa:#x}+{length} is not RAM")
        if write and slot.readonly:
            raise GuestMemoryError(f"IPA range {ipa:#x}+{length} is in read-only memslot "
                                   f"{slot.name}")
        return slot

    def read_guest(self, ipa: int, length: int) -> bytes:
        """Debug/hypervisor read of guest RAM: no TLB fill, no flags, nothing marked."""
        slot = self._slot_for_range(ipa, length)
        return self.host.mem.read(slot.pa_of(ipa), length)

    def write_guest(self, ipa: int, data: bytes, *, debugger: bool = False) -> None:
        """A write the hypervisor makes into guest RAM (device, hypercall, debugger): the
        pages are marked dirty, or migration would lose them (DESIGN 3). Read-only memslots
        (flash) refuse it, as KVM's kvm_write_guest does: GuestMemoryError, nothing written -
        except for a `debugger`, which may patch flash as QEMU's gdbstub does."""
        slot = self._slot_for_range(ipa, len(data), write=not debugger)
        self.host.mem.write(slot.pa_of(ipa), data)
        if data:
            first = slot.gfn(ipa)
            last = slot.gfn(ipa + len(data) - 1)
            for gfn in range(first, last + 1):
                mark_dirty(self, slot, gfn, source="hypervisor")
            self.stats["hypervisor writes"] += 1

    def ram_pages(self) -> int:
        return sum(s.size for s in self.memslots) // PAGE_SIZE
