"""Run control of the GDB stub (emu.debug.gdbstub): continue and step under the debugger, why the
guest stopped, and the stop replies.

- A single step is `Vcpu.run(max_insns=1)`, the same engine as `s2emu step`: one step is one
  instruction retiring (stage-2 aborts taken on the way are handled inside it; an access the
  hypervisor emulates, MMIO, retires too) or one exception entry (SVC, UDF, an injected
  abort: the step stops on the vector).
- Continuing runs slices of `slice_insns` instructions and polls the connection between
  them (gdb's Ctrl-C stops the guest at the next slice boundary).
- fault-stop: a Vcpu observer leaves `Vcpu.run` before the hypervisor handles a stage-2
  abort; continuing or stepping then lets the hypervisor handle that abort.

With several vCPUs (all-stop, one gdb thread per vCPU: emu.debug.gdb_threads) continuing runs
them all through the scheduler, and the stop reply names the vCPU that stopped (the one that
hit the breakpoint or watchpoint, took the abort, or ran when gdb's Ctrl-C came). A step runs
the vCPU of vCont's `s:TID` (or Hc, or Hg) alone, one step, the others stopped
(emu.debug.vcpus.step_alone). A vCPU waiting in WFI, or off, cannot step alone: the machine
runs (every vCPU, breakpoints armed) until it has woken (been turned on) and made its step,
as QEMU does (and as gdb's `vCont;s:N;c` allows); if nothing can ever wake a waiting vCPU it
steps as a spurious wake-up, as with one vCPU. vCont's continue actions with a thread-id
(`c:2`, gdb's scheduler locking) still run every vCPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from unicorn import UC_HOOK_CODE

from hyp.exits import Stage2Abort
from hyp.psci import OFF
from hyp.vcpu import RunResult

from ..cpu import GuestCrash
from . import vcpus
from .gdb_breakpoints import DebugPoints
from .gdb_monitor import FaultStop
from .gdb_packets import (ADDR_LIMIT, INTERRUPT, THREAD_ID, Connection, parse_hex, resume_ok,
                          vcont_actions)
from .gdb_threads import Threads

SIGINT, SIGILL, SIGTRAP, SIGSEGV = 2, 4, 5, 11
TERMINAL = ("off", "reset")


@dataclass
class Stop:
    """Why the guest stopped, as reported to gdb."""
    signal: int = SIGTRAP
    reason: str = ""                    # stop-reply pair, e.g. "swbreak:" or "watch:40001000"
    message: str = ""                   # printed by gdb (O packet) before the stop reply
    kind: str = "stop"                  # stop | watch | fault | wfi | exit | eof
    result: RunResult | None = None     # kind == exit: the guest's end
    fault: tuple | None = None          # kind == fault: the abort's identity
    cpu: int = 0                        # the vCPU it happened on (thread cpu + 1)

    def reply(self) -> str:
        extra = f"{self.reason};" if self.reason else ""
        return f"T{self.signal:02x}thread:{self.cpu + THREAD_ID:x};{extra}"


class _FaultStop(Exception):
    """Raised from the Vcpu observer to leave `Vcpu.run` before the hypervisor handles an
    abort (fault-stop). Never escapes the stub."""

    def __init__(self, stop: Stop) -> None:
        super().__init__("stage-2 abort")
        self.stop = stop


class RunControl:
    """Runs one machine's guest for the debugger: steps, slices, and stops reported."""

    def __init__(self, machine, slice_insns: int) -> None:
        self.machine = machine
        self.cpu = machine.cpu
        self.vcpu = machine.vcpu
        self.slice_insns = slice_insns
        self.threads = Threads(machine)
        self.multi = self.threads.count > 1
        self.points = DebugPoints(machine)
        self.faults = FaultStop()
        self._fault_skip: tuple | None = None
        self.last_stop = Stop()
        self.swbreak = False                # gdb understands the swbreak / hwbreak
        self.hwbreak = False                # stop reasons (qSupported)
        self.start_insns = 0

    def attach(self) -> None:
        """Observe the vCPU (for the duration of a serve)."""
        self.start_insns = vcpus.steps(self.machine)
        self.vcpu.observers.insert(0, self._observe_exit)

    def detach(self) -> None:
        self.vcpu.observers.remove(self._observe_exit)

    def clear(self) -> None:
        """Drop everything a session installed (on detach, disconnect or the end)."""
        self.points.clear()
        self.faults.off()
        self._fault_skip = None

    def final(self, r: RunResult) -> RunResult:
        """The result of the whole serve: steps (of every vCPU) counted from its start."""
        return RunResult(r.reason, vcpus.steps(self.machine) - self.start_insns, r.error,
                         r.exit)

    def new_session(self) -> None:
        """A debugger connected: the guest stopped on the vCPU that ran last."""
        i = vcpus.current(self.machine)
        self.last_stop = Stop(SIGTRAP, cpu=i)
        self.threads.reset(i)

    # ---- observers -------------------------------------------------------------------------
    def _observe_exit(self, kind: str, ex, outcome) -> None:
        """Vcpu observer (first in the list): fault-stop leaves the run before the
        hypervisor acts, so later observers see each handled abort exactly once."""
        if kind != "exit" or not isinstance(ex, Stage2Abort):
            return
        if self._fault_skip is None and not self.faults.on:
            return                      # the common case: no decode, nothing to do
        # What the walk found is enough to recognise and filter an abort; the syndrome is
        # decoded (capstone) only for the one reported.
        pf = ex.page_fault
        i = vcpus.current(self.machine)
        key = (i, ex.pc, pf.ipa, pf.type, pf.access)
        if self._fault_skip is not None and self._fault_skip[0] == i:
            skip, self._fault_skip = self._fault_skip, None
            if skip == key:
                return                  # the abort reported last: now the hypervisor's turn
        if not self.faults.on:
            return
        if not self.faults.covers(pf.ipa):
            return
        raise _FaultStop(Stop(SIGTRAP, message=self.faults.report(ex), kind="fault", fault=key,
                              cpu=i))

    # ---- running ---------------------------------------------------------------------------
    def _run(self, run: Callable[[], RunResult]) -> tuple[RunResult | None, Stop | None]:
        """One run (`Vcpu.run`, the scheduler's, or one vCPU's step); returns (result,
        stop) - stop is None when the slice or the step just ended."""
        self.points.forget_watch_hit()
        try:
            r = run()
        except _FaultStop as fs:
            return None, fs.stop
        except GuestCrash as e:
            return None, Stop(SIGILL, message=f"s2emu: {e}\n",
                              cpu=vcpus.current(self.machine))
        i = vcpus.current(self.machine)
        cpu = self.threads.cpus[i]
        if r.reason == "budget":
            return r, None
        if r.reason == "debug":
            return r, self._debug_stop(i)
        if r.reason == "interrupt":              # Ctrl-C at the terminal ends the session
            return r, Stop(kind="exit", result=self.final(r))
        if r.reason in TERMINAL:
            note = "s2emu: the guest asked for SYSTEM_RESET: this board stops\n" \
                if r.reason == "reset" else ""
            return r, Stop(kind="exit", result=self.final(r), message=note)
        if r.reason == "wfi" and self.multi:
            return r, Stop(SIGTRAP, kind="wfi", cpu=i, message=(
                "s2emu: every vCPU that is on waits in WFI and no interrupt can come "
                "(stepping one treats its wait as a spurious wake-up)\n"))
        if r.reason == "wfi":
            return r, Stop(SIGTRAP, message=(
                f"s2emu: WFI at PC {cpu.pc:#x} and this board has no interrupt source "
                "(continuing treats it as a spurious wake-up)\n"))
        if r.reason == "error":
            return r, Stop(SIGSEGV, message=f"s2emu: hypervisor error: {r.error}\n", cpu=i)
        return r, Stop(SIGTRAP, message=f"s2emu: run stopped: {r.reason}\n", cpu=i)

    def _debug_stop(self, i: int) -> Stop:
        reason = self.points.take_watch_hit()
        if reason is not None:
            return Stop(SIGTRAP, reason, kind="watch", cpu=i)
        ztype = self.points.breakpoint_type(self.threads.cpus[i].pc)
        if ztype == 0 and self.swbreak:
            return Stop(SIGTRAP, "swbreak:", cpu=i)
        if ztype == 1 and self.hwbreak:
            return Stop(SIGTRAP, "hwbreak:", cpu=i)
        return Stop(SIGTRAP, cpu=i)             # a step trap (vector) or a foreign breakpoint

    def _prepare_resume(self, resumed: int) -> None:
        last = self.last_stop
        self.points.prepare_resume(after_watch=last.kind == "watch", resumed=resumed,
                                   watched=last.cpu)
        self._fault_skip = last.fault if last.kind == "fault" else None

    def _step(self, conn: Connection, i: int) -> Stop:
        if not self.multi:
            _, stop = self._run(lambda: self.vcpu.run(max_insns=1))
            return stop or Stop(SIGTRAP)
        m = self.machine
        if not vcpus.runnable(m, i):
            if vcpus.state(m, i) == OFF:
                conn.send_console(f"s2emu: vCPU {i} is off: the machine runs until it is "
                                  "turned on and makes its step\n")
            stop = self._step_waiting(conn, i)
            if stop.kind != "wfi" or vcpus.state(m, i) == OFF:
                return stop
            m.vcpu.halted[i] = False            # nothing can wake it: a spurious wake-up
        _, stop = self._run(lambda: vcpus.step_alone(m, i))
        if stop is None and vcpus.state(m, i) == OFF:
            return Stop(SIGTRAP, cpu=i, message=f"s2emu: vCPU {i} turned itself off "
                        "(PSCI CPU_OFF)\n")
        return stop or Stop(SIGTRAP, cpu=i)

    def _step_waiting(self, conn: Connection, i: int) -> Stop:
        """Step vCPU i, which waits in WFI or is off: run the machine until it has made one
        step (a code hook on its engine stops it there) or something else stops it first."""
        cpu = self.threads.cpus[i]
        start = cpu.progress

        def trap(uc, address, size, _ud):
            if cpu.insn_index() > start:
                cpu.debug_stop = "step"
                uc.emu_stop()
        handle = cpu.uc.hook_add(UC_HOOK_CODE, trap)
        cpu.flush_translations()
        try:
            return self._continue(conn)
        finally:
            cpu.uc.hook_del(handle)
            cpu.flush_translations()

    def _continue(self, conn: Connection) -> Stop:
        while True:
            _, stop = self._run(lambda: self.vcpu.run(max_insns=self.slice_insns))
            if stop is not None:
                return stop
            event = conn.poll()
            if event is INTERRUPT:
                return Stop(SIGINT, cpu=vcpus.current(self.machine))
            if event == "eof":
                return Stop(kind="eof")

    # ---- c / s / C / S / vCont packets -------------------------------------------------------
    def _resume(self, conn: Connection, step: bool, addr: int | None, thread: int):
        """Returns None (stopped, reply sent), "eof", or the final RunResult. `thread`: the
        vCPU to step, or whose PC `addr` sets."""
        if addr is not None:
            cpu = self.threads.cpus[thread]
            cpu.set_pc(addr & ~1, cpu.thumb)
        self._prepare_resume(thread if step else self.last_stop.cpu)
        stop = self._step(conn, thread) if step else self._continue(conn)
        if stop.kind == "eof":
            return "eof"
        if stop.message:
            conn.send_console(stop.message)
        if stop.kind == "exit":
            conn.send("W00" if stop.result.reason in TERMINAL else "X02")
            return stop.result
        self.last_stop = stop
        self.threads.stopped(stop.cpu)
        self.points.stopped(stop.cpu)
        conn.send(stop.reply())
        return None

    def resume_packet(self, conn: Connection, text: str):
        """c/s [ADDR], C/S SIG[;ADDR]: the signal is dropped (nothing to deliver)."""
        if not resume_ok(text, self.threads.count):
            conn.send("E01")
            return None
        cmd, args = text[0], text[1:]
        if cmd in "CS":
            args = args.partition(";")[2]
        addr = parse_hex(args, ADDR_LIMIT) if args else None
        return self._resume(conn, cmd in "sS", addr, self.threads.step_target())

    def vcont_packet(self, conn: Connection, text: str):
        """Each vCPU takes the leftmost action that applies to it (vCont;s:2;c: vCPU 1 steps,
        the others continue). If one steps, that vCPU steps alone (the Hc/Hg one if several
        would); otherwise every vCPU continues."""
        if not resume_ok(text, self.threads.count):
            conn.send("E01")
            return None
        actions = vcont_actions(text)
        verbs = []
        for i in range(self.threads.count):
            verbs.append(next((v for v, tid in actions
                               if tid in (-1, i + THREAD_ID)), None))
        target = self.threads.step_target()
        if verbs[target] != "s":
            target = next((i for i, v in enumerate(verbs) if v == "s"), None)
        if target is not None:
            return self._resume(conn, True, None, target)
        return self._resume(conn, False, None, self.threads.step_target())
