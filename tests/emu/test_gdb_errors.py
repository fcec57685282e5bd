"""The GDB stub's answers to malformed and out-of-range packets (in-process: GdbStub.handle):
an error reply, nothing changed - never a traceback, a truncated address or a wrong OK."""
import os

import pytest

from emu.debug.gdb_memory import MAX_READ
from emu.debug.gdb_packets import NREGS, TARGET_XML
from emu.debug.gdbstub import GdbStub
from emu.machine import RAM_BASE, Machine
from hyp import dirty

from conftest import GUESTS

RAM_END = RAM_BASE + (128 << 20)
CPSR = 0x400001D3                      # hello.elf's reset state: SVC, A/I/F masked
ENTRY = 0x40000000


@pytest.fixture
def stub():
    m = Machine()
    m.load(os.path.join(GUESTS, "hello.elf"))
    dirty.enable_logging(m.vm, m.ram)                    # debugger writes show up as dirty
    return GdbStub(m)


def snapshot(stub):
    m = stub.machine
    return (m.cpu.regs(), m.vm.read_guest(RAM_BASE, 0x100), m.cpu.instructions,
            m.cpu.breakpoints)


def ask(stub, packet):
    replies = stub.handle(packet)
    assert len(replies) == 1, replies
    return replies[0]


def regs_hex(values):
    return "".join((v & 0xFFFFFFFF).to_bytes(4, "little").hex() for v in values)


G_OK = regs_hex([0] * 16 + [CPSR])
G_BAD_MODE = regs_hex([0] * 16 + [CPSR & ~0x1F | 0x1A])

