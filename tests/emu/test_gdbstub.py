"""The GDB remote stub (emu.debug.gdbstub): real gdb-multiarch sessions in batch mode, raw packets,
and the debug path's promises (reads have no side effect, writes are marked dirty)."""
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import capstone
import pytest

from emu.debug.gdbstub import GdbStub, TARGET_XML, parse_listen
from emu.machine import Machine
from hyp import dirty

from conftest import GUESTS

GDB = shutil.which("gdb-multiarch")
needs_gdb = pytest.mark.skipif(GDB is None, reason="gdb-multiarch is not installed")
TIMEOUT = 30


def elf(name):
    return os.path.join(GUESTS, f"{name}.elf")


_live = []      # stubs and clients of the running test, cleaned up by `_teardown`


@pytest.fixture(autouse=True)
def _teardown():
    """A failed test must not leave a guest running in a thread: close its clients, then
    attach to each live stub and kill the guest."""
    yield
    stubs = [x for x in _live if isinstance(x, Stub)]
    for x in _live:
        if isinstance(x, Raw):
            x.close()
    for stub in stubs:
        if stub.alive():
            try:
                c = Raw(stub.port)
                c.send_raw(b"$k#6b")
                c.close()
                stub._thread.join(TIMEOUT)
            except OSError:
                pass
    _live.clear()


class Stub:
    """A Machine with its GdbStub serving on a free loopback port in a background thread."""

    def __init__(self, name, wait=True, setup=None, **machine_kw):
        _live.append(self)
        self.m = Machine(**machine_kw)
        self.image = self.m.load(elf(name))
        if setup:
            setup(self.m)
        self._ready = threading.Event()
        self.stub = GdbStub(self.m, on_listen=lambda host, port: self._ready.set())
        self.result = self.error = None
        self._thread = threading.Thread(target=self._serve, args=(wait,), daemon=True)
        self._thread.start()
        assert self._ready.wait(TIMEOUT), "the stub never listened"
        self.port = self.stub.port

    def _serve(self, wait):
        try:
            self.result = self.stub.serve("tcp::0", wait)
        except BaseException as e:          # reported by join()
            self.error = e

    def alive(self):
        return self._thread.is_alive()

    def join(self):
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "serve() did not return"
        if self.error is not None:
            raise self.error
        return self.result


def free_run(name):
    m = Machine()
    img = m.load(elf(name))
    result = m.run(max_insns=50_000_000)
    assert result.reason == "off"
    return m, img


def gdb(port, name, *commands):
    args = [GDB, "-q", "-batch", "-nx", "-iex", "set debuginfod enabled off",
            "-ex", "set confirm off", "-ex", "set pagination off",
            "-ex", f"target remote 127.0.0.1:{port}"]
    for c in commands:
        args += ["-ex", c]
    p = subprocess.run(args + [elf(name)], capture_output=True, text=True, timeout=TIMEOUT)
    return p.stdout + p.stderr


def values(out):
    """Every `print` result ($N = 0x...) in order."""
    return [int(v, 16) for v in re.findall(r"^\$\d+ = (0x[0-9a-f]+)$", out, re.M)]


def linear_pcs(m, addr, thumb, count):
    """The next `count` PCs when the code at `addr` runs straight (per the disassembly)."""
    mode = capstone.CS_MODE_THUMB if thumb else capstone.CS_MODE_ARM
    cs = capstone.Cs(capstone.CS_ARCH_ARM, mode)
    code = m.vm.read_guest(addr, 4 * count)
    pcs, pc = [], addr
    for insn in cs.disasm(code, addr, count=count):
        pc += insn.size
        pcs.append(pc)
    assert len(pcs) == count
    return pcs


