"""What an "invalid instruction" stop of Unicorn was (DESIGN 5b).

Unicorn stops with UC_ERR_INSN_INVALID for three different things:
- the hints WFE and YIELD, with PC *after* them (they completed: QEMU treats both as a yield
  to other work, i.e. a NOP for a single vCPU - helper_wfe / helper_yield);
- the Hyp traps we enable (HCR.TVM: writes to the translation registers), with PC *on* the
  trapped MCR/MCRR, which the machine emulates;
- an undefined instruction, with PC on it: the guest's Undefined Instruction exception.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

_HINT_ARM = {0x0320F001: "yield", 0x0320F002: "wfe"}     # A1, any condition but 0b1111
_HINT_T16 = {0xBF10: "yield", 0xBF20: "wfe"}
_HINT_T32 = {0xF3AF8001: "yield", 0xF3AF8002: "wfe"}


def hint_before(read_code: Callable[[int, int], bytes], pc: int,
                thumb: bool) -> tuple[str, int] | None:
    """The hint (name, length in bytes) that ends right before `pc`, if there is one."""
    if thumb:
        code = read_code(pc - 4, 4)
        if len(code) == 4:
            hw1, hw2 = struct.unpack("<HH", code)
            name = _HINT_T32.get(hw1 << 16 | hw2)
            if name:
                return name, 4
        code = read_code(pc - 2, 2)
        name = _HINT_T16.get(struct.unpack("<H", code)[0]) if len(code) == 2 else None
        return (name, 2) if name else None
    code = read_code(pc - 4, 4)
    if len(code) != 4:
        return None
    word = struct.unpack("<I", code)[0]
    name = _HINT_ARM.get(word & 0x0FFFFFFF) if word >> 28 != 0xF else None
    return (name, 4) if name else None


@dataclass(frozen=True)
class CoprocTransfer:
    """An MCR/MRC (32-bit) or MCRR/MRRC (64-bit, rt2 set) to coprocessor `coproc`
    (A8.8.98-101 / A8.8.107-108: the A1 and T1 encodings share the field layout)."""
    coproc: int
    opc1: int
    crn: int
    crm: int
    opc2: int
    rt: int
    rt2: int | None
    read: bool

    @property
    def is64(self) -> bool:
        return self.rt2 is not None


def decode_coproc(code: bytes, thumb: bool) -> CoprocTransfer | None:
    """Decode a register transfer to a coprocessor, or None if `code` is something else."""
    if len(code) < 4:
        return None
    if thumb:
        hw1, hw2 = struct.unpack("<HH", code[:4])
        word = hw1 << 16 | hw2
        if word >> 28 != 0xE:                  # T1 only (the T2 forms are MCR2/MRC2)
            return None
    else:
        word = struct.unpack("<I", code[:4])[0]
        if word >> 28 == 0xF:                  # MCR2/MRC2 and friends
            return None
    if word >> 24 & 0xF == 0b1110 and word >> 4 & 1:
        return CoprocTransfer(coproc=word >> 8 & 15, opc1=word >> 21 & 7, crn=word >> 16 & 15,
                              crm=word & 15, opc2=word >> 5 & 7, rt=word >> 12 & 15,
                              rt2=None, read=bool(word >> 20 & 1))
    if word >> 21 & 0x7F == 0b1100010:
        return CoprocTransfer(coproc=word >> 8 & 15, opc1=word >> 4 & 15, crn=0,
                              crm=word & 15, opc2=0, rt=word >> 12 & 15,
                              rt2=word >> 16 & 15, read=bool(word >> 20 & 1))
    return None
