"""The PL011 (emu.devices.pl011) against the PrimeCell UART TRM r1p5 (ARM DDI 0183): reset
values, write masks, the receive FIFO with and without FEN, flags, every interrupt's set and
clear rule, UARTMIS = UARTRIS & UARTIMSC, the UARTINTR callback, and save/load (random
operation sequences behave identically after a restore; malformed states change nothing)."""
import copy
import json

import pytest
from hypothesis import given, settings, strategies as st

from emu.devices.pl011 import (DR_OE, INT_OE, INT_RT, INT_RX, INT_TX, PL011, UARTCR, UARTDMACR,
                               UARTDR, UARTECR, UARTFBRD, UARTFR, UARTIBRD, UARTICR, UARTIFLS,
                               UARTILPR, UARTIMSC, UARTLCR_H, UARTMIS, UARTRIS, UARTRSR)
from hyp.migration.state import StateError, load_devices, save_devices
from hyp.mmio import Bus

FEN = 1 << 4
RXFE, RXFF, TXFE = 0x10, 0x40, 0x80


class Uart:
    """A PL011 with its UARTINTR transitions recorded."""

    def __init__(self) -> None:
        self.levels: list[bool] = []
        self.sent = bytearray()
        self.dev = PL011(sink=self.sent.extend, irq=self.levels.append)

    def r(self, off: int, size: int = 4) -> int:
        return self.dev.read(off, size)

    def w(self, off: int, value: int, size: int = 4) -> None:
        self.dev.write(off, size, value)

    def fifo(self, level_sel: int = 2) -> "Uart":
        """FIFOs on, receive trigger level RXIFLSEL."""
        self.w(UARTLCR_H, FEN | 0x60)
        self.w(UARTIFLS, level_sel << 3 | 2)
        return self


@pytest.mark.parametrize("off,value", [
    (UARTDR, 0), (UARTRSR, 0), (UARTFR, RXFE | TXFE), (UARTILPR, 0), (UARTIBRD, 0),
    (UARTFBRD, 0), (UARTLCR_H, 0), (UARTCR, 0x300), (UARTIFLS, 0x12), (UARTIMSC, 0),
    (UARTRIS, 0), (UARTMIS, 0), (UARTICR, 0), (UARTDMACR, 0),
    (0xFE0, 0x11), (0xFE4, 0x10), (0xFE8, 0x14), (0xFEC, 0x00),
    (0xFF0, 0x0D), (0xFF4, 0xF0), (0xFF8, 0x05), (0xFFC, 0xB1),
    (0x008, 0), (0x04C, 0), (0x080, 0), (0xFDC, 0), (0x019, 0),
])
def test_reset_values(off, value):
    """TRM 3.2 Table 3-1; reserved and unaligned offsets read as zero."""
    assert Uart().r(off) == value


@pytest.mark.parametrize("off,value,readback", [
    (UARTILPR, 0xFFFF_FFFF, 0xFF), (UARTIBRD, 0xFFFF_FFFF, 0xFFFF),
    (UARTFBRD, 0xFFFF_FFFF, 0x3F), (UARTLCR_H, 0xFFFF_FFFF, 0xFF),
    (UARTCR, 0xFFFF_FFFF, 0xFF87), (UARTIFLS, 0xFFFF_FFFF, 0x3F),
    (UARTIMSC, 0xFFFF_FFFF, 0x7FF), (UARTDMACR, 0xFFFF_FFFF, 0x7),
    (UARTFR, 0, RXFE | TXFE), (UARTRIS, 0x7FF, 0), (UARTMIS, 0x7FF, 0), (0xFE0, 0, 0x11),
    (0x008, 0x1234, 0),
])
def test_write_masks(off, value, readback):
    """Each register keeps only its defined bits; read-only registers ignore writes."""
    u = Uart()
    u.w(off, value)
    assert u.r(off) == readback


def test_ignored_accesses_leave_the_state_alone():
    u = Uart().fifo()
    u.w(UARTIMSC + 1, 0xFF, size=1)          # not at a register's offset
    u.w(0x008, 0xFFFF)
    assert u.dev.save() == Uart().fifo().dev.save()


