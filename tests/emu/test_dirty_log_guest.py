"""KVM dirty_log_test's invariant on a real guest, for every logging mode, both split policies
and 4 KiB / 2 MiB / 1 GiB mappings; and proof that a missing flush makes the model miss pages."""
import pytest

from dirtylog_harness import run

MODES = ["bitmap", "manual", "initially-set", "ring"]


@pytest.mark.parametrize("backing", ["4k", "2m", "1g"])
@pytest.mark.parametrize("split", ["lazy", "eager"])
@pytest.mark.parametrize("mode", MODES)
def test_no_dirty_page_is_missed(mode, split, backing):
    kw = {"pages": 4096} if backing == "1g" and split == "lazy" else {}
    out = run(mode, backing, split, **kw)
    assert out.misses == [] and out.bad_values == []
    assert out.reported > 100                     # the guest really dirtied pages
    vm = out.machine.vm
    assert vm.stats["dirty faults"] > 0
    if backing != "4k" and split == "lazy":
        assert vm.stats.get("eager splits", 0) == 0
    if backing != "4k" and split == "eager":
        assert vm.stats["eager splits"] > 0


def test_write_protect_without_flush_misses_dirty_pages():
    # Same run, but the stage-2 flushes are skipped after the first collection: stores go
    # through stale writable TLB entries, never fault, and the log misses them.
    out = run("bitmap", "4k", "lazy", skip_flush_after=1, pages=64, insns=40_000)
    assert out.misses, "a missing TLB flush must be observable"
    good = run("bitmap", "4k", "lazy", pages=64, insns=40_000)
    assert good.misses == []


@pytest.mark.parametrize("backing", ["4k", "2m"])
@pytest.mark.parametrize("split", ["lazy", "eager"])
@pytest.mark.parametrize("mode", MODES)
def test_faults_resolved_in_place_change_nothing_the_guest_or_the_log_shows(mode, split,
                                                                            backing):
    """hyp.abort.resolve_in_place (the fast path) against every abort exiting: the same
    dirty pages at every collection, the same memory, instruction counts and statistics."""
    fast = run(mode, backing, split, iterations=6)
    slow = run(mode, backing, split, iterations=6, fast_faults=False)
    assert fast.bitmaps == slow.bitmaps and fast.reported == slow.reported > 0
    mf, ms = fast.machine, slow.machine
    assert mf.cpu.instructions == ms.cpu.instructions
    assert (mf.host.mem.q == ms.host.mem.q).all()
    in_place = mf.vm.stats.pop("dirty faults in place", 0)
    assert ms.vm.stats.pop("dirty faults in place", 0) == 0
    assert dict(mf.vm.stats) == dict(ms.vm.stats)
    # the machine's own counters agree too, but for emu_start calls (fewer is the point) and
    # Unicorn's TLB refills, whose growth is decided between runs (not guest-visible)
    cache = ("fills", "unicorn_flushes", "tlb_growth_flushes")
    bf, bs = mf.cpu.stats.pop("bursts"), ms.cpu.stats.pop("bursts")
    assert {k: v for k, v in mf.cpu.stats.items() if k not in cache} == \
        {k: v for k, v in ms.cpu.stats.items() if k not in cache}
    assert (bf < bs - in_place // 2) if in_place else bf == bs
    # the ring must exit to userspace when full: no fast path with a ring
    assert (in_place > 0) == (mode != "ring")


@pytest.mark.parametrize("watcher, in_place", [
    pytest.param(None, True, id="nothing-attached"),
    pytest.param("poller", True, id="a-poller-keeps-it"),         # the CLI's console
    pytest.param("observer", False, id="an-observer-sees-every-exit"),
])
def test_what_keeps_the_fault_fast_path(watcher, in_place):
    """Pollers (run after each handled exit: the console) leave dirty faults resolved in
    place; an observer of exits (tracer, Perfetto, gdb) gets every fault as an exit."""
    import os

    from emu.machine import Machine
    from hyp import dirty

    from conftest import GUESTS
    m = Machine(16 << 20, console=lambda b: None)
    m.load(os.path.join(GUESTS, "dirtyram.elf"), "256 64 0 4")
    dirty.enable_logging(m.vm, m.ram)
    calls = []
    if watcher == "poller":
        m.vcpu.pollers.append(lambda: calls.append(1))
    elif watcher == "observer":
        m.vcpu.observers.append(lambda kind, ex, outcome: calls.append(kind))
    assert m.run().reason == "off"
    assert m.vm.stats["dirty faults"] > 0
    assert (m.vm.stats["dirty faults in place"] > 0) == in_place
    assert bool(calls) == (watcher is not None)
