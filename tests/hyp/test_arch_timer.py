"""The Generic Timer and PMU models (hyp/timer) against the ARM ARM's register semantics
(DDI 0406C B8.1.4, B8.2; C12.7-C12.8), on a VirtualClock moved by hand."""
import pytest

from hyp.timer.arch_timer import ArchTimer, ArchTimerError, CTL_ENABLE, CTL_IMASK, CTL_ISTATUS
from hyp.timer.pmu import Pmu, PmuError
from hyp.vtime import VirtualClock


def make(ticks_now: int = 0):
    clock = VirtualClock()
    clock.slept_ns = ticks_now * 16
    lines = []
    return clock, ArchTimer(clock, lines.append), lines


def advance(clock, ns):
    clock.sleep(ns)
    clock.fire_due()


@pytest.mark.parametrize("ctl,cval,now,istatus,line", [
    pytest.param(0, 0, 100, 0, False, id="disabled: no ISTATUS, no line"),
    pytest.param(CTL_ENABLE, 50, 100, CTL_ISTATUS, True, id="enabled, met"),
    pytest.param(CTL_ENABLE, 150, 100, 0, False, id="enabled, not yet"),
    pytest.param(CTL_ENABLE, 100, 100, CTL_ISTATUS, True, id="CNTPCT == CVAL is met"),
    pytest.param(CTL_ENABLE | CTL_IMASK, 50, 100, CTL_ISTATUS, False, id="masked: status only"),
])
def test_ctl_istatus_and_line(ctl, cval, now, istatus, line):
    clock, t, lines = make(now)
    t.write_cval(cval)
    t.write_ctl(ctl)
    assert t.read_ctl() == ctl | istatus
    assert t.level is line and (lines[-1:] == [True]) is line


@pytest.mark.parametrize("tval,now,cval", [
    pytest.param(1000, 0, 1000, id="positive"),
    pytest.param(0xFFFFFF9C, 500, 400, id="negative: sign-extended"),
    pytest.param(0x7FFFFFFF, 10, 10 + 0x7FFFFFFF, id="largest"),
])
def test_tval_writes_cval_relative_to_the_counter(tval, now, cval):
    clock, t, _ = make(now)
    t.write_tval(tval)
    assert t.read_cval() == cval
    assert t.read_tval() == (cval - now) & 0xFFFFFFFF


def test_the_line_rises_exactly_at_the_deadline_and_falls_on_rewrite():
    clock, t, lines = make()
    t.write_tval(100)                       # deadline: 100 ticks = 1600 ns
    t.write_ctl(CTL_ENABLE)
    assert clock.next_wake() == 1600
    advance(clock, 1599)
    assert lines == []
    advance(clock, 1)
    assert lines == [True] and t.read_tval() == 0
    t.write_tval(10)                        # the next tick: line down until then
    assert lines == [True, False]
    advance(clock, 160)
    assert lines == [True, False, True]
    t.write_ctl(0)
    assert lines[-1] is False and clock.next_wake() is None


def test_save_and_load_reasserts_the_line_and_rejects_garbage():
    clock, t, lines = make(1000)
    t.write_cval(500)
    t.write_ctl(CTL_ENABLE)
    state = t.save()
    clock2, t2, lines2 = make(1000)
    t2.load(state)
    assert lines2 == [True] and t2.read_ctl() == CTL_ENABLE | CTL_ISTATUS
    for bad in ({"ctl": 8, "cval": 0}, {"ctl": 1}, {"ctl": 1, "cval": -1}, [1, 2]):
        with pytest.raises(ArchTimerError):
            t2.load(bad)
    assert t2.save() == state


# ---- the PMU cycle counter ---------------------------------------------------------------
def test_pmccntr_counts_virtual_ns_while_enabled():
    clock = VirtualClock()
    p = Pmu(clock)
    clock.sleep(100)
    assert p.read("PMCCNTR") == 0                     # not enabled yet
    p.write("PMCR", 1)
    p.write("PMCNTENSET", 1 << 31)
    clock.sleep(250)
    assert p.read("PMCCNTR") == 250
    p.write("PMCNTENCLR", 1 << 31)
    clock.sleep(1000)
    assert p.read("PMCCNTR") == 250                   # stopped
    p.write("PMCNTENSET", 1 << 31)
    p.write("PMCR", 1 | 8)                            # D: every 64th cycle
    clock.sleep(640)
    assert p.read("PMCCNTR") == 260
    p.write("PMCR", 1 | 4)                            # C: reset
    assert p.read("PMCCNTR") == 0
    assert p.read("PMCR") & 0xFFFF_F800 == 0x410F_0000   # ARM, Cortex-A15, N = 0


def test_pmccntr_wrap_sets_the_overflow_flag():
    clock = VirtualClock()
    p = Pmu(clock)
    p.write("PMCR", 1)
    p.write("PMCNTENSET", 1 << 31)
    p.write("PMCCNTR", 0xFFFF_FFF0)
    clock.sleep(0x20)
    assert p.read("PMCCNTR") == 0x10 and p.read("PMOVSR") == 1 << 31
    p.write("PMOVSR", 1 << 31)
    assert p.read("PMOVSR") == 0


@pytest.mark.parametrize("reg", ["PMSELR", "PMXEVTYPER", "PMXEVCNTR", "PMCEID0", "PMCEID1"])
def test_event_counter_registers_are_raz_wi(reg):
    p = Pmu(VirtualClock())
    p.write(reg, 0xFFFF_FFFF)
    assert p.read(reg) == 0


@pytest.mark.parametrize("userenr,name,write,allowed", [
    pytest.param(0, "PMCCNTR", False, False, id="EN=0: no"),
    pytest.param(1, "PMCR", True, True, id="EN=1: all"),
    pytest.param(4, "PMCCNTR", False, True, id="CR: cycle counter reads"),
    pytest.param(4, "PMCCNTR", True, False, id="CR: not writes"),
    pytest.param(2, "PMSWINC", True, True, id="SW: software increment"),
])
def test_pl0_access_follows_pmuserenr(userenr, name, write, allowed):
    p = Pmu(VirtualClock())
    p.write("PMUSERENR", userenr)
    assert p.pl0_allowed(name, write) is allowed


def test_pmu_save_load():
    clock = VirtualClock()
    p = Pmu(clock)
    p.write("PMCR", 1)
    p.write("PMCNTENSET", 1 << 31)
    clock.sleep(77)
    q = Pmu(clock)
    q.load(p.save())
    clock.sleep(3)
    assert q.read("PMCCNTR") == 80
    with pytest.raises(PmuError):
        q.load({"pmcr": 1})
