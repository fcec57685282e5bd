"""KVM's dirty_log_test invariant with the guest's MMU on (issue 9): the `mmu` guest builds
its page tables in logged RAM, demand-pages, copies on write and remaps with
break-before-make - every one of those is a store to a page-table page. Between harvests,
every RAM page whose contents changed must be in the dirty log (no false negatives), the
guest's own table pages included; and stage-1 walks, which only read descriptors, dirty
nothing (ARMv7 has no hardware access-flag update)."""
import os

import numpy as np
import pytest

from emu.machine import Machine
from hyp import dirty

from conftest import GUESTS

RAM = 16 << 20
SHORT_L1 = 0x40014000        # the short-descriptor TTBR0 table (TTBR0 = 0x4001406a)
SHORT_L2 = 0x40015000        # its second-level table for the task's 4 KiB pages
LONG_L3 = 0x40021000         # the LPAE third-level table for the same pages


def snapshot(m: Machine, slot) -> np.ndarray:
    off = slot.pa - m.host.mem.base
    return np.frombuffer(m.host.mem.buf, dtype=np.uint8)[off:off + slot.size] \
        .reshape(-1, 4096).copy()


@pytest.mark.parametrize("split", ["lazy", "eager"])
@pytest.mark.parametrize("harvest_insns", [pytest.param(1500, id="every-1500"),
                                           pytest.param(9973, id="every-9973")])
def test_every_changed_page_is_reported_with_the_guest_mmu_on(split, harvest_insns):
    m = Machine(RAM, split=split)
    m.load(os.path.join(GUESTS, "mmu.elf"))
    vm = m.vm
    slot = vm.memslot(0x40000000)
    dirty.enable_logging(vm, slot)
    before = snapshot(m, slot)
    table_reported = {SHORT_L2: 0, LONG_L3: 0}
    quiet_walk_intervals = 0
    harvests = 0
    while True:
        walks = m.mmu.s1_walks
        result = m.run(max_insns=harvest_insns)
        reported = dirty.get_dirty_log(vm, slot)
        after = snapshot(m, slot)
        changed = np.flatnonzero((before != after).any(axis=1))
        missed = [hex(slot.ipa + (p << 12)) for p in changed if not reported[p]]
        assert not missed, f"harvest {harvests}: changed but not reported: {missed}"
        for table in table_reported:
            page = (table - slot.ipa) >> 12
            if reported[page] and page in changed:
                table_reported[table] += 1
        l1 = (SHORT_L1 - slot.ipa) >> 12
        if m.mmu.s1_walks > walks and m.mmu.s1.enabled and l1 not in changed:
            # Walks read the L1 table during this interval and nothing wrote it.
            assert not reported[l1], "a stage-1 walk dirtied the table it read"
            quiet_walk_intervals += 1
        before = after
        harvests += 1
        if result.reason != "budget":
            break
    assert result.reason == "off", result
    assert m.uart.output.decode().rstrip().endswith("mmu: done")
    # The guest's page-table stores were seen (demand paging, COW, remaps in both formats).
    assert table_reported[SHORT_L2] >= 2 and table_reported[LONG_L3] >= 2, table_reported
    assert quiet_walk_intervals >= 1
    assert harvests > 10
