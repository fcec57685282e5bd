"""A PL011-compatible UART, transmit side (ARM DDI 0183): enough for console output."""
from __future__ import annotations

from typing import Callable

UARTDR = 0x000
UARTFR = 0x018
UARTIFLS = 0x034
UARTCR = 0x030
FR_TXFE = 1 << 7
FR_RXFE = 1 << 4
_ID = {0xFE0: 0x11, 0xFE4: 0x10, 0xFE8: 0x14, 0xFEC: 0x00,      # UARTPeriphID0-3
       0xFF0: 0x0D, 0xFF4: 0xF0, 0xFF8: 0x05, 0xFFC: 0xB1}      # UARTPCellID0-3


class PL011:
    name = "pl011"
    size = 0x1000
    state_version = 1

    def __init__(self, sink: Callable[[bytes], None] | None = None) -> None:
        self.output = bytearray()
        self.sink = sink
        # Reset values (DDI 0183 3.2): UARTCR TXE|RXE, UARTIFLS half-full; the rest 0.
        self.regs: dict[int, int] = {UARTCR: 0x300, UARTIFLS: 0x12}

    def read(self, offset: int, size: int) -> int:
        if offset == UARTFR:
            return FR_TXFE | FR_RXFE          # transmit FIFO empty, nothing received
        if offset in _ID:
            return _ID[offset]
        if offset == UARTDR:
            return 0
        return self.regs.get(offset, 0)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == UARTDR:
            b = bytes([value & 0xFF])
            self.output += b
            if self.sink:
                self.sink(b)
        else:
            self.regs[offset] = value

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    # ---- migration (hyp.migration.state) ---------------------------------------------------
    def save(self) -> dict:
        """The registers the guest wrote (offset -> value); the console history is the
        host's, not the device's."""
        return {"regs": {f"{off:#05x}": v for off, v in sorted(self.regs.items())}}

    def load(self, state) -> None:
        regs = state.get("regs") if isinstance(state, dict) else None
        if not isinstance(regs, dict):
            raise ValueError("pl011 state without registers")
        parsed = {}
        for off, v in regs.items():
            o = int(off, 16)
            if not (0 <= o < self.size and isinstance(v, int) and 0 <= v < 1 << 32):
                raise ValueError(f"pl011 register {off} = {v!r}")
            parsed[o] = v
        self.regs = parsed
