"""Raw Unicorn for the benchmarks' baselines, and the bare deny -> exit -> resume round trip.

  RawUnicorn   the "vs raw unicorn" baselines (bench/guest_speed.py) in Unicorn's default TLB
               mode (UC_TLB_CPU) or in virtual-TLB mode with a native identity fill;
  RawFloor     the "round-trip floor" (bench/dirty_rows.py): a guest store to a page whose TLB
               fill is denied, the exit to Python, re-allowing the page, resuming - through
               the binding, or (raw=True) through the library calls emu.cpu makes.
"""
from __future__ import annotations

import ctypes

import numpy as np
from unicorn import (UC_ARCH_ARM, UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_HOOK_TLB_FILL,
                     UC_MEM_FETCH, UC_MEM_WRITE, UC_MODE_ARM, UC_PROT_ALL, UC_PROT_EXEC,
                     UC_PROT_READ, UC_PROT_WRITE, UC_TLB_VIRTUAL, Uc, UcError)
from unicorn import arm_const as A
from unicorn.unicorn_py3.unicorn import uclib

from bench.common import MASK32, BenchError, timed
from bench.programs import CODE, DATA_OFFSET, ENTRY
from emu.machine import RAM_BASE
from emu.native import hook_add
from emu.raw_regs import TLB_FILL_CFUNC, RawRegs

_R = [A.UC_ARM_REG_R0 + i for i in range(13)]


def native_identity_fill() -> int | None:
    """Address of emu/native's identity TLB-fill callback (C), or None when the extension is
    not built. The baseline uses it even under S2EMU_NATIVE=0: that switch selects *our*
    fallback path; raw Unicorn's fastest configuration stays the same."""
    try:
        import importlib
        fastpath = importlib.import_module("emu.native._fastpath")
    except ImportError:
        return None
    return fastpath.callbacks().get("identity_fill")


_FETCH_PERMS, _DATA_PERMS = UC_PROT_READ | UC_PROT_EXEC, UC_PROT_READ | UC_PROT_WRITE


def _py_identity_fill(uc, vaddr, access, entry, _ud) -> bool:
    entry.paddr = vaddr & ~0xFFF
    entry.perms = _FETCH_PERMS if access == UC_MEM_FETCH else _DATA_PERMS
    return True


def baseline_label(tlb: str, python_fill: bool = False) -> str:
    if tlb == "cpu":
        mode = "default TLB mode (UC_TLB_CPU), no hooks"
    elif python_fill:
        mode = ("UC_TLB_VIRTUAL + a PYTHON identity fill hook (emu/native is not built: NOT "
                "the fastest raw configuration)")
    else:
        mode = "UC_TLB_VIRTUAL + emu/native's C identity fill (uc_hook_add), no other hooks"
    return (f"raw Unicorn: Uc(UC_ARCH_ARM), ctl_set_page_size(4096), {mode}, MMU off (VA = "
            "PA), RAM RWX at 0x40000000 (mem_map_ptr), emu_start(entry, until=exit, count=0)")


class RawUnicorn:
    """The baseline: Unicorn as a user would set it up for an identity-mapped guest, in
    Unicorn's default TLB mode (tlb="cpu") or virtual-TLB mode with an identity fill."""
    exit_insns = 0               # stops on the movw: the exit sequence does not run

    def __init__(self, ram: int, tlb: str = "cpu") -> None:
        uc = Uc(UC_ARCH_ARM, UC_MODE_ARM)
        uc.ctl_set_page_size(4096)
        self.mem = np.zeros(ram, dtype=np.uint8)
        uc.mem_map_ptr(RAM_BASE, ram, UC_PROT_ALL, self.mem.ctypes.data)
        self.mem[:len(CODE)] = np.frombuffer(CODE, dtype=np.uint8)
        self.python_fill = False
        if tlb == "virtual":
            uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
            fill = native_identity_fill()
            if fill is not None:
                hook_add(uc, UC_HOOK_TLB_FILL, fill, 0)
            else:                     # not the fastest: every fill calls Python
                self.python_fill = True
                uc.hook_add(UC_HOOK_TLB_FILL, _py_identity_fill)
        elif tlb != "cpu":
            raise ValueError(tlb)
        self.tlb = tlb
        self.uc = uc

    @property
    def mode(self) -> str:
        """The baseline's name in row labels."""
        return "virtual tlb, python fill" if self.python_fill else f"{self.tlb} tlb"

    @property
    def label(self) -> str:
        return baseline_label(self.tlb, self.python_fill)

    def data(self, size: int) -> np.ndarray:
        """The sweep region as uint32 words (a live view of guest memory)."""
        return self.mem[DATA_OFFSET:DATA_OFFSET + size].view("<u4")

    def reg(self, n: int) -> int:
        return self.uc.reg_read(_R[n])

    def run(self, prog: str, regs: dict[int, int]) -> float:
        entry, until = ENTRY[prog]
        for n, v in regs.items():
            self.uc.reg_write(_R[n], v & MASK32)
        dt, _ = timed(lambda: self.uc.emu_start(entry, until))
        pc = self.uc.reg_read(A.UC_ARM_REG_PC)
        if pc != until:
            raise BenchError(f"raw unicorn stopped at {pc:#x}, expected {until:#x}")
        return dt


