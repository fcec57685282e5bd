"""Live migration in one process (the stream through memory): RAM checksums equal on both ends,
the guest carries on without noticing, cancel and failures leave the source running as if
nothing happened, a corrupted stream or RAM never starts."""
import io
import os
import re

import numpy as np
import pytest

from emu import cpu_state
from emu.machine import Machine
from emu.migration import incoming, migrate_out
from hyp.migration.precopy import Params
from hyp.migration.stream import StreamError

from conftest import GUESTS


def machine(name: str, args: str, ram: int = 32 << 20, **kw) -> Machine:
    m = Machine(ram, **kw)
    m.load(os.path.join(GUESTS, f"{name}.elf"), args)
    return m


def migrate(m: Machine, params: Params | None = None, corrupt=None):
    """Pre-copy `m` into a buffer until switch-over, then receive it into a new board."""
    buf = io.BytesIO()
    src = migrate_out(m, buf, params)
    r = m.run(max_insns=50_000_000)
    assert r.reason == "migrate", r
    report = src.complete()
    assert report.status == "completed", report.error
    buf.seek(0)
    dest, inc = incoming(buf, corrupt=corrupt)
    return report, dest, inc


def ram(m: Machine) -> bytes:
    return m.vm.read_guest(m.ram.ipa, m.ram.size)


def test_dirtyram_migrates_and_carries_on_exactly():
    """The migrated guest ends with the same RAM and console as one that never moved."""
    plain = machine("dirtyram", "1024 64 5 60")
    assert plain.run().reason == "off"
    m = machine("dirtyram", "1024 64 5 60")
    assert m.run(max_insns=20_000).reason == "budget"
    report, dest, inc = migrate(m)
    assert inc.digests == report.digests                     # both ends, at switch-over
    assert len(report.iterations) >= 2 and report.downtime_ns > 0
    assert dest.run().reason == "off"
    assert m.uart.text + dest.uart.text == plain.uart.text
    assert ram(dest) == ram(plain)
    assert cpu_state.save(dest.cpu).regs["pc"] == cpu_state.save(plain.cpu).regs["pc"]


def test_a_counter_continues_without_gap_or_repeat():
    m = machine("counter", "60 10")
    m.run(max_insns=30_000)
    report, dest, _ = migrate(m, Params(bandwidth=32 << 20))
    assert dest.run().reason == "off"
    lines = (m.uart.text + dest.uart.text).splitlines()
    numbers = [int(x) for x in re.findall(r"counter (\d+) at", "\n".join(lines))]
    times = [int(x) for x in re.findall(r"at (\d+) ms", "\n".join(lines))]
    assert numbers == list(range(1, 61)) and lines[-1] == "counter: done"
    steps = np.diff(times)
    assert (steps >= 10).all()                               # time never goes back
    # one step carries the downtime: the destination's clock resumed after it
    assert steps.max() - 10 <= report.downtime_ns // 1_000_000 + 1


def test_vcpu_state_round_trips_through_a_running_guest():
    m = machine("thumb", "")
    m.run(max_insns=5_000)
    saved = cpu_state.save(m.cpu)
    other = Machine(32 << 20)
    cpu_state.load(other.cpu, saved)
    assert cpu_state.save(other.cpu).diff(saved) == {}


@pytest.mark.parametrize("name,smp,after", [
    pytest.param("mmu", 1, 120_000, id="mmu-on-early"),
    pytest.param("mmu", 1, 250_000, id="mmu-on-later"),
    pytest.param("irq", 2, 27_000, id="irq-two-vcpus-timers-gic"),
])
def test_a_guest_with_its_own_mmu_and_interrupts_carries_on_exactly(name, smp, after):
    """Migrated with its MMU on (the destination's MMU model follows the restored TTBRs,
    TTBCR, SCTLR...) or with GIC, timers and a second vCPU live: the destination ends as a
    run that never moved (console, RAM, registers)."""
    plain = machine(name, "", smp=smp)
    assert plain.run(max_insns=20_000_000).reason == "off"
    m = machine(name, "", smp=smp)
    assert m.run(max_insns=after).reason == "budget"
    if name == "mmu":
        assert m.cpu.mmu.s1.enabled
    report, dest, inc = migrate(m, Params(bandwidth=1 << 36, tick_ns=10_000))   # before it ends
    assert inc.digests == report.digests
    if name == "mmu":
        assert dest.cpu.mmu.s1 == m.cpu.mmu.s1
    assert dest.run(max_insns=20_000_000).reason == "off"
    assert m.uart.text + dest.uart.text == plain.uart.text
    if name == "mmu":
        assert ram(dest) == ram(plain)
        assert dest.cpu.regs() == plain.cpu.regs()


def assert_iterations_closed(report) -> None:
    """Every iteration of a migration cut short ends where the migration did: no negative
    virtual durations, no wall start times reported as durations."""
    assert report.iterations
    for it in report.iterations:
        assert it.start_ns <= it.end_ns <= report.end_ns
        assert 0 <= it.wall_s <= report.wall_s


