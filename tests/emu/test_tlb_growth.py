"""Unicorn's TLB grows the same way whether instructions are counted or not (issue 11): a
guest sweeping more pages than the TLB holds would otherwise refill every page from Python
on every pass (QEMU's tlb_mmu_resize_locked grows it only on flushes)."""
import os

import pytest

from emu.machine import Machine

GUESTS = os.path.join(os.path.dirname(__file__), "..", "..", "guests")
PAGES, ROUNDS = 4096, 4


def _sweep(icount: bool):
    m = Machine(64 << 20, icount=icount, console=lambda b: None)
    m.load(os.path.join(GUESTS, "dirtyram.elf"), f"{PAGES} {PAGES} 0 {ROUNDS}")
    assert m.run().reason == "off"
    c = m.cpu
    return c.stats["fills"], c.native_fills, c.stats["tlb_growth_flushes"], c._uc_tlb_size


@pytest.fixture(scope="module")
def counted():
    return _sweep(True)


def test_the_tlb_grows_to_hold_the_sweep_and_python_fills_stay_few(counted):
    fills, native, growths, size = counted
    assert growths >= 1 and size >= PAGES           # grown past the 256-entry start
    assert fills < 2 * PAGES                        # not PAGES * ROUNDS: later rounds hit


def test_uncounted_runs_have_the_same_tlb_growth_policy(counted):
    assert _sweep(False) == counted