# ---- gdb-multiarch sessions ------------------------------------------------------------
@needs_gdb
def test_gdb_hello_break_step_read_monitor_continue():
    ref, img = free_run("hello")
    main = img.symbol("main")
    data = img.symbol("pow10.0")
    want_words = [int.from_bytes(ref.vm.read_guest(data + 4 * i, 4), "little") for i in range(4)]
    s = Stub("hello")
    out = gdb(s.port, "hello",
              "break main", "continue", "info registers",
              "stepi", "p/x $pc", "stepi", "p/x $pc", "stepi", "p/x $pc",
              f"x/4wx {data:#x}",
              "monitor s2 walk 0x40000000", "monitor tlb", "monitor stats",
              "continue")
    result = s.join()
    assert re.search(rf"Breakpoint 1 at {main:#x}", out), out
    assert re.search(rf"^pc\s+{main:#x}\s", out, re.M), out
    assert re.search(r"^cpsr\s+0x[0-9a-f]+", out, re.M)
    assert values(out) == linear_pcs(ref, main, False, 3), out
    words = re.search(rf"^{data:#x} <pow10\.0>:\s+(.*)$", out, re.M).group(1).split()
    assert [int(w, 16) for w in words] == want_words
    # monitor s2 walk: level 1 table, level 2 block (RAM mapped with the largest leaf)
    assert re.search(r"L1 \[\s*1\] @ 0x[0-9a-f]+ = 0x[0-9a-f]{16} table", out), out
    assert re.search(r"L2 \[\s*0\] @ 0x[0-9a-f]+ = 0x[0-9a-f]{16} block .* rwx AF=1", out), out
    assert "memslot 0 ram" in out
    assert re.search(r"TLB: \d+ entries for VMID 1", out) and "VA 0x40000000 -> IPA" in out
    assert re.search(r"^  exits: \d+$", out, re.M)      # monitor stats
    assert "exited normally" in out
    assert result.reason == "off"
    assert s.m.uart.text == ref.uart.text
    assert s.m.cpu.instructions == ref.cpu.instructions


@needs_gdb
def test_gdb_thumb_break_step_and_detach():
    ref, img = free_run("thumb")
    build, scan = img.symbol("build_table"), img.symbol("scan_table")
    assert build & 1 and scan & 1                   # Thumb functions
    s = Stub("thumb")
    out = gdb(s.port, "thumb",
              "break *build_table", "break *scan_table", "continue",
              "p/x $pc", "p/x $cpsr & 0x20",
              *[c for _ in range(10) for c in ("stepi", "p/x $pc")],
              "x/i $pc", "continue", "p/x $pc", "p/x $cpsr & 0x20", "detach")
    result = s.join()
    v = values(out)
    assert v[0] == build & ~1 and v[1] == 0x20, out
    # push, movs, 16-bit shifts/eors, a 32-bit str.w, ...: each stepi is one instruction
    assert v[2:12] == linear_pcs(ref, build & ~1, True, 10), out
    assert v[12] == scan & ~1 and v[13] == 0x20, out
    assert "Breakpoint 2, " in out and "scan_table" in out
    # after the detach the guest ran to completion by itself
    assert result.reason == "off"
    assert s.m.uart.text == ref.uart.text


@needs_gdb
def test_gdb_watchpoint_and_fault_stop():
    ref, img = free_run("faults")
    s = Stub("faults")
    out = gdb(s.port, "faults",
              "monitor fault-stop on 0x46400000 0x46600000",
              "continue", "p/x $pc", "monitor s2 walk 0x46400000",
              "stepi", "monitor s2 walk 0x46400000", "monitor fault-stop off",
              "watch *(unsigned *)0x46400000", "continue", "p/x $pc",
              "delete", "continue")
    result = s.join()
    # the first access to RAM+100 MiB: a level-2 translation fault, shown before the
    # hypervisor maps it (same syndrome as tests/emu/test_guests.py expects)
    assert "stage-2 abort at PC" in out and "HSR 0x93810006" in out, out
    assert "HPFAR 0x00464000" in out and "HDFAR 0x46400000" in out
    walks = out.split("VTTBR 0x")[1:]
    assert "translation fault, level 2" in walks[0] and "L2 [  50]" in walks[0]
    assert "block -> " in walks[1] and "L2 [  50]" in walks[1]      # mapped by the step
    # write watchpoint: the stub stops before the store, gdb steps over it and shows the
    # old and new values, stopped after the store
    assert "Hardware watchpoint 1: *(unsigned *)0x46400000" in out
    assert re.search(r"Old value = 0\s+New value = 3735928559", out), out
    pcs = values(out)
    store = pcs[1] - 4
    assert ref.vm.read_guest(store, 4) == bytes.fromhex("003084e5")  # str r3, [r4]
    assert "exited normally" in out
    assert result.reason == "off"
    assert s.m.uart.text == ref.uart.text
    assert s.m.cpu.instructions == ref.cpu.instructions