@pytest.mark.parametrize("rebuild", ["lazy", "now"])
def test_cancel_leaves_the_source_running_as_if_nothing_happened(rebuild):
    plain = machine("dirtyram", "512 32 5 40")
    plain.vm.update_vmid()
    plain.vm.map_slot(plain.ram)
    tables = plain.host.pool.in_use
    assert plain.run().reason == "off"
    m = machine("dirtyram", "512 32 5 40")
    m.vm.update_vmid()
    m.vm.map_slot(m.ram)                                     # 2 MiB blocks before logging
    assert m.run(max_insns=10_000).reason == "budget"
    src = migrate_out(m, io.BytesIO(), Params(bandwidth=1 << 20, rebuild=rebuild))
    r = m.run(max_insns=10_000)
    assert r.reason == "budget" and src.report.status == "active"
    report = src.cancel()
    assert report.status == "cancelled"
    assert_iterations_closed(report)
    assert not any(s.log_dirty for s in m.vm.memslots)
    if rebuild == "now":
        assert m.host.pool.in_use == tables                  # blocks back, tables freed
    assert m.run().reason == "off"
    assert m.uart.text == plain.uart.text and ram(m) == ram(plain)
    assert m.vm.stage2.table_pages() == m.host.pool.in_use  # nothing leaked


class DiesAfter(io.RawIOBase):
    """A destination that goes away after `n` bytes."""

    def __init__(self, n: int) -> None:
        self.left = n

    def writable(self):
        return True

    def write(self, b):
        if self.left <= 0:
            raise BrokenPipeError("connection reset by peer")
        self.left -= len(b)
        return len(b)


def test_a_destination_that_dies_is_a_cancel_at_the_source():
    plain = machine("dirtyram", "512 32 5 40")
    plain.run()
    m = machine("dirtyram", "512 32 5 40")
    assert m.run(max_insns=10_000).reason == "budget"
    src = migrate_out(m, DiesAfter(300_000), Params(bandwidth=4 << 20))
    r = m.run()
    assert r.reason == "off"                                  # the guest never noticed
    assert src.report.status == "failed" and "went away" in src.report.error
    assert_iterations_closed(src.report)
    assert m.uart.text == plain.uart.text and ram(m) == ram(plain)


def test_non_convergence_is_capped_and_reported():
    """512 pages every ms (2 GiB/s) over a 16 MiB/s link never fits a 1 ms downtime: the
    iteration cap forces the switch-over and the report shows what it cost."""
    m = machine("dirtyram", "2048 512 1 0", ram=16 << 20)
    m.run(max_insns=20_000)
    report, dest, inc = migrate(m, Params(bandwidth=16 << 20, downtime_ns=1_000_000,
                                          max_iterations=4))
    assert report.forced and len(report.iterations) == 5
    assert report.downtime_ns > 1_000_000
    assert inc.digests == report.digests


def test_auto_converge_throttles_until_it_fits():
    """A CPU-bound dirtier (a 2000-iteration loop before each store: ~170k pages/s) over a
    256 MiB/s link (65536 pages/s) with a 1 ms downtime limit: the dirty set never shrinks on
    its own; throttling the guest (50 %, then +25 % per trigger) makes it converge."""
    def source():
        m = machine("dirtyram", "512 1 0 0 2000", ram=16 << 20)
        m.run(max_insns=20_000)
        return m
    link = dict(bandwidth=256 << 20, downtime_ns=1_000_000)
    report, _, _ = migrate(source(), Params(**link, max_iterations=5))
    assert report.forced and report.throttle == 0             # it would not converge alone
    report, _, inc = migrate(source(), Params(**link, auto_converge=True, throttle_initial=50,
                                              throttle_increment=25, max_iterations=60))
    assert not report.forced and report.throttle >= 50
    throttles = [it.throttle for it in report.iterations]
    assert throttles == sorted(throttles) and throttles[0] == 0
    assert inc.digests == report.digests


def test_a_checksum_mismatch_never_starts_the_guest():
    m = machine("dirtyram", "256 16 5 40")
    assert m.run(max_insns=10_000).reason == "budget"

    def flip(dest):                                          # one bit of RAM, in transit
        dest.host.mem.buf[dest.ram.pa - dest.host.mem.base + 4096 * 600] ^= 1
    with pytest.raises(StreamError, match="checksum mismatch on memslot ram"):
        migrate(m, corrupt=flip)


@pytest.mark.parametrize("cut", [0, 100, 5000, -200, -1])
def test_a_truncated_stream_is_refused(cut):
    m = machine("dirtyram", "256 16 5 40")
    buf = io.BytesIO()
    src = migrate_out(m, buf)
    m.run()
    src.complete()
    data = buf.getvalue()
    with pytest.raises(StreamError):
        incoming(io.BytesIO(data[:cut] if cut else b""))
