"""The guest's serial console on the host, as QEMU's `-nographic` (`-serial stdio`),
`-serial file:PATH` and `-serial none`: `--serial stdio|file:PATH|none`.

With stdio the UART's output goes to stdout: on a terminal character by character; to a pipe
or file a line at a time (one write per line, so processes sharing a pipe do not tear each
other's lines) and a partial line once the guest has gone FLUSH_EXITS exits or FLUSH_NS of
virtual time without adding to it (a prompt reaches a program reading the pipe). What the
user types reaches the UART's receive FIFO:
- stdin a terminal (and this process in its foreground): raw mode, as QEMU sets it (no echo,
  no line editing, no signals: Ctrl-C goes to the guest; output post-processing stays on, so
  the guest's "\\n" starts a new line). The mode is restored on every way out: a normal end,
  an exception, SIGTERM/SIGHUP/SIGQUIT (restored, then the signal's default action), SIGTSTP
  (restored while stopped, raw again on SIGCONT), and at interpreter exit.
- stdin a pipe or a file: read as it is, no terminal modes, until its end (a test pipes
  commands into a guest this way).
- Ctrl-A is the escape: Ctrl-A X quits (the run ends with reason "quit", status 0, and the
  summary is printed), Ctrl-A H prints the help, Ctrl-A Ctrl-A sends one Ctrl-A; any other
  escaped key is dropped (as QEMU's mux). Escapes work on pipes too.
Input is read only when the run loop calls `poll()` between bursts of guest code (a
select() that never waits; no thread touches the device), and offered to the UART only as
far as its FIFO has room (flow control, as QEMU's can_receive): nothing is lost, and with no
input the guest runs exactly as it would without a console.

Input needs the terminal for itself: it is off for `step`, `--gdb`, `--monitor stdio`,
`--incoming -`/`fd:0` and runs of several VMs (their output is prefixed as before).
"""
from __future__ import annotations

import argparse
import atexit
import os
import select
import signal
import stat
import sys
import time
from typing import Callable

CTRL_A = 0x01
READ_CHUNK = 4096
POLL_INTERVAL = 0.002           # seconds of wall clock between select() calls on stdin
# A partial output line is flushed once the guest went this many exits, or this much virtual
# time, without adding to it: measures of the guest's progress, so a busy host never splits
# a line the guest is still writing.
FLUSH_EXITS = 64
FLUSH_NS = 1_000_000
HELP = "\nC-a h    print this help\nC-a x    exit s2emu\nC-a C-a  sends C-a\n"
_RESTORE_ON = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def parse_serial(text: str) -> tuple[str, str | None]:
    """'stdio' | 'none' | 'file:PATH' -> (mode, path); ValueError otherwise."""
    if text in ("stdio", "none"):
        return text, None
    kind, sep, path = text.partition(":")
    if kind == "file" and sep and path:
        return "file", path
    raise ValueError(f"bad serial backend {text!r} (stdio, file:PATH or none)")


class Escapes:
    """The Ctrl-A escape state machine. `feed(data)` -> (bytes for the guest, commands:
    "help" / "quit"); nothing after a quit is passed on."""

    def __init__(self) -> None:
        self.escaped = False

    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        out, commands = bytearray(), []
        for c in data:
            if self.escaped:
                self.escaped = False
                if c == CTRL_A:
                    out.append(c)
                elif c in b"xX":
                    commands.append("quit")
                    break
                elif c in b"hH?":
                    commands.append("help")
            elif c == CTRL_A:
                self.escaped = True
            else:
                out.append(c)
        return bytes(out), commands


def _raw(attrs: list) -> list:
    """QEMU's terminal settings for -nographic (no echo, canonical mode, signals or input
    translation; 8 bits; output post-processing kept)."""
    import termios                  # (here and below: only a terminal on stdin needs it)
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = attrs
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP |
               termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
    oflag |= termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN | termios.ISIG)
    cflag = cflag & ~(termios.CSIZE | termios.PARENB) | termios.CS8
    cc = list(cc)
    cc[termios.VMIN], cc[termios.VTIME] = 1, 0
    return [iflag, oflag, cflag, lflag, ispeed, ospeed, cc]


