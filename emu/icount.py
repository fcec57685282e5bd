"""Exact guest instruction counts from Unicorn's own counter.

`emu_start(count=N)` makes Unicorn count every instruction in C (`uc->emu_counter`, no Python
per instruction), but the public API never returns the count. The counter sits right before
`emu_count` (the N we passed) in `struct uc_struct`; we find that offset once per process by
running a known number of instructions with two distinct counts, and check it. If the layout
is ever different the calibration fails loudly instead of returning wrong numbers.
"""
from __future__ import annotations

import ctypes
import struct

import numpy as np
from unicorn import UC_ARCH_ARM, UC_MODE_ARM, Uc
from unicorn.arm_const import UC_ARM_REG_R0

_OFFSET: int | None = None
_SCAN = 1 << 16


class IcountUnavailable(RuntimeError):
    pass


def _calibrate() -> int:
    uc = Uc(UC_ARCH_ARM, UC_MODE_ARM)
    uc.ctl_set_page_size(4096)
    buf = np.zeros(4096, dtype=np.uint8)
    # 16 x "add r0, r0, #1" then "b ." : exactly k instructions run for count=k <= 16.
    code = struct.pack("<16I", *([0xE2800001] * 16)) + struct.pack("<I", 0xEAFFFFFE)
    buf[:len(code)] = np.frombuffer(code, dtype=np.uint8)
    uc.mem_map_ptr(0x1000, 4096, 7, buf.ctypes.data)
    base = uc._uch.value
    candidates = None
    for k in (5, 11):
        uc.reg_write(UC_ARM_REG_R0, 0)
        uc.emu_start(0x1000, 0, count=k)
        if uc.reg_read(UC_ARM_REG_R0) != k:
            raise IcountUnavailable("unicorn did not stop after `count` instructions")
        raw = ctypes.string_at(base, _SCAN)
        words = np.frombuffer(raw, dtype="<u8")
        # emu_count == k and emu_counter == k + 1 (the stopping instruction is counted).
        hits = {int(i) * 8 for i in np.flatnonzero((words[1:] == k) & (words[:-1] == k + 1)) + 1}
        candidates = hits if candidates is None else candidates & hits
    if not candidates or len(candidates) != 1:
        raise IcountUnavailable("cannot locate unicorn's instruction counter; "
                                "run with icount disabled")
    del buf
    return candidates.pop() - 8


def counter_address(uc: Uc) -> int:
    """Address of `uc->emu_counter` of this engine (instructions counted in this emu_start)."""
    global _OFFSET
    if _OFFSET is None:
        _OFFSET = _calibrate()
    return uc._uch.value + _OFFSET


class Counter:
    """Reads the number of instructions Unicorn counted during the current/last emu_start."""

    def __init__(self, uc: Uc) -> None:
        self._cell = ctypes.c_size_t.from_address(counter_address(uc))

    @property
    def value(self) -> int:
        return self._cell.value
