"""GDB remote stub: debug a guest with `gdb-multiarch` over the GDB remote serial protocol.

    stub = GdbStub(machine)                  # a loaded emu.machine.Machine
    result = stub.serve("tcp::1234", wait=True)

`serve` runs the guest under the debugger and returns the final `RunResult` ("off"/"reset"
when the guest powers off, "killed" after gdb's `kill`, or whatever ended the run after the
debugger detached). The debugger sees one thread per vCPU (thread id N + 1 for vCPU N:
emu.debug.gdb_threads, all-stop) with the `org.gnu.gdb.arm.core` registers (r0-r12, sp, lr,
pc, cpsr).

Nothing the debugger does changes what the guest computes:
- Memory goes through the side-effect-free debug path: VA -> IPA (the MMU is off: VA = IPA)
  -> memslot -> host memory. No TLB fill, no access flag, nothing marked dirty; devices
  (MMIO) are never touched: reading them is an error (E01). Debugger writes go through
  `VM.write_guest`, so a logging memslot records them as dirty, and Unicorn's translated
  code is dropped so a patched instruction takes effect.
- Breakpoints are PC checks (`VCPU.add_breakpoint`: a code hook bounded to one address);
  guest memory is never patched. gdb's kinds 2/3 (Thumb) and 4 (ARM) are all accepted.
- A single step is `Vcpu.run(max_insns=1)`: stage-2 aborts taken by that instruction are
  handled inside the step, so the step is one guest instruction. An access the hypervisor
  emulates (MMIO) is one step too, and a step that takes an exception (SVC, UDF, an
  injected abort) stops on the vector. One step executes a whole Thumb IT block (Unicorn's
  granularity).
- Watchpoints (Z2 write, Z3 read, Z4 access) watch guest RAM and flash backing (not MMIO:
  E01): memory hooks bounded to the host backing of the range. As on ARM hardware (gdb
  treats ARM watchpoints as "non-steppable") the stop is *before* the access: PC on the
  accessing instruction, which has not executed, memory still holding the old value; gdb
  then steps over it and prints old and new values.
- `monitor fault-stop on [LO HI]` stops before the hypervisor handles each stage-2 abort
  (whose IPA is in [LO, HI)): PC on the faulting instruction, the abort and its syndrome
  printed by gdb (O packet), SIGTRAP. Continuing or stepping lets the hypervisor handle that
  abort; the guest then goes on exactly as it would have. The instruction is re-executed
  and faults again for that, so the exit and fill statistics count a reported abort twice.

While the guest runs, the stub runs it in slices of `slice_insns` instructions and polls the
connection between slices (gdb's Ctrl-C stops the guest at the next slice boundary). When
the debugger detaches or the connection drops, breakpoints, watchpoints and fault-stop are
removed and the guest runs on, while the stub keeps listening: a new debugger connection
stops it again (as `wait=False` does before the first connection). qAttached says the first
debugger of a `wait=True` serve started the guest (quitting gdb kills it) and any other one
attached to it (quitting gdb detaches). A guest power-off ends the session (W00); a run the
hypervisor cannot continue stops with its reason printed: SIGSEGV for a hypervisor error,
SIGILL for a machine crash (GuestCrash), SIGTRAP for a WFI with no interrupt source.

Every malformed or out-of-range packet is answered with an error (E01; qXfer: E00, as the
protocol says) and changes nothing: fields are strict hex, addresses 32-bit (ADDR + LENGTH
within 2**32), P/G take only the PL0/PL1 CPSR modes and G exactly 17 words, Z kinds 2/3/4 and
watched lengths 1..1 MiB. A read longer than the PacketSize we advertise is answered short.
`handle(packet)` answers one packet in-process (tests/fuzz/test_fuzz_gdb.py fuzzes it).

The stub is split by purpose: gdb_packets (RSP framing, target.xml, registers), gdb_memory
(the debug memory path), gdb_breakpoints (Z/z), gdb_run (continue, step, stop replies),
gdb_monitor (`monitor` commands), gdb_threads (threads: qfThreadInfo, H, T, ...); this
module serves the connection and dispatches packets.
"""
from __future__ import annotations

import argparse
import select
import socket
import sys
import time
from typing import Callable

from hyp.vcpu import RunResult

from ..cpu import GuestCrash
from . import vcpus
from .gdb_memory import (read_mem_packet, read_memory, write_mem_binary_packet,
                         write_mem_hex_packet, write_memory)
