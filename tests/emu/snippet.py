"""Run a few hand-encoded guest instructions on the full machine (emu.machine.Machine).

The code goes at 0x40000000; VBAR points at a vector table whose every entry records its
offset in r7 and powers the VM off, so a test reads which exception was taken, and LR, SPSR
and the fault registers as the guest's handler would have seen them."""
from __future__ import annotations

import struct

from emu.icount import it_skipped  # noqa: F401  (tests import it from here)
from emu.machine import RAM_BASE, Machine

CODE = RAM_BASE
VECTORS = RAM_BASE + 0x1000
DATA = RAM_BASE + 0x2000
OFF = (0xE3000008, 0xE3480400, 0xE1400070)      # movw r0, #8; movt r0, #0x8400; hvc #0
NO_VECTOR = 0xFF                                # r7 when no exception was taken


def arm(*words: int) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)


def thumb(*halfwords: int) -> bytes:
    return struct.pack(f"<{len(halfwords)}H", *halfwords)


def branch(at: int, to: int) -> int:
    """A1 B: offset from PC + 8, in words."""
    return 0xEA000000 | (((to - at - 8) >> 2) & 0xFFFFFF)


def vector_table() -> bytes:
    handlers = VECTORS + 0x100
    off = VECTORS + 0x200
    table = [branch(VECTORS + 4 * i, handlers + 8 * i) for i in range(8)]
    body = []
    for i in range(8):
        at = handlers + 8 * i
        body += [0xE3A07000 | 4 * i, branch(at + 4, off)]      # mov r7, #offset; b off
    out = bytearray(0x300)
    out[0:32] = arm(*table)
    out[0x100:0x100 + 4 * len(body)] = arm(*body)
    out[0x200:0x20C] = arm(*OFF)
    return bytes(out)


class Snippet:
    """A Machine with `code` at CODE (ARM or Thumb) and the recording vector table."""

    def __init__(self, code: bytes, *, is_thumb: bool = False, mem: int = 64 << 20,
                 icount: bool = True, regs: dict[int, int] | None = None,
                 vbar: int = VECTORS) -> None:
        self.m = m = Machine(mem, icount=icount)
        m.host.mem.write(m.ram.pa, code)
        m.host.mem.write(m.ram.pa + (VECTORS - RAM_BASE), vector_table())
        m.cpu.cp15_write("VBAR", vbar)
        m.cpu.set_reg(7, NO_VECTOR)
        for n, v in (regs or {}).items():
            m.cpu.set_reg(n, v)
        m.cpu.set_pc(CODE, is_thumb)

    def run(self, **kw):
        kw.setdefault("max_insns", 100_000)
        return self.m.run(**kw)

    @property
    def cpu(self):
        return self.m.cpu

    def vector(self) -> int:
        """The vector offset the guest took (0x04 undefined, 0x08 SVC, 0x0C prefetch abort,
        0x10 data abort, ...), NO_VECTOR if none."""
        return self.cpu.reg(7)

