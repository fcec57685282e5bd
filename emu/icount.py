"""Exact guest instruction counts from Unicorn's own counter, and the exact address of a
denied access (`uc->invalid_addr`).

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


# ---- the faulting address of a denied TLB fill -----------------------------------------------
_FAULT_OFFSET: int | None = None


def _calibrate_fault_address() -> int:
    """Deny fills for two odd addresses and find the field that holds each exactly."""
    from unicorn import UC_HOOK_TLB_FILL, UC_TLB_VIRTUAL, UcError
    from unicorn.arm_const import UC_ARM_REG_R1
    uc = Uc(UC_ARCH_ARM, UC_MODE_ARM)
    uc.ctl_set_page_size(4096)
    uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
    buf = np.zeros(4096, dtype=np.uint8)
    buf[:8] = np.frombuffer(struct.pack("<2I", 0xE5910000, 0xEAFFFFFE), dtype=np.uint8)
    uc.mem_map_ptr(0x1000, 4096, 7, buf.ctypes.data)   # ldr r0, [r1]; b .

    def fill(uc_, va, access, entry, _ud):
        if va == 0x1000:
            entry.paddr, entry.perms = 0x1000, 7
            return True
        return False
    uc.hook_add(UC_HOOK_TLB_FILL, fill)
    base = uc._uch.value
    candidates = None
    for addr in (0x1234_5678, 0x0BAD_C0DC):
        uc.reg_write(UC_ARM_REG_R1, addr)
        try:
            uc.emu_start(0x1000, 0, count=2)
        except UcError:
            pass
        words = np.frombuffer(ctypes.string_at(base, _SCAN), dtype="<u8")
        hits = {int(i) * 8 for i in np.flatnonzero(words == addr)}
        candidates = hits if candidates is None else candidates & hits
    if not candidates or len(candidates) != 1:
        raise IcountUnavailable("cannot locate unicorn's faulting-address field")
    del buf
    return candidates.pop()


class FaultAddress:
    """The exact virtual address whose TLB fill was last denied (the page alone is what the
    fill hook is told)."""

    def __init__(self, uc: Uc) -> None:
        global _FAULT_OFFSET
        if _FAULT_OFFSET is None:
            _FAULT_OFFSET = _calibrate_fault_address()
        self._cell = ctypes.c_uint64.from_address(uc._uch.value + _FAULT_OFFSET)

    @property
    def value(self) -> int:
        return self._cell.value
