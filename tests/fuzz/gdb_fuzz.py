"""Packet fuzzing of the GDB stub (emu.debug.gdbstub) against a real loaded Machine: packets from
gdb_fuzz_gen, an independent oracle of what the stub must answer, and the invariants
checked after every packet.

Invariants per packet: no exception escapes `GdbStub.handle`; every reply is a well-formed
packet body; a malformed or out-of-range m/M/X/Z/z/p/P/G/qXfer/resume packet is answered
with an error (never a wrong success); the only host memory writes are those of a
successful M/X, into exactly its range; registers change only by a successful P/G; the guest
never runs (resume packets the oracle finds well formed are not sent: they would run it).

With several vCPUs (`Fuzzer(smp=2)`) the oracle also follows the thread packets: qC,
qfThreadInfo, qThreadExtraInfo, T and H answer as gdb_threads says, Hg moves the registers
p/P/g/G act on to that vCPU and the others' never change.
"""
from __future__ import annotations

import os
import re
import signal
import time

import numpy as np

from emu.debug.gdb_breakpoints import MAX_WATCH
from emu.debug.gdb_memory import MAX_READ
from emu.debug.gdb_packets import PACKET_SIZE, TARGET_XML
from emu.debug.gdbstub import GdbStub
from emu.machine import Machine
from gdb_fuzz_gen import GUEST_MODES, H

ELF = os.path.join(os.path.dirname(__file__), "..", "..", "guests", "hello.elf")
LIMIT = 1 << 32
HANG_SECONDS = 5.0

# ---- the oracle ------------------------------------------------------------------------
_VCONT = re.compile(r"(?:[cs]|[CS][0-9a-fA-F]{2})(?::(-1|[0-9a-fA-F]+))?")


def _hex_below(text: str, limit: int) -> bool:
    return re.fullmatch(H, text) is not None and int(text, 16) < limit


def _tid(text: str, threads: int, any_ok: bool = False) -> int | None:
    """A thread-id naming one of `threads` vCPUs (1..threads; with any_ok also 0, -1)."""
    if any_ok and text in ("0", "-1"):
        return int(text)
    if re.fullmatch(H, text) and 1 <= int(text, 16) <= threads:
        return int(text, 16)
    return None


def _vcont_action(action: str, threads: int) -> bool:
    m = _VCONT.fullmatch(action)
    return m is not None and (m.group(1) is None or _tid(m.group(1), threads, True) is not None)


def runs_guest(text: str, threads: int = 1) -> bool:
    """A well-formed resume packet: it would run the guest (not sent by the fuzzer)."""
    if text.startswith("vCont;"):
        return all(_vcont_action(a, threads) for a in text[6:].split(";"))
    if text[:1] not in ("c", "s", "C", "S"):
        return False
    args = text[1:]
    if text[0] in "CS":
        sig, sep, args = args.partition(";")
        if not _hex_below(sig, 256) or sep and not args:
            return False
    return not args or _hex_below(args, LIMIT)


def _escape_ok(body: str) -> bool:
    return re.fullmatch(r"(?:[^}$#*]|}[\x00-\xff])*", body, re.S) is not None


_SIMPLE = re.compile(r"|OK|E[0-9a-fA-F]{2}|(?:[0-9a-f]{2})*|QC[1-8]|[01]|l|m1(?:,[2-8])*|"
                     r"PacketSize=.*|Text=0;Data=0;Bss=0|vCont;c;C;s;S|T[0-9a-f]{2}.*", re.S)


def well_formed(replies: list[str], text: str) -> None:
    assert isinstance(replies, list) and all(isinstance(r, str) for r in replies), replies
    if not replies:
        assert text == "k", "no reply"
        return
    for r in replies[:-1]:
        assert re.fullmatch(r"O(?:[0-9a-f]{2})+", r), f"not console output: {r[:80]!r}"
    last = replies[-1]
    assert all(ord(ch) < 256 for ch in last) and len(last) <= PACKET_SIZE - 4
    assert "$" not in last and "#" not in last, last[:80]
    if text.startswith("qXfer:") and last[:1] in ("l", "m") and last != "m1":
        assert _escape_ok(last[1:]), last[:80]
    else:
        assert _SIMPLE.fullmatch(last), f"unexpected reply {last[:80]!r}"