class RawFloor:
    """The bare deny -> exit -> resume round trip: raw Unicorn in virtual-TLB mode, the
    benchmarks' code at RAM_BASE and `size` bytes at `ipa`, and a Python TLB-fill hook that
    maps VA = PA and denies stores to the pages of [ipa, ipa + size) not yet marked writable.
    On the exit the "hypervisor" only marks the page writable and resumes at PC: no syndrome,
    no tables, no dirty bitmap, no TLB maintenance.

    raw=False: through the Python binding (uc.hook_add, emu_start raising UcError, reg_read):
    the "round-trip floor" the issue defines. raw=True: through the library as emu.cpu now
    calls it (uc_hook_add of a ctypes callback, uc_emu_start's status, emu.raw_regs): the
    least any Python hypervisor on this Unicorn can pay."""

    def __init__(self, ipa: int, size: int, raw: bool = False) -> None:
        uc = Uc(UC_ARCH_ARM, UC_MODE_ARM)
        uc.ctl_set_page_size(4096)
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        self.code = np.zeros(2 << 20, dtype=np.uint8)
        self.code[:len(CODE)] = np.frombuffer(CODE, dtype=np.uint8)
        self.mem = np.zeros(size, dtype=np.uint8)
        uc.mem_map_ptr(RAM_BASE, self.code.size, UC_PROT_ALL, self.code.ctypes.data)
        uc.mem_map_ptr(ipa, size, UC_PROT_ALL, self.mem.ctypes.data)
        self.ipa, self.end = ipa, ipa + size
        self.writable = bytearray(size >> 12)
        self.denied_page = -1
        self.denied = 0
        self.raw = RawRegs(uc) if raw else None
        if raw:
            self._cb = TLB_FILL_CFUNC(lambda _h, vaddr, access, entry, _ud:
                                   self._fill(None, vaddr, access, entry[0], None))
            hook_add(uc, UC_HOOK_TLB_FILL, ctypes.cast(self._cb, ctypes.c_void_p).value, 0)
        else:
            uc.hook_add(UC_HOOK_TLB_FILL, self._fill)
        self.uc = uc

    def _fill(self, uc, vaddr, access, entry, _ud) -> bool:
        if access == UC_MEM_FETCH:
            entry.perms = _FETCH_PERMS
        elif self.ipa <= vaddr < self.end and not self.writable[(vaddr - self.ipa) >> 12]:
            if access == UC_MEM_WRITE:
                self.denied_page = (vaddr - self.ipa) >> 12
                self.denied += 1
                return False
            entry.perms = UC_PROT_READ
        else:
            entry.perms = _DATA_PERMS
        entry.paddr = vaddr & ~0xFFF
        return True

    def protect(self) -> None:
        """Every page read-only again, Unicorn's TLB empty (as after get_dirty_log)."""
        self.writable[:] = bytes(len(self.writable))
        self.cold()

    def cold(self) -> None:
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def touch(self, n: int, stride: int, value: int) -> tuple[float, int, int]:
        """The guest stores value + i at ipa + i*stride for i < n (bench.programs "touch"),
        checked; returns (seconds, exits, denied fills)."""
        entry, until = ENTRY["touch"]
        uc, writable = self.uc, self.writable
        for r, v in ((0, n), (2, value), (4, self.ipa), (6, stride)):
            uc.reg_write(_R[r], v & MASK32)
        denied = self.denied

        def go_raw() -> int:
            pc, exits, seen = entry, 0, self.denied
            uch, start, read = self.raw.uch, uclib.uc_emu_start, self.raw.read
            while True:
                err = start(uch, pc, until, 0, 0)
                if not err:
                    return exits
                if self.denied == seen:
                    raise BenchError(f"floor: a stop that is not a denied fill: {UcError(err)}")
                seen = self.denied
                exits += 1
                writable[self.denied_page] = 1
                pc = read(A.UC_ARM_REG_PC)

        def go() -> int:
            pc, exits, seen = entry, 0, self.denied
            while True:
                try:
                    uc.emu_start(pc, until)
                    return exits
                except UcError as e:
                    if self.denied == seen:
                        raise BenchError(f"floor: a stop that is not a denied fill: {e}")
                    seen = self.denied
                    exits += 1
                    writable[self.denied_page] = 1
                    pc = uc.reg_read(A.UC_ARM_REG_PC)
        dt, exits = timed(go_raw if self.raw is not None else go)
        if uc.reg_read(A.UC_ARM_REG_PC) != until:
            raise BenchError("floor: the touch pass did not reach its end")
        got = self.mem.view("<u4")[:n * (stride >> 2):stride >> 2]
        want = ((value + np.arange(n, dtype=np.uint64)) & MASK32).astype("<u4")
        if not np.array_equal(got, want):
            raise BenchError("floor: guest memory does not hold what the guest stored")
        return dt, exits, self.denied - denied

    def passes(self, n: int, stride: int, seed: int) -> tuple[float, float]:
        """One floor rep: (the pass whose n stores are all denied once, the same pass on
        writable pages from a cold TLB), both checked."""
        self.protect()
        dt_a, exits, denied = self.touch(n, stride, seed)
        if (exits, denied) != (n, n):
            raise BenchError(f"floor pass: {exits} exits, {denied} denied fills (expected {n})")
        self.cold()
        dt_b, exits, denied = self.touch(n, stride, seed ^ 0xFFFF)
        if (exits, denied) != (0, 0):
            raise BenchError(f"floor writable pass: {exits} exits, {denied} denied fills")
        return dt_a, dt_b