ERRORS = [
    # m / M / X: 32-bit addresses, ranges within 2**32, hex digits only
    pytest.param("m140000000,4", "E01", id="m-addr-33-bits"),
    pytest.param("m100000000,1", "E01", id="m-addr-2**32"),
    pytest.param("mffffffff,2", "E01", id="m-range-wraps"),
    pytest.param("m40000000,ffffffff", "E01", id="m-range-past-2**32"),
    pytest.param("m40000000,1" + "0" * 20, "E01", id="m-absurd-length"),
    pytest.param("m 40000000,4", "E01", id="m-space"),
    pytest.param("m+40000000,4", "E01", id="m-sign"),
    pytest.param("m0x40000000,4", "E01", id="m-0x"),
    pytest.param("m4000_0000,4", "E01", id="m-underscore"),
    pytest.param("m40000000,-4", "E01", id="m-negative-length"),
    pytest.param("m40000000", "E01", id="m-no-length"),
    pytest.param("m40000000,4,4", "E01", id="m-extra-field"),
    pytest.param("M140000000,4:01020304", "E01", id="M-addr-33-bits"),
    pytest.param("Mfffffffe,4:01020304", "E01", id="M-range-wraps"),
    pytest.param("M40000000,2:01 02", "E01", id="M-space-in-data"),
    pytest.param("M40000000,2:0102x", "E01", id="M-odd-data"),
    pytest.param("M40000000,4", "E01", id="M-no-data"),
    pytest.param("M40000000,1:0102", "E01", id="M-length-mismatch"),
    pytest.param(b"X140000000,1:a", "E01", id="X-addr-33-bits"),
    pytest.param(b"Xffffffff,2:ab", "E01", id="X-range-wraps"),
    pytest.param(b"X40000000,2:a", "E01", id="X-length-mismatch"),
    pytest.param(b"X 40000000,1:a", "E01", id="X-space"),
    # Z / z: addresses, breakpoint kinds 2/3/4, watched lengths 1..MAX_WATCH
    pytest.param("Z0,140000000,4", "E01", id="Z0-addr-33-bits"),
    pytest.param("z0,140000000,4", "E01", id="z0-addr-33-bits"),
    pytest.param("Z1,1fffffffe,2", "E01", id="Z1-addr-33-bits"),
    pytest.param("Z0,zz,4", "E01", id="Z0-addr-not-hex"),
    pytest.param("Z0,40000000,zz", "E01", id="Z0-kind-not-hex"),
    pytest.param("Z0,40000000,0", "E01", id="Z0-kind-0"),
    pytest.param("Z0,40000000,1", "E01", id="Z0-kind-1"),
    pytest.param("Z1,40000000,5", "E01", id="Z1-kind-5"),
    pytest.param("Z0,40000000,8", "E01", id="Z0-kind-8"),
    pytest.param("Z0,fffffffe,4", "E01", id="Z0-insn-past-2**32"),
    pytest.param("Z0,40000000", "E01", id="Z0-no-kind"),
    pytest.param("Z0,40000000,4,4", "E01", id="Z0-extra-field"),
    pytest.param("Z0,40000000,4;X1,00", "E01", id="Z0-cond-list-not-offered"),
    pytest.param("Z,40000000,4", "E01", id="Z-no-type"),
    pytest.param("Z9,zz,4", "E01", id="Z9-malformed"),
    pytest.param("Z2,40000000,0", "E01", id="Z2-length-0"),
    pytest.param("z3,40000000,0", "E01", id="z3-length-0"),
    pytest.param("Z2,40000000,100001", "E01", id="Z2-length-over-1MiB"),
    pytest.param("Z4,40000000,100000000", "E01", id="Z4-length-2**32"),
    pytest.param("Z2,140000000,4", "E01", id="Z2-addr-33-bits"),
    pytest.param("Z3,ffffffff,4", "E01", id="Z3-range-wraps"),
    pytest.param("Z2,9000000,4", "E01", id="Z2-mmio"),
    pytest.param("Z2,47fffffe,4", "E01", id="Z2-past-ram-end"),
    # P / p / G: numbers 0-16, 4 bytes of hex, CPSR mode a PL0/PL1 mode
    pytest.param("P10=00000000", "E01", id="P-cpsr-mode-0"),
    pytest.param("P10=da010040", "E01", id="P-cpsr-hyp"),
    pytest.param("P10=d6010040", "E01", id="P-cpsr-mon"),
    pytest.param("P10=c0010040", "E01", id="P-cpsr-mode-0x00-bits"),
    pytest.param("P11=00000000", "E01", id="P-reg-17"),
    pytest.param("P100000000000000010=00000000", "E01", id="P-reg-huge"),
    pytest.param("P-1=00000000", "E01", id="P-reg-negative"),
    pytest.param("P 1=00000000", "E01", id="P-reg-space"),
    pytest.param("P=00000000", "E01", id="P-no-reg"),
    pytest.param("P0=000000", "E01", id="P-3-bytes"),
    pytest.param("P0=0000000000", "E01", id="P-5-bytes"),
    pytest.param("P0=0000 000", "E01", id="P-space-in-value"),
    pytest.param("P0=zzzzzzzz", "E01", id="P-value-not-hex"),
    pytest.param("P0", "E01", id="P-no-value"),
    pytest.param("P0=00000000=0", "E01", id="P-two-equals"),
    pytest.param("p11", "E01", id="p-reg-17"),
    pytest.param("p+1", "E01", id="p-sign"),
    pytest.param("p", "E01", id="p-empty"),
    pytest.param("G" + G_BAD_MODE, "E01", id="G-cpsr-hyp"),
    pytest.param("G" + regs_hex([0] * NREGS), "E01", id="G-cpsr-mode-0"),
    pytest.param("G" + G_OK[:-8], "E01", id="G-short"),
    pytest.param("G" + G_OK + "00000000", "E01", id="G-long"),
    pytest.param("G" + G_OK[:-1], "E01", id="G-odd"),
    pytest.param("G" + G_OK[:-2] + " 0", "E01", id="G-space"),
    # qXfer:features:read
    pytest.param("qXfer:features:read:target.xml:zz,10", "E00", id="qXfer-offset-not-hex"),
    pytest.param("qXfer:features:read:target.xml:-1,10", "E00", id="qXfer-offset-negative"),
    pytest.param("qXfer:features:read:target.xml:0,-10", "E00", id="qXfer-length-negative"),
    pytest.param("qXfer:features:read:target.xml:0,0", "E00", id="qXfer-length-0"),
    pytest.param("qXfer:features:read:target.xml:0", "E00", id="qXfer-no-length"),
    pytest.param("qXfer:features:read:target.xml", "E00", id="qXfer-no-span"),
    pytest.param("qXfer:features:read:target.xml:0,10:x", "E00", id="qXfer-extra-field"),
    pytest.param("qXfer:features:read:target.xml:0,10,1", "E00", id="qXfer-extra-number"),
    pytest.param("qXfer:features:read::0,10", "E00", id="qXfer-empty-annex"),
    pytest.param("qXfer:features:read:other.xml:0,10", "E00", id="qXfer-unknown-annex"),
    pytest.param("qXfer:features:read:TARGET.XML:0,10", "E00", id="qXfer-annex-case"),
    # threads: only thread 1 exists
    pytest.param("Hg2", "E01", id="H-thread-2"),
    pytest.param("Hx1", "E01", id="H-bad-op"),
    pytest.param("H", "E01", id="H-empty"),
    pytest.param("T2", "E01", id="T-thread-2"),
    pytest.param("Tzz", "E01", id="T-not-hex"),
    pytest.param("qThreadExtraInfo,zz", "E01", id="qThreadExtraInfo-bad"),
    # resume packets with a bad address or signal: refused, the guest does not run
    pytest.param("c140000000", "E01", id="c-addr-33-bits"),
    pytest.param("s 40000000", "E01", id="s-space"),
    pytest.param("Czz", "E01", id="C-bad-signal"),
    pytest.param("S100", "E01", id="S-signal-over-a-byte"),
    pytest.param("C05;", "E01", id="C-empty-addr"),
    pytest.param("C05;140000000", "E01", id="C-addr-33-bits"),
    pytest.param("vCont;", "E01", id="vCont-no-action"),
    pytest.param("vCont;x", "E01", id="vCont-unknown-action"),
    pytest.param("vCont;t", "E01", id="vCont-stop-not-offered"),
    pytest.param("vCont;s:zz", "E01", id="vCont-bad-thread"),
    pytest.param("vCont;s:2;c", "E01", id="vCont-no-thread-2"),
    pytest.param("vCont;Czz", "E01", id="vCont-bad-signal"),
    pytest.param("vCont;c;", "E01", id="vCont-empty-action"),
    # qRcmd: not hex
    pytest.param("qRcmd,0", "E01", id="qRcmd-odd"),
    pytest.param("qRcmd,zz", "E01", id="qRcmd-not-hex"),
]