# ---- raw packets -------------------------------------------------------------------------
class Raw:
    """A minimal client: frames packets, checks acks and checksums."""

    def __init__(self, port):
        _live.append(self)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""
        self.acks = True

    def _byte(self):
        while not self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "stub closed the connection"
            self.buf += chunk
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def send(self, payload: str, checksum: int | None = None, ack=b"+"):
        body = payload.encode("latin-1")
        cs = sum(body) & 0xFF if checksum is None else checksum
        self.sock.sendall(b"$" + body + b"#" + f"{cs:02x}".encode())
        if ack is not None and self.acks:
            assert self._byte() == ack

    def recv(self):
        while self._byte() != b"$":
            pass
        body = b""
        while (c := self._byte()) != b"#":
            body += c
        check = self._byte() + self._byte()
        assert int(check, 16) == sum(body) & 0xFF
        if self.acks:
            self.sock.sendall(b"+")
        return body.decode("latin-1")

    def ask(self, payload: str):
        self.send(payload)
        return self.recv()

    def stop_reply(self):
        """The stop reply after a resume, and the console text (O packets) before it."""
        text = ""
        while (reply := self.recv()).startswith("O") and reply != "OK":
            text += bytes.fromhex(reply[1:]).decode()
        return reply, text

    def monitor(self, command: str):
        self.send("qRcmd," + command.encode().hex())
        text = ""
        while (reply := self.recv()) != "OK":
            assert reply.startswith("O"), reply
            text += bytes.fromhex(reply[1:]).decode()
        return text

    def close(self):
        self.sock.close()


def test_raw_packets_checksums_and_malformed_input():
    s = Stub("hello")
    c = Raw(s.port)
    assert "qXfer:features:read+" in c.ask("qSupported:swbreak+;hwbreak+")
    c.send("qSupported", checksum=0x00, ack=b"-")       # bad checksum: NAK, no reply
    c.send_raw(b"+++garbage")                            # stray bytes are ignored
    assert c.ask("?") == "T05thread:1;"
    regs = c.ask("g")
    assert len(regs) == 17 * 8
    assert int.from_bytes(bytes.fromhex(regs[15 * 8:16 * 8]), "little") == s.image.entry
    assert c.ask("pf") == regs[15 * 8:16 * 8]
    assert c.ask("p10") == regs[16 * 8:]                 # cpsr
    xml = c.ask("qXfer:features:read:target.xml:0,3fff")
    assert xml[0] == "l" and xml[1:] == TARGET_XML and "org.gnu.gdb.arm.core" in xml
    assert c.ask("qXfer:features:read:other.xml:0,100") == "E00"
    for bad in ("mzz,4", "m40000000", "M40000000,4:zz", "M40000000,8:00", "Z0,zz,4", "Z9,0,4",
                "pzz", "p99", "P0=zz", "G00", "qRcmd,zz", "X40000000,4", "vCont;x", "", "Q"):
        assert c.ask(bad) in ("", "E00", "E01"), bad
    # over the socket too: no truncated address, no HYP mode, no dangling escape
    for bad in ("m140000000,4", "M140000000,1:00", "Z0,140000000,4", "P10=da010040",
                "c140000000", "X40000000,1:}"):
        assert c.ask(bad) == "E01", bad
    assert c.ask("p10") == regs[16 * 8:]
    # MMIO and unbacked addresses: an error, and the device is never touched
    assert c.ask("m9000000,4") == "E01" and c.ask("m8000000,4") == "E01"
    assert c.ask("M9000000,1:41") == "E01"
    assert s.m.uart.output == b"" and s.m.vm.stats["mmio read"] == 0
    # a read that runs off the end of RAM is short, as gdb allows
    end = 0x40000000 + s.m.ram.size
    assert len(c.ask(f"m{end - 2:x},8")) == 4
    assert c.ask("qC") == "QC1" and c.ask("qfThreadInfo") == "m1" and c.ask("qsThreadInfo") == "l"
    assert c.ask("qAttached") == "0"                     # wait=True: gdb "created" it: kill on quit
    assert c.ask("vCont?") == "vCont;c;C;s;S"
    assert "s2 walk IPA" in c.monitor("help")
    assert "error: unknown monitor command" in c.monitor("frobnicate")
    assert "fault-stop on" in c.monitor("fault-stop on")
    c.send("k")
    result = s.join()
    assert result.reason == "killed" and result.error == "killed by the debugger"
    c.close()