def _range_ok(addr: int, length: int) -> bool:
    return addr < LIMIT and addr + length <= LIMIT


def _unescape(raw: bytes) -> bytes | None:
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i] == 0x7D:
            if i + 1 == len(raw):
                return None                     # a dangling escape
            out.append(raw[i + 1] ^ 0x20)
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


class Fuzzer:
    """One Machine (hello.elf, loaded, never run) and its stub; `check(packet)` sends one
    packet and asserts every invariant. `writes` keeps the successful M/X for the final
    whole-memory comparison."""

    def __init__(self, smp: int = 1) -> None:
        self.m = Machine(smp=smp)
        self.m.load(ELF)
        self.stub = GdbStub(self.m)
        self.smp = smp
        self.cpu, self.vm = self.m.cpu, self.m.vm
        self.g = 0                              # the vCPU gdb's Hg selected
        self.writes: list[tuple[int, bytes]] = []
        self.recorded: list[tuple[int, int]] = []
        mem = self.m.host.mem
        for name in ("write", "write32", "write64", "zero"):
            self._record(mem, name)

    def _record(self, mem, name: str) -> None:
        real = getattr(mem, name)
        sizes = {"write32": 4, "write64": 8}

        def recorder(pa, arg, *rest):
            n = len(arg) if name == "write" else arg if name == "zero" else sizes[name]
            self.recorded.append((pa, n))
            return real(pa, arg, *rest)
        setattr(mem, name, recorder)

    def _pieces(self, addr: int, length: int):
        """[(ipa, n, slot)] covering [addr, addr + length) in memslots, or None."""
        out, done = [], 0
        while done < length:
            slot = self.vm.memslot(addr + done)
            if slot is None:
                return None
            n = min(length - done, slot.end - addr - done)
            out.append((addr + done, n, slot))
            done += n
        return out

    def _read(self, addr: int, length: int) -> bytes:
        """What the debugger may read at addr: up to the first byte outside every slot."""
        out = b""
        while len(out) < length and (slot := self.vm.memslot(addr + len(out))) is not None:
            out += self.vm.read_guest(addr + len(out), min(length - len(out),
                                                           slot.end - addr - len(out)))
        return out

    def _debug_state(self):
        """Breakpoints, watchpoints and fault-stop as installed (the stub's own records)."""
        pts, faults = self.stub._ctl.points, self.stub._ctl.faults
        return (dict(pts._bps), sorted((k, w.refs) for k, w in pts._watches.items()),
                sorted(self.cpu.breakpoints), faults.on, faults.range)

    # ---- one packet -------------------------------------------------------------------
    def send(self, pkt: bytes) -> list[str]:
        """handle(pkt); TimeoutError when the answer took over HANG_SECONDS. A run of the
        guest is cut there (handle's timeout); SIGALRM, later, cuts anything else."""
        def hang(*_):
            raise TimeoutError(f"no answer in {2 * HANG_SECONDS} s")
        old = signal.signal(signal.SIGALRM, hang)
        signal.setitimer(signal.ITIMER_REAL, 2 * HANG_SECONDS)
        t0 = time.monotonic()
        try:
            replies = self.stub.handle(pkt, timeout=HANG_SECONDS)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        if time.monotonic() - t0 > HANG_SECONDS:
            raise TimeoutError(f"answered after {time.monotonic() - t0:.1f} s")
        return replies

    def check(self, pkt: bytes) -> str:
        """Send `pkt` (a resume the oracle finds well formed is replaced by '?'); assert the
        invariants; returns the reply."""
        text = pkt.decode("latin-1")
        if runs_guest(text, self.smp):
            pkt, text = b"?", "?"
        g = self.g
        self.cpu = self.m.cpus[g]
        others = [c.regs() for c in self.m.cpus if c is not self.cpu]
        regs, state = self.cpu.regs(), self._debug_state()
        insns = [c.progress for c in self.m.cpus]
        self.recorded.clear()
        replies = self.send(pkt)
        well_formed(replies, text)
        reply = replies[-1] if replies else ""
        assert [c.progress for c in self.m.cpus] == insns, "the guest ran"
        assert [c.regs() for c in self.m.cpus if c is not self.cpu] == others, \
            f"{text[:60]!r} changed another vCPU's registers"
        if self._debug_state() != state:        # only a successful Z/z or monitor command
            console = "".join(bytes.fromhex(r[1:]).decode("latin-1") for r in replies[:-1])
            assert text[:1] in ("Z", "z") and reply == "OK" or text.startswith("qRcmd,") \
                and not console.startswith("error:"), f"{text[:60]!r} changed debug state"
        wrote = self._expect(text, pkt, reply, regs)
        allowed = [(s.pa_of(ipa), n) for ipa, n, s in (self._pieces(*wrote) or [])] \
            if wrote else []
        for pa, n in self.recorded:
            assert any(lo <= pa and pa + n <= lo + ln for lo, ln in allowed), \
                f"host write PA {pa:#x}+{n} outside the packet's range"
        return reply

    def _expect(self, text, pkt, reply, regs):
        """The oracle: assert `reply` and the registers; returns the (addr, length) a
        successful M/X wrote, or None."""
        now = self.cpu.regs()
        cmd = text[:1]
        if cmd == "P" and reply == "OK":
            m = re.fullmatch(rf"P({H})=([0-9a-fA-F]{{8}})", text)
            assert m and int(m.group(1), 16) < 17, f"wrong OK to {text!r}"
            n, v = int(m.group(1), 16), int.from_bytes(bytes.fromhex(m.group(2)), "little")
            assert n != 16 or v & 0x1F in GUEST_MODES, f"wrong OK to {text!r}"
            want = list(regs)
            want[n] = v & ~1 if n == 15 else v
            same = range(17) if (v ^ regs[16]) & 0x1F == 0 or n != 16 else \
                list(range(8)) + [15, 16]
            assert [now[i] for i in same] == [want[i] for i in same], text
            return None
        if cmd == "G" and reply == "OK":
            m = re.fullmatch(r"G((?:[0-9a-fA-F]{8}){17})", text)
            assert m, f"wrong OK to {text!r}"
            raw = bytes.fromhex(m.group(1))
            want = [int.from_bytes(raw[4 * i:4 * i + 4], "little") for i in range(17)]
            want[15] &= ~1
            assert want[16] & 0x1F in GUEST_MODES and now == want, f"wrong OK to {text!r}"
            return None
        assert now == regs, f"registers changed by {text!r}"
        if cmd == "p":
            m = re.fullmatch(rf"p({H})", text)
            if m and int(m.group(1), 16) < 17:
                assert reply == regs[int(m.group(1), 16)].to_bytes(4, "little").hex()
            else:
                assert reply == "E01", f"{reply!r} to {text!r}"
        elif cmd == "m":
            m = re.fullmatch(rf"m({H}),({H})", text)
            addr, n = (int(m.group(1), 16), int(m.group(2), 16)) if m else (0, 0)
            data = self._read(addr, min(n, MAX_READ)) if m and _range_ok(addr, n) else None
            good = data is not None and (data or n == 0)
            assert reply == (data.hex() if good else "E01"), f"{reply[:40]!r} to {text!r}"
        elif cmd in ("M", "X"):
            return self._expect_write(cmd, text, pkt, reply)
        elif cmd in ("Z", "z"):
            self._expect_z(text, reply)
        elif text.startswith("qXfer:features:read:"):
            m = re.fullmatch(rf"target\.xml:({H}),({H})", text[len("qXfer:features:read:"):])
            off, n = (int(m.group(1), 16), int(m.group(2), 16)) if m else (0, 0)
            if not m or n == 0:
                assert reply == "E00", f"{reply[:40]!r} to {text!r}"
            else:
                chunk = TARGET_XML[off:off + min(n, MAX_READ)]      # nothing to escape
                more = off + len(chunk) < len(TARGET_XML)
                assert reply == ("m" if more else "l") + chunk, f"{reply[:40]!r} to {text!r}"
        elif cmd in ("c", "C", "s", "S") or text.startswith("vCont;"):
            assert reply == "E01", f"{reply!r} to {text!r}"      # well-formed ones not sent
        elif text in ("qC", "qfThreadInfo", "qsThreadInfo") or cmd in ("H", "T") or \
                text.startswith("qThreadExtraInfo,"):
            self._expect_thread(text, reply)
        return None

    def _expect_thread(self, text, reply):
        n = self.smp
        if text == "qC":
            want = f"QC{self.g + 1:x}"
        elif text == "qfThreadInfo":
            want = "m" + ",".join(f"{i:x}" for i in range(1, n + 1))
        elif text == "qsThreadInfo":
            want = "l"
        elif text.startswith("qThreadExtraInfo,"):
            tid = _tid(text[len("qThreadExtraInfo,"):], n)
            # never run: vCPU 0 on, the others off (PSCI)
            info = None if tid is None else "vCPU 0" if n == 1 else \
                f"vCPU {tid - 1} ({'running' if tid == 1 else 'off'})"
            want = info.encode().hex() if info else "E01"
        elif text[0] == "T":
            want = "OK" if _tid(text[1:], n) else "E01"
        else:
            tid = _tid(text[2:], n, any_ok=True) if text[1:2] in ("c", "g") else None
            want = "E01" if tid is None else "OK"
            if text[1:2] == "g" and tid is not None and tid > 0:
                self.g = tid - 1
        assert reply == want, f"{reply!r} to {text!r}"

    def _expect_write(self, cmd, text, pkt, reply):
        if cmd == "M":
            m = re.fullmatch(rf"M({H}),({H}):((?:[0-9a-fA-F]{{2}})*)", text)
            data = bytes.fromhex(m.group(3)) if m else None
        else:
            m = re.fullmatch(rb"X([0-9a-fA-F]+),([0-9a-fA-F]+):(.*)", pkt, re.S)
            data = _unescape(m.group(3)) if m else None
        ok = data is not None
        if ok:
            addr, n = int(m.group(1), 16), int(m.group(2), 16)
            ok = _range_ok(addr, n) and len(data) == n and self._pieces(addr, n) is not None
        assert reply == ("OK" if ok else "E01"), f"{reply!r} to {text[:60]!r}"
        if not ok:
            return None
        assert self._read(addr, n) == data, f"{text[:60]!r} did not write its data"
        self.writes.append((addr, data))
        return addr, n

    def _expect_z(self, text, reply):
        m = re.fullmatch(rf"([Zz])({H}),({H}),({H})", text)
        if not m:
            assert reply == "E01", f"{reply!r} to {text!r}"
            return
        t, addr, kind = (int(g, 16) for g in m.groups()[1:])
        if not _range_ok(addr, kind):
            want = "E01"
        elif t in (0, 1):
            want = "OK" if kind in (2, 3, 4) else "E01"
        elif t in (2, 3, 4):
            slot = self.vm.memslot(addr)
            fits = slot is not None and addr + kind <= slot.end
            want = "OK" if 0 < kind <= MAX_WATCH and (fits or text[0] == "z") else "E01"
        else:
            want = ""
        assert reply == want, f"{reply!r} to {text!r}"

    # ---- the end of a run ----------------------------------------------------------------
    def check_memory(self) -> None:
        """All of host memory (RAM, flash, stage-2 tables) equals a fresh machine's with the
        successful writes replayed: nothing else was written by any path."""
        ref = Machine(smp=self.smp)
        ref.load(ELF)
        for addr, data in self.writes:
            for ipa, n, _ in self._pieces(addr, len(data)):
                ref.vm.write_guest(ipa, data[ipa - addr:ipa - addr + n], debugger=True)
        a, b = self.m.host.mem.buf, ref.host.mem.buf
        assert a.shape == b.shape
        step = 16 << 20
        for i in range(0, len(a), step):
            if not np.array_equal(a[i:i + step], b[i:i + step]):
                bad = i + int(np.flatnonzero(a[i:i + step] != b[i:i + step])[0])
                raise AssertionError(f"host memory differs at PA {bad:#x}")