def test_transmit_is_instantaneous():
    u = Uart()
    for c in b"hi\n":
        u.w(UARTDR, 0x100 | c)                # only [7:0] is sent
        assert u.r(UARTFR) & (TXFE | 0x20 | 0x08) == TXFE     # TXFE, never TXFF or BUSY
    assert bytes(u.sent) == b"hi\n" == bytes(u.dev.output) and u.dev.text == "hi\n"


@pytest.mark.parametrize("fen,depth", [(False, 1), (True, 16)])
def test_receive_fifo_depth_and_flags(fen, depth):
    u = Uart()
    if fen:
        u.fifo()
    assert u.dev.room == depth
    assert u.dev.feed(bytes(range(0x41, 0x41 + depth + 3))) == depth     # flow control
    assert u.r(UARTFR) == RXFF | TXFE and u.dev.room == 0
    got = []
    while not u.r(UARTFR) & RXFE:
        got.append(u.r(UARTDR))
        assert not u.r(UARTFR) & RXFF
    assert got == list(range(0x41, 0x41 + depth))
    assert u.r(UARTDR) == 0                  # empty: reads zero, pops nothing


def test_clearing_fen_empties_the_fifo_and_setting_it_keeps_the_holding_register():
    u = Uart().fifo()
    u.dev.feed(b"abc")
    u.w(UARTLCR_H, 0x60)
    assert u.r(UARTFR) & RXFE and u.r(UARTRIS) == 0
    u.dev.feed(b"xy")                        # one fits the holding register
    u.w(UARTLCR_H, 0x70)
    u.dev.feed(b"z")
    u.w(UARTLCR_H, 0x72)                     # FEN unchanged: kept
    assert [u.r(UARTDR), u.r(UARTDR)] == [ord("x"), ord("z")]


@pytest.mark.parametrize("sel,level", [(0, 2), (1, 4), (2, 8), (3, 12), (4, 14), (5, 14),
                                       (7, 14)])
def test_rx_interrupt_at_the_trigger_level(sel, level):
    """RXRIS: set when the FIFO reaches the RXIFLSEL level; cleared once below it."""
    u = Uart().fifo(sel)
    for _ in range(level - 1):
        u.dev.feed(b"a")
    assert not u.r(UARTRIS) & INT_RX
    u.dev.feed(b"b")
    assert u.r(UARTRIS) & INT_RX
    u.r(UARTDR)
    assert not u.r(UARTRIS) & INT_RX


# (name, setup, steps): a step is (operation, argument, RIS after it). Operations: feed
# bytes, read DR, write ICR / IMSC / IFLS / DR. RIS is compared after each step; MIS and
# the line are checked against it.
SCENARIOS = [
    ("rt below the level", "fifo", [
        ("feed", b"abc", INT_RT), ("read", None, INT_RT), ("read", None, INT_RT),
        ("read", None, 0)]),
    ("rx and rt at the level", "fifo", [
        ("feed", b"1234567", INT_RT), ("feed", b"8", INT_RX | INT_RT),
        ("read", None, INT_RT), ("feed", b"9", INT_RX | INT_RT)]),
    ("icr clears rt until the next batch", "fifo", [
        ("feed", b"a", INT_RT), ("icr", INT_RT, 0), ("read", None, 0),
        ("feed", b"b", INT_RT), ("feed", b"", INT_RT), ("icr", 0x7FF, 0),
        ("feed", b"c", INT_RT)]),
    ("icr clears rx above the level", "fifo", [
        ("feed", b"12345678", INT_RX | INT_RT), ("icr", INT_RX, INT_RT),
        ("feed", b"9", INT_RX | INT_RT)]),
    ("raising the level clears rx", "fifo", [
        ("feed", b"12345678", INT_RX | INT_RT), ("ifls", 3 << 3, INT_RT)]),
    ("holding register", None, [
        ("feed", b"a", INT_RX | INT_RT), ("read", None, 0), ("feed", b"bc", INT_RX | INT_RT),
        ("icr", INT_RX, INT_RT), ("read", None, 0)]),
    ("tx on each write, cleared by icr only", None, [
        ("imsc", INT_TX, 0), ("tx", ord("a"), INT_TX), ("tx", ord("b"), INT_TX),
        ("icr", INT_TX, 0), ("imsc", 0, 0)]),
    ("masks do not change raw status", "fifo", [
        ("imsc", 0x7FF, 0), ("feed", b"a", INT_RT), ("imsc", 0, INT_RT),
        ("imsc", INT_RX, INT_RT), ("imsc", INT_RT, INT_RT)]),
]


