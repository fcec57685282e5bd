"""8-bit VMIDs with generations (KVM's update_vttbr / need_new_vmid_gen, arch/arm/kvm/arm.c)."""
from __future__ import annotations

from .arch.tlb import TLB


class VmidAllocator:
    """Hands out VMIDs 1..255 (0 is the host's); when they run out, a new generation starts:
    every TLB entry of every VMID is invalidated (TLBIALLNSNHIS) and VMs get new VMIDs lazily."""

    def __init__(self, tlb: TLB, bits: int = 8) -> None:
        self.tlb = tlb
        self.limit = 1 << bits
        self.generation = 1
        self._next = 1
        self.rollovers = 0

    def update(self, owner) -> int:
        """The VMID `owner` may run with now (owner has .vmid and .vmid_gen attributes)."""
        if getattr(owner, "vmid_gen", 0) == self.generation:
            return owner.vmid
        if self._next == self.limit:
            self.generation += 1
            self._next = 1
            self.rollovers += 1
            self.tlb.flush_all_nsnh()
        owner.vmid = self._next
        owner.vmid_gen = self.generation
        self._next += 1
        return owner.vmid