def test_raw_interrupt_detach_and_reattach():
    """wait=False: the guest runs before a debugger connects; a connection stops it; Ctrl-C
    stops a continue; a detach lets it run on, and a new debugger can attach again."""
    s = Stub("dirtycheck", wait=False)
    writes = s.image.symbol("dirtycheck_writes")

    def count(c):
        return int.from_bytes(bytes.fromhex(c.ask(f"m{writes:x},4")), "little")

    c = Raw(s.port)
    assert c.ask("?") == "T05thread:1;"
    assert c.ask("qAttached") == "1"
    n1 = count(c)
    assert n1 == count(c)                                # stopped
    c.send("c")
    c.send_raw(b"\x03")
    assert c.recv() == "T02thread:1;"                    # SIGINT
    n2 = count(c)
    assert n2 > n1
    # a stage-2 walk and the TLB of a guest that has touched its region
    assert "-> PA" in c.monitor("s2 walk 0x40200000")
    # a watchpoint on a counter the (already translated) loop keeps storing to
    assert c.ask(f"Z2,{writes:x},4") == "OK"
    c.send("c")
    assert c.recv() == f"T05thread:1;watch:{writes:x};"
    assert count(c) == n2                                # stopped before the store
    assert c.ask(f"z2,{writes:x},4") == "OK"
    assert c.ask("D") == "OK"
    c.close()
    deadline = time.monotonic() + TIMEOUT                # the guest runs on by itself
    while int.from_bytes(s.m.vm.read_guest(writes, 4), "little") == n2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    c = Raw(s.port)                                      # attach again: stopped again
    assert c.ask("?") == "T05thread:1;"
    assert count(c) > n2
    c.send("k")
    assert s.join().reason == "killed"
    c.close()


def test_raw_breakpoint_step_and_code_patch():
    """Z0/s/c by hand; a debugger write into code that already ran takes effect."""
    ref, img = free_run("hello")
    s = Stub("hello")
    c = Raw(s.port)
    c.ask("qSupported:swbreak+")
    assert c.ask("QStartNoAckMode") == "OK"                # acked; no acks after it
    c.acks = False
    second = img.symbol("main") + 0x14                    # after the first uart_puts
    assert c.ask(f"Z0,{second:x},4") == "OK"
    c.send("c")
    assert c.recv() == "T05thread:1;swbreak:;"
    assert s.m.uart.text == ref.uart.text.splitlines(keepends=True)[0]
    pc = int.from_bytes(bytes.fromhex(c.ask("pf")), "little")
    assert pc == second
    # step (with the breakpoint still inserted: the instruction at PC runs)
    c.send("s")
    assert c.recv() == "T05thread:1;"
    assert int.from_bytes(bytes.fromhex(c.ask("pf")), "little") == second + 4
    # replace uart_puts' store to the UART data register (translated and run many times
    # by now) by a NOP: the second line is never printed
    strb = next(a for a in range(img.symbol("uart_puts"), img.symbol("put_hex"), 4)
                if int.from_bytes(ref.vm.read_guest(a, 4), "little") >> 20 == 0xE5C)  # strb
    assert c.ask(f"M{strb:x},4:00f020e3") == "OK"          # nop
    c.send("c")
    assert c.recv() == "W00"
    assert s.join().reason == "off"
    assert s.m.uart.text == ref.uart.text.splitlines(keepends=True)[0]
    c.close()


def test_debugger_write_marks_dirty_and_reads_have_no_side_effects():
    s = Stub("hello", setup=lambda m: dirty.enable_logging(m.vm, m.ram))
    m = s.m
    c = Raw(s.port)
    target = 0x40300000
    gfn = m.ram.gfn(target)
    tlb_before, fills_before = len(m.host.tlb), m.cpu.stats["fills"]
    assert c.ask(f"m{target:x},10") == "00" * 16
    assert c.ask(f"m{0x40000000:x},100") != ""
    assert not m.ram.dirty.any()                         # reads mark nothing...
    assert (len(m.host.tlb), m.cpu.stats["fills"]) == (tlb_before, fills_before)   # ...fill nothing
    assert c.ask(f"M{target + 0xffe:x},4:deadbeef") == "OK"   # crosses a page boundary
    assert m.ram.dirty[gfn] and m.ram.dirty[gfn + 1] and m.ram.dirty.sum() == 2
    assert m.vm.read_guest(target + 0xffe, 4) == bytes.fromhex("deadbeef")
    assert c.ask(f"m{target + 0xffe:x},4") == "deadbeef"
    text = c.monitor("dirty ram")
    assert f"memslot 0 ram (IPA 0x40000000, {m.ram.npages} pages): logging, 2 dirty" in text
    assert f"{gfn}@{target:#x} {gfn + 1}@{target + 0x1000:#x}" in text
    # binary write (X) with escaped bytes: '}' (0x7d) '#' (0x23) '$' (0x24) '*' (0x2a)
    payload = bytes([0x7D, 0x23, 0x24, 0x2A])
    escaped = "".join("}" + chr(b ^ 0x20) for b in payload)
    assert c.ask(f"X{target + 0x2000:x},4:{escaped}") == "OK"
    assert m.vm.read_guest(target + 0x2000, 4) == payload and m.ram.dirty[gfn + 2]
    c.send("k")
    s.join()
    c.close()


