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
from unicorn.arm_const import UC_ARM_REG_PC, UC_ARM_REG_R0

from hyp.arch.psr import thumb32

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


# ---- the CPU's register file (CPUARMState) -----------------------------------------------
_ENV: tuple[int, int, int] | None = None     # (offset in uc_struct, delta to env, thumb offset)
_PATTERN = [0x5A5A_0000 ^ (0x0101_0101 * (i + 1)) ^ (i << 4) for i in range(13)]


def _readable() -> list[tuple[int, int]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            span, perm = line.split()[:2]
            if perm[0] == "r":
                lo, hi = (int(x, 16) for x in span.split("-"))
                out.append((lo, hi))
    return out


def _env_candidates(uc: Uc, maps: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """(offset of a pointer in uc_struct, delta from where it points to r0-r12) pairs."""
    for i, v in enumerate(_PATTERN):
        uc.reg_write(UC_ARM_REG_R0 + i, v)
    pattern = struct.pack("<13I", *_PATTERN)
    words = np.frombuffer(ctypes.string_at(uc._uch.value, 4096), dtype="<u8")
    hits = set()
    for i, w in enumerate(int(x) for x in words):
        if w & 7 or w == 0:
            continue
        hi = next((h for lo, h in maps if lo <= w < h), 0)
        if not hi:
            continue
        j = ctypes.string_at(w, min(0x40000, hi - w)).find(pattern)
        if j >= 0:
            hits.add((i * 8, j))
    return hits


def _calibrate_env() -> tuple[int, int, int]:
    """Where the register file lives: a pointer in uc_struct that leads to CPUARMState
    (regs[] is its first field) at a fixed delta on two engines, and the offset of `thumb`
    in it (the word that follows CPSR.T)."""
    a, b = Uc(UC_ARCH_ARM, UC_MODE_ARM), Uc(UC_ARCH_ARM, UC_MODE_ARM)
    for uc in (a, b):
        uc.reg_write(UC_ARM_REG_R0, 0)            # engines allocate their CPU on first use
    maps = _readable()
    common = sorted(_env_candidates(a, maps) & _env_candidates(b, maps))
    if not common:
        raise IcountUnavailable("cannot locate unicorn's ARM register file")
    off, delta = common[0]
    env = _env_of(a, (off, delta, 0))
    from unicorn.arm_const import UC_ARM_REG_CPSR
    cpsr = a.reg_read(UC_ARM_REG_CPSR)
    snaps = []
    for t in (0, 1, 0, 1):
        a.reg_write(UC_ARM_REG_CPSR, (cpsr & ~0x20) | (t << 5))
        snaps.append(np.frombuffer(ctypes.string_at(env, 0x2000), dtype="<u4").copy())
    idx = np.flatnonzero((snaps[0] == 0) & (snaps[1] == 1) & (snaps[2] == 0) & (snaps[3] == 1))
    if len(idx) != 1:
        raise IcountUnavailable("cannot locate unicorn's Thumb flag")
    return off, delta, int(idx[0]) * 4


# What _calibrate_env finds on released Unicorn wheels, tried first: a layout is used only
# after the check in _env_on passed on the engine, so a wrong entry costs a calibration,
# never a wrong count (the calibration scans ~1 MiB: ~15 ms of every start-up).
_KNOWN_ENV = {("2.1.4", "x86_64"): (440, 41712, 544)}


def env_address(uc: Uc) -> tuple[int, int]:
    """(address of this engine's CPUARMState: r0-r15 as 32-bit words first, address of its
    Thumb flag), checked on this engine; raises IcountUnavailable if the layout is unknown."""
    global _ENV
    if _ENV is None:
        import platform
        import unicorn
        known = _KNOWN_ENV.get((unicorn.__version__, platform.machine()))
        if known is not None and _mapped(uc, known):
            try:
                found = _env_on(uc, known)
                _ENV = known
                return found
            except IcountUnavailable:
                pass
        _ENV = _calibrate_env()
    return _env_on(uc, _ENV)


def _env_of(uc: Uc, layout: tuple[int, int, int]) -> int:
    """Where `layout` says this engine's CPUARMState is."""
    off, delta, _thumb = layout
    uc.reg_read(UC_ARM_REG_R0)                    # engines allocate their CPU on first use
    return ctypes.c_uint64.from_address(uc._uch.value + off).value + delta


def _mapped(uc: Uc, layout: tuple[int, int, int]) -> bool:
    """Does a layout point into readable memory (so checking it cannot crash)?"""
    if layout[0] + 8 > 4096:
        return False
    env = _env_of(uc, layout)
    return any(lo <= env and env + max(layout[2], 64) + 4 <= hi for lo, hi in _readable())


def _env_on(uc: Uc, layout: tuple[int, int, int]) -> tuple[int, int]:
    thumb = layout[2]
    from unicorn.arm_const import UC_ARM_REG_CPSR, UC_ARM_REG_R7
    env = _env_of(uc, layout)
    cpsr, r7 = uc.reg_read(UC_ARM_REG_CPSR), uc.reg_read(UC_ARM_REG_R7)
    flag = ctypes.c_uint32.from_address(env + thumb)
    ok = True
    for t in (1, 0):
        uc.reg_write(UC_ARM_REG_CPSR, (cpsr & ~0x20) | (t << 5))
        uc.reg_write(UC_ARM_REG_R7, 0x1234_5670 + t)
        ok &= flag.value == t and ctypes.c_uint32.from_address(env + 28).value == 0x1234_5670 + t
    uc.reg_write(UC_ARM_REG_CPSR, cpsr)
    uc.reg_write(UC_ARM_REG_R7, r7)
    if not ok:
        raise IcountUnavailable("unicorn's register file is not where calibration found it")
    return env, env + thumb


# ---- exact budgets with block counting (emu.native.BlockHook) ----------------------------
def tail_stop(code: bytes, pc: int, thumb: bool, cpsr: int, left: int) -> int | None:
    """Where a run that must retire `left` more instructions of the block at `pc` (its bytes:
    `code`) stops: after `left` instructions, or - when that boundary is inside a Thumb IT
    block - after the IT block, as Unicorn's count= does (it never stops where QEMU's
    translator has condexec_mask set). None: no such boundary inside the block (run it
    whole). `cpsr` gives the IT state the block starts with."""
    if not thumb:
        return pc + 4 * left if 4 * left < len(code) else None
    itstate = ((cpsr >> 10) & 0x3F) << 2 | ((cpsr >> 25) & 3)
    cond, mask = itstate >> 4, (itstate & 0xF) << 1       # QEMU's condexec_cond / _mask
    off = n = 0
    while off + 2 <= len(code):
        if n >= left and mask == 0:
            return pc + off
        hw = int.from_bytes(code[off:off + 2], "little")
        if thumb32(hw):
            off += 4
        else:
            off += 2
            if hw & 0xFF00 == 0xBF00 and hw & 0xF and mask == 0:      # IT
                cond, mask = (hw >> 4) & 0xE, hw & 0x1F
        if mask:
            cond = (cond & 0xE) | ((mask >> 4) & 1)
            mask = (mask << 1) & 0x1F
        n += 1
    return None


def it_skipped(pcs: list, read_code) -> int:
    """How many Thumb instructions inside IT blocks failed their condition, from the
    addresses Unicorn's code hooks saw in order (`pcs`): a failed one calls no hook (its
    hook is emitted after the condition's branch) yet is architecturally executed and
    counted (emu.native counts blocks; QEMU's -icount counts it too)."""
    n = 0
    for i, a in enumerate(pcs):
        hw = int.from_bytes(read_code(a, 2), "little")
        if hw & 0xFF00 != 0xBF00 or not hw & 0xF:
            continue
        length = 4 - ((hw & 0xF) & -(hw & 0xF)).bit_length() + 1     # IT block length
        at, j = a + 2, i + 1
        for _ in range(length):
            if j < len(pcs) and pcs[j] == at:
                j += 1
            else:
                n += 1
            first = int.from_bytes(read_code(at, 2), "little")
            at += 4 if thumb32(first) else 2
    return n


class BlockCount:
    """Unicorn-counter semantics (`value`: instructions started in this emu_start, the one in
    progress included) over a native block hook, for code that reads the count from inside
    a hook during a run (emu.cpu insn_index, tracing)."""

    def __init__(self, cpu) -> None:
        self._cpu = cpu

    @property
    def value(self) -> int:
        cpu = self._cpu
        hook = cpu._native
        if cpu._fetch_fill:
            return hook.count           # a fetch fill: the next block has not started
        pc = cpu.raw.read(UC_ARM_REG_PC)
        done = hook.retired(pc, False)
        return hook.count if done < 0 else done + 1


# ---- where a hook's address bounds live (struct hook) ------------------------------------
_BOUNDS: int | None = None


def hook_bounds_offset(handle: int, begin: int, end: int) -> int:
    """Offset of `begin` (then `end`) in the struct hook behind a uc_hook handle created with
    those bounds: found once, checked on every call."""
    global _BOUNDS
    words = np.frombuffer(ctypes.string_at(handle, 64), dtype="<u8")
    if _BOUNDS is None:
        hits = [i * 8 for i in range(7) if int(words[i]) == begin and int(words[i + 1]) == end]
        if len(hits) != 1:
            raise IcountUnavailable("cannot locate a hook's address range")
        _BOUNDS = hits[0]
    i = _BOUNDS // 8
    if int(words[i]) != begin or int(words[i + 1]) != end:
        raise IcountUnavailable("a hook's address range is not where calibration found it")
    return _BOUNDS
