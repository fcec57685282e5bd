"""The vCPUs of a machine as the debugging tools see them: which one runs, what state each is
in, and one step of one vCPU while the others stay stopped.

A board with several vCPUs (`emu.machine.Machine(smp=N)`) runs them one at a time on one host
thread through `hyp.smp.Scheduler`: round robin in index order, `quantum` steps per turn, a
vCPU off (PSCI) or waiting in WFI with no interrupt skipped. The debugger's model is all-stop:
when the machine is stopped every vCPU is; continuing runs the scheduler; a single step runs
one vCPU alone (`step_alone`), which changes the interleaving a free run would have had (the
other vCPUs do not run meanwhile) but nothing else.

`Turns` is the order in which `s2emu step` steps a machine: the scheduler's, one step at a
time, so a stepped run interleaves its vCPUs as a free run with the same quantum does.

With one vCPU every function here is the plain path (`machine.vcpu.run`).
"""
from __future__ import annotations

from hyp.psci import OFF, PENDING
from hyp.smp import Scheduler
from hyp.vcpu import RunResult

RUNNING, WAITING, EVENT = "running", "wfi", "wfe"


def cpus(m) -> list:
    """Every vCPU of `m` (emu.cpu.VCPU), in index order."""
    return list(getattr(m, "cpus", [m.cpu]))


def scheduler(m) -> Scheduler | None:
    """The machine's scheduler, when it has several vCPUs."""
    return m.vcpu if isinstance(m.vcpu, Scheduler) else None


def current(m) -> int:
    """The index of the vCPU running now, or that ran last (the one a stop happened on)."""
    return getattr(m, "current", 0) if scheduler(m) is not None else 0


def steps(m) -> int:
    """Steps of every vCPU so far (the machine's step count; exact inside a run too)."""
    return sum(c.insn_index() for c in cpus(m))


def instructions(m) -> int:
    """Instructions retired by every vCPU so far."""
    return sum(c.instructions for c in cpus(m))


def state(m, i: int) -> str:
    """vCPU i's state: "running" (on: it runs when the machine does), "wfi" (waits for an
    interrupt), "wfe" (waits for an event: another vCPU's turn or an interrupt), "off" or
    "on-pending" (PSCI: CPU_ON accepted, not run yet)."""
    sched = scheduler(m)
    if sched is None:
        return RUNNING
    power = sched.power.states[i]
    if power in (OFF, PENDING):
        return power
    return WAITING if sched.halted[i] else EVENT if sched.waiting[i] else RUNNING


def runnable(m, i: int) -> bool:
    """Would the scheduler run vCPU i now (on, and not waiting - or its interrupt is up)?"""
    s = state(m, i)
    return s in (RUNNING, PENDING) or \
        s in (WAITING, EVENT) and bool(getattr(cpus(m)[i], "virq", False))


def select(m, i: int) -> None:
    """Make vCPU i the running one (the scheduler's `current`, the board's banked devices),
    as the scheduler does before it runs it."""
    sched = scheduler(m)
    if sched is not None:
        sched.current = i
        sched.on_switch(i)


def step_alone(m, i: int, timeout: float | None = None) -> RunResult:
    """One step of vCPU i - an instruction, or an exception entry - with the other vCPUs
    stopped. The vCPU must be runnable (`runnable`). The result's reason is "budget" for a
    complete step, also when the step was a WFI that now waits ("halted") or a CPU_OFF
    ("cpu-off"): the scheduler's bookkeeping is kept as its own run keeps it."""
    sched = scheduler(m)
    if sched is None:
        return m.vcpu.run(max_insns=1, timeout=timeout)
    select(m, i)
    sched.halted[i] = sched.waiting[i] = False
    sched.power.started(i)
    r = sched.vcpus[i].run(max_insns=1, timeout=timeout)
    if sched.ran(i, r):
        return RunResult("budget", r.instructions, exit=r.exit)
    return r


class Turns:
    """Which vCPU each step of `s2emu step` runs on a machine with several: the scheduler's
    choice - the vCPU that ran last (the one a `--from` breakpoint stopped) goes on for a
    quantum of steps, then the next runnable one in index order - and, when every vCPU that
    is on waits for an interrupt, the scheduler's sleep in virtual time to the next timer."""

    def __init__(self, m) -> None:
        self.m = m
        self.sched = scheduler(m)
        self.i = current(m)
        self.left = self.sched.quantum if self.sched is not None else 0

    def next(self, timeout: float | None = None) -> int | RunResult:
        """The vCPU to step next, or the RunResult that ends stepping (every vCPU off,
        nothing can wake one, a stop request, ...)."""
        m, n = self.m, len(cpus(self.m))
        while True:
            if self.left > 0 and runnable(m, self.i):
                return self.i
            for k in range(1, n + 1):
                j = (self.i + k) % n
                if runnable(m, j):
                    self.i, self.left = j, self.sched.quantum
                    return j
            r = self._sleep(timeout)
            if r is not None:
                return r

    def done(self, i: int) -> None:
        """vCPU i made a step; a WFI that waits, a WFE or a CPU_OFF ends its turn (as the
        scheduler's)."""
        self.left = self.left - 1 if state(self.m, i) == RUNNING else 0

    def _sleep(self, timeout: float | None) -> RunResult | None:
        """Every vCPU that is on waits: let the scheduler sleep until the next timer (it
        runs nothing: the run ends at that time). None when a vCPU may run now."""
        clock = self.m.vm.clock
        clock.fire_due()
        if any(runnable(self.m, j) for j in range(len(cpus(self.m)))):
            return None
        wake = clock.next_wake()
        if wake is None and any(self.sched.waiting):   # a WFE may always wake (spuriously)
            self.sched.waiting = [False] * len(self.sched.waiting)
            return None
        if wake is None:                        # all off, or no interrupt can ever come
            return self.sched.run(max_insns=1, timeout=timeout)
        target = min(wake, clock.next_deadline() or wake)
        r = self.sched.run(until_ns=target, timeout=timeout)
        return None if r.reason == "time" else r
