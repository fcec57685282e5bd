"""The serial console (emu.cli.console, `--serial`): the Ctrl-A escapes as a pure state
machine, flow-controlled input into the PL011, `--serial file:`/`none`, commands piped into
the `echo` guest, and a person at a terminal (a pseudo-terminal): raw mode while the guest
runs, the echo, Ctrl-A X, and the terminal's mode restored afterwards (also on SIGTERM)."""
import fcntl
import io
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import termios
import time

import pytest

from emu.cli import console as serial
from emu.cli.console import Console, Escapes, parse_serial
from emu.devices.pl011 import PL011

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = [sys.executable, "-m", "emu"]
QEMU = shutil.which("qemu-system-arm")
SUMMARY = re.compile(rb"\[s2emu\] (\w+): instructions (\d+), exits (\d+).*virtual time (\S+)")


@pytest.mark.parametrize("chunks,guest,commands", [
    ([b"abc"], b"abc", []),
    ([b"\x01x"], b"", ["quit"]),
    ([b"\x01X"], b"", ["quit"]),
    ([b"ab\x01xcd"], b"ab", ["quit"]),                  # nothing after a quit
    ([b"\x01\x01"], b"\x01", []),                       # Ctrl-A Ctrl-A: one Ctrl-A
    ([b"a\x01\x01\x01x"], b"a\x01", ["quit"]),
    ([b"\x01h", b"\x01?"], b"", ["help", "help"]),
    ([b"\x01z1"], b"1", []),                            # unknown escapes are dropped
    ([b"a\x01", b"x"], b"a", ["quit"]),                 # an escape split across reads
    ([b"\x03\r\n"], b"\x03\r\n", []),                   # Ctrl-C and line ends pass through
])
def test_escapes(chunks, guest, commands):
    e = Escapes()
    got, cmds = bytearray(), []
    for c in chunks:
        g, cs = e.feed(c)
        got += g
        cmds += cs
        if "quit" in cs:
            break
    assert (bytes(got), cmds) == (guest, commands)


@pytest.mark.parametrize("text,parsed", [
    ("stdio", ("stdio", None)), ("none", ("none", None)), ("file:/tmp/x", ("file", "/tmp/x")),
    ("file:", None), ("pty", None), ("", None), ("tcp::4444", None),
])
def test_parse_serial(text, parsed):
    if parsed is None:
        with pytest.raises(ValueError, match="stdio, file:PATH or none"):
            parse_serial(text)
    else:
        assert parse_serial(text) == parsed


@pytest.fixture
def piped(monkeypatch):
    """A console reading a pipe into a PL011 (no FIFO: one character of room at a time)."""
    monkeypatch.setattr(serial, "POLL_INTERVAL", 0.0)
    r, w = os.pipe()
    quits, err = [], io.StringIO()
    uart = PL011()
    c = Console(uart, input_fd=r, on_quit=lambda: quits.append(1), err=err)
    yield c, uart, w, quits, err
    c.close()
    os.close(r)
    if w >= 0:
        try:
            os.close(w)
        except OSError:
            pass


def _drain(uart) -> bytes:
    out = bytearray()
    while uart.room < uart.depth:
        out.append(uart.read(0, 4) & 0xFF)
    return bytes(out)


def test_input_is_flow_controlled(piped):
    """The UART takes only what it has room for; the rest waits, nothing is lost."""
    c, uart, w, _, _ = piped
    assert c.reads and not c.raw                 # a pipe: no terminal modes
    c.poll()
    assert uart.room == 1                        # nothing typed yet
    os.write(w, b"hello")
    got = bytearray()
    for _ in range(10):
        c.poll()
        got += _drain(uart)
    assert got == b"hello" and not c.pending


def test_ctrl_a_x_quits_and_stops_reading(piped):
    c, uart, w, quits, _ = piped
    os.write(w, b"ok\x01xignored")
    c.poll()
    assert quits == [1] and c.quit and not c.reads
    got = bytearray()
    for _ in range(4):
        got += _drain(uart)
        c.poll()
    assert got == b"ok"