def input_kind(fd: int) -> str | None:
    """How to read `fd`: "tty" (raw mode), "stream" (a pipe, socket, file or other device:
    as it is), or None (not open, or a terminal this process may not read: a background job
    would be stopped by SIGTTIN)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return None
    if os.isatty(fd):
        try:
            return "tty" if os.tcgetpgrp(fd) == os.getpgrp() else None
        except OSError:
            return None
    return "stream" if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISREG(mode) \
        or stat.S_ISCHR(mode) else None


class Console:
    """Connects one UART (emu.devices.pl011.PL011) to the host. `input_fd`: where typed
    characters come from (None: output only); `on_quit`: called on Ctrl-A X; `err`: where
    the help goes."""

    def __init__(self, uart, mode: str = "stdio", path: str | None = None, *,
                 input_fd: int | None = None, on_quit: Callable[[], None] | None = None,
                 err=None) -> None:
        self.uart = uart
        self.mode = mode
        self.on_quit = on_quit
        self.err = err or sys.stderr
        self.escapes = Escapes()
        self.pending = bytearray()             # typed, not yet taken by the UART
        self.quit = False
        self._file = None
        self._fd = input_fd if mode == "stdio" else None
        self._kind = input_kind(self._fd) if self._fd is not None else None
        if self._kind is None:
            self._fd = None
        self._tty = self._fd if self._kind == "tty" else None   # kept after input ends
        self._saved_tty = None
        self._saved_handlers: dict = {}
        self._next_read = 0.0
        self._partial = False                  # output since the last newline, maybe unflushed
        self._quiet_exits = 0                  # polls (exits) since the guest's last output
        self._out_ns: int | None = None        # virtual time of the first of those
        self._flush_sink: Callable[[], None] | None = None
        if mode == "file":
            self._file = open(path, "wb", buffering=0)
            uart.sink = self._file.write
        elif mode == "none":
            uart.sink = None
        elif uart.sink is not None:
            uart.sink = self._watch(uart.sink)

    def _watch(self, sink: Callable[[bytes], None]) -> Callable[[bytes], None]:
        self._flush_sink = getattr(sink, "flush", None)     # emu.cli.session.ConsoleSink

        def write(b: bytes) -> None:
            sink(b)
            self._partial = b != b"\n"
            self._quiet_exits, self._out_ns = 0, None
        return write

    @property
    def on_stdout(self) -> bool:
        """The guest's output goes to the terminal (stdout)."""
        return self.mode == "stdio"

    @property
    def reads(self) -> bool:
        """Typed input can reach the guest (until it ends or Ctrl-A X)."""
        return self._fd is not None

    @property
    def raw(self) -> bool:
        return self._saved_tty is not None

    # ---- the terminal -------------------------------------------------------------------------
    def start(self) -> None:
        """Raw mode (a terminal on stdin), with the handlers that restore it."""
        if self._tty is None or self.raw:
            return
        import termios
        self._saved_tty = termios.tcgetattr(self._tty)
        for sig in _RESTORE_ON + (signal.SIGTSTP, signal.SIGCONT):
            self._saved_handlers[sig] = signal.signal(sig, self._on_signal)
        atexit.register(self.restore)
        termios.tcsetattr(self._tty, termios.TCSANOW, _raw(self._saved_tty))

    def restore(self) -> None:
        """The terminal as it was (idempotent; also the atexit hook)."""
        if self._saved_tty is None:
            return
        saved, self._saved_tty = self._saved_tty, None
        self._set_mode(saved)
        for sig, handler in self._saved_handlers.items():
            signal.signal(sig, handler)
        self._saved_handlers = {}
        atexit.unregister(self.restore)

    def _set_mode(self, attrs: list) -> None:
        import termios
        try:
            termios.tcsetattr(self._tty, termios.TCSADRAIN, attrs)
        except termios.error:
            pass                               # the terminal went away (hangup)

    def _on_signal(self, sig: int, frame) -> None:
        saved = self._saved_tty
        if sig == signal.SIGCONT:              # back from a stop: raw again
            if saved is not None:
                self._set_mode(_raw(saved))
            return
        if sig == signal.SIGTSTP:              # stopped with the terminal as it was
            if saved is not None:
                self._set_mode(saved)
            os.kill(os.getpid(), signal.SIGSTOP)
            return
        self.restore()                         # then the signal's default action
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)

    def _flush_output(self) -> None:
        self._partial = False
        if self._flush_sink is not None:
            self._flush_sink()

    def close(self) -> None:
        """Write a partial last line, restore the terminal, close the output file."""
        self._flush_output()
        self.restore()
        if self._file is not None:
            self._file.close()
            self._file = None

    # ---- input --------------------------------------------------------------------------------
    def poll(self, now_ns: int | None = None) -> None:
        """After each exit (`now_ns`: the guest's virtual time): flush a partial output line
        the guest stopped adding to (a prompt waiting for input), take what was typed (never
        waiting), pass it through the escapes, and give the UART what its FIFO has room for."""
        if self._partial:
            self._quiet_exits += 1
            if self._out_ns is None:
                self._out_ns = now_ns
            if self._quiet_exits >= FLUSH_EXITS or (
                    now_ns is not None and now_ns - self._out_ns >= FLUSH_NS):
                self._flush_output()
        if self._fd is not None and len(self.pending) < READ_CHUNK:
            now = time.monotonic()
            if now >= self._next_read:
                self._next_read = now + POLL_INTERVAL
                self._read()
        if self.pending and self.uart.room:
            del self.pending[:self.uart.feed(bytes(self.pending))]

    def _read(self) -> None:
        if not select.select([self._fd], [], [], 0)[0]:
            return
        try:
            data = os.read(self._fd, READ_CHUNK)
        except OSError:                         # EIO: the terminal hung up
            data = b""
        if not data:
            self._fd = None                     # end of input: the guest just gets no more
            return
        guest, commands = self.escapes.feed(data)
        self.pending += guest
        for command in commands:
            if command == "help":
                self.err.write(HELP)              # raw mode keeps output processing
                self.err.flush()
            elif command == "quit" and not self.quit:
                self.quit = True
                self._fd = None
                if self.on_quit is not None:
                    self.on_quit()


def wants_input(a: argparse.Namespace) -> bool:
    """Whether this run's console may read stdin (module docstring: not when something else
    needs it)."""
    return (a.command == "run" and not getattr(a, "gdb", None)
            and getattr(a, "monitor", None) != "stdio"
            and getattr(a, "incoming", None) not in ("-", "fd:0")
            and len(a.elf) <= 1)


def for_run(a: argparse.Namespace, uart, on_quit: Callable[[], None]) -> Console:
    """The console the options ask for (`--serial`, default stdio)."""
    mode, path = parse_serial(getattr(a, "serial", None) or "stdio")
    return Console(uart, mode, path, input_fd=0 if wants_input(a) else None, on_quit=on_quit)