@pytest.mark.parametrize("packet, reply", ERRORS)
def test_bad_packet_answers_an_error_and_changes_nothing(stub, packet, reply):
    before = snapshot(stub)
    assert ask(stub, packet) == reply
    assert snapshot(stub) == before
    assert not stub.machine.ram.dirty.any()
    assert not stub._ctl.points._watches


@pytest.mark.parametrize("mode", range(0x20), ids=lambda m: f"mode-{m:#04x}")
@pytest.mark.parametrize("start", [0x13, 0x10], ids=["from-svc", "from-usr"])
def test_cpsr_write_takes_only_guest_modes(stub, start, mode):
    """Unicorn keeps the mode for a bad one from SVC, but from USR it enters HYP or, for a
    mode that does not exist (0x0D), aborts the whole process (QEMU's bank_number)."""
    base = CPSR & ~0x1F | start
    assert ask(stub, "P10=" + regs_hex([base])) == "OK"
    ok = mode in (0x10, 0x11, 0x12, 0x13, 0x17, 0x1B, 0x1F)
    value = CPSR & ~0x1F | mode
    assert ask(stub, "P10=" + regs_hex([value])) == ("OK" if ok else "E01")
    assert stub.cpu.get_cpsr() == (value if ok else base)
    regs = [i * 0x10 for i in range(16)] + [value]
    assert ask(stub, "G" + regs_hex(regs)) == ("OK" if ok else "E01")
    assert stub.cpu.regs() == (regs if ok else [0] * 15 + [ENTRY, base])


OK = [
    pytest.param("m47fffffc,4", 8, id="m-last-ram-word"),
    pytest.param("m47fffffe,8", 4, id="m-short-at-ram-end"),
    pytest.param("m40000000,100000", 2 * MAX_READ, id="m-clamped-to-packet-size"),
    pytest.param("m40000000,0", 0, id="m-length-0"),
    pytest.param("m40000000,ffffffff", None, id="m-past-2**32-not-clamped"),
    pytest.param("mfffffffc,4", None, id="m-unmapped-top"),
]