def test_help_and_end_of_input(piped):
    c, uart, w, quits, err = piped
    os.write(w, b"\x01h")
    os.close(w)
    c.poll()
    assert "C-a x    exit s2emu" in err.getvalue() and c.reads
    c.poll()                                     # end of the pipe: no more reading
    assert not c.reads and quits == [] and uart.room == 1


# ---- the command line ---------------------------------------------------------------------
def s2emu(*args, stdin=subprocess.DEVNULL, input=None, timeout=120):
    kw = {"input": input} if input is not None else {"stdin": stdin}
    return subprocess.run(PY + list(args), cwd=ROOT, capture_output=True, timeout=timeout, **kw)


def summary(p) -> tuple:
    m = SUMMARY.search(p.stderr)
    assert m, p.stderr
    return m.groups()


HELLO = (b"Hello from an ARMv7 guest under a Python hypervisor!\nhello: done\n")


def test_serial_file_and_none(tmp_path):
    out = tmp_path / "console.txt"
    p = s2emu("run", "guests/hello.elf", "--serial", f"file:{out}")
    assert p.returncode == 0 and p.stdout == b"" and out.read_bytes() == HELLO
    q = s2emu("run", "guests/hello.elf", "--serial", "none")
    assert q.returncode == 0 and q.stdout == b""
    assert summary(p) == summary(q)


@pytest.mark.parametrize("args,message", [
    (["--serial", "tcp::1"], "bad serial backend 'tcp::1'"),
    (["--serial", "file:/nonexistent-dir/x"], "does not exist"),
    (["guests/hello.elf", "--serial", "file:/tmp/s2emu-two"], "--serial file: works with one VM"),
])
def test_bad_serial_options(args, message):
    p = s2emu("run", "guests/hello.elf", *args)
    assert p.returncode == 2 and message in p.stderr.decode()
    assert len(p.stderr.decode().strip().splitlines()) == 1


