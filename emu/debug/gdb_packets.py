"""GDB remote serial protocol plumbing for emu.debug.gdbstub: packet framing and checksums over a
socket, binary escaping, hex helpers, the listen address, target.xml and the core registers.

Nothing here knows about the machine beyond the vCPU's register accessors (`regs`, `set_reg`,
`set_pc`, `set_cpsr`, `thumb`).
"""
from __future__ import annotations

import re
import select
import socket

from hyp.arch.exception import (MODE_ABT, MODE_FIQ, MODE_IRQ, MODE_SVC, MODE_SYS, MODE_UND,
                                MODE_USR)

PACKET_SIZE = 0x4000           # largest packet we accept (advertised in qSupported)
_MAX_BUFFER = 1 << 20          # a "packet" longer than this is garbage: dropped
THREAD_ID = 1

_CORE_REGS = [f"r{i}" for i in range(13)] + ["sp", "lr", "pc", "cpsr"]
NREGS = len(_CORE_REGS)        # 17: r0-r15 then cpsr (remote register numbers 0-16)
_REG_TYPES = {"sp": ' type="data_ptr"', "pc": ' type="code_ptr"'}
TARGET_XML = (
    '<?xml version="1.0"?>\n<!DOCTYPE target SYSTEM "gdb-target.dtd">\n'
    '<target version="1.0">\n  <architecture>arm</architecture>\n'
    '  <feature name="org.gnu.gdb.arm.core">\n'
    + "".join(f'    <reg name="{n}" bitsize="32"{_REG_TYPES.get(n, "")}/>\n' for n in _CORE_REGS)
    + "  </feature>\n</target>\n")


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


# ---- strict field parsing: every malformed or out-of-range field is a ValueError ---------
ADDR_LIMIT = 1 << 32           # guest addresses are 32-bit: [addr, addr + len) within 2**32
_HEX = re.compile(r"[0-9a-fA-F]+")
_CHECKSUM = re.compile(rb"[0-9a-fA-F]{2}")


def parse_hex(text: str, limit: int | None = None) -> int:
    """A protocol hex number: hex digits only (no sign, space, 0x or _, which int() takes),
    below `limit` when given."""
    if not _HEX.fullmatch(text):
        raise ValueError(f"not hex: {text!r}")
    value = int(text, 16)
    if limit is not None and value >= limit:
        raise ValueError(f"{text!r} out of range")
    return value


def parse_hex_data(text: str) -> bytes:
    """Hex-encoded bytes: an even number of hex digits, nothing else (fromhex takes spaces)."""
    if len(text) % 2 or (text and not _HEX.fullmatch(text)):
        raise ValueError("bad hex data")
    return bytes.fromhex(text)


def parse_addr_len(spec: str) -> tuple[int, int]:
    """ADDR,LENGTH of m/M/X/Z: a 32-bit address and a range that ends within 2**32."""
    addr_s, length_s = spec.split(",")
    addr, length = parse_hex(addr_s, ADDR_LIMIT), parse_hex(length_s)
    if addr + length > ADDR_LIMIT:
        raise ValueError("range beyond 32 bits")
    return addr, length


def parse_thread(text: str, threads: int = 1, any_ok: bool = False) -> int:
    """A thread-id: one of our threads, THREAD_ID (1, vCPU 0) to `threads` (vCPU
    threads - 1); with `any_ok` also 0 (any thread) and -1 (all), as H and vCont take.
    ValueError otherwise."""
    if any_ok and text in ("-1", "0"):
        return int(text)
    tid = parse_hex(text)
    if not THREAD_ID <= tid < THREAD_ID + threads:
        raise ValueError(f"no thread {text!r}")
    return tid


def thread_ok(text: str, any_ok: bool = False, threads: int = 1) -> bool:
    """Does `text` name a thread (parse_thread)?"""
    try:
        parse_thread(text, threads, any_ok)
    except ValueError:
        return False
    return True


_VCONT_ACTION = re.compile(r"(?:[cs]|[CS][0-9a-fA-F]{2})(?::(-1|[0-9a-fA-F]+))?")


def _vcont_action_ok(action: str, threads: int) -> bool:
    m = _VCONT_ACTION.fullmatch(action)
    return m is not None and (m.group(1) is None or thread_ok(m.group(1), True, threads))


def vcont_actions(text: str) -> list[tuple[str, int]]:
    """The actions of a well-formed vCont packet: (verb "c"/"s", thread id; -1 for an
    action on every thread: no thread-id, -1 or 0), leftmost first."""
    out = []
    for action in text[6:].split(";"):
        verb, _, tid = action.partition(":")
        out.append(("s" if verb[0] in "sS" else "c",
                    -1 if tid in ("", "-1", "0") else int(tid, 16)))
    return out


