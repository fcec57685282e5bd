"""Decode the faulting guest instruction: the exact VA range and ISS fields of a load or store.

Unicorn's TLB-fill hook only reports the page and the access kind. After a denied access the
machine decodes the instruction at PC. Capstone identifies it (which load or store: access
size, signedness, direction); the addressing mode is read from the encoding fields as the
ARM ARM pseudocode does (DDI 0406C A5.3, A5.2.8, A5.5, A6.2.4, A6.3.5-A6.3.10, A7.6), because
capstone 5's operand details are wrong for several forms (post-indexed LDRSH reports
post_index False, LDRT reports no writeback, STRH [Rn, #-imm]! negates the offset twice), and
it calls the A32 one-register `pop` (an LDR encoding) POP while its `push` is STR.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, NamedTuple

from hyp.arch.syndrome import AccessInfo
from hyp.physmem import PAGE_SIZE

_MASK32 = 0xFFFF_FFFF


class DecodeError(Exception):
    """The instruction at PC is not a load or store that this decoder models."""


class _Op(NamedTuple):
    size: int       # bytes per access (VFP: taken from the encoding)
    sign: bool
    write: bool
    form: str       # which encoding decoder applies, see _DECODERS


# Capstone's instruction names (ARM_INS_<name> in capstone.arm_const) -> _Op fields
_TABLE = (
    (("LDR", "LDRT"), 4, False, False, "ldst"),
    (("LDRB", "LDRBT"), 1, False, False, "ldst"),
    (("LDRH", "LDRHT"), 2, False, False, "ldst"),
    (("LDRSB", "LDRSBT"), 1, True, False, "ldst"),
    (("LDRSH", "LDRSHT"), 2, True, False, "ldst"),
    (("STR", "STRT"), 4, False, True, "ldst"),
    (("STRB", "STRBT"), 1, False, True, "ldst"),
    (("STRH", "STRHT"), 2, False, True, "ldst"),
    (("LDM", "LDMDA", "LDMDB", "LDMIB", "POP"), 4, False, False, "ldst"),
    (("STM", "STMDA", "STMDB", "STMIB", "PUSH"), 4, False, True, "ldst"),
    (("LDRD",), 8, False, False, "dual"),
    (("STRD",), 8, False, True, "dual"),
    (("LDREX",), 4, False, False, "excl"),
    (("LDREXB",), 1, False, False, "excl"),
    (("LDREXH",), 2, False, False, "excl"),
    (("LDREXD",), 8, False, False, "excl"),
    (("STREX",), 4, False, True, "excl"),
    (("STREXB",), 1, False, True, "excl"),
    (("STREXH",), 2, False, True, "excl"),
    (("STREXD",), 8, False, True, "excl"),
    (("VLDR", "VLDMIA", "VLDMDB", "VPOP"), 0, False, False, "vfp"),
    (("VSTR", "VSTMIA", "VSTMDB", "VPUSH"), 0, False, True, "vfp"),
    (("TBB",), 1, False, False, "table"),
    (("TBH",), 2, False, False, "table"),
    # SWP/SWPB (A8.8.229): a read, then a write of the same address; described by its read
    (("SWP",), 4, False, False, "swap"),
    (("SWPB",), 1, False, False, "swap"),
)


class _Capstone(NamedTuple):
    """Capstone's ARM and Thumb decoders (with operand details) and _TABLE keyed by its
    instruction ids."""
    arm: object
    thumb: object
    ops: dict
    op_mem: int


@lru_cache(maxsize=None)
def _capstone() -> _Capstone:
    """Built on the first decode: importing capstone is a large part of s2emu's start-up,
    and a guest that never faults on a load or store does not need it."""
    import capstone
    from capstone import arm_const as A

    arm = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_ARM)
    arm.detail = True
    thumb = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB)
    thumb.detail = True
    ops = {getattr(A, f"ARM_INS_{name}"): _Op(size, sign, write, form)
           for names, size, sign, write, form in _TABLE for name in names}
    return _Capstone(arm, thumb, ops, A.ARM_OP_MEM)


class _Ea(NamedTuple):
    addr: int
    length: int
    size: int
    rt: int
    single: bool    # one register, no writeback, Rt != PC: can report a valid ISS


class _Regs:
    """R[n] as the pseudocode reads it at this instruction (PC = address + 8 ARM, + 4 Thumb)."""

    def __init__(self, reg: Callable[[int], int], pc: int, thumb: bool, cpsr: int | None):
        self._reg, self._cpsr = reg, cpsr
        self._pc = (pc + (4 if thumb else 8)) & _MASK32

    def __getitem__(self, n: int) -> int:
        return self._pc if n == 15 else self._reg(n) & _MASK32

    def base(self, n: int) -> int:
        """Base of a load/store: the literal forms use Align(PC, 4) (A8.8.64)."""
        return self._pc & ~3 if n == 15 else self[n]

    def shifted(self, m: int, kind: int, imm5: int) -> int:
        """R[m] shifted as DecodeImmShift(type, imm5) says (A8.4.3)."""
        value = self[m]
        if kind == 0:                                   # LSL
            return (value << imm5) & _MASK32
        if kind == 1:                                   # LSR, imm5 = 0 means #32
            return value >> (imm5 or 32)
        if kind == 2:                                   # ASR, imm5 = 0 means #32
            return ((value - ((value >> 31) << 32)) >> (imm5 or 32)) & _MASK32
        if imm5:                                        # ROR
            return ((value >> imm5) | (value << (32 - imm5))) & _MASK32
        if self._cpsr is None:                          # RRX shifts the carry flag in
            raise DecodeError("an RRX offset needs the carry flag: pass cpsr")
        return (self._cpsr >> 29 & 1) << 31 | value >> 1


def _indexed(base: int, offset: int, p: int, u: int, w: int) -> tuple[int, bool]:
    """(address, writeback) of an offset (P=1), pre-indexed (P=1 W=1) or post-indexed access."""
    offset_addr = (base + offset if u else base - offset) & _MASK32
    return (offset_addr if p else base), (not p or bool(w))


def _block_at(base: int, regs: int, before: bool, up: bool) -> _Ea:
    """LDM/STM IA, IB, DA, DB (A8.8.57-60): 4 bytes per listed register from the lowest."""
    n = bin(regs).count("1")
    start = base + 4 * before if up else base - 4 * n + 4 * (not before)
    return _Ea(start & _MASK32, 4 * n, 4, (regs & -regs).bit_length() - 1, False)


def _block(w: int, r: _Regs) -> _Ea:
    """A32 and T32 (hw1:hw2) LDM/STM share P at bit 24, U at 23, Rn at 19:16, list at 15:0."""
    return _block_at(r[w >> 16 & 15], w & 0xFFFF, bool(w >> 24 & 1), bool(w >> 23 & 1))


def _a32_ldst(w: int, r: _Regs, op: _Op) -> _Ea:
    """A32 word/byte (A5.3), extra (A5.2.8: H, SB, SH, D) loads/stores and LDM/STM (A5.5)."""
    if w >> 25 & 7 == 0b100:
        return _block(w, r)
    rn, rt = w >> 16 & 15, w >> 12 & 15
    if w >> 26 & 3 == 0b01:                     # imm12, or a shifted register when bit 25 set
        offset = r.shifted(w & 15, w >> 5 & 3, w >> 7 & 31) if w >> 25 & 1 else w & 0xFFF
    else:                                       # imm4H:imm4L when bit 22 set, else a register
        offset = (w >> 4 & 0xF0 | w & 0xF) if w >> 22 & 1 else r[w & 15]
    addr, wb = _indexed(r.base(rn), offset, w >> 24 & 1, w >> 23 & 1, w >> 21 & 1)
    return _Ea(addr, op.size, op.size, rt, not wb and rt != 15)


def _t32_ldst(w: int, r: _Regs, op: _Op) -> _Ea:
    """T32 single loads/stores (A6.3.7-A6.3.10) and LDM/STM/PUSH.W/POP.W (A6.3.5)."""
    if w >> 25 != 0b1111100:
        return _block(w, r)
    rn, rt = w >> 16 & 15, w >> 12 & 15
    if rn == 15:                                # literal: [PC, #+/-imm12], U at bit 23
        addr, wb = _indexed(r.base(15), w & 0xFFF, 1, w >> 23 & 1, 0)
    elif w >> 23 & 1:                           # [Rn, #imm12]
        addr, wb = (r[rn] + (w & 0xFFF)) & _MASK32, False
    elif w >> 11 & 1:                           # imm8, P U W at 10:8; 1 1 0 is LDRT and co.
        addr, wb = _indexed(r[rn], w & 0xFF, w >> 10 & 1, w >> 9 & 1, w >> 8 & 1)
    else:                                       # [Rn, Rm, LSL #imm2]
        addr, wb = (r[rn] + (r[w & 15] << (w >> 4 & 3))) & _MASK32, False
    return _Ea(addr, op.size, op.size, rt, not wb and rt != 15)


def _t32_dual(w: int, r: _Regs, op: _Op) -> _Ea:
    """T32 LDRD/STRD (A8.8.72, A8.8.210): imm8 * 4, P U W at bits 24, 23, 21."""
    addr, _ = _indexed(r.base(w >> 16 & 15), (w & 0xFF) * 4, w >> 24 & 1, w >> 23 & 1,
                       w >> 21 & 1)
    return _Ea(addr, op.size, op.size, w >> 12 & 15, False)


def _a32_excl(w: int, r: _Regs, op: _Op) -> _Ea:
    """A32 LDREX/STREX family (A8.8.75, A8.8.212): [Rn]; Rt at 15:12 (loads) or 3:0 (stores)."""
    rt = w & 15 if op.write else w >> 12 & 15
    return _Ea(r[w >> 16 & 15], op.size, op.size, rt, False)


def _t32_excl(w: int, r: _Regs, op: _Op) -> _Ea:
    """T32 LDREX/STREX take [Rn, #imm8 * 4] (hw1 bit 7 clear); the B, H and D forms [Rn]."""
    offset = 0 if w >> 23 & 1 else (w & 0xFF) * 4
    return _Ea((r[w >> 16 & 15] + offset) & _MASK32, op.size, op.size, w >> 12 & 15, False)


def _vfp(w: int, r: _Regs, op: _Op) -> _Ea:
    """VLDR/VSTR and VLDM/VSTM/VPUSH/VPOP (A7.6): the same fields in A32 and T32."""
    rn, imm8, size = w >> 16 & 15, w & 0xFF, 8 if w >> 8 & 1 else 4
    if w >> 24 & 1 and not w >> 21 & 1:        # VLDR/VSTR [Rn, #+/-imm8 * 4]
        addr, _ = _indexed(r.base(rn), imm8 * 4, 1, w >> 23 & 1, 0)
        return _Ea(addr, size, size, 0, False)
    start = r[rn] if w >> 23 & 1 else r[rn] - imm8 * 4     # IA, or DB
    return _Ea(start & _MASK32, imm8 * 4, size, 0, False)


def _table(w: int, r: _Regs, op: _Op) -> _Ea:
    """TBB/TBH (A8.8.223): [Rn, Rm, LSL #H]; Rn = PC reads PC itself, not aligned."""
    addr = (r[w >> 16 & 15] + (r[w & 15] << (w >> 4 & 1))) & _MASK32
    return _Ea(addr, op.size, op.size, 0, False)


def _swap(w: int, r: _Regs, op: _Op) -> _Ea:
    """SWP/SWPB Rt, Rt2, [Rn] (A32 only): the address is Rn."""
    return _Ea(r[w >> 16 & 15], op.size, op.size, w >> 12 & 15, False)


def _t16(h: int, r: _Regs, op: _Op) -> _Ea:
    """16-bit Thumb loads/stores (A6.2.4), PUSH/POP (A8.8.131-133) and LDM/STM (A8.8.57)."""
    top = h >> 12
    if top == 0b1011:                           # PUSH (bit 11 clear) / POP; bit 8 adds LR / PC
        push = not h >> 11 & 1
        regs = h & 0xFF | (h >> 8 & 1) << (14 if push else 15)
        return _block_at(r[13], regs, before=push, up=not push)
    if top == 0b1100:                           # STM/LDM Rn, IA
        return _block_at(r[h >> 8 & 7], h & 0xFF, before=False, up=True)
    if h >> 11 == 0b01001:                      # LDR Rt, [PC, #imm8 * 4]
        base, offset, rt = r.base(15), (h & 0xFF) * 4, h >> 8 & 7
    elif top == 0b1001:                         # LDR/STR Rt, [SP, #imm8 * 4]
        base, offset, rt = r[13], (h & 0xFF) * 4, h >> 8 & 7
    elif top == 0b0101:                         # [Rn, Rm]
        base, offset, rt = r[h >> 3 & 7], r[h >> 6 & 7], h & 7
    else:                                       # [Rn, #imm5 * size]: word, byte, halfword
        base, offset, rt = r[h >> 3 & 7], (h >> 6 & 31) * op.size, h & 7
    return _Ea((base + offset) & _MASK32, op.size, op.size, rt, True)


_DECODERS = {   # form -> (A32 decoder, T32 decoder); 16-bit Thumb always uses _t16
    "ldst": (_a32_ldst, _t32_ldst),
    "dual": (_a32_ldst, _t32_dual),
    "excl": (_a32_excl, _t32_excl),
    "vfp": (_vfp, _vfp),
    "table": (_table, _table),      # TBB/TBH exist only in T32
    "swap": (_swap, _swap),         # SWP/SWPB exist only in A32
}


def _first_in_page(info: AccessInfo, page: int) -> int | None:
    """The first address of [addr, addr + length) in `page`, allowing for a wrap past 2**32."""
    for lo in (page, page + (1 << 32)):
        if info.addr < lo + PAGE_SIZE and lo < info.addr + info.length:
            return max(info.addr, lo) & _MASK32
    return None


# ---- without capstone: the plain loads and stores (most stage-2 aborts: MMIO, dirty) --------
_COND = ("eq", "ne", "hs", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le", "")
_A32_OPS = {(load, byte): _Op(1 if byte else 4, False, not load, "ldst")
            for load in (False, True) for byte in (False, True)}
# Thumb 16-bit (A6.2.4): top bits -> (mnemonic, size, sign, write)
_T16_REG = (("str", 4, False, True), ("strh", 2, False, True), ("strb", 1, False, True),
            ("ldrsb", 1, True, False), ("ldr", 4, False, False), ("ldrh", 2, False, False),
            ("ldrb", 1, False, False), ("ldrsh", 2, True, False))
_T16_IMM = {0b01100: ("str", 4, False, True), 0b01101: ("ldr", 4, False, False),
            0b01110: ("strb", 1, False, True), 0b01111: ("ldrb", 1, False, False),
            0b10000: ("strh", 2, False, True), 0b10001: ("ldrh", 2, False, False),
            0b10010: ("str", 4, False, True), 0b10011: ("ldr", 4, False, False),
            0b01001: ("ldr", 4, False, False)}


def _quick(code: bytes, thumb: bool) -> tuple[int, _Op, bytes, str, None] | None:
    """_identify for the encodings whose class and mnemonic the bits alone give, as capstone
    names them (a property test compares the two over these encodings): A32 LDR/STR/LDRB/
    STRB and their T forms (A5.3) with a base other than SP (capstone calls some of those
    PUSH/POP), Thumb 16-bit loads and stores (A6.2.4). None: ask capstone. Text is None
    (capstone makes it when a message needs it)."""
    if thumb:
        if len(code) < 2:
            return None
        hw = int.from_bytes(code[:2], "little")
        if hw >> 12 == 0b0101:
            name, size, sign, write = _T16_REG[hw >> 9 & 7]
        elif hw >> 11 in _T16_IMM:
            name, size, sign, write = _T16_IMM[hw >> 11]
        else:
            return None
        return 2, _Op(size, sign, write, "ldst"), code[:2], name, None
    if len(code) < 4:
        return None
    w = int.from_bytes(code[:4], "little")
    cond = w >> 28
    if cond == 0xF or w >> 26 & 3 != 0b01 or (w >> 25 & 1 and w >> 4 & 1) or \
            w >> 16 & 15 == 13:
        return None
    load, byte = bool(w >> 20 & 1), bool(w >> 22 & 1)
    t = not w >> 24 & 1 and w >> 21 & 1
    name = ("ldr" if load else "str") + ("b" if byte else "") + ("t" if t else "") + _COND[cond]
    return 4, _A32_OPS[(load, byte)], code[:4], name, None


@lru_cache(maxsize=4096)
def _identify(code: bytes, thumb: bool) -> tuple[int, _Op | None, bytes, str, str | None]:
    """What the bytes are: (size, op, raw bytes, mnemonic, text); op is None (and text the
    reason) for what is not a modelled load or store. Text may be None for a modelled one
    (see _text)."""
    quick = _quick(code, thumb)
    return quick if quick is not None else _identify_cs(code, thumb)


def _text(code: bytes, thumb: bool) -> str:
    """Capstone's text of the instruction (for messages)."""
    return _identify_cs(bytes(code[:4]), thumb)[4]


@lru_cache(maxsize=4096)
def _identify_cs(code: bytes, thumb: bool) -> tuple[int, _Op | None, bytes, str, str]:
    """Capstone's part, which depends only on the bytes: (size, op, raw bytes, mnemonic,
    text); op is None (and text the reason) for what is not a modelled load or store."""
    cs = _capstone()
    insn = next((cs.thumb if thumb else cs.arm).disasm(code, 0, count=1), None)
    if insn is None:
        return 0, None, b"", "", f"undecodable {'Thumb' if thumb else 'ARM'} bytes {code.hex()}"
    text = f"{insn.mnemonic} {insn.op_str}"
    op = cs.ops.get(insn.id)
    if op is None:
        what = ("a memory access this decoder does not model" if insn.op_count(cs.op_mem)
                else "not a load or store")
        return insn.size, None, bytes(insn.bytes), insn.mnemonic, f"{text} is {what}"
    return insn.size, op, bytes(insn.bytes), insn.mnemonic, text


def decode_access(code: bytes, pc: int, thumb: bool, reg: Callable[[int], int],
                  fault_page: int | None = None, *, cpsr: int | None = None) -> AccessInfo:
    """Decode the load or store at `pc` (bit 0 clear) from its bytes and the registers.

    reg(n) returns r0..r14 as the instruction sees them; cpsr is needed only for an RRX
    offset. With fault_page, the decoded range must touch that page (DecodeError otherwise:
    the bytes or registers are not the ones that faulted); addr stays the lowest address.
    """
    size, op, raw, mnemonic, text = _identify(bytes(code[:4]), thumb)
    if op is None:
        raise DecodeError(f"{text} at {pc:#x}")
    r = _Regs(reg, pc, thumb, cpsr)
    if size == 2:
        ea = _t16(int.from_bytes(raw, "little"), r, op)
    elif thumb:
        word = int.from_bytes(raw[:2], "little") << 16 | int.from_bytes(raw[2:], "little")
        ea = _DECODERS[op.form][1](word, r, op)
    else:
        ea = _DECODERS[op.form][0](int.from_bytes(raw, "little"), r, op)
    info = AccessInfo(isv=ea.single and op.form == "ldst", size=ea.size, sign_extend=op.sign,
                      rt=ea.rt, write=op.write, addr=ea.addr, length=ea.length,
                      il32=size == 4, mnemonic=mnemonic)
    if fault_page is not None and _first_in_page(info, fault_page) is None:
        text = text or _text(code, thumb)
        raise DecodeError(f"{text} at {pc:#x} accesses {info.addr:#x}+{info.length}, "
                          f"not the faulting page {fault_page:#x}")
    return info


def fault_address(info: AccessInfo, fault_page: int) -> int:
    """HDFAR: the first address of the access that lies in the faulting page."""
    va = _first_in_page(info, fault_page)
    if va is None:
        raise ValueError(f"{info.mnemonic} at {info.addr:#x}+{info.length} does not touch "
                         f"page {fault_page:#x}")
    return va


def unprivileged(code: bytes, thumb: bool) -> bool:
    """Is the instruction an unprivileged load/store (LDRT/STRT and the B, H, SB, SH forms),
    which PL1 code executes with PL0 permissions (A8.8.92 and friends)? A raw-bits check: it
    runs on TLB fills, where capstone would be too slow."""
    if thumb:
        if len(code) < 4:
            return False
        hw1, hw2 = int.from_bytes(code[0:2], "little"), int.from_bytes(code[2:4], "little")
        return hw1 & 0xFE80 == 0xF800 and hw2 & 0x0F00 == 0x0E00
    if len(code) < 4:
        return False
    w = int.from_bytes(code[:4], "little")
    if w >> 28 == 0xF or w >> 24 & 1 or not w >> 21 & 1:
        return False                             # P = 1 or W = 0: not a T form
    if w >> 26 & 3 == 0b01:                      # LDRT/STRT/LDRBT/STRBT
        return not (w >> 25 & 1 and w >> 4 & 1)
    return w >> 25 & 7 == 0 and w & 0x90 == 0x90 and w >> 5 & 3 != 0   # H/SB/SH forms
