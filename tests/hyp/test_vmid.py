"""VMID allocation with generations (KVM update_vttbr)."""
from hyp.arch.descriptors import Prot
from hyp.arch.tlb import TLB, TLBEntry
from hyp.vmid import VmidAllocator


class Owner:
    pass


def test_vmids_unique_until_rollover_then_flush_all():
    tlb = TLB()
    alloc = VmidAllocator(tlb, bits=3)           # VMIDs 1..7
    vms = [Owner() for _ in range(7)]
    ids = [alloc.update(v) for v in vms]
    assert ids == list(range(1, 8))
    assert alloc.update(vms[0]) == 1             # same generation: unchanged
    tlb.insert(TLBEntry(3, 0x1000, 0x1000, 0x2000, Prot.RW, 3))
    late = Owner()
    assert alloc.update(late) == 1               # rollover: new generation
    assert alloc.rollovers == 1 and len(tlb) == 0
    assert tlb.stats["flush_all_nsnh"] == 1
    assert alloc.update(vms[0]) == 2             # old VMs get new VMIDs lazily


def test_8bit_vmids():
    alloc = VmidAllocator(TLB())
    owners = [Owner() for _ in range(256)]
    ids = [alloc.update(o) for o in owners]
    assert ids[:255] == list(range(1, 256)) and ids[255] == 1 and alloc.generation == 2
