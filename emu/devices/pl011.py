"""The PrimeCell UART (PL011), as the ARM PrimeCell UART (PL011) Technical Reference Manual
r1p5 (ARM DDI 0183) describes it and QEMU's `virt` board places it (0x09000000, SPI 1 =
INTID 33).

One state record (`Pl011State`); register reads and writes only change it, and every change
ends in `_update`, which recomputes the one output, UARTINTR (RIS & IMSC != 0), and tells the
`irq` callback when its level changes (STYLE: "a device is its state").

What is modelled, and the rules where the TRM leaves timing to the hardware:
- Transmit is instantaneous: a write to UARTDR goes to the host at once, so UARTFR always
  says TXFE, never TXFF or BUSY. The transmit interrupt (TXRIS) is set by every write to
  UARTDR (the FIFO has drained through its level: UARTTXINTR follows a transition, not the
  level, so unmasking TXIM alone does not set it), and cleared only by UARTICR.TXIC.
- Receive: a 16-entry FIFO with UARTLCR_H.FEN, a 1-character holding register without it.
  Clearing FEN empties it (as QEMU); setting FEN keeps the character the holding register
  has (QEMU drops it: a character typed before the guest turns its FIFO on is not lost).
  Entries are 12 bits, the character with its error bits [11:8] as UARTDR returns them.
  Input arrives only through `feed`, which the machine's run loop calls between bursts of
  guest code, so what the guest sees is deterministic.
- RXRIS is set when a character arrives and the FIFO then holds at least the trigger level
  (UARTIFLS.RXIFLSEL: 2, 4, 8, 12, 14 entries; reserved encodings act as 14; 1 without FEN),
  and cleared by UARTICR.RXIC or as soon as fewer characters than that remain.
- RTRIS, the receive timeout (TRM: the FIFO is not empty and no more data arrives for 32 bit
  periods): input arrives in batches, and the line is idle after each one, so RTRIS is set at
  the end of every `feed` that received a character while the FIFO is then non-empty. It is
  cleared by UARTICR.RTIC or when the FIFO becomes empty. Like the hardware's it does not
  depend on the trigger level, so characters below the level reach a driver that waits for
  interrupts (Linux's amba-pl011 enables RXIM and RTIM and drains the FIFO on either).
- Overrun: `feed` takes only what fits by default (flow control, as QEMU's can_receive);
  with flow_control=False the excess is lost as on the wire: UARTRSR.OE, OERIS, and OE on the
  next character the FIFO takes (3.3.1). Framing, parity and break errors never occur, and
  the modem status inputs (CTS, DSR, DCD, RI) read as 0.
- The UART transmits and receives whatever UARTCR.UARTEN/TXE/RXE say, as QEMU: bare-metal
  guests print without ever enabling it (UARTCR resets to TXE|RXE with UARTEN clear).
  Loopback (UARTCR.LBE), IrDA and DMA are registers only.
- UARTPeriphID2 = 0x14, as QEMU: revision 1, which Linux reads as 16-entry FIFOs (revision 3,
  0x34, would mean r1p5's 32). UARTIBRD holds 16 bits and UARTFBRD 6 (3.3.5, 3.3.6; QEMU
  swaps the two masks). Reserved offsets, and offsets that are not a multiple of 4, read as
  zero and ignore writes; an access of any size at a register's offset reaches it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable

from hyp.migration.state import StateError

# Registers (TRM 3.2, Table 3-1).
UARTDR, UARTRSR, UARTECR, UARTFR, UARTILPR = 0x000, 0x004, 0x004, 0x018, 0x020
UARTIBRD, UARTFBRD, UARTLCR_H, UARTCR, UARTIFLS = 0x024, 0x028, 0x02C, 0x030, 0x034
UARTIMSC, UARTRIS, UARTMIS, UARTICR, UARTDMACR = 0x038, 0x03C, 0x040, 0x044, 0x048

# UARTDR error bits [11:8] (3.3.1); UARTRSR holds the same four at [3:0] (3.3.2).
DR_FE, DR_PE, DR_BE, DR_OE = 1 << 8, 1 << 9, 1 << 10, 1 << 11
RSR_OE = DR_OE >> 8
# UARTFR (3.3.3).
FR_BUSY, FR_RXFE, FR_TXFF, FR_RXFF, FR_TXFE = 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7
# UARTLCR_H.FEN (3.3.7); UARTCR (3.3.8).
LCR_H_FEN = 1 << 4
CR_UARTEN, CR_LBE, CR_TXE, CR_RXE = 1 << 0, 1 << 7, 1 << 8, 1 << 9
# UARTIMSC/RIS/MIS/ICR bits (3.3.10-3.3.13): modem RI/CTS/DCD/DSR [3:0], then these.
INT_RX, INT_TX, INT_RT, INT_FE, INT_PE, INT_BE, INT_OE = (1 << n for n in range(4, 11))
INT_ALL = (1 << 11) - 1

FIFO_DEPTH = 16
_RX_LEVELS = (2, 4, 8, 12, 14)          # UARTIFLS.RXIFLSEL [5:3]: 1/8, 1/4, 1/2, 3/4, 7/8
_ID = {0xFE0: 0x11, 0xFE4: 0x10, 0xFE8: 0x14, 0xFEC: 0x00,      # UARTPeriphID0-3
       0xFF0: 0x0D, 0xFF4: 0xF0, 0xFF8: 0x05, 0xFFC: 0xB1}      # UARTPCellID0-3


@dataclass
class Pl011State:
    """Everything the guest can observe. Reset values: TRM 3.2 (UARTCR 0x300, UARTIFLS 0x12)."""
    rx: list[int] = field(default_factory=list)  # RX FIFO, oldest first: char | errors [11:8]
    rx_overrun: int = 0  # a character was lost: the next one the FIFO takes carries DR_OE
    rsr: int = 0         # UARTRSR: FE/PE/BE of the last character read, OE until UARTECR
    ris: int = 0         # UARTRIS
    imsc: int = 0        # UARTIMSC
    ilpr: int = 0
    ibrd: int = 0
    fbrd: int = 0
    lcr_h: int = 0
    cr: int = CR_RXE | CR_TXE
    ifls: int = 0x12
    dmacr: int = 0


# One rule per register field: the bits it holds (writes keep only these; a saved state with
# any other bit set is refused).
_BITS = {"rx_overrun": 0x1, "rsr": 0xF, "ris": INT_ALL, "imsc": INT_ALL, "ilpr": 0xFF,
         "ibrd": 0xFFFF, "fbrd": 0x3F, "lcr_h": 0xFF, "cr": 0xFF87, "ifls": 0x3F,
         "dmacr": 0x7}
_WRITABLE = {UARTILPR: "ilpr", UARTIBRD: "ibrd", UARTFBRD: "fbrd", UARTCR: "cr",
             UARTDMACR: "dmacr"}
_READABLE = {UARTRSR: "rsr", UARTILPR: "ilpr", UARTIBRD: "ibrd", UARTFBRD: "fbrd",
             UARTLCR_H: "lcr_h", UARTCR: "cr", UARTIFLS: "ifls", UARTIMSC: "imsc",
             UARTRIS: "ris", UARTDMACR: "dmacr"}


class PL011:
    """The UART. `sink(bytes)` receives every transmitted character; `irq(level)` hears
    UARTINTR change (connect it to the GIC's SPI: `gic.set_line(33, level)`)."""

    name = "pl011"
    size = 0x1000
    state_version = 2

    def __init__(self, sink: Callable[[bytes], None] | None = None,
                 irq: Callable[[bool], None] | None = None) -> None:
        self.output = bytearray()            # the console history (the host's, not migrated)
        self.sink = sink
        self.irq = irq
        self.st = Pl011State()
        self._line = False

    # ---- the machine's side -----------------------------------------------------------------
    def reset(self) -> None:
        self.st = Pl011State()
        self._update()

    def connect(self, irq: Callable[[bool], None] | None) -> None:
        """Drive `irq` from now on, telling it the current level at once."""
        self.irq = irq
        self._update(notify=True)

    @property
    def line(self) -> bool:
        """UARTINTR, the combined interrupt output."""
        return self._line

    @property
    def depth(self) -> int:
        """Receive FIFO entries: 16 with UARTLCR_H.FEN, else the 1-character holding register."""
        return FIFO_DEPTH if self.st.lcr_h & LCR_H_FEN else 1

    @property
    def room(self) -> int:
        """Characters the receive FIFO can take now."""
        return self.depth - len(self.st.rx)

    def feed(self, data: bytes, flow_control: bool = True) -> int:
        """Characters arriving on the receive line, as one batch after which the line is idle
        (the receive timeout). Returns how many the FIFO took. With `flow_control` only what
        fits is offered (the caller keeps the rest); without, the excess overruns."""
        if flow_control:
            data = data[:self.room]
        taken = sum(self._receive(c) for c in data)
        if data and self.st.rx:
            self.st.ris |= INT_RT
        self._update()
        return taken

    def _receive(self, c: int) -> bool:
        st = self.st
        if len(st.rx) >= self.depth:         # the shift register is overwritten (3.3.2)
            st.rx_overrun = 1
            st.rsr |= RSR_OE
            st.ris |= INT_OE
            return False
        st.rx.append(c & 0xFF | (DR_OE if st.rx_overrun else 0))
        st.rx_overrun = 0
        if len(st.rx) >= self._rx_level():
            st.ris |= INT_RX
        return True

    def _rx_level(self) -> int:
        if not self.st.lcr_h & LCR_H_FEN:
            return 1
        return _RX_LEVELS[min(self.st.ifls >> 3 & 7, len(_RX_LEVELS) - 1)]

    def _settle(self) -> None:
        """Receive interrupts whose condition is gone (fewer characters than the level; an
        empty FIFO)."""
        st = self.st
        if len(st.rx) < self._rx_level():
            st.ris &= ~INT_RX
        if not st.rx:
            st.ris &= ~INT_RT

    def _update(self, notify: bool = False) -> None:
        line = bool(self.st.ris & self.st.imsc)
        if line != self._line or notify:
            self._line = line
            if self.irq is not None:
                self.irq(line)

    # ---- MMIO -------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        st = self.st
        if offset & 3:
            return 0
        if offset == UARTDR:
            if not st.rx:
                return 0
            value = st.rx.pop(0)
            st.rsr = st.rsr & RSR_OE | value >> 8 & 0x7
            self._settle()
            self._update()
            return value
        if offset == UARTFR:
            fr = FR_TXFE
            if not st.rx:
                fr |= FR_RXFE
            if len(st.rx) >= self.depth:
                fr |= FR_RXFF
            return fr
        if offset == UARTMIS:
            return st.ris & st.imsc
        if offset in _READABLE:
            return getattr(st, _READABLE[offset])
        return _ID.get(offset, 0)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset & 3:
            return
        st = self.st
        if offset == UARTDR:
            b = bytes([value & 0xFF])
            self.output += b
            if self.sink:
                self.sink(b)
            st.ris |= INT_TX
        elif offset == UARTECR:
            st.rsr = 0
        elif offset == UARTLCR_H:
            if st.lcr_h & ~value & LCR_H_FEN:          # FIFO off: emptied (switching it on
                st.rx.clear()                          # keeps the holding register's
                st.rx_overrun = 0                      # character as its first entry)
            st.lcr_h = value & _BITS["lcr_h"]
            self._settle()
        elif offset == UARTIFLS:
            st.ifls = value & _BITS["ifls"]
            self._settle()
        elif offset == UARTIMSC:
            st.imsc = value & INT_ALL
        elif offset == UARTICR:
            st.ris &= ~value & INT_ALL
        elif offset in _WRITABLE:
            name = _WRITABLE[offset]
            setattr(st, name, value & _BITS[name])
        self._update()

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    # ---- migration (hyp.migration.state) ---------------------------------------------------
    def save(self) -> dict:
        """The registers and the receive FIFO's entries by name; the console history is the
        host's, not the device's."""
        st = self.st
        return {f.name: list(st.rx) if f.name == "rx" else getattr(st, f.name)
                for f in fields(st)}

    def load(self, state) -> None:
        """Restore `save`'s data; StateError (a ValueError) names the first problem and leaves
        the UART unchanged. The irq callback then hears the line's level, changed or not, so
        a destination re-asserts it."""
        self.st = parse_state(state)
        self._update(notify=True)


def parse_state(state) -> Pl011State:
    """A saved state checked field by field: every field present, nothing else, every value
    within its register's bits, the FIFO no deeper than UARTLCR_H.FEN allows."""
    if not isinstance(state, dict):
        raise StateError(f"pl011 state is {type(state).__name__}, not a mapping")
    names = [f.name for f in fields(Pl011State)]
    missing = [n for n in names if n not in state]
    unknown = sorted(str(k) for k in state if k not in names)
    if missing or unknown:
        raise StateError(f"pl011 state fields differ: missing {missing}, unknown {unknown}")
    values = {}
    for name, bits in _BITS.items():
        v = state[name]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v & ~bits:
            raise StateError(f"pl011 {name} = {v!r}: not within {bits:#x}")
        values[name] = v
    rx = state["rx"]
    if not isinstance(rx, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 1 << 12 for c in rx):
        raise StateError(f"pl011 rx FIFO {rx!r}: not a list of 12-bit entries")
    depth = FIFO_DEPTH if values["lcr_h"] & LCR_H_FEN else 1
    if len(rx) > depth:
        raise StateError(f"pl011 rx FIFO holds {len(rx)} entries, more than its depth {depth}")
    return Pl011State(rx=list(rx), **values)
