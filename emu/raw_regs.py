"""Register access straight through Unicorn's C API (uc_reg_read / uc_reg_write) for the exit
path: the binding's reg_read picks a register class, builds a ctypes object and checks the
status on every call (~1.5 us); these reuse one buffer each (~0.3 us). Same values, same
registers - only the Python around the library call is gone. TLB_FILL_CFUNC is the type of
a fill hook given straight to uc_hook_add (emu.native.hook_add)."""
from __future__ import annotations

import ctypes

from unicorn import UcError
from unicorn import arm_const as A
from unicorn.unicorn_py3.unicorn import uc_tlb_entry, uclib

_CP_REG = A.UC_ARM_REG_CP_REG
# uc_cb_tlbfill_t: bool (uc, vaddr, uc_mem_type, uc_tlb_entry *, user_data), for uc_hook_add
TLB_FILL_CFUNC = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                  ctypes.POINTER(uc_tlb_entry), ctypes.c_void_p)


class _CpReg(ctypes.Structure):
    """uc_arm_cp_reg (unicorn/arm.h): cp, is64, sec, crn, crm, opc1, opc2, val."""
    _fields_ = [("cp", ctypes.c_uint32), ("is64", ctypes.c_uint32), ("sec", ctypes.c_uint32),
                ("crn", ctypes.c_uint32), ("crm", ctypes.c_uint32), ("opc1", ctypes.c_uint32),
                ("opc2", ctypes.c_uint32), ("val", ctypes.c_uint64)]


class RawRegs:
    """Reads and writes of one engine's 32-bit core registers and CP15 registers (given as
    the binding's 7-tuples (cp, is64, sec, crn, crm, opc1, opc2), emu.cp15.CP15)."""

    def __init__(self, uc) -> None:
        self.uch = uc._uch
        self._word = ctypes.c_uint64()           # 64 bits: Unicorn writes 4 or 8 bytes
        self._word_p = ctypes.byref(self._word)
        self._cps: dict[tuple, tuple[_CpReg, object]] = {}   # one buffer per CP register
        self._read_fn, self._write_fn = uclib.uc_reg_read, uclib.uc_reg_write

    def read(self, reg: int) -> int:
        """A core register (R0-R15, CPSR, SPSR, ESR...): its low 32 bits."""
        err = self._read_fn(self.uch, reg, self._word_p)
        if err:
            raise UcError(err)
        return self._word.value & 0xFFFFFFFF

    def write(self, reg: int, value: int) -> None:
        self._word.value = value & 0xFFFFFFFF
        err = self._write_fn(self.uch, reg, self._word_p)
        if err:
            raise UcError(err)

    def _buffer(self, cp: tuple) -> tuple[_CpReg, object]:
        buf = self._cps.get(cp)
        if buf is None:
            c = _CpReg(*cp)
            buf = self._cps[cp] = (c, ctypes.byref(c))
        return buf

    def cp_read(self, cp: tuple) -> int:
        c, ref = self._buffer(cp)
        c.val = 0
        err = self._read_fn(self.uch, _CP_REG, ref)
        if err:
            raise UcError(err)
        return c.val

    def cp_write(self, cp: tuple, value: int) -> None:
        c, ref = self._buffer(cp)
        c.val = value & 0xFFFF_FFFF_FFFF_FFFF
        err = self._write_fn(self.uch, _CP_REG, ref)
        if err:
            raise UcError(err)
