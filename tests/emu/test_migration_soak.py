"""Soak: repeated back-and-forth migrations of running guests, checksums equal every time, the
guest never losing or repeating a round; and two VMs on one host migrated concurrently
through VMID rollovers. CI runs a reduced count; S2EMU_SOAK=N sets the number of round trips
(e.g. S2EMU_SOAK=50 python -m pytest -q -m slow tests/emu/test_migration_soak.py)."""
import io
import os

import pytest

from emu.host_machine import HostMachine
from emu.machine import Machine
from emu.migration import incoming, migrate_out
from hyp.migration.precopy import Params

from conftest import GUESTS

ROUNDS = int(os.environ.get("S2EMU_SOAK", "2"))


def hop(m: Machine, params: Params) -> Machine:
    """Migrate `m` (running) to a new board; both ends' checksums must agree."""
    buf = io.BytesIO()
    src = migrate_out(m, buf, params)
    r = m.run(max_insns=100_000_000)
    assert r.reason == "migrate", r
    report = src.complete()
    buf.seek(0)
    dest, inc = incoming(buf)
    assert report.status == "completed" and inc.digests == report.digests
    return dest


def round_counter(m: Machine, img) -> int:
    return int.from_bytes(m.vm.read_guest(img.symbol("dirtyram_round"), 4), "little")


@pytest.mark.slow
def test_back_and_forth():
    m = Machine(32 << 20)
    img = m.load(os.path.join(GUESTS, "dirtyram.elf"), "2048 128 2 0")
    seen = []
    for i in range(2 * ROUNDS):
        m.run(max_insns=200_000)
        seen.append(round_counter(m, img))
        m = hop(m, Params(bandwidth=64 << 20, compress=bool(i % 2)))
        assert round_counter(m, img) == seen[-1] or round_counter(m, img) > seen[-1]
    assert seen == sorted(seen) and seen[-1] > seen[0]
    assert "MISMATCH" not in m.uart.text


@pytest.mark.slow
def test_two_vms_migrated_concurrently_through_vmid_rollovers():
    """Both VMs of a host pre-copy at once (each its own stream) while they take turns on
    the CPU with one-bit VMIDs; both arrive whole."""
    for _ in range(ROUNDS):
        hm = HostMachine([16 << 20, 16 << 20], vmid_bits=1)
        for m, args in zip(hm.machines, ("1024 64 2 0", "2048 32 1 0")):
            m.load(os.path.join(GUESTS, "dirtyram.elf"), args)
        bufs = [io.BytesIO(), io.BytesIO()]
        srcs = [migrate_out(m, b, Params(bandwidth=32 << 20)) for m, b in zip(hm.machines, bufs)]
        done = [False, False]
        while not all(done):
            for i, m in enumerate(hm.machines):
                if not done[i] and m.run(max_insns=20_000).reason == "migrate":
                    done[i] = True
        assert hm.host.vmids.rollovers > 2
        for src, buf in zip(srcs, bufs):
            report = src.complete()
            buf.seek(0)
            _, inc = incoming(buf)
            assert inc.digests == report.digests
