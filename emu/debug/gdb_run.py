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
"""
from __future__ import annotations

from dataclasses import dataclass

from hyp.exits import Stage2Abort
from hyp.vcpu import RunResult

from ..cpu import GuestCrash
from .gdb_breakpoints import DebugPoints
from .gdb_monitor import FaultStop
from .gdb_packets import ADDR_LIMIT, INTERRUPT, THREAD_ID, Connection, parse_hex, resume_ok

SIGINT, SIGILL, SIGTRAP, SIGSEGV = 2, 4, 5, 11
TERMINAL = ("off", "reset")


@dataclass
class Stop:
    """Why the guest stopped, as reported to gdb."""
    signal: int = SIGTRAP
    reason: str = ""                    # stop-reply pair, e.g. "swbreak:" or "watch:40001000"
    message: str = ""                   # printed by gdb (O packet) before the stop reply
    kind: str = "stop"                  # stop | watch | fault | exit | eof
    result: RunResult | None = None     # kind == exit: the guest's end
    fault: tuple | None = None          # kind == fault: the abort's identity

    def reply(self) -> str:
        extra = f"{self.reason};" if self.reason else ""
        return f"T{self.signal:02x}thread:{THREAD_ID:x};{extra}"


class _FaultStop(Exception):
    """Raised from the Vcpu observer to leave `Vcpu.run` before the hypervisor handles an
    abort (fault-stop). Never escapes the stub."""

    def __init__(self, stop: Stop) -> None:
        super().__init__("stage-2 abort")
        self.stop = stop


class RunControl:
    """Runs one machine's guest for the debugger: steps, slices, and stops reported."""

    def __init__(self, machine, slice_insns: int) -> None:
        self.cpu = machine.cpu
        self.vcpu = machine.vcpu
        self.slice_insns = slice_insns
        self.points = DebugPoints(machine)
        self.faults = FaultStop()
        self._fault_skip: tuple | None = None
        self.last_stop = Stop()
        self.swbreak = False                # gdb understands the swbreak / hwbreak
        self.hwbreak = False                # stop reasons (qSupported)
        self.start_insns = 0

    def attach(self) -> None:
        """Observe the vCPU (for the duration of a serve)."""
        self.start_insns = self.cpu.progress
        self.vcpu.observers.insert(0, self._observe_exit)

    def detach(self) -> None:
        self.vcpu.observers.remove(self._observe_exit)

    def clear(self) -> None:
        """Drop everything a session installed (on detach, disconnect or the end)."""
        self.points.clear()
        self.faults.off()
        self._fault_skip = None

    def final(self, r: RunResult) -> RunResult:
        """The result of the whole serve: steps counted from its start."""
        return RunResult(r.reason, self.cpu.progress - self.start_insns, r.error, r.exit)

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
        key = (ex.pc, pf.ipa, pf.type, pf.access)
        if self._fault_skip is not None:
            skip, self._fault_skip = self._fault_skip, None
            if skip == key:
                return                  # the abort reported last: now the hypervisor's turn
        if not self.faults.on:
            return
        if not self.faults.covers(pf.ipa):
            return
        raise _FaultStop(Stop(SIGTRAP, message=self.faults.report(ex), kind="fault", fault=key))

    # ---- running ---------------------------------------------------------------------------
    def _run(self, max_insns: int) -> tuple[RunResult | None, Stop | None]:
        """One `Vcpu.run`; returns (result, stop) - stop is None when the slice just ended."""
        self.points.forget_watch_hit()
        try:
            r = self.vcpu.run(max_insns=max_insns)
        except _FaultStop as fs:
            return None, fs.stop
        except GuestCrash as e:
            return None, Stop(SIGILL, message=f"s2emu: {e}\n")
        if r.reason == "budget":
            return r, None
        if r.reason == "debug":
            return r, self._debug_stop()
        if r.reason == "interrupt":              # Ctrl-C at the terminal ends the session
            return r, Stop(kind="exit", result=self.final(r))
        if r.reason in TERMINAL:
            note = "s2emu: the guest asked for SYSTEM_RESET: this board stops\n" \
                if r.reason == "reset" else ""
            return r, Stop(kind="exit", result=self.final(r), message=note)
        if r.reason == "wfi":
            return r, Stop(SIGTRAP, message=(
                f"s2emu: WFI at PC {self.cpu.pc:#x} and this board has no interrupt source "
                "(continuing treats it as a spurious wake-up)\n"))
        if r.reason == "error":
            return r, Stop(SIGSEGV, message=f"s2emu: hypervisor error: {r.error}\n")
        return r, Stop(SIGTRAP, message=f"s2emu: run stopped: {r.reason}\n")

    def _debug_stop(self) -> Stop:
        reason = self.points.take_watch_hit()
        if reason is not None:
            return Stop(SIGTRAP, reason, kind="watch")
        ztype = self.points.breakpoint_type(self.cpu.pc)
        if ztype == 0 and self.swbreak:
            return Stop(SIGTRAP, "swbreak:")
        if ztype == 1 and self.hwbreak:
            return Stop(SIGTRAP, "hwbreak:")
        return Stop(SIGTRAP)                    # a step trap (vector) or a foreign breakpoint

    def _prepare_resume(self) -> None:
        last = self.last_stop
        self.points.prepare_resume(after_watch=last.kind == "watch")
        self._fault_skip = last.fault if last.kind == "fault" else None

    def _step(self) -> Stop:
        _, stop = self._run(1)
        return stop or Stop(SIGTRAP)

    def _continue(self, conn: Connection) -> Stop:
        while True:
            _, stop = self._run(self.slice_insns)
            if stop is not None:
                return stop
            event = conn.poll()
            if event is INTERRUPT:
                return Stop(SIGINT)
            if event == "eof":
                return Stop(kind="eof")

    # ---- c / s / C / S / vCont packets -------------------------------------------------------
    def _resume(self, conn: Connection, step: bool, addr: int | None):
        """Returns None (stopped, reply sent), "eof", or the final RunResult."""
        if addr is not None:
            self.cpu.set_pc(addr & ~1, self.cpu.thumb)
        self._prepare_resume()
        stop = self._step() if step else self._continue(conn)
        if stop.kind == "eof":
            return "eof"
        if stop.message:
            conn.send_console(stop.message)
        if stop.kind == "exit":
            conn.send("W00" if stop.result.reason in TERMINAL else "X02")
            return stop.result
        self.last_stop = stop
        conn.send(stop.reply())
        return None

    def resume_packet(self, conn: Connection, text: str):
        """c/s [ADDR], C/S SIG[;ADDR]: the signal is dropped (nothing to deliver)."""
        if not resume_ok(text):
            conn.send("E01")
            return None
        cmd, args = text[0], text[1:]
        if cmd in "CS":
            args = args.partition(";")[2]
        addr = parse_hex(args, ADDR_LIMIT) if args else None
        return self._resume(conn, cmd in "sS", addr)

    def vcont_packet(self, conn: Connection, text: str):
        """The leftmost action that applies to our (only) thread is the one to run
        (vCont;s:1;c = step)."""
        if not resume_ok(text):
            conn.send("E01")
            return None
        verb = text.split(";")[1][:1]
        return self._resume(conn, verb in "sS", None)
        return None
