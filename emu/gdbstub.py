"""GDB remote stub: debug a guest with `gdb-multiarch` over the GDB remote serial protocol.

    stub = GdbStub(machine)                  # a loaded emu.machine.Machine
    result = stub.serve("tcp::1234", wait=True)

`serve` runs the guest under the debugger and returns the final `RunResult` ("off"/"reset"
when the guest powers off, "killed" after gdb's `kill`, or whatever ended the run after the
debugger detached). The debugger sees one thread (the vCPU) with the `org.gnu.gdb.arm.core`
registers (r0-r12, sp, lr, pc, cpsr).

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
"""
from __future__ import annotations

import argparse
import select
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE

from hyp.arch import descriptors as d
from hyp.arch.walk import explain
from hyp.exits import Stage2Abort
from hyp.vcpu import RunResult

from .cpu import GuestCrash

__all__ = ["GdbStub", "parse_listen", "TARGET_XML"]

SLICE_INSNS = 100_000          # guest instructions between polls of the connection
PACKET_SIZE = 0x4000           # largest packet we accept (advertised in qSupported)
_MAX_BUFFER = 1 << 20          # a "packet" longer than this is garbage: dropped
DIRTY_SHOW = 16                # page indexes listed per memslot by `monitor dirty`
LIST_LIMIT = 256               # lines listed by `monitor s2 dump` / `monitor tlb`

SIGINT, SIGILL, SIGTRAP, SIGSEGV = 2, 4, 5, 11
THREAD_ID = 1

_CORE_REGS = [f"r{i}" for i in range(13)] + ["sp", "lr", "pc", "cpsr"]
_NREGS = len(_CORE_REGS)       # 17: r0-r15 then cpsr (remote register numbers 0-16)
_REG_TYPES = {"sp": ' type="data_ptr"', "pc": ' type="code_ptr"'}
TARGET_XML = (
    '<?xml version="1.0"?>\n<!DOCTYPE target SYSTEM "gdb-target.dtd">\n'
    '<target version="1.0">\n  <architecture>arm</architecture>\n'
    '  <feature name="org.gnu.gdb.arm.core">\n'
    + "".join(f'    <reg name="{n}" bitsize="32"{_REG_TYPES.get(n, "")}/>\n' for n in _CORE_REGS)
    + "  </feature>\n</target>\n")

_WATCH_KINDS = {2: ("watch", UC_HOOK_MEM_WRITE), 3: ("rwatch", UC_HOOK_MEM_READ),
                4: ("awatch", UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE)}
_MAX_ACCESS = 8                # widest single data access (LDRD/STRD)
_TERMINAL = ("off", "reset")

HELP = """\
s2emu monitor commands:
  help                    this text
  s2 walk IPA             stage-2 walk of IPA: each level's descriptor address and value
  s2 dump [LO HI]         stage-2 mappings merged into ranges (all, or IPA [LO, HI))
  dirty [SLOT]            dirty-log summary per memslot (index or name): count, first pages
  tlb                     TLB entries of this VM's VMID, fills and flushes
  stats                   hypervisor exit statistics, instructions, virtual time
  fault-stop on [LO HI]   stop before the hypervisor handles each stage-2 abort (whose IPA
                          is in [LO, HI)); continue/step lets it handle that abort
  fault-stop off          stop no more on stage-2 aborts
  fault-stop              show the setting and the last abort reported
Addresses are 0x-prefixed hex or decimal.
"""


def parse_listen(listen: str) -> tuple[str, int]:
    """'tcp::1234' / 'tcp:HOST:1234' / ':1234' / '1234' -> (host, port). No host means the
    loopback interface: a debugger port is not something to expose by accident."""
    text = listen.strip()
    if text.startswith("tcp:"):
        text = text[4:]
    host, sep, port = text.rpartition(":")
    if not sep:
        host = ""
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port, 10)
    except ValueError:
        raise ValueError(f"bad listen address {listen!r} "
                         "(use tcp::PORT or tcp:HOST:PORT)") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"bad port in {listen!r}")
    return host, number


def _hex(data: bytes) -> str:
    return data.hex()


def _le32(value: int) -> str:
    return (value & 0xFFFFFFFF).to_bytes(4, "little").hex()


def _num(text: str) -> int:
    """A monitor-command address: 0x40000000 (hex needs the prefix) or decimal."""
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"bad number {text!r} (write hex as 0x...)") from None
    if value < 0:
        raise ValueError(f"negative address {text!r}")
    return value