def test_no_input_runs_exactly_as_without_a_console():
    """/dev/null, an ended pipe, a pipe nobody writes to, or no console at all: the same
    output and the same run (instructions, exits, virtual time)."""
    quiet = subprocess.Popen(PY + ["run", "guests/counter.elf", "--args", "3 1"], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        out, err = quiet.stdout.read(), quiet.stderr.read()    # stdin open, never written
        quiet.wait(timeout=120)
    finally:
        quiet.kill()
        quiet.stdin.close()
    runs = [s2emu("run", "guests/counter.elf", "--args", "3 1"),
            s2emu("run", "guests/counter.elf", "--args", "3 1", input=b""),
            subprocess.CompletedProcess(quiet.args, quiet.returncode, out, err),
            s2emu("run", "guests/counter.elf", "--args", "3 1", "--serial", "none")]
    assert [r.returncode for r in runs] == [0, 0, 0, 0]
    assert runs[0].stdout == runs[1].stdout == runs[2].stdout
    assert runs[0].stdout.endswith(b"counter: done\n")
    assert len({summary(r) for r in runs}) == 1


def test_commands_piped_into_the_echo_guest():
    p = s2emu("run", "guests/echo.elf", input=b"hello world\nab\x7fc\r\nquit\n", timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == (b"echo: ready\nhello world\nHELLO WORLD\nab\b \bc\nAC\nquit\n"
                        b"echo: 2 lines, bye\n")
    assert summary(p)[0] == b"off"


def test_a_partial_line_reaches_a_pipe():
    """Output to a pipe goes a line at a time, and a line the guest leaves unfinished (a
    prompt, or here the echo of what was typed so far) once it stops adding to it."""
    p = subprocess.Popen(PY + ["run", "guests/echo.elf"], cwd=ROOT, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert p.stdout.readline() == b"echo: ready\n"
        p.stdin.write(b"abc")
        p.stdin.flush()
        fd, got, end = p.stdout.fileno(), b"", time.monotonic() + 60
        while got != b"abc" and time.monotonic() < end:
            if select.select([fd], [], [], 1)[0]:
                got += os.read(fd, 16)
        assert got == b"abc"
        p.stdin.write(b"\nquit\n")
        p.stdin.close()
        assert p.stdout.read() == b"\nABC\nquit\necho: 1 lines, bye\n"
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.skipif(QEMU is None, reason="qemu-system-arm not installed (Debian: qemu-system-arm)")
def test_echo_guest_answers_the_same_on_qemu():
    """QEMU's -nographic reads the same pipe; the lines go in once the guest is ready (QEMU
    drops a character the holding register had when the guest turns the FIFO on)."""
    p = subprocess.Popen([QEMU, "-M", "virt", "-cpu", "cortex-a15", "-nographic", "-monitor",
                          "none", "-no-reboot", "-kernel", "guests/echo.elf"], cwd=ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"echo: ready\n"
        out, _ = p.communicate(b"hello world\nab\x7fc\r\nquit\n", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0
    assert out == b"hello world\nHELLO WORLD\nab\b \bc\nAC\nquit\necho: 2 lines, bye\n"


def test_ctrl_a_x_on_a_pipe_ends_the_run():
    """The escape acts when it is read, whatever the guest has taken so far."""
    p = s2emu("run", "guests/echo.elf", input=b"hi\r\x01h\x01x", timeout=60)
    assert p.returncode == 0 and summary(p)[0] == b"quit"
    assert b"echo: ready\nhi\nHI\n".startswith(p.stdout)
    assert b"C-a x    exit s2emu" in p.stderr


# ---- a person at a terminal ---------------------------------------------------------------
class Terminal:
    """s2emu on a pseudo-terminal that is its controlling terminal (as in a shell)."""

    def __init__(self, *args: str) -> None:
        self.master, self.slave = pty.openpty()
        self.cooked = termios.tcgetattr(self.slave)
        slave = self.slave

        def controlling_tty():
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        self.p = subprocess.Popen(PY + list(args), cwd=ROOT, stdin=slave, stdout=slave,
                                  stderr=slave, preexec_fn=controlling_tty)
        self.seen = bytearray()

    def expect(self, pattern: bytes, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while pattern not in self.seen:
            left = end - time.monotonic()
            assert left > 0, f"no {pattern!r} in {bytes(self.seen)!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:            # EIO: every slave end closed
                    assert pattern in self.seen, bytes(self.seen)

    def mode(self) -> list:
        return termios.tcgetattr(self.slave)

    def close(self) -> int:
        """Wait for the exit; `final` is then the terminal's mode as s2emu left it."""
        try:
            rc = self.p.wait(timeout=60)
            self.final = self.mode()
        finally:
            if self.p.poll() is None:
                self.p.kill()
            os.close(self.slave)
            while select.select([self.master], [], [], 0.1)[0]:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    break
                if not data:
                    break
                self.seen += data
            os.close(self.master)
        return rc


def test_terminal_raw_mode_echo_and_ctrl_a_x():
    t = Terminal("run", "guests/echo.elf")
    try:
        t.expect(b"echo: ready\r\n")
        raw = t.mode()
        assert not raw[3] & (termios.ECHO | termios.ICANON | termios.ISIG)
        assert raw[1] & termios.OPOST and not raw[0] & termios.ICRNL
        os.write(t.master, b"hello\r")           # Enter sends CR in raw mode
        t.expect(b"hello\r\nHELLO\r\n")
        os.write(t.master, b"\x01x")
        rc = t.close()
    finally:
        if t.p.poll() is None:
            t.p.kill()
    assert rc == 0
    assert b"[s2emu] quit: instructions" in t.seen
    assert t.seen.count(b"hello") == 1          # the terminal did not echo it too
    assert t.final == t.cooked


def test_terminal_restored_on_sigterm():
    t = Terminal("run", "guests/echo.elf")
    try:
        t.expect(b"echo: ready\r\n")
        assert t.mode() != t.cooked
        t.p.send_signal(signal.SIGTERM)
        rc = t.close()
    finally:
        if t.p.poll() is None:
            t.p.kill()
    assert rc == -signal.SIGTERM
    assert t.final == t.cooked
