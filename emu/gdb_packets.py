"""GDB remote serial protocol plumbing for emu.gdbstub: packet framing and checksums over a
socket, binary escaping, hex helpers, the listen address, target.xml and the core registers.

Nothing here knows about the machine beyond the vCPU's register accessors (`regs`, `set_reg`,
`set_pc`, `set_cpsr`, `thumb`).
"""
from __future__ import annotations

import select
import socket

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


def xfer_features(args: str) -> str:
    """The reply to qXfer:features:read:ARGS (only target.xml exists)."""
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
    return ("m" if more else "l") + escape_binary(chunk).decode("latin-1")


# ---- registers (remote numbers 0-15 r0-pc, 16 cpsr; 32-bit little-endian hex) -----------
def read_all_regs(cpu) -> str:
    return "".join(le32(v) for v in cpu.regs())


def read_reg(cpu, args: str) -> str:
    try:
        n = int(args, 16)
    except ValueError:
        return "E01"
    if not 0 <= n < NREGS:
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
    try:
        num, val = args.split("=")
        n = int(num, 16)
        raw = bytes.fromhex(val)
    except ValueError:
        return "E01"
    if not 0 <= n < NREGS or len(raw) != 4:
        return "E01"
    _set_reg(cpu, n, int.from_bytes(raw, "little"))
    return "OK"


def write_all_regs(cpu, args: str) -> str:
    try:
        raw = bytes.fromhex(args)
    except ValueError:
        return "E01"
    if len(raw) < 4 * NREGS:
        return "E01"
    values = [int.from_bytes(raw[4 * i:4 * i + 4], "little") for i in range(NREGS)]
    _set_reg(cpu, 16, values[16])               # CPSR first: mode (banks) and T bit
    for n in range(16):
        _set_reg(cpu, n, values[n])
    return "OK"
