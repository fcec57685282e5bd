"""Dirty logging on the hypervisor side: write-protect at enable, lazy dissolve, eager split,
get/clear, ring, rebuild of huge mappings - descriptors, flushes and table pages."""
import numpy as np
import pytest

from hyp import dirty
from hyp.arch.descriptors import Prot
from hyp.arch.fault import Access, Fault, FaultType
from hyp.arch.walk import Translation, translate
from hyp.host import Host
from hyp.vm import VM

G, M2, K4 = 1 << 30, 2 << 20, 4 << 10
IPA = 0x8000_0000


def make(split="lazy", size=8 << 20, max_level=2):
    host = Host(Host.size_for([size]))
    vm = VM(host, split=split)
    vm.update_vmid()
    slot = vm.add_memslot(IPA, size, name="test", max_level=max_level)
    vm.map_all()
    return vm, slot


def tr(vm, ipa, access=Access.WRITE):
    return translate(vm.host.mem, vm.stage2.cfg, ipa, access)


def write_fault(vm, slot, ipa):
    """What hyp.abort does for a stage-2 write permission fault on a logging slot."""
    dirty.mark_dirty(vm, slot, slot.gfn(ipa))
    vm.map_fault(slot, ipa, writable=True)


def flushes(vm):
    return vm.host.tlb.stats["flush_vmid"]


def test_enable_write_protects_every_leaf_with_one_flush():
    vm, slot = make()
    assert [m.level for m in vm.stage2.dump()] == [2]          # 8 MiB: 4 x 2 MiB blocks
    f0 = flushes(vm)
    dirty.enable_logging(vm, slot)
    assert flushes(vm) == f0 + 1
    assert all(not m.prot & Prot.W for m in vm.stage2.dump())
    t = tr(vm, IPA + 5 * K4)
    assert isinstance(t, Fault) and (t.type, t.level) == (FaultType.PERMISSION, 2)


def test_lazy_dissolve_maps_only_the_faulting_page():
    vm, slot = make("lazy")
    dirty.enable_logging(vm, slot)
    pages0, f0 = vm.host.pool.in_use, flushes(vm)
    write_fault(vm, slot, IPA + 5 * K4)
    assert vm.host.pool.in_use == pages0 + 1                  # one new level-3 table
    assert flushes(vm) == f0 + 1                              # break-before-make of the block
    assert isinstance(tr(vm, IPA + 5 * K4), Translation)
    f = tr(vm, IPA + 6 * K4, Access.READ)                     # siblings fault in lazily
    assert isinstance(f, Fault) and (f.type, f.level) == (FaultType.TRANSLATION, 3)
    assert slot.dirty.sum() == 1 and slot.dirty[5]


def test_eager_split_write_protects_pages_at_enable():
    vm, slot = make("eager")
    pages0 = vm.host.pool.in_use
    dirty.enable_logging(vm, slot)
    assert vm.host.pool.in_use == pages0 + 4                  # 4 blocks -> 4 level-3 tables
    assert {m.level for m in vm.stage2.dump()} == {3}
    f0 = flushes(vm)
    write_fault(vm, slot, IPA + 5 * K4)                       # permission upgrade: no flush
    assert flushes(vm) == f0 and isinstance(tr(vm, IPA + 5 * K4), Translation)
    assert isinstance(tr(vm, IPA + 6 * K4, Access.READ), Translation)   # siblings still mapped


def test_get_dirty_log_takes_clears_and_reprotects_exactly_reported():
    vm, slot = make("eager")
    dirty.enable_logging(vm, slot)
    for p in (1, 7, 513):
        write_fault(vm, slot, IPA + p * K4)
    f0 = flushes(vm)
    bm = dirty.get_dirty_log(vm, slot)
    assert list(np.flatnonzero(bm)) == [1, 7, 513] and not slot.dirty.any()
    assert flushes(vm) == f0 + 1
    assert all(isinstance(tr(vm, IPA + p * K4), Fault) for p in (1, 7, 513))
    f1 = flushes(vm)
    assert not dirty.get_dirty_log(vm, slot).any() and flushes(vm) == f1    # nothing: no flush


def test_manual_protect_get_does_not_clear_clear_reprotects_range():
    vm, slot = make("eager")
    dirty.enable_logging(vm, slot, manual_protect=True)
    for p in (2, 3, 900):
        write_fault(vm, slot, IPA + p * K4)
    assert list(np.flatnonzero(dirty.get_dirty_log(vm, slot))) == [2, 3, 900]
    assert slot.dirty.sum() == 3                              # still set
    assert dirty.clear_dirty_log(vm, slot, 0, 512) == 2       # pages 2, 3 only
    assert list(np.flatnonzero(slot.dirty)) == [900]
    assert isinstance(tr(vm, IPA + 2 * K4), Fault) and isinstance(tr(vm, IPA + 900 * K4), Translation)


