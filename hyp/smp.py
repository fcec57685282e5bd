"""Several vCPUs of one VM on one host thread, deterministically: one vCPU runs at a time for
a fixed quantum of steps, in index order (QEMU's round-robin TCG with -icount). Virtual time
advances with every step of whichever vCPU runs; a vCPU in WFI is skipped until its
interrupt line rises, and when every vCPU that is on waits, virtual time jumps to the next
timer that can raise an interrupt (nothing can: the run ends with "wfi").

WFE is trapped (HCR.TWE) and ends the vCPU's turn; the vCPU then waits for an event: it is
skipped until another vCPU has run (its store or SEV may be what it waits for), or its
interrupt line rises, or virtual time jumps to a timer because every vCPU waits. The event
register is not modelled: every wake-up may be spurious, which the architecture allows
(B1.8.13), so a WFE loop always re-checks its condition.

The scheduler has the run interface of one `hyp.vcpu.Vcpu` (run, observers, vm, cpu), so
everything that drives a machine drives a multi-vCPU one the same way.
"""
from __future__ import annotations

import time
from typing import Callable

from .psci import OFF, PowerState
from .vcpu import SLICE, RunResult, Vcpu

QUANTUM = 10_000          # steps per turn (Linux's spinlocks spin at most this long per turn)


class Scheduler:
    """Round-robin over `vcpus` (hyp.vcpu.Vcpu) whose power state `power` holds;
    `on_switch(i)` is called before vCPU i runs (the board's banked devices follow it)."""

    def __init__(self, vm, vcpus: list[Vcpu], power: PowerState,
                 on_switch: Callable[[int], None], quantum: int = QUANTUM) -> None:
        self.vm = vm
        self.vcpus = vcpus
        self.power = power
        self.on_switch = on_switch
        self.quantum = quantum
        self.observers: list = []
        self.pollers: list = []
        for v in vcpus:
            v.halt_on_wfi = True
            v.cpu.trap_wfe = True                 # HCR.TWE: a WFE ends the vCPU's turn
            v.observers = self.observers          # one list: a tracer sees every vCPU
            v.pollers = self.pollers
        self.halted = [False] * len(vcpus)
        self.waiting = [False] * len(vcpus)     # in WFE: until another vCPU ran, or an IRQ
        self.current = 0
        self._next = 0
        self._left = 0               # steps left in the current vCPU's turn

    @property
    def cpu(self):
        return self.vcpus[self.current].cpu

    def powered_on(self, i: int) -> None:
        """vCPU i was reset by CPU_ON: it runs at its next turn."""
        self.halted[i] = False

    def run(self, max_insns: int | None = None, timeout: float | None = None,
            slice_insns: int = SLICE, until_ns: int | None = None) -> RunResult:
        clock = self.vm.clock
        deadline = time.monotonic() + timeout if timeout else None
        done = 0
        while True:
            if max_insns is not None and done >= max_insns:
                return RunResult("budget", done)
            if until_ns is not None and clock.now_ns() >= until_ns:
                return RunResult("time", done)
            if self._left > 0 and self._runnable(self.current):
                i = self.current               # the rest of a turn a caller's budget cut
            else:
                i = self._pick()
                if i is None:
                    reason = self._sleep(until_ns)
                    if reason is not None:
                        return RunResult(reason, done)
                    continue
                self._left = self.quantum
            self.current = i
            self.on_switch(i)
            self.power.started(i)
            budget = self._left if max_insns is None else min(self._left, max_insns - done)
            left = None if deadline is None else max(1e-3, deadline - time.monotonic())
            r = self.vcpus[i].run(max_insns=budget, timeout=left, slice_insns=slice_insns,
                                  until_ns=until_ns)
            done += r.instructions
            self._left -= r.instructions
            waits = self.ran(i, r)
            if r.reason == "budget":
                if self._left <= 0:
                    self._next = i + 1
                continue
            self._left = 0
            self._next = i + 1
            if not waits:
                return RunResult(r.reason, done, r.error, r.exit)

    def ran(self, i: int, r: RunResult) -> bool:
        """Bookkeeping after vCPU i ran (here, or one step of it in the debugger): what it
        retired may be the event others wait for; a WFE makes it wait for one, a WFI with no
        interrupt halts it. True when `r` ends only this vCPU's turn (WFE, WFI, CPU_OFF)."""
        if r.instructions:                     # its stores and SEVs: the others' events
            self.waiting = [w and j == i for j, w in enumerate(self.waiting)]
        if r.reason == "yield":
            self.waiting[i] = True
        elif r.reason == "halted":
            self.halted[i] = True
        return r.reason in ("yield", "halted", "cpu-off")

    def _runnable(self, i: int) -> bool:
        return self.power.states[i] != OFF and not self.halted[i] and not self.waiting[i]

    def _pick(self) -> int | None:
        n = len(self.vcpus)
        for k in range(n):
            i = (self._next + k) % n
            if self.power.states[i] == OFF:
                continue
            if self.halted[i] or self.waiting[i]:
                if not getattr(self.vcpus[i].cpu, "virq", False):
                    continue
                self.halted[i] = self.waiting[i] = False
            return i
        return None

    def _sleep(self, until_ns: int | None) -> str | None:
        """Every vCPU that is on waits: jump to the next timer that can wake one."""
        if all(s == OFF for s in self.power.states):
            return "off"
        if any(self.waiting):
            self.waiting = [False] * len(self.waiting)   # a WFE may always wake (spuriously)
            if self.vm.clock.next_wake() is None:
                return None
        reason = self.vm.clock.sleep_to_wake(until_ns)
        if reason is None:
            self.vm.stats["wfi sleeps"] += 1
        return reason