def test_parse_listen_defaults_to_loopback():
    assert parse_listen("tcp::1234") == ("127.0.0.1", 1234)
    assert parse_listen("tcp:0.0.0.0:1234") == ("0.0.0.0", 1234)
    assert parse_listen(":0") == ("127.0.0.1", 0)
    assert parse_listen("4321") == ("127.0.0.1", 4321)
    for bad in ("tcp::x", "tcp::70000", "tcp:"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_no_icount_is_refused():
    m = Machine(icount=False)
    with pytest.raises(ValueError, match="instruction counting"):
        GdbStub(m)


def test_disconnect_without_detach_lets_the_guest_finish():
    ref, _ = free_run("hello")
    s = Stub("hello")
    c = Raw(s.port)
    assert c.ask("?") == "T05thread:1;"
    c.close()                                            # gdb died: no D, no k
    result = s.join()
    assert result.reason == "off" and result.instructions == ref.cpu.instructions
    assert s.m.uart.text == ref.uart.text


def test_no_wait_and_no_debugger_runs_to_completion():
    ref, _ = free_run("hello")
    s = Stub("hello", wait=False)
    assert s.join().reason == "off"
    assert s.m.uart.text == ref.uart.text


def test_raw_watchpoints_stop_before_the_access():
    ref, img = free_run("faults")
    s = Stub("faults")
    c = Raw(s.port)
    pc = lambda: int.from_bytes(bytes.fromhex(c.ask("pf")), "little")     # noqa: E731
    word = lambda a: int.from_bytes(ref.vm.read_guest(a, 4), "little")   # noqa: E731
    assert c.ask("Z2,9000000,4") == "E01"                # MMIO cannot be watched
    assert c.ask("Z4,46400000,4") == "OK"                # access: the first is a read
    c.send("c")
    assert c.recv() == "T05thread:1;awatch:46400000;"
    assert word(pc()) & 0x0C500000 == 0x04100000         # an LDR, not executed yet
    assert c.ask("z4,46400000,4") == "OK"
    c.send("s")
    assert c.recv() == "T05thread:1;"
    assert c.ask("Z2,46400002,2") == "OK"                # write to part of the word
    c.send("c")
    assert c.recv() == "T05thread:1;watch:46400002;"
    assert word(pc()) & 0x0C500000 == 0x04000000         # an STR, not executed yet...
    assert c.ask("m46400000,4") == "00000000"            # ...and memory still old
    c.send("s")                                          # gdb steps over with it inserted
    assert c.recv() == "T05thread:1;"
    assert c.ask("m46400000,4") == "efbeadde"
    assert c.ask("Z3,46400000,4") == "OK"                # read it back
    c.send("c")
    assert c.recv() == "T05thread:1;rwatch:46400000;"
    assert c.ask("z3,46400000,4") == "OK" and c.ask("z2,46400002,2") == "OK"
    c.send("c")
    assert c.recv() == "W00"
    assert s.join().reason == "off"
    assert s.m.uart.text == ref.uart.text and s.m.cpu.instructions == ref.cpu.instructions


def test_hypervisor_error_stops_with_sigsegv_and_detach_returns_it():
    """A guest access the hypervisor cannot emulate (LDM from the UART: ISV=0)."""
    s = Stub("hello")
    c = Raw(s.port)
    # movw r0, #0; movt r0, #0x900; ldm r0, {r1}
    code = bytes.fromhex("000000e3" "000940e3" "020090e8")
    assert c.ask(f"M{s.image.entry:x},c:{code.hex()}") == "OK"
    c.send("c")
    reply, text = c.stop_reply()
    assert reply == "T0bthread:1;"
    assert "hypervisor error: MMIO access at IPA 0x9000000" in text and "ISV=0" in text
    assert int.from_bytes(bytes.fromhex(c.ask("pf")), "little") == s.image.entry + 8
    assert c.ask("D") == "OK"
    result = s.join()
    assert result.reason == "error" and "cannot emulate" in result.error