@pytest.mark.parametrize("packet, hex_len", OK)
def test_reads_short_clamped_or_refused(stub, packet, hex_len):
    reply = ask(stub, packet)
    assert reply == "E01" if hex_len is None else len(reply) == hex_len


@pytest.mark.parametrize("packet", [
    pytest.param("Z0,40000000,2", id="thumb16"), pytest.param("Z1,40000000,3", id="thumb32"),
    pytest.param("Z0,fffffffc,4", id="arm-top-of-4GiB"),
    pytest.param("Z2,40000000,100000", id="watch-1MiB"),
    pytest.param("Z4,47ffffff,1", id="awatch-last-byte"),
    pytest.param("Z9,40000000,4", id="unsupported-type-empty"),
])
def test_good_z_packets_still_work(stub, packet):
    want = "" if packet.startswith("Z9") else "OK"
    assert ask(stub, packet) == want
    assert ask(stub, "z" + packet[1:]) == want


def test_qxfer_offsets():
    doc = TARGET_XML
    m = Machine()
    stub = GdbStub(m)
    read = lambda off, n: ask(stub, f"qXfer:features:read:target.xml:{off:x},{n:x}")  # noqa
    assert read(0, 0x3FFF) == "l" + doc
    assert read(0, 10) == "m" + doc[:10]
    assert read(10, len(doc) - 10) == "l" + doc[10:]
    assert read(len(doc) - 1, 1) == "l" + doc[-1]
    assert read(len(doc), 10) == "l"                     # at the end: 'l', no data
    assert read(len(doc) + 1000, 10) == "l"              # past it: the same
    assert read(1 << 80, 1 << 80) == "l"
    got, off = "", 0
    while True:                                          # gdb's loop with small chunks
        reply = read(off, 100)
        got += reply[1:]
        off += len(reply) - 1
        if reply[0] == "l":
            break
    assert got == doc


def test_good_writes_still_work(stub):
    m = stub.machine
    assert ask(stub, "M47fffffc,4:01020304") == "OK"
    assert m.vm.read_guest(0x47FFFFFC, 4) == bytes.fromhex("01020304")
    assert ask(stub, b"X47ffffff,1:\x7d\x03") == "OK"     # '#' escaped
    assert m.vm.read_guest(0x47FFFFFF, 1) == b"#"
    assert ask(stub, b"X40000000,0:") == "OK"            # gdb's probe for X
    assert ask(stub, "P0=78563412") == "OK" and m.cpu.regs()[0] == 0x12345678
    assert ask(stub, "Pf=01000040") == "OK" and m.cpu.pc == 0x40000000
    assert ask(stub, "p10") == regs_hex([CPSR])
    assert stub.handle("Hg0") == ["OK"] and stub.handle("Hc-1") == ["OK"]
    assert stub.handle("T1") == ["OK"]


@pytest.mark.parametrize("command, error", [
    pytest.param("fault-stop on 0x1 zz", "bad number", id="fault-stop-bad-hi"),
    pytest.param("fault-stop on 0x2000 0x1000", "empty range", id="fault-stop-hi-below-lo"),
    pytest.param("fault-stop on 0x1000 0x1000", "empty range", id="fault-stop-empty"),
    pytest.param("fault-stop on -1 0x1000", "negative", id="fault-stop-negative"),
    pytest.param("fault-stop on 0x1000", "usage", id="fault-stop-one-bound"),
    pytest.param("s2 dump 0x2000 0x1000", "empty range", id="s2-dump-hi-below-lo"),
    pytest.param("s2 walk 0xzz", "bad number", id="s2-walk-bad"),
    pytest.param("'", "closing quotation", id="unbalanced-quote"),
])
def test_bad_monitor_command_is_an_error_and_changes_nothing(stub, command, error):
    faults = stub._ctl.faults
    replies = stub.handle("qRcmd," + command.encode().hex())
    assert replies[-1] == "OK"                   # qRcmd: the error is console text
    text = "".join(bytes.fromhex(r[1:]).decode() for r in replies[:-1])
    assert text.startswith("error: ") and error in text, text
    assert (faults.on, faults.range) == (False, None)