def resume_ok(text: str, threads: int = 1) -> bool:
    """Well-formed c/s [ADDR], C/S SIG[;ADDR] or vCont;ACTION[:TID]... (the actions we
    offer: c C s S; TID one of our `threads`, 0 or -1), the address 32-bit and the signal a
    byte."""
    if text.startswith("vCont;"):
        return all(_vcont_action_ok(a, threads) for a in text[6:].split(";"))
    args = text[1:]
    try:
        if text[0] in "CS":
            sig, sep, args = args.partition(";")
            parse_hex(sig, 256)
            if sep and not args:
                return False
        if args:
            parse_hex(args, ADDR_LIMIT)
    except ValueError:
        return False
    return True


def hex_bytes(data: bytes) -> str:
    return data.hex()


def le32(value: int) -> str:
    return (value & 0xFFFFFFFF).to_bytes(4, "little").hex()


def escape_binary(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b in (0x23, 0x24, 0x7D, 0x2A):          # '#', '$', '}', '*'
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape_binary(data: bytes) -> bytes:
    """X packet data: '}' escapes the next byte (XOR 0x20). ValueError for a '}' ending the
    data (gdb never sends one: it is no byte at all)."""
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == 0x7D:
            nxt = next(it, None)
            if nxt is None:
                raise ValueError("dangling escape")
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


class _Interrupt:
    """The out-of-band Ctrl-C byte (0x03)."""


INTERRUPT = _Interrupt()


class Connection:
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

    def send_console(self, text: str) -> None:
        """Text for gdb's console: O packets (while gdb waits for a stop reply or a qRcmd)."""
        data = text.encode()
        step = (PACKET_SIZE - 8) // 2
        for i in range(0, len(data), step):
            self.send("O" + hex_bytes(data[i:i + step]))

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
                # two hex digits: int() would also take " 7", "+7" or "7 "
                good = _CHECKSUM.fullmatch(check) is not None and \
                    int(check, 16) == sum(payload) & 0xFF
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


def xfer_features(args: str) -> str:
    """The reply to qXfer:features:read:ANNEX:OFFSET,LENGTH (only target.xml exists).
    E00 for a malformed request or an unknown annex (the protocol's form), and for LENGTH 0
    (an 'm' with no data is an error to gdb); an OFFSET at or past the end: 'l', no data.
    The reply holds at most LENGTH bytes and fits in PACKET_SIZE."""
    annex, _, span = args.partition(":")
    if annex != "target.xml":
        return "E00"
    try:
        off_s, len_s = span.split(",")
        off, length = parse_hex(off_s), parse_hex(len_s)
    except ValueError:
        return "E00"
    if length == 0:
        return "E00"
    data = TARGET_XML.encode()
    chunk = data[off:off + min(length, (PACKET_SIZE - 8) // 2)]  # escaping at most doubles
    more = off + len(chunk) < len(data)
    return ("m" if more else "l") + escape_binary(chunk).decode("latin-1")


# ---- registers (remote numbers 0-15 r0-pc, 16 cpsr; 32-bit little-endian hex) -----------
# CPSR modes the debugger may set: the PL0/PL1 modes. HYP (0x1A) is the hypervisor's and MON
# (0x16) does not exist here; Unicorn would silently keep the old mode for any other value.
GUEST_MODES = frozenset((MODE_USR, MODE_FIQ, MODE_IRQ, MODE_SVC, MODE_ABT, MODE_UND, MODE_SYS))


def read_all_regs(cpu) -> str:
    return "".join(le32(v) for v in cpu.regs())


def read_reg(cpu, args: str) -> str:
    try:
        n = parse_hex(args, NREGS)
    except ValueError:
        return "E01"
    return le32(cpu.regs()[n])


def _set_reg(cpu, n: int, value: int) -> None:
    if n == 16:
        cpu.set_cpsr(value)
    elif n == 15:
        cpu.set_pc(value & ~1, cpu.thumb)       # the T bit lives in CPSR
    else:
        cpu.set_reg(n, value)


def write_reg(cpu, args: str) -> str:
    """P N=VALUE: E01 (and nothing written) for a bad number, value or CPSR mode."""
    try:
        num, val = args.split("=")
        n = parse_hex(num, NREGS)
        raw = parse_hex_data(val)
    except ValueError:
        return "E01"
    value = int.from_bytes(raw, "little")
    if len(raw) != 4 or n == 16 and value & 0x1F not in GUEST_MODES:
        return "E01"
    _set_reg(cpu, n, value)
    return "OK"


def write_all_regs(cpu, args: str) -> str:
    """G: all of r0-r15 and CPSR (exactly NREGS words) or, on any error, nothing."""
    try:
        raw = parse_hex_data(args)
    except ValueError:
        return "E01"
    if len(raw) != 4 * NREGS:
        return "E01"
    values = [int.from_bytes(raw[4 * i:4 * i + 4], "little") for i in range(NREGS)]
    if values[16] & 0x1F not in GUEST_MODES:
        return "E01"
    _set_reg(cpu, 16, values[16])               # CPSR first: mode (banks) and T bit
    for n in range(16):
        _set_reg(cpu, n, values[n])
    return "OK"