def _escape_binary(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b in (0x23, 0x24, 0x7D, 0x2A):          # '#', '$', '}', '*'
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def _unescape_binary(data: bytes) -> bytes:
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == 0x7D:
            out.append(next(it, 0x20) ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


class _Interrupt:
    """The out-of-band Ctrl-C byte (0x03)."""


INTERRUPT = _Interrupt()


class _Connection:
    """Packet framing over one socket: $payload#checksum, acks (until QStartNoAckMode),
    retransmission on '-', and the out-of-band 0x03 interrupt."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(True)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.buf = bytearray()
        self.ack = True
        self.closed = False
        self._last = b""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def _recv(self) -> bool:
        """Read what is available (blocking until something is). False on EOF."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.close()
            return False
        self.buf += data
        return True

    def _write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.sock.sendall(data)
        except (ConnectionError, OSError):
            self.close()

    def send(self, payload: str | bytes) -> None:
        body = payload.encode("latin-1") if isinstance(payload, str) else payload
        frame = b"$" + body + b"#" + f"{sum(body) & 0xFF:02x}".encode()
        self._last = frame
        self._write(frame)

    def _next(self):
        """Parse one item from the buffer: a payload (bytes), INTERRUPT, or None (need more)."""
        buf = self.buf
        while buf:
            c = buf[0]
            if c == 0x24:                                   # '$'
                end = buf.find(b"#")
                if end < 0 or len(buf) < end + 3:
                    if len(buf) > _MAX_BUFFER:
                        buf.clear()                          # no end in sight: garbage
                    return None
                payload = bytes(buf[1:end])
                check = bytes(buf[end + 1:end + 3])
                del buf[:end + 3]
                try:
                    good = int(check, 16) == sum(payload) & 0xFF
                except ValueError:
                    good = False
                if not good:
                    if self.ack:
                        self._write(b"-")                   # ask for a retransmission
                    continue
                if self.ack:
                    self._write(b"+")
                return payload
            del buf[0]
            if c == 0x03:
                return INTERRUPT
            if c == 0x2D and self.ack and self._last:       # '-': resend our last packet
                self._write(self._last)
            # '+' acks and stray bytes are ignored
        return None

    def read(self):
        """Block until a packet or an interrupt arrives; None when the debugger has gone."""
        while True:
            item = self._next()
            if item is not None:
                return item
            if self.closed or not self._recv():
                return None

    def poll(self):
        """Non-blocking, while the guest runs: INTERRUPT, "eof", or None (nothing for us).
        Packets received meanwhile stay queued for `read`."""
        if self.closed:
            return "eof"
        while True:
            ready, _, _ = select.select([self.sock], [], [], 0)
            if not ready:
                break
            if not self._recv():
                return "eof"
        idx = self.buf.find(b"\x03")
        if idx >= 0 and b"$" not in self.buf[:idx]:
            del self.buf[idx]
            return INTERRUPT
        return None


@dataclass
class _Stop:
    """Why the guest stopped, as reported to gdb."""
    signal: int = SIGTRAP
    reason: str = ""                    # stop-reply pair, e.g. "swbreak:" or "watch:40001000"
    message: str = ""                   # printed by gdb (O packet) before the stop reply
    kind: str = "stop"                  # stop | watch | fault | exit | eof
    result: RunResult | None = None     # kind == exit: the guest's end
    fault: tuple | None = None          # kind == fault: the abort's identity


class _FaultStop(Exception):
    """Raised from the Vcpu observer to leave `Vcpu.run` before the hypervisor handles an
    abort (fault-stop). Never escapes the stub."""

    def __init__(self, stop: _Stop) -> None:
        super().__init__("stage-2 abort")
        self.stop = stop


@dataclass
class _Watch:
    kind: int                 # 2 write, 3 read, 4 access
    va: int
    length: int
    pa: int
    handle: int
    refs: int = 1


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
        self.slice_insns = max(1, slice_insns)
        self.on_listen = on_listen
        self.log = log or (lambda text: None)
        self.host: str | None = None
        self.port: int | None = None
        # Breakpoints: address -> Z type (0 software, 1 hardware: both are PC checks).
        # gdb removes and re-inserts every breakpoint around each stop: the hooks stay
        # installed meanwhile (`_stale`) and only those not re-inserted go when the guest
        # resumes, so Unicorn's code cache is not invalidated at every stop.
        self._bps: dict[int, int] = {}
        self._stale: set[int] = set()
        self._traps: set[int] = set()          # where a step must stop (see _step)
        self._resume_skip: tuple[int, int] | None = None   # (PC, instruction index)
        self._hooked: set[int] = set()         # addresses we installed a cpu breakpoint for
        self._watches: dict[tuple[int, int, int], _Watch] = {}
        self._watch_hit: tuple | None = None   # (watch, pa, size, old bytes or None)
        self._watch_skip: int | None = None    # instruction index whose accesses don't stop
        self._fault_stop = False
        self._fault_range: tuple[int, int] | None = None
        self._fault_skip: tuple | None = None
        self._last_fault: str = ""
        self._stepping = False
        self._last_stop = _Stop()
        self._gdb_swbreak = False
        self._gdb_hwbreak = False
        self._first_session = True
        self._wait = True
        self._start_insns = 0

    # ---- public ------------------------------------------------------------------------
    def serve(self, listen: str = "tcp::1234", wait: bool = True, *,
              max_insns: int | None = None, timeout: float | None = None) -> RunResult:
        """Listen on `listen` and run the guest under debugger control until it powers off
        or gdb kills it; returns the final RunResult (reason "killed" for a kill).

        wait=True: nothing runs until a debugger connects; it finds the guest stopped
        before its first instruction. wait=False: the guest runs at once; a debugger that
        connects stops it wherever it is. `max_insns` / `timeout` bound only the running
        done with no debugger attached (before one connects, after it detached)."""
        host, port = parse_listen(listen)
        lsock = self._bind(host, port)
        self._wait = wait
        self._start_insns = self.cpu.instructions
        self.vcpu.observers.insert(0, self._observe_exit)
        self.cpu.exception_observers.append(self._observe_exception)
        try:
            return self._serve(lsock, wait, max_insns, timeout)
        finally:
            self.vcpu.observers.remove(self._observe_exit)
            self.cpu.exception_observers.remove(self._observe_exception)
            self._clear_debug_state()
            lsock.close()

    # ---- sockets -----------------------------------------------------------------------
    def _bind(self, host: str, port: int) -> socket.socket:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        lsock = socket.socket(family, kind, proto)
        try:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind(addr)
            lsock.listen(1)
        except OSError:
            lsock.close()
            raise
        self.host, self.port = lsock.getsockname()[:2]
        if self.on_listen is not None:
            self.on_listen(self.host, self.port)
        return lsock

    def _accept(self, lsock: socket.socket) -> _Connection:
        sock, peer = lsock.accept()
        self.log(f"gdb connected from {peer[0]}:{peer[1]}")
        return _Connection(sock)

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
                    return self._final(RunResult("budget", 0))
                budget = min(budget, max_insns - free_insns)
            if timeout is not None and free_time >= timeout:
                return self._final(RunResult("timeout", 0))
            t0, i0 = time.monotonic(), self.cpu.instructions
            self.cpu.resume_from_breakpoint()   # someone else's breakpoint: run past it
            try:
                r = self.vcpu.run(max_insns=budget)
            except GuestCrash as e:
                return self._final(RunResult("error", 0, str(e)))
            free_insns += self.cpu.instructions - i0
            free_time += time.monotonic() - t0
            if r.reason not in ("budget", "debug"):
                return self._final(r)

    def _final(self, r: RunResult) -> RunResult:
        """The result of the whole serve: instructions counted from its start."""
        return RunResult(r.reason, self.cpu.instructions - self._start_insns, r.error, r.exit)

    def _session(self, conn: _Connection) -> RunResult | None:
        """Serve one debugger until it detaches or disconnects (None: the guest runs on) or
        the session ends the guest (its RunResult)."""
        self._last_stop = _Stop(SIGTRAP)
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
            self._clear_debug_state()

    def _clear_debug_state(self) -> None:
        """Drop everything a session installed (on detach, disconnect or the end)."""
        for addr in list(self._hooked):
            self.cpu.remove_breakpoint(addr)
        self._hooked.clear()
        self._bps.clear()
        self._stale.clear()
        self._traps.clear()
        for w in self._watches.values():
            self.cpu.uc.hook_del(w.handle)
        if self._watches:
            self.cpu.flush_translations()
        self._watches.clear()
        self._watch_hit = self._watch_skip = self._resume_skip = None
        self._fault_stop = False
        self._fault_range = None
        self._fault_skip = None

    # ---- packets ----------------------------------------------------------------------
    def _dispatch(self, conn: _Connection, pkt: bytes, attached: bool):
        """Answer one packet. Returns None, "detach", "eof" or a final RunResult."""
        text = pkt.decode("latin-1")
        cmd = text[:1]
        if text.startswith("qSupported"):
            feats = text.partition(":")[2].split(";")
            self._gdb_swbreak = "swbreak+" in feats
            self._gdb_hwbreak = "hwbreak+" in feats
            conn.send(f"PacketSize={PACKET_SIZE:x};qXfer:features:read+;swbreak+;hwbreak+;"
                      "QStartNoAckMode+;vContSupported+")
        elif text == "QStartNoAckMode":
            conn.send("OK")
            conn.ack = False
        elif text.startswith("qXfer:features:read:"):
            conn.send(self._xfer_features(text[len("qXfer:features:read:"):]))
        elif text == "?":
            conn.send(self._stop_reply(self._last_stop))
        elif text == "g":
            conn.send("".join(_le32(v) for v in self.cpu.regs()))
        elif cmd == "G":
            conn.send(self._write_all_regs(text[1:]))
        elif cmd == "p":
            conn.send(self._read_reg(text[1:]))
        elif cmd == "P":
            conn.send(self._write_reg(text[1:]))
        elif cmd == "m":
            conn.send(self._read_mem(text[1:]))
        elif cmd == "M":
            conn.send(self._write_mem_hex(text[1:]))
        elif cmd == "X":
            conn.send(self._write_mem_binary(pkt[1:]))
        elif cmd in ("Z", "z"):
            conn.send(self._breakpoint_packet(text))
        elif cmd in ("c", "s", "C", "S"):
            return self._resume_packet(conn, text)
        elif text == "vCont?":
            conn.send("vCont;c;C;s;S")
        elif text.startswith("vCont;"):
            return self._vcont(conn, text)
        elif text.startswith("vKill") or text == "k":
            if text.startswith("vKill"):
                conn.send("OK")
            self.log("gdb killed the guest")
            return RunResult("killed", self.cpu.instructions - self._start_insns,
                             "killed by the debugger")
        elif cmd == "D":
            conn.send("OK")
            return "detach"
        elif text.startswith("qRcmd,"):
            self._monitor(conn, text[len("qRcmd,"):])
        elif text == "qC":
            conn.send(f"QC{THREAD_ID:x}")
        elif text.startswith("qAttached"):
            conn.send("1" if attached else "0")
        elif text == "qfThreadInfo":
            conn.send(f"m{THREAD_ID:x}")
        elif text == "qsThreadInfo":
            conn.send("l")
        elif text.startswith("qThreadExtraInfo,"):
            conn.send(_hex(b"vCPU 0"))
        elif cmd == "H" or cmd == "T":
            conn.send("OK")
        elif text.startswith("qSymbol"):
            conn.send("OK")
        elif text == "qOffsets":
            conn.send("Text=0;Data=0;Bss=0")
        else:
            conn.send("")               # unsupported (vMustReplyEmpty, qTStatus, ...)
        return None

    def _xfer_features(self, args: str) -> str:
        annex, _, span = args.partition(":")
        if annex != "target.xml":
            return "E00"
        try:
            off_s, len_s = span.split(",")
            off, length = int(off_s, 16), int(len_s, 16)
        except ValueError:
            return "E01"
        data = TARGET_XML.encode()
        chunk = data[off:off + length]
        more = off + length < len(data)
        return ("m" if more else "l") + _escape_binary(chunk).decode("latin-1")

    # ---- registers ---------------------------------------------------------------------
    def _read_reg(self, args: str) -> str:
        try:
            n = int(args, 16)
        except ValueError:
            return "E01"
        if not 0 <= n < _NREGS:
            return "E01"
        return _le32(self.cpu.regs()[n])

    def _set_reg(self, n: int, value: int) -> None:
        if n == 16:
            self.cpu.set_cpsr(value)
        elif n == 15:
            self.cpu.set_pc(value & ~1, self.cpu.thumb)   # the T bit lives in CPSR
        else:
            self.cpu.set_reg(n, value)

    def _write_reg(self, args: str) -> str:
        try:
            num, val = args.split("=")
            n = int(num, 16)
            raw = bytes.fromhex(val)
        except ValueError:
            return "E01"
        if not 0 <= n < _NREGS or len(raw) != 4:
            return "E01"
        self._set_reg(n, int.from_bytes(raw, "little"))
        return "OK"

    def _write_all_regs(self, args: str) -> str:
        try:
            raw = bytes.fromhex(args)
        except ValueError:
            return "E01"
        if len(raw) < 4 * _NREGS:
            return "E01"
        values = [int.from_bytes(raw[4 * i:4 * i + 4], "little") for i in range(_NREGS)]
        self._set_reg(16, values[16])           # CPSR first: mode (banks) and T bit
        for n in range(16):
            self._set_reg(n, values[n])
        return "OK"

    # ---- memory: the side-effect-free debug path ----------------------------------------
    @staticmethod
    def _va_to_ipa(va: int) -> int:
        # Guest stage 1 is not modelled (README, Known limitations): VA = IPA.
        return va & 0xFFFFFFFF

    def _ram(self, va: int, length: int):
        """The memslot holding all of [va, va + length), or None (unmapped or MMIO)."""
        ipa = self._va_to_ipa(va)
        slot = self.vm.memslot(ipa)
        if slot is None or ipa + length > slot.end:
            return None
        return slot

    def read_memory(self, va: int, length: int) -> bytes:
        """Guest memory as the debugger sees it: RAM and flash backing only, no side effect.
        Stops at the first byte outside every memslot (a short read)."""
        out = bytearray()
        while len(out) < length:
            ipa = self._va_to_ipa(va + len(out))
            slot = self.vm.memslot(ipa)
            if slot is None:
                break
            n = min(length - len(out), slot.end - ipa)
            out += self.vm.read_guest(ipa, n)
        return bytes(out)

    def write_memory(self, va: int, data: bytes) -> bool:
        """A debugger write: all-or-nothing, RAM/flash backing only, through write_guest
        (dirty logging sees it). Drops Unicorn's translated code so new code runs."""
        pieces = []
        done = 0
        while done < len(data):
            ipa = self._va_to_ipa(va + done)
            slot = self.vm.memslot(ipa)
            if slot is None:
                return False
            n = min(len(data) - done, slot.end - ipa)
            pieces.append((ipa, data[done:done + n]))
            done += n
        for ipa, chunk in pieces:
            self.vm.write_guest(ipa, chunk)
        if data:
            self.cpu.flush_translations()       # all of it: no TLB fill (see there)
        return True

    @staticmethod
    def _addr_len(spec: str) -> tuple[int, int]:
        addr, length = spec.split(",")
        return int(addr, 16), int(length, 16)

    def _read_mem(self, args: str) -> str:
        try:
            addr, length = self._addr_len(args)
        except ValueError:
            return "E01"
        length = min(length, (PACKET_SIZE - 8) // 2)
        data = self.read_memory(addr, length)
        if not data and length:
            return "E01"
        return _hex(data)

    def _write_mem_hex(self, args: str) -> str:
        try:
            spec, _, hexdata = args.partition(":")
            addr, length = self._addr_len(spec)
            data = bytes.fromhex(hexdata)
        except ValueError:
            return "E01"
        if len(data) != length:
            return "E01"
        return "OK" if self.write_memory(addr, data) else "E01"

    def _write_mem_binary(self, args: bytes) -> str:
        spec, sep, raw = args.partition(b":")
        try:
            addr, length = self._addr_len(spec.decode("latin-1"))
        except ValueError:
            return "E01"
        if not sep:
            return "E01"
        data = _unescape_binary(raw)
        if len(data) != length:
            return "E01"
        return "OK" if self.write_memory(addr, data) else "E01"

    # ---- breakpoints and watchpoints -----------------------------------------------------
    def _breakpoint_packet(self, text: str) -> str:
        try:
            ztype_s, addr_s, kind_s = text[1:].split(",")[:3]
            ztype, addr, kind = int(ztype_s, 16), int(addr_s, 16), int(kind_s.split(";")[0], 16)
        except ValueError:
            return "E01"
        insert = text[0] == "Z"
        if ztype in (0, 1):
            addr &= ~1
            if insert:
                self._bps[addr] = ztype
                self._stale.discard(addr)
                self._hook_bp(addr)
            elif self._bps.pop(addr, None) is not None and addr in self._hooked:
                self._stale.add(addr)           # unhooked when the guest resumes
            return "OK"
        if ztype in _WATCH_KINDS:
            if kind <= 0:
                return "E01"
            return self._insert_watch(ztype, addr, kind) if insert else \
                self._remove_watch(ztype, addr, kind)
        return ""                               # unsupported type

    def _hook_bp(self, addr: int) -> None:
        if addr not in self._hooked and addr not in self.cpu.breakpoints:
            self.cpu.add_breakpoint(addr, self._bp_wanted)
            self._hooked.add(addr)

    def _bp_wanted(self, addr: int) -> bool:
        # The instruction the guest resumes on runs even with a breakpoint on it (gdb steps
        # over its own). Keyed by the instruction index, so re-executing it after a stage-2
        # abort still skips, and coming back to it later stops.
        if self._resume_skip == (addr, self.cpu.insn_index()):
            return False
        return addr in self._bps or addr in self._traps

    def _unhook_bp(self, addr: int) -> None:
        if addr in self._hooked and addr not in self._bps and addr not in self._traps:
            self.cpu.remove_breakpoint(addr)
            self._hooked.discard(addr)

    def _purge_bps(self) -> None:
        """Unhook the breakpoints gdb removed and did not re-insert before resuming."""
        for addr in self._stale:
            self._unhook_bp(addr)
        self._stale.clear()

    def _insert_watch(self, ztype: int, va: int, length: int) -> str:
        key = (ztype, va, length)
        if key in self._watches:
            self._watches[key].refs += 1
            return "OK"
        slot = self._ram(va, length)
        if slot is None:
            return "E01"                        # only RAM/flash backing can be watched
        pa = slot.pa_of(self._va_to_ipa(va))
        w = _Watch(ztype, va, length, pa, 0)
        # Memory hooks see the host physical address of each access (UC_TLB_VIRTUAL).
        # Start early enough to catch a wider access that starts below the range.
        w.handle = self.cpu.uc.hook_add(_WATCH_KINDS[ztype][1], self._watch_hook(w),
                                        begin=max(0, pa - _MAX_ACCESS + 1), end=pa + length - 1)
        self._watches[key] = w
        # Code translated before the hook existed accesses memory without calling hooks.
        self.cpu.flush_translations()
        return "OK"

    def _remove_watch(self, ztype: int, va: int, length: int) -> str:
        w = self._watches.get((ztype, va, length))
        if w is None:
            return "OK"
        w.refs -= 1
        if w.refs <= 0:
            self.cpu.uc.hook_del(w.handle)
            del self._watches[(ztype, va, length)]
            self.cpu.flush_translations()       # back to the fast path
        return "OK"

    def _watch_hook(self, w: _Watch):
        mem = self.machine.host.mem

        def hook(uc, access, pa, size, value, _ud):
            if pa + size <= w.pa or pa >= w.pa + w.length:
                return
            if self._watch_hit is not None or self.cpu.insn_index() == self._watch_skip:
                return
            # Unicorn calls write hooks just before storing and then stops the instruction
            # (PC stays on it, it is re-executed on resume): keep the old bytes to put back.
            old = mem.read(pa, size) if access == UC_MEM_WRITE else None
            self._watch_hit = (w, pa, size, old)
            self.cpu.debug_stop = "watchpoint"
            uc.emu_stop()
        return hook

    # ---- running ------------------------------------------------------------------------
    def _observe_exit(self, kind: str, ex, outcome) -> None:
        """Vcpu observer (first in the list): fault-stop leaves the run before the
        hypervisor acts, so later observers see each handled abort exactly once."""
        if kind == "handled" and self._stepping and outcome in ("mmio", "inject"):
            # The hypervisor completed the step's instruction (emulated it, or injected an
            # abort): stop before the next one, which Vcpu.run(max_insns=1) would also run
            # because the CPU did not count the emulated one.
            self._add_trap(self.cpu.pc)
            return
        if kind != "exit" or not isinstance(ex, Stage2Abort):
            return
        if self._fault_skip is None and not self._fault_stop:
            return                      # the common case: no decode, nothing to do
        # What the walk found is enough to recognise and filter an abort; the syndrome is
        # decoded (capstone) only for the one reported.
        pf = ex.page_fault
        key = (ex.pc, pf.ipa, pf.type, pf.access)
        if self._fault_skip is not None:
            skip, self._fault_skip = self._fault_skip, None
            if skip == key:
                return                  # the abort reported last: now the hypervisor's turn
        if not self._fault_stop:
            return
        if self._fault_range and not self._fault_range[0] <= pf.ipa < self._fault_range[1]:
            return
        raise _FaultStop(self._fault_stop_report(ex, key))

    def _observe_exception(self, exc, lr: int, vector: int) -> None:
        """A step that enters the guest's vectors stops on the vector's first instruction
        (UDF and injected aborts are not counted as executed by the CPU)."""
        if self._stepping:
            self._add_trap(vector)

    def _add_trap(self, addr: int) -> None:
        """Called between bursts (never from inside Unicorn): hooks may be added."""
        self._traps.add(addr & ~1)
        self._hook_bp(addr & ~1)

    def _run(self, max_insns: int) -> tuple[RunResult | None, _Stop | None]:
        """One `Vcpu.run`; returns (result, stop) - stop is None when the slice just ended."""
        self._watch_hit = None
        try:
            r = self.vcpu.run(max_insns=max_insns)
        except _FaultStop as fs:
            return None, fs.stop
        except GuestCrash as e:
            return None, _Stop(SIGILL, message=f"s2emu: {e}\n")
        if r.reason == "budget":
            return r, None
        if r.reason == "debug":
            return r, self._debug_stop()
        if r.reason in _TERMINAL:
            note = "s2emu: the guest asked for SYSTEM_RESET: this board stops\n" \
                if r.reason == "reset" else ""
            return r, _Stop(kind="exit", result=self._final(r), message=note)
        if r.reason == "wfi":
            return r, _Stop(SIGTRAP, message=(
                f"s2emu: WFI at PC {self.cpu.pc:#x} and this board has no interrupt source "
                "(continuing treats it as a spurious wake-up)\n"))
        if r.reason == "error":
            return r, _Stop(SIGSEGV, message=f"s2emu: hypervisor error: {r.error}\n")
        return r, _Stop(SIGTRAP, message=f"s2emu: run stopped: {r.reason}\n")

    def _debug_stop(self) -> _Stop:
        hit = self._watch_hit
        if hit is not None:
            self._watch_hit = None
            w, pa, size, old = hit
            if old is not None:
                self.machine.host.mem.write(pa, old)    # back to "before the access"
                self.cpu.flush_translations()
            addr = w.va + max(0, pa - w.pa)
            return _Stop(SIGTRAP, f"{_WATCH_KINDS[w.kind][0]}:{addr:x}", kind="watch")
        ztype = self._bps.get(self.cpu.pc & ~1)
        if ztype == 0 and self._gdb_swbreak:
            return _Stop(SIGTRAP, "swbreak:")
        if ztype == 1 and self._gdb_hwbreak:
            return _Stop(SIGTRAP, "hwbreak:")
        return _Stop(SIGTRAP)                   # a step trap (vector) or a foreign breakpoint

    def _fault_stop_report(self, ex: Stage2Abort, key: tuple) -> _Stop:
        """Decoded now: the syndrome must be read before the vCPU runs again."""
        text = (f"stage-2 abort at PC {ex.pc:#x}{' (Thumb)' if ex.thumb else ''}: "
                f"{ex.fault.describe()}\n  {ex.syndrome.describe()}\n")
        self._last_fault = text
        return _Stop(SIGTRAP, message="s2emu: " + text +
                     "  (continue or step: the hypervisor handles it)\n",
                     kind="fault", fault=key)

    def _prepare_resume(self) -> None:
        self._purge_bps()
        last = self._last_stop
        pc = self.cpu.pc & ~1
        self._resume_skip = (pc, self.cpu.instructions)
        if pc in self.cpu.breakpoints and pc not in self._hooked:
            self.cpu.resume_from_breakpoint()   # someone else's breakpoint
        self._watch_skip = self.cpu.instructions if last.kind == "watch" else None
        self._fault_skip = last.fault if last.kind == "fault" else None

    def _step(self) -> _Stop:
        self._stepping = True
        try:
            r, stop = self._run(1)
        finally:
            self._stepping = False
            traps, self._traps = self._traps, set()
            for addr in traps:
                self._unhook_bp(addr)
        return stop or _Stop(SIGTRAP)

    def _continue(self, conn: _Connection) -> _Stop:
        while True:
            _, stop = self._run(self.slice_insns)
            if stop is not None:
                return stop
            event = conn.poll()
            if event is INTERRUPT:
                return _Stop(SIGINT)
            if event == "eof":
                return _Stop(kind="eof")

    def _resume(self, conn: _Connection, step: bool, addr: int | None):
        if addr is not None:
            self.cpu.set_pc(addr & ~1, self.cpu.thumb)
        self._prepare_resume()
        stop = self._step() if step else self._continue(conn)
        if stop.kind == "eof":
            return "eof"
        if stop.message:
            self._send_console(conn, stop.message)
        if stop.kind == "exit":
            conn.send("W00")
            return stop.result
        self._last_stop = stop
        conn.send(self._stop_reply(stop))
        return None

    def _resume_packet(self, conn: _Connection, text: str):
        cmd, args = text[0], text[1:]
        if cmd in "CS":
            args = args.partition(";")[2]       # the signal is dropped: nothing to deliver
        try:
            addr = int(args, 16) if args else None
        except ValueError:
            conn.send("E01")
            return None
        return self._resume(conn, cmd in "sS", addr)

    def _vcont(self, conn: _Connection, text: str):
        # One thread: the first action is the one that applies to it (vCont;s:1;c = step).
        verb = text.split(";")[1][:1]
        if verb in ("c", "C", "s", "S"):
            return self._resume(conn, verb in "sS", None)
        conn.send("E01")
        return None

    @staticmethod
    def _stop_reply(stop: _Stop) -> str:
        extra = f"{stop.reason};" if stop.reason else ""
        return f"T{stop.signal:02x}thread:{THREAD_ID:x};{extra}"

    def _send_console(self, conn: _Connection, text: str) -> None:
        """Text for gdb's console: O packets (while gdb waits for a stop reply or a qRcmd)."""
        data = text.encode()
        step = (PACKET_SIZE - 8) // 2
        for i in range(0, len(data), step):
            conn.send("O" + _hex(data[i:i + step]))

    # ---- monitor commands ---------------------------------------------------------------
    def _monitor(self, conn: _Connection, hexcmd: str) -> None:
        try:
            line = bytes.fromhex(hexcmd).decode("utf-8", "replace")
        except ValueError:
            conn.send("E01")
            return
        try:
            text = self.monitor(line)
        except (ValueError, IndexError) as e:
            text = f"error: {e}\n(monitor help lists the commands)\n"
        if text:
            self._send_console(conn, text if text.endswith("\n") else text + "\n")
        conn.send("OK")

    def monitor(self, line: str) -> str:
        """Run one monitor command (as `monitor LINE` in gdb); returns its output."""
        words = shlex.split(line)
        if not words or words[0] == "help":
            return HELP
        cmd, args = words[0], words[1:]
        if cmd == "s2" and args[:1] == ["walk"] and len(args) == 2:
            return self._mon_walk(_num(args[1]))
        if cmd == "s2" and args[:1] == ["dump"] and len(args) in (1, 3):
            lo, hi = (_num(args[1]), _num(args[2])) if len(args) == 3 else (0, 1 << 40)
            return self._mon_dump(lo, hi)
        if cmd == "dirty" and len(args) <= 1:
            return self._mon_dirty(args[0] if args else None)
        if cmd == "tlb" and not args:
            return self._mon_tlb()
        if cmd == "stats" and not args:
            return self._mon_stats()
        if cmd == "fault-stop":
            return self._mon_fault_stop(args)
        raise ValueError(f"unknown monitor command {line.strip()!r}")

    def _mon_walk(self, ipa: int) -> str:
        s2 = self.vm.stage2
        out = [f"VTTBR {s2.vttbr:#018x} VTCR {s2.vtcr:#010x}"]
        out += explain(self.machine.host.mem, s2.cfg, ipa)     # reads descriptors only
        slot = self.vm.memslot(ipa)
        if slot is None:
            out.append("  no memslot: MMIO or unbacked IPA")
        else:
            flags = [f for f, on in (("logging", slot.log_dirty), ("read-only", slot.readonly),
                                     ("no-exec", slot.noexec)) if on]
            out.append(f"  memslot {slot.slot} {slot.name} [{slot.ipa:#x}, {slot.end:#x}): "
                       f"backing at host PA {slot.pa_of(ipa):#x}"
                       + (f" ({', '.join(flags)})" if flags else ""))
        return "\n".join(out) + "\n"

    @staticmethod
    def _prot(prot) -> str:
        return ("r" if prot & d.Prot.R else "-") + ("w" if prot & d.Prot.W else "-") + \
            ("x" if prot & d.Prot.X else "-")

    def _mon_dump(self, lo: int, hi: int) -> str:
        runs = self.vm.stage2.dump(lo, hi)
        out = [f"stage-2 mappings in IPA [{lo:#x}, {hi:#x}): {len(runs)} ranges, "
               f"{self.vm.stage2.table_pages()} table pages"]
        out += [f"  {m.describe()}" for m in runs[:LIST_LIMIT]]
        if len(runs) > LIST_LIMIT:
            out.append(f"  ... {len(runs) - LIST_LIMIT} more (narrow it: s2 dump LO HI)")
        return "\n".join(out) + "\n"

    def _mon_dirty(self, which: str | None) -> str:
        slots = self.vm.memslots
        if which is not None:
            slots = [s for s in slots if s.name == which or str(s.slot) == which]
            if not slots:
                raise ValueError(f"no memslot {which!r}")
        out = []
        for s in slots:
            head = f"memslot {s.slot} {s.name} (IPA {s.ipa:#x}, {s.npages} pages)"
            if not s.log_dirty:
                out.append(f"{head}: not logging")
                continue
            pages = np.flatnonzero(s.dirty)
            mode = ", manual protect" if s.manual_protect else ""
            out.append(f"{head}: logging{mode}, {len(pages)} dirty")
            shown = [f"{int(g)}@{s.ipa + (int(g) << 12):#x}" for g in pages[:DIRTY_SHOW]]
            for i in range(0, len(shown), 8):                  # page index @ IPA
                out.append("  " + " ".join(shown[i:i + 8]))
            if len(pages) > DIRTY_SHOW:
                out.append(f"  ... and {len(pages) - DIRTY_SHOW} more")
        ring = self.vm.dirty_ring
        if ring is not None:
            out.append(f"dirty ring: {len(ring.entries)}/{ring.size} entries, "
                       f"{len(ring.harvested)} harvested, not yet reset")
        return "\n".join(out) + "\n"

    def _mon_tlb(self) -> str:
        tlb = self.machine.host.tlb
        vmid = self.vm.vmid
        entries = tlb.entries(vmid)
        st = tlb.stats
        out = [f"TLB: {len(entries)} entries for VMID {vmid} ({len(tlb)} in all)"]
        for e in entries[:LIST_LIMIT]:
            out.append(f"  VA {e.va_page:#010x} -> IPA {e.ipa_page:#011x} -> PA {e.pa_page:#012x} "
                       f"{self._prot(e.prot)} level {e.level}")
        if len(entries) > LIST_LIMIT:
            out.append(f"  ... {len(entries) - LIST_LIMIT} more")
        skipping = " (skip_flush on!)" if self.vm.stage2.skip_flush else ""
        out.append(f"fills {st['fill']}, flush_vmid {st['flush_vmid']} "
                   f"(by IPA {st['flush_vmid_ipa']}), flush_all_nsnh {st['flush_all_nsnh']}; "
                   f"this VM's stage-2 flushes {self.vm.stage2.flushes}{skipping}")
        return "\n".join(out) + "\n"

    def _mon_stats(self) -> str:
        cpu, vm = self.cpu, self.vm
        out = [f"instructions {cpu.instructions}, virtual time {vm.clock.now_ns() / 1e6:.3f} ms, "
               f"VMID {vm.vmid} (generation {vm.vmid_gen})"]
        out += [f"  {k}: {v}" for k, v in sorted(vm.stats.items())]
        out.append("  cpu: " + ", ".join(f"{k} {v}" for k, v in cpu.stats.items()))
        return "\n".join(out) + "\n"

    def _mon_fault_stop(self, args: list[str]) -> str:
        if args[:1] == ["on"] and len(args) in (1, 3):
            self._fault_stop = True
            self._fault_range = (_num(args[1]), _num(args[2])) if len(args) == 3 else None
        elif args == ["off"]:
            self._fault_stop = False
            self._fault_range = None
        elif args:
            raise ValueError("usage: fault-stop on [LO HI] | off")
        where = (f" for IPA [{self._fault_range[0]:#x}, {self._fault_range[1]:#x})"
                 if self._fault_range else "")
        text = f"fault-stop {'on' + where if self._fault_stop else 'off'}\n"
        if not args and self._last_fault:
            text += "last reported: " + self._last_fault
        return text


# ---- python -m emu.gdbstub ------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """A small entry point (tests, quick use): load ELF, serve, print the outcome."""
    from .loader import LoaderError
    from .machine import Machine, parse_size

    p = argparse.ArgumentParser(prog="python -m emu.gdbstub",
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
    return 0 if result.reason in _TERMINAL else 1


if __name__ == "__main__":
    sys.exit(main())
