"""The hypervisor's vCPU loop: enter the guest, handle each exit (KVM's kvm_arch_vcpu_ioctl_run
and handle_exit, arch/arm/kvm/arm.c + handle_exit.c)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from . import abort, hypercall
from .dirty import DirtyLogError
from .exits import (BudgetExhausted, DebugStop, Hypercall, NoProgress, Stage2Abort,
                    StopRequested, WaitForEvent, WaitForInterrupt)

SLICE = 5_000_000           # instructions per entry when nothing else bounds the run


@dataclass
class RunResult:
    """Why `run` returned. reason: off, reset, budget (max_insns reached), time (until_ns
    reached), timeout (wall clock), interrupt (a stop request, e.g. Ctrl-C), wfi (waits for
    an interrupt nothing can raise), debug (a debugger stop), dirty-ring-full, error (message
    in `error`); with several vCPUs also halted (this one waits in WFI) and cpu-off.
    `instructions` counts steps: retired instructions and exception entries (emu.cpu)."""
    reason: str
    instructions: int
    error: str | None = None
    exit: object | None = None


@dataclass
class Vcpu:
    """Runs one machine CPU (`cpu`, e.g. emu.cpu.VCPU) for `vm`."""
    vm: object
    cpu: object
    # fn(kind, exit, outcome): ("exit", ex, None) before handling, ("handled", ex, outcome) after
    observers: list[Callable[[str, object, str | None], None]] = field(default_factory=list)
    # With several vCPUs (hyp.smp) a WFI with no interrupt pending ends the run ("halted"):
    # the scheduler runs the others, and sleeps only when all of them wait.
    halt_on_wfi: bool = False
    # Called after each handled exit, for work that must happen between bursts but need
    # not see every abort (the console's input and prompt flushing): unlike observers they
    # leave the fault fast path on.
    pollers: list[Callable[[], None]] = field(default_factory=list)
    # Resolve dirty-logging faults where the walk refused them (abort.resolve_in_place),
    # unless observers watch every exit; False: every abort exits (tests compare both).
    fast_faults: bool = True

    def _enter(self) -> None:
        vm = self.vm
        vm.update_vmid()
        self.cpu.load_stage2(vm.hcr, vm.stage2.vtcr, vm.stage2.vttbr)

    def run(self, max_insns: int | None = None, timeout: float | None = None,
            slice_insns: int = SLICE, until_ns: int | None = None) -> RunResult:
        """Run until the guest powers off, `max_insns` more steps ran, virtual time reaches
        `until_ns`, the dirty ring is (soft-)full, a stop is requested (cpu.stop: Ctrl-C, or
        the `timeout`), or an error.

        `timeout` (seconds of wall clock) is the only place the wall clock is read: a
        user-facing guard that stops the guest at a safe point (emu.stop) and never
        influences guest-visible state."""
        cpu, vm = self.cpu, self.vm
        counted = getattr(cpu, "icount", True)
        start = cpu.progress
        stop = cpu.stop
        stop.set_deadline(time.monotonic() + timeout if timeout else None)
        stop.running = True
        try:
            while True:
                vm.clock.fire_due()
                if vm.exit_request is not None:
                    reason, vm.exit_request = vm.exit_request, None
                    return RunResult(reason, cpu.progress - start)
                reason = stop.take()
                if reason is not None:
                    return RunResult(reason, cpu.progress - start)
                ring = vm.dirty_ring
                if ring is not None and ring.soft_full:
                    if vm.on_dirty_ring_full is None:
                        return RunResult("dirty-ring-full", cpu.progress - start)
                    vm.on_dirty_ring_full()          # userspace harvests (KVM_EXIT_DIRTY_RING_FULL)
                    if ring.soft_full:
                        return RunResult("dirty-ring-full", cpu.progress - start)
                budget = slice_insns
                if max_insns is not None:
                    left = max_insns - (cpu.progress - start)
                    if left <= 0:
                        return RunResult("budget", cpu.progress - start)
                    budget = min(budget, left)
                now = vm.clock.now_ns()
                if until_ns is not None and now >= until_ns:
                    return RunResult("time", cpu.progress - start)
                # stop exactly at until_ns or the next timer (fire_due ran every due one)
                limit = vm.clock.next_deadline()
                if until_ns is not None and (limit is None or until_ns < limit):
                    limit = until_ns
                if limit is not None:
                    budget = max(1, min(budget, (limit - now) // vm.clock.ns_per_insn))
                self._enter()
                cpu.fault_in_place = self._in_place if self.fast_faults and \
                    not self.observers else None
                before = cpu.progress
                if counted:
                    vm.clock.in_flight = lambda: cpu.progress - before
                ex = cpu.run(budget)
                if counted:
                    vm.clock.instructions += cpu.progress - before
                    before = cpu.progress
                vm.stats["exits"] += 1
                if self.observers and isinstance(ex, Stage2Abort):
                    ex.pin()                          # they may decode it after handling
                for fn in self.observers:
                    fn("exit", ex, None)              # before the hypervisor acts
                try:
                    outcome = self._handle(ex)
                except (abort.HypervisorError, DirtyLogError) as e:
                    return RunResult("error", cpu.progress - start, str(e), ex)
                if counted:                           # emulated instructions, injections
                    vm.clock.instructions += cpu.progress - before
                    before = cpu.progress
                for fn in self.observers:
                    fn("handled", ex, outcome)         # after: map/dirty/mmio/inject/af/hvc/...
                for poll in self.pollers:
                    poll()
                if outcome in ("wfi", "suspend"):
                    if self.halt_on_wfi:
                        if not getattr(cpu, "virq", False):
                            return RunResult("halted", cpu.progress - start, exit=ex)
                        outcome = "woken"
                    else:
                        outcome = self._wait_for_interrupt(until_ns)
                    if outcome == "time":
                        return RunResult("time", cpu.progress - start)
                if outcome == "wfe" and self.halt_on_wfi:
                    return RunResult("yield", cpu.progress - start, exit=ex)
                if outcome in ("off", "reset", "wfi", "debug", "cpu-off"):
                    return RunResult(outcome, cpu.progress - start, exit=ex)
                if outcome == "stuck":
                    return RunResult("error", cpu.progress - start, _stuck(cpu, ex), ex)
        finally:
            cpu.fault_in_place = None
            stop.running = False
            stop.set_deadline(None)
            vm.clock.__dict__.pop("in_flight", None)

    def _in_place(self, fault) -> bool:
        """The machine's TLB-fill path asks this about a stage-2 fault the walk found: True
        when the hypervisor resolved it there (the access is retried, no exit)."""
        return abort.resolve_in_place(self.vm, fault)

    def _wait_for_interrupt(self, until_ns: int | None) -> str:
        """WFI: sleep in virtual time until the interrupt controller raises this vCPU's line
        ("woken"), firing timers on the way; "wfi" when no timer that could raise one is
        armed (nothing can ever wake it), "time" at `until_ns`."""
        while not getattr(self.cpu, "virq", False):
            reason = self.vm.clock.sleep_to_wake(until_ns)
            if reason is not None:
                return reason
            self.vm.stats["wfi sleeps"] += 1
        return "woken"

    def _handle(self, ex) -> str:
        vm = self.vm
        if isinstance(ex, Stage2Abort):
            return abort.handle(vm, self.cpu, ex)
        if isinstance(ex, Hypercall):
            vm.stats["hvc"] += 1
            res = hypercall.handle(vm, self.cpu)
            return res.stop or "hvc"
        if isinstance(ex, BudgetExhausted):
            return "slice"
        if isinstance(ex, WaitForInterrupt):
            vm.stats["wfi"] += 1
            return "wfi"
        if isinstance(ex, WaitForEvent):
            vm.stats["wfe"] += 1
            return "wfe"
        if isinstance(ex, DebugStop):
            return "debug"
        if isinstance(ex, StopRequested):
            return "slice"                   # the request is taken at the top of the loop
        if isinstance(ex, NoProgress):
            return "stuck"
        raise TypeError(f"unknown exit {ex!r}")


def _stuck(cpu, ex: NoProgress) -> str:
    return (f"no progress: the guest took {ex.entries} exception entries in a row without "
            f"completing an instruction (now at PC {ex.pc:#x}: its exception vectors "
            f"cannot run)")