from .gdb_monitor import monitor as run_monitor
from .gdb_monitor import monitor_packet
from .gdb_packets import (INTERRUPT, PACKET_SIZE, TARGET_XML, Connection, parse_listen,
                          read_all_regs, read_reg, write_all_regs, write_reg, xfer_features)
from .gdb_run import TERMINAL, RunControl

__all__ = ["GdbStub", "parse_listen", "TARGET_XML"]

SLICE_INSNS = 100_000          # guest instructions between polls of the connection


class _Replies:
    """The connection of `GdbStub.handle`: keeps what the stub sends; "interrupted" (as by
    gdb's Ctrl-C) once `deadline` (time.monotonic) has passed."""

    ack = False
    closed = False

    def __init__(self, deadline: float | None = None) -> None:
        self.sent: list[str] = []
        self.deadline = deadline

    def send(self, payload: str | bytes) -> None:
        self.sent.append(payload.decode("latin-1") if isinstance(payload, bytes) else payload)

    send_console = Connection.send_console

    def poll(self):
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return INTERRUPT
        return None


class GdbStub:
    """A GDB remote stub for one `emu.machine.Machine` (its `cpu`, `vcpu`, `vm`).

    `port` (and `host`) are set as soon as the socket is bound, before any connection is
    accepted, and `on_listen(host, port)` is called then: with port 0 that is how callers
    learn the port the system picked. `log(text)` receives one line per debugger event
    (connect, detach, disconnect), for the command line's stderr."""

    def __init__(self, machine, *, slice_insns: int = SLICE_INSNS,
                 on_listen: Callable[[str, int], None] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        if not getattr(machine.cpu, "icount", True):
            raise ValueError("the GDB stub needs instruction counting (a step is a "
                             "one-instruction budget): drop --no-icount")
        self.machine = machine
        self.cpu = machine.cpu
        self.vcpu = machine.vcpu
        self.vm = machine.vm
        self._ctl = RunControl(machine, max(1, slice_insns))
        self.on_listen = on_listen
        self.log = log or (lambda text: None)
        self.host: str | None = None
        self.port: int | None = None
        self._first_session = True
        self._wait = True

    @property
    def slice_insns(self) -> int:
        return self._ctl.slice_insns

    @slice_insns.setter
    def slice_insns(self, value: int) -> None:
        self._ctl.slice_insns = value

    # ---- public ------------------------------------------------------------------------
    def serve(self, listen: str = "tcp::1234", wait: bool = True, *,
              max_insns: int | None = None, timeout: float | None = None) -> RunResult:
        """Listen on `listen` and run the guest under debugger control until it powers off
        or gdb kills it; returns the final RunResult (reason "killed" for a kill).

        wait=True: nothing runs until a debugger connects; it finds the guest stopped
        before its first instruction. wait=False: the guest runs at once; a debugger that
        connects stops it wherever it is. `max_insns` / `timeout` bound only the running
        done with no debugger attached (before one connects, after it detached). `listen`
        may also be a socket from `listen()`."""
        lsock = self.listen(listen) if isinstance(listen, str) else listen
        self._wait = wait
        self._ctl.attach()
        try:
            return self._serve(lsock, wait, max_insns, timeout)
        finally:
            self._ctl.detach()
            self._ctl.clear()
            lsock.close()

    @property
    def thread_cpu(self):
        """The vCPU the debugger looks at (its selected thread, Hg)."""
        return self._ctl.threads.cpu

    def read_memory(self, va: int, length: int) -> bytes:
        """Guest memory as the debugger sees it (through the selected vCPU's stage 1): RAM
        and flash backing only, no side effect. Stops at the first byte outside every
        memslot (a short read)."""
        return read_memory(self.vm, va, length, self.thread_cpu.mmu)

    def write_memory(self, va: int, data: bytes) -> bool:
        """A debugger write: all-or-nothing, RAM/flash backing only, through write_guest
        (dirty logging sees it). Drops every vCPU's translated code so new code runs."""
        return write_memory(self.vm, self.thread_cpu, va, data, self._ctl.threads.cpus)

    def monitor(self, line: str) -> str:
        """Run one monitor command (as `monitor LINE` in gdb); returns its output."""
        return run_monitor(self.machine, self._ctl.faults, line, self.thread_cpu)

    def handle(self, packet: bytes | str, attached: bool = True,
               timeout: float | None = None) -> list[str]:
        """Answer one packet in-process, without a connection (tests, fuzzing): the same
        dispatch as `serve`. Returns every packet body the stub sent, in order: the reply
        is the last one; O packets before it are console text (monitor output, a stop's
        message). A resume packet runs the guest until it stops by itself or, after
        `timeout` seconds, stops at the next slice boundary as on gdb's Ctrl-C (T02). `k`
        sends nothing (an empty list). A str packet is latin-1 (one char a byte)."""
        if isinstance(packet, str):
            packet = packet.encode("latin-1")
        out = _Replies(None if timeout is None else time.monotonic() + timeout)
        self._ctl.attach()
        try:
            self._dispatch(out, packet, attached)
        finally:
            self._ctl.detach()
        return out.sent

    # ---- sockets -----------------------------------------------------------------------
    def listen(self, listen: str) -> socket.socket:
        """Bind the listening socket (OSError naming the address if that fails)."""
        host, port = parse_listen(listen)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise OSError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        family, kind, proto, _, addr = infos[0]
        lsock = socket.socket(family, kind, proto)
        try:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind(addr)
            lsock.listen(1)
        except OSError as e:
            lsock.close()
            raise OSError(f"cannot listen on {host}:{port}: "
                          f"{e.strerror or e}") from None
        self.host, self.port = lsock.getsockname()[:2]
        if self.on_listen is not None:
            self.on_listen(self.host, self.port)
        return lsock

    def _accept(self, lsock: socket.socket) -> Connection:
        sock, peer = lsock.accept()
        self.log(f"gdb connected from {peer[0]}:{peer[1]}")
        return Connection(sock)

    # ---- the outer loop: free running <-> debugger sessions -----------------------------
    def _serve(self, lsock, wait, max_insns, timeout) -> RunResult:
        free_insns = 0
        free_time = 0.0
        conn = self._accept(lsock) if wait else None
        while True:
            if conn is not None:
                result = self._session(conn)
                conn.close()
                conn = None
                if result is not None:
                    return result
                continue
            # No debugger: run a slice, then look for one.
            ready, _, _ = select.select([lsock], [], [], 0)
            if ready:
                conn = self._accept(lsock)
                continue
            budget = self.slice_insns
            if max_insns is not None:
                if free_insns >= max_insns:
                    return self._ctl.final(RunResult("budget", 0))
                budget = min(budget, max_insns - free_insns)
            if timeout is not None and free_time >= timeout:
                return self._ctl.final(RunResult("timeout", 0))
            t0, i0 = time.monotonic(), vcpus.steps(self.machine)
            for cpu in self._ctl.threads.cpus:
                cpu.resume_from_breakpoint()    # someone else's breakpoint: run past it
            try:
                r = self.vcpu.run(max_insns=budget)
            except GuestCrash as e:
                return self._ctl.final(RunResult("error", 0, str(e)))
            free_insns += vcpus.steps(self.machine) - i0
            free_time += time.monotonic() - t0
            if r.reason not in ("budget", "debug"):
                return self._ctl.final(r)

    def _session(self, conn: Connection) -> RunResult | None:
        """Serve one debugger until it detaches or disconnects (None: the guest runs on) or
        the session ends the guest (its RunResult)."""
        self._ctl.new_session()
        attached = not (self._wait and self._first_session)
        self._first_session = False
        try:
            while True:
                pkt = conn.read()
                if pkt is None:
                    self.log("gdb disconnected: the guest runs on")
                    return None
                if pkt is INTERRUPT:
                    continue            # already stopped (a Ctrl-C racing a stop reply)
                try:
                    outcome = self._dispatch(conn, pkt, attached)
                except Exception:
                    conn.send("E01")    # a bug of ours: report it after answering gdb
                    raise
                if outcome is None:
                    continue
                if outcome == "detach":
                    self.log("gdb detached: the guest runs on")
                    return None
                if outcome == "eof":
                    self.log("gdb disconnected while the guest ran: it runs on")
                    return None
                return outcome          # a RunResult: killed or exited
        finally:
            self._ctl.clear()

    # ---- packets ----------------------------------------------------------------------
    def _dispatch(self, conn: Connection | _Replies, pkt: bytes, attached: bool):
        """Answer one packet (from `_session`, or `handle`: `conn` a `_Replies`). Returns
        None, "detach", "eof" or a final RunResult."""
        text = pkt.decode("latin-1")
        cmd = text[:1]
        ctl = self._ctl
        cpu = ctl.threads.cpu                   # the selected thread's vCPU (Hg)
        if text.startswith("qSupported"):
            feats = text.partition(":")[2].split(";")
            ctl.swbreak = "swbreak+" in feats
            ctl.hwbreak = "hwbreak+" in feats
            conn.send(f"PacketSize={PACKET_SIZE:x};qXfer:features:read+;swbreak+;hwbreak+;"
                      "QStartNoAckMode+;vContSupported+")
        elif text == "QStartNoAckMode":
            conn.send("OK")
            conn.ack = False
        elif text.startswith("qXfer:features:read:"):
            conn.send(xfer_features(text[len("qXfer:features:read:"):]))
        elif text == "?":
            conn.send(ctl.last_stop.reply())
        elif text == "g":
            conn.send(read_all_regs(cpu))
        elif cmd == "G":
            conn.send(write_all_regs(cpu, text[1:]))
        elif cmd == "p":
            conn.send(read_reg(cpu, text[1:]))
        elif cmd == "P":
            conn.send(write_reg(cpu, text[1:]))
        elif cmd == "m":
            conn.send(read_mem_packet(self.vm, text[1:], cpu.mmu))
        elif cmd == "M":
            conn.send(write_mem_hex_packet(self.vm, cpu, text[1:], ctl.threads.cpus))
        elif cmd == "X":
            conn.send(write_mem_binary_packet(self.vm, cpu, pkt[1:], ctl.threads.cpus))
        elif cmd in ("Z", "z"):
            conn.send(ctl.points.packet(text, cpu.mmu))
        elif text.startswith("vCont;"):
            return ctl.vcont_packet(conn, text)
        elif cmd in ("c", "s", "C", "S"):
            return ctl.resume_packet(conn, text)
        elif text == "vCont?":
            conn.send("vCont;c;C;s;S")
        elif text.startswith("vKill") or text == "k":
            if text.startswith("vKill"):
                conn.send("OK")
            self.log("gdb killed the guest")
            return RunResult("killed", vcpus.instructions(self.machine) - ctl.start_insns,
                             "killed by the debugger")
        elif cmd == "D":
            conn.send("OK")
            return "detach"
        elif text.startswith("qRcmd,"):
            monitor_packet(conn, text[len("qRcmd,"):], self.monitor)
        elif text.startswith("qAttached"):
            conn.send("1" if attached else "0")
        elif text in ("qC", "qfThreadInfo", "qsThreadInfo") or cmd in ("H", "T") or \
                text.startswith("qThreadExtraInfo,"):
            conn.send(ctl.threads.packet(text))
        elif text.startswith("qSymbol"):
            conn.send("OK")
        elif text == "qOffsets":
            conn.send("Text=0;Data=0;Bss=0")
        else:
            conn.send("")               # unsupported (vMustReplyEmpty, qTStatus, ...)
        return None


# ---- python -m emu.debug.gdbstub ------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """A small entry point (tests, quick use): load ELF, serve, print the outcome."""
    from ..boot.loader import LoaderError
    from ..machine import Machine, parse_size

    p = argparse.ArgumentParser(prog="python -m emu.debug.gdbstub",
                                description="run a guest under the GDB remote stub")
    p.add_argument("elf")
    p.add_argument("--listen", default="tcp::1234",
                   help="tcp::PORT or tcp:HOST:PORT (port 0: any free port)")
    p.add_argument("--wait", action="store_true",
                   help="stop before the first instruction until gdb connects")
    p.add_argument("--mem", default="128M")
    p.add_argument("--args", default="")
    p.add_argument("--slice", type=int, default=SLICE_INSNS, help="instructions between polls")
    a = p.parse_args(argv)
    out = sys.stdout.buffer

    def console(b: bytes) -> None:
        out.write(b)
        out.flush()

    def say(text: str) -> None:
        print(f"s2emu gdbstub: {text}", file=sys.stderr, flush=True)

    try:
        m = Machine(parse_size(a.mem), console=console)
        m.load(a.elf, a.args)
        stub = GdbStub(m, slice_insns=a.slice, log=say,
                       on_listen=lambda host, port: say(f"listening on {host}:{port}"))
        result = stub.serve(a.listen, a.wait)
    except (LoaderError, ValueError, OSError) as e:
        say(f"error: {e}")
        return 1
    out.flush()
    say(m.summary(result))
    return 0 if result.reason in TERMINAL else 1


if __name__ == "__main__":
    sys.exit(main())
