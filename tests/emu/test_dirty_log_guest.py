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