def test_initially_set_is_instant_and_protects_on_clear():
    vm, slot = make("lazy")
    f0 = flushes(vm)
    dirty.enable_logging(vm, slot, manual_protect=True, initially_set=True)
    assert slot.dirty.all() and flushes(vm) == f0             # nothing protected yet
    assert isinstance(tr(vm, IPA), Translation)
    dirty.clear_dirty_log(vm, slot, 0, 512)                   # first 2 MiB block: protected
    assert isinstance(tr(vm, IPA), Fault) and isinstance(tr(vm, IPA + M2), Translation)
    with pytest.raises(dirty.DirtyLogError):
        dirty.enable_logging(vm, slot, initially_set=True)


def test_dirty_ring_records_gfns_and_reset_reprotects():
    vm, slot = make("eager")
    ring = dirty.enable_dirty_ring(vm, 256)
    dirty.enable_logging(vm, slot)
    pages = list(range(9, 9 + 192))
    for p in pages:
        write_fault(vm, slot, IPA + p * K4)
    assert ring.soft_full                                     # 192 >= 256 - reserve(64)
    assert ring.harvest() == [(slot.slot, p) for p in pages]
    assert isinstance(tr(vm, IPA + 9 * K4), Translation)      # not yet re-protected
    assert dirty.reset_dirty_ring(vm) == 192
    assert isinstance(tr(vm, IPA + 9 * K4), Fault) and not ring.soft_full


@pytest.mark.parametrize("size,ok", [
    pytest.param(0, False, id="0"), pytest.param(2, False, id="2"),
    pytest.param(128, False, id="128: less than a page"),
    pytest.param(255, False, id="255"), pytest.param(300, False, id="300: not a power of two"),
    pytest.param(256, True, id="256"), pytest.param(4096, True, id="4096"),
    pytest.param(65536, True, id="65536"),
    pytest.param(131072, False, id="131072: beyond KVM_DIRTY_RING_MAX_ENTRIES"),
])
def test_dirty_ring_sizes_follow_kvm(size, ok):
    vm, _ = make("lazy")
    if ok:
        assert dirty.enable_dirty_ring(vm, size).size == size
    else:
        with pytest.raises(dirty.DirtyLogError, match="power of two from 256 to 65536"):
            dirty.enable_dirty_ring(vm, size)
        assert vm.dirty_ring is None


def test_a_hypervisor_write_bigger_than_the_ring_loses_nothing():
    vm, slot = make("lazy")
    ring = dirty.enable_dirty_ring(vm, 256)
    dirty.enable_logging(vm, slot)
    vm.write_guest(IPA, bytes(300 * K4))                       # 300 pages in one write
    assert ring.soft_full and ring.overflowed == 300 - 256
    assert sorted(g for _, g in ring.harvest()) == list(range(300))


def test_hypervisor_writes_are_marked_dirty():
    vm, slot = make("lazy")
    dirty.enable_logging(vm, slot)
    vm.write_guest(IPA + 3 * K4 + 4090, b"0123456789")       # spans pages 3 and 4
    assert list(np.flatnonzero(dirty.get_dirty_log(vm, slot))) == [3, 4]


@pytest.mark.parametrize("split", ["lazy", "eager"])
def test_rebuild_huge_after_logging_frees_tables_and_flushes(split):
    vm, slot = make(split)
    pages0 = vm.host.pool.in_use
    dirty.enable_logging(vm, slot)
    for p in range(0, 2048, 300):
        write_fault(vm, slot, IPA + p * K4)
    assert vm.host.pool.in_use > pages0
    dirty.disable_logging(vm, slot)
    f0 = flushes(vm)
    assert dirty.rebuild_huge(vm, slot) == 4
    assert vm.host.pool.in_use == pages0 == vm.stage2.table_pages()   # nothing leaked
    assert flushes(vm) >= f0 + 4                              # break-before-make per block
    assert [(m.level, m.prot) for m in vm.stage2.dump()] == [(2, Prot.RWX)]
    assert vm.host.tlb.entries(vm.vmid) == []                 # no stale entries survive


def test_lazy_rebuild_on_fault_after_logging_stops():
    vm, slot = make("lazy")
    dirty.enable_logging(vm, slot)
    write_fault(vm, slot, IPA + 5 * K4)
    pages = vm.host.pool.in_use
    dirty.disable_logging(vm, slot)
    vm.map_fault(slot, IPA + 6 * K4)                          # next fault: a 2 MiB block again
    assert vm.host.pool.in_use == pages - 1
    assert tr(vm, IPA + 6 * K4).level == 2
