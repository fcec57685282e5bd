"""The host half of KVM's dirty_log_test, run against the `dirtycheck` guest.

The guest stores the current `iteration` (a u64 the host bumps between collections) at offset
0 of pseudo-random pages of a test memslot. After each collection we check the invariant:
every page whose contents changed since the previous collection was reported (no false
negatives), and a reported page holds the current or previous iteration.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

from emu.machine import Extra, Machine
from hyp import dirty

from conftest import GUESTS

TEST_IPA = 0x8000_0000
BACKING = {"4k": (8 << 20, 3), "2m": (8 << 20, 2), "1g": (1 << 30, 1)}


@dataclass
class Outcome:
    iterations: int = 0
    reported: int = 0
    misses: list = field(default_factory=list)      # (iteration, page) changed, not reported
    bitmaps: list = field(default_factory=list)     # each collection's reported pages
    bad_values: list = field(default_factory=list)  # (iteration, page, value)
    machine: Machine | None = None


def page_words(m: Machine, slot) -> np.ndarray:
    """First u64 of every page of the slot, straight from host memory (a debug read)."""
    q = m.host.mem.q
    first = (slot.pa - m.host.mem.base) >> 3
    return q[first:first + slot.npages * 512:512].copy()


def run(mode: str, backing: str, split: str, *, iterations: int = 12, insns: int = 60_000,
        seed: int = 0x1234, pages: int | None = None, skip_flush_after: int | None = None,
        ring_size: int = 256, fast_faults: bool = True) -> Outcome:
    size, max_level = BACKING[backing]
    npages = pages or size >> 12
    m = Machine(64 << 20, split=split, extra=[Extra(TEST_IPA, size, max_level, "test")])
    m.vcpu.fast_faults = fast_faults
    img = m.load(os.path.join(GUESTS, "dirtycheck.elf"), f"{TEST_IPA:x} {npages} {seed:x}")
    slot = m.vm.memslot(TEST_IPA)
    vm = m.vm
    # Pre-fault the test slot with its largest leaves, as a guest that touched it would have.
    vm.map_slot(slot)
    it_ipa = img.symbol("iteration")
    vm.write_guest(it_ipa, struct.pack("<Q", 1))
    if mode == "ring":
        dirty.enable_dirty_ring(vm, ring_size)
        dirty.enable_logging(vm, slot)
    else:
        dirty.enable_logging(vm, slot, manual_protect=mode in ("manual", "initially-set"),
                             initially_set=mode == "initially-set")
    out = Outcome(machine=m)
    prev = page_words(m, slot)
    for it in range(1, iterations + 1):
        if skip_flush_after is not None and it > skip_flush_after:
            vm.stage2.skip_flush = True
        r = m.run(max_insns=insns)
        assert r.reason in ("budget", "dirty-ring-full"), r
        bitmap = dirty.collect(vm, slot)
        now = page_words(m, slot)
        changed = now != prev
        for p in np.flatnonzero(changed & ~bitmap):
            out.misses.append((it, int(p)))
        first_all_set = mode == "initially-set" and it == 1
        for p in np.flatnonzero(bitmap & changed):
            if int(now[p]) not in (it, it - 1) and not first_all_set:
                out.bad_values.append((it, int(p), int(now[p])))
        out.reported += int(bitmap.sum())
        out.bitmaps.append(np.flatnonzero(bitmap).tolist())
        prev = now
        vm.write_guest(it_ipa, struct.pack("<Q", it + 1))      # the next iteration
        out.iterations = it
    return out