@pytest.mark.parametrize("name,setup,steps", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_interrupt_scenarios(name, setup, steps):
    u = Uart()
    if setup == "fifo":
        u.fifo()
    for op, arg, ris in steps:
        if op == "feed":
            u.dev.feed(arg)
        elif op == "read":
            u.r(UARTDR)
        else:
            u.w({"icr": UARTICR, "imsc": UARTIMSC, "ifls": UARTIFLS, "tx": UARTDR}[op], arg)
        assert u.r(UARTRIS) == ris, (op, arg)
        assert u.r(UARTMIS) == ris & u.r(UARTIMSC)
        assert u.dev.line == bool(u.r(UARTMIS))


def test_overrun_without_flow_control():
    """3.3.1/3.3.2: a character received into a full FIFO is lost; UARTRSR.OE and OERIS are
    set at once, and the next character the FIFO takes carries OE; UARTECR clears UARTRSR."""
    u = Uart()
    assert u.dev.feed(b"ab", flow_control=False) == 1
    assert u.r(UARTRSR) == 0x8 and u.r(UARTRIS) & INT_OE
    assert u.r(UARTDR) == ord("a") and u.r(UARTRSR) == 0x8
    u.dev.feed(b"c")
    assert u.r(UARTDR) == DR_OE | ord("c")
    u.w(UARTECR, 0)
    assert u.r(UARTRSR) == 0
    u.w(UARTICR, INT_OE)
    assert not u.r(UARTRIS) & INT_OE


def test_line_callback_hears_transitions_only():
    u = Uart().fifo()
    u.w(UARTIMSC, INT_RX | INT_RT)           # what Linux enables at startup
    assert u.levels == []
    u.dev.feed(b"ab")
    u.dev.feed(b"c")                         # already high: no call
    assert u.levels == [True]
    for _ in range(3):
        u.r(UARTDR)
    assert u.levels == [True, False]
    u.w(UARTDR, ord("x"))                    # TXRIS set but masked
    assert u.levels == [True, False]
    u.w(UARTIMSC, INT_TX)
    u.w(UARTICR, INT_TX)
    assert u.levels == [True, False, True, False]
    heard = []
    u.dev.connect(heard.append)              # a new listener hears the level at once
    assert heard == [False]


def test_linux_startup_sequence():
    """What amba-pl011 does when the port opens (pl011_startup): clear, mask, FIFO drain,
    RXIM|RTIM; then a character typed reaches it by RT, below the trigger level."""
    u = Uart()
    u.dev.feed(b"z")                         # typed before the driver was ready
    u.w(UARTICR, 0x7F0)
    u.w(UARTIMSC, INT_RX | INT_RT)
    u.w(UARTIFLS, 0x12)
    u.w(UARTCR, 0x301)
    u.w(UARTICR, INT_RX | INT_RT)
    while not u.r(UARTFR) & RXFE:
        u.r(UARTDR)
    u.w(UARTIMSC, INT_RX | INT_RT)
    u.w(UARTLCR_H, 0x70)
    assert not u.dev.line
    u.dev.feed(b"l")
    assert u.dev.line and u.r(UARTRIS) & u.r(UARTIMSC) == INT_RT
    assert u.r(UARTDR) == ord("l") and not u.dev.line


# ---- save / load ----------------------------------------------------------------------------
_OFFSETS = [UARTDR, UARTRSR, UARTFR, UARTILPR, UARTIBRD, UARTFBRD, UARTLCR_H, UARTCR, UARTIFLS,
            UARTIMSC, UARTRIS, UARTMIS, UARTICR, UARTDMACR, 0xFE8]
_op = st.one_of(
    st.tuples(st.just("r"), st.sampled_from(_OFFSETS), st.just(0)),
    st.tuples(st.just("w"), st.sampled_from(_OFFSETS), st.integers(0, 0xFFFF_FFFF)),
    st.tuples(st.just("w"), st.just(UARTLCR_H), st.sampled_from([0x60, 0x70])),
    st.tuples(st.just("feed"), st.binary(max_size=20), st.booleans()),
)


def _apply(u: Uart, op) -> object:
    kind, a, b = op
    if kind == "r":
        return u.r(a)
    if kind == "w":
        return u.w(a, b)
    return u.dev.feed(a, flow_control=b)


@settings(max_examples=200, deadline=None)
@given(st.lists(_op, max_size=40), st.lists(_op, max_size=40))
def test_restored_uart_behaves_identically(before, after):
    """Snapshot after a random history; a fresh UART restored from it (through JSON) answers
    every later operation, and drives its line, exactly as the original."""
    a = Uart()
    for op in before:
        _apply(a, op)
    b = Uart()
    b.dev.load(json.loads(json.dumps(a.dev.save())))
    assert b.levels == [a.dev.line]          # the restored line is re-asserted
    a.levels.clear(), a.sent.clear(), b.levels.clear()
    assert [_apply(a, op) for op in after] == [_apply(b, op) for op in after]
    assert a.levels == b.levels and a.dev.save() == b.dev.save()
    assert a.sent == b.sent


def _saved() -> dict:
    u = Uart().fifo()
    u.w(UARTIMSC, INT_RX | INT_RT)
    u.dev.feed(b"hello")
    return u.dev.save()


def _without(key):
    def f(d):
        del d[key]
    return f


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(ris=1 << 11), "ris"),
    (lambda d: d.update(cr=0x8), "cr"),
    (lambda d: d.update(ibrd=-1), "ibrd"),
    (lambda d: d.update(imsc=True), "imsc"),
    (lambda d: d.update(fbrd="1"), "fbrd"),
    (lambda d: d.update(rx_overrun=2), "rx_overrun"),
    (lambda d: d.update(rx=[0x1000]), "rx FIFO"),
    (lambda d: d.update(rx="abc"), "rx FIFO"),
    (lambda d: d.update(rx=[65] * 17), "depth 16"),
    (lambda d: d.update(lcr_h=0x60), "depth 1"),     # five entries without FEN
    (lambda d: d.update(extra=1), "unknown ['extra']"),
    (_without("ifls"), "missing ['ifls']"),
])
def test_malformed_state_is_refused_and_changes_nothing(mutate, message):
    u = Uart()
    u.dev.feed(b"q")
    before = u.dev.save()
    bad = copy.deepcopy(_saved())
    mutate(bad)
    with pytest.raises(StateError, match=message.replace("[", r"\[").replace("]", r"\]")):
        u.dev.load(bad)
    assert u.dev.save() == before and u.levels == []


@pytest.mark.parametrize("state", [None, [], "pl011", 3])
def test_state_that_is_not_a_mapping_is_refused(state):
    with pytest.raises(StateError, match="not a mapping"):
        Uart().dev.load(state)


def test_migration_stream_names_the_version():
    """hyp.migration.state carries the device as plain, versioned data; version 1 (the
    registers-only PL011) is refused by version before its state is read."""
    bus = Bus()
    u = Uart()
    bus.attach(0x0900_0000, u.dev)
    saved = save_devices(bus)
    assert saved[0]["name"] == "pl011" and saved[0]["version"] == 2
    assert json.loads(json.dumps(saved)) == saved
    load_devices(bus, saved)
    with pytest.raises(StateError, match="version 1"):
        load_devices(bus, [{"name": "pl011", "version": 1, "state": {"regs": {}}}])
