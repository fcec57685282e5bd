#!/usr/bin/env python3
"""Guest speed benchmarks: our stage-2 (no faults) against raw Unicorn, in one process; and
the cost of dirty page logging (faults, enable, get_dirty_log, eager vs lazy block splitting).

    python bench/run.py [--json] [--quick] [--rows SUBSTRING]

Each row is a registered function returning `Result` tuples whose first four fields are
(row, value, unit, target); `--json` prints exactly those four as one JSON object per line.

The two sides of a "vs raw unicorn" row run the same machine code for the same iterations:
  baseline  raw Unicorn: Uc(UC_ARCH_ARM), ctl_set_page_size(4096), the default TLB mode
            (UC_TLB_CPU, guest MMU off: VA = PA), RAM mapped RWX at its guest address by
            mem_map_ptr, no hooks at all, the run ends at an `until` address, count=0.
  ours      emu.machine.Machine with icount off: RAM at IPA 0x40000000 backed by host memory
            at PA >= 0x1_0000_0000, vm.map_all() pre-faults every memslot (2 MiB blocks for
            RAM), and the hypervisor's run loop runs the guest until its PSCI SYSTEM_OFF HVC.
            Every guest access goes through the TLB-fill hook and the MMU model.
Every measurement is checked: registers against closed forms or the other side, memory
against a numpy model, zero stage-2 faults on our side, so a broken translation cannot
produce a fast number.

The dirty-logging rows (DESIGN 3, 6) use a Machine with an extra memslot at 0x80000000:
  guest rows    a real guest loop (`touch`: one store per page; `peek`: one load per page) under
                Machine.run, minus the same pass over pages that no longer fault, both from
                cold TLBs: what remains is the fault path end to end (denied TLB fill, exit,
                syndrome, hypervisor, resume). Fault, exit, flush and table-page counts, the
                stored/loaded values, the dirty bitmap and the slot's descriptors are checked.
  hypervisor    hyp.dirty.enable_logging / get_dirty_log timed directly on a 1 GiB slot that
                is fully mapped first (--quick: 64 MiB, value scaled to 1 GiB), then checked
                against the slot's descriptors read straight from the tables.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import unicorn  # noqa: E402
from unicorn import UC_ARCH_ARM, UC_MODE_ARM, UC_PROT_ALL, Uc  # noqa: E402
from unicorn import arm_const as A  # noqa: E402

from emu.machine import RAM_BASE, Extra, Machine  # noqa: E402
from hyp import dirty  # noqa: E402
from hyp.arch import descriptors as d  # noqa: E402
from hyp.arch.descriptors import Prot  # noqa: E402
from hyp.arch.walk import table_index  # noqa: E402
from hyp.exits import Hypercall  # noqa: E402

MASK32 = 0xFFFF_FFFF

# ---- guest code -----------------------------------------------------------------------
# ARM (A32) encodings from arm-none-eabi-as -march=armv7-a. Every loop ends in
#     movw r0, #8 ; movt r0, #0x8400 ; hvc #0     (PSCI SYSTEM_OFF)
# raw Unicorn stops at the movw (`until`); our hypervisor powers the VM off at the HVC.
_EXIT_SEQ = [
    (0xE3000008, "movw  r0, #8"),
    (0xE3480400, "movt  r0, #0x8400"),
    (0xE1400070, "hvc   #0"),
]
EXIT_INSNS = len(_EXIT_SEQ)

PROGRAMS: dict[str, list[tuple[int, str]]] = {
    # ALU loop. In: r0 = iterations, r1, r2 = seeds. Out: r1 = r1 + n(n+1)/2, r2 mixed.
    "alu": [
        (0xE0911000, "loop: adds  r1, r1, r0"),
        (0xE02223E1, "      eor   r2, r2, r1, ror #7"),
        (0xE2500001, "      subs  r0, r0, #1"),
        (0x1AFFFFFB, "      bne   loop"),
    ],
    # Load sweep. In: r0 = passes, r4 = base, r5 = end, r6 = seed. Out: r6 += every word.
    "load": [
        (0xE1A01004, "pass: mov   r1, r4"),
        (0xE4912004, "word: ldr   r2, [r1], #4"),
        (0xE0866002, "      add   r6, r6, r2"),
        (0xE1510005, "      cmp   r1, r5"),
        (0x1AFFFFFB, "      bne   word"),
        (0xE2500001, "      subs  r0, r0, #1"),
        (0x1AFFFFF8, "      bne   pass"),
    ],
    # Store sweep. In: r0 = passes, r2 = first value, r4 = base, r5 = end.
    # Word i of pass p gets r2 + p*W + i (W = words in the sweep).
    "store": [
        (0xE1A01004, "pass: mov   r1, r4"),
        (0xE4812004, "word: str   r2, [r1], #4"),
        (0xE2822001, "      add   r2, r2, #1"),
        (0xE1510005, "      cmp   r1, r5"),
        (0x1AFFFFFB, "      bne   word"),
        (0xE2500001, "      subs  r0, r0, #1"),
        (0x1AFFFFF8, "      bne   pass"),
    ],
    # STM loop. In: r0 = passes, r10 = base, r11 = end, r2-r9 = values; r2 counts blocks.
    "stm": [
        (0xE1A0100A, "pass: mov   r1, r10"),
        (0xE8A103FC, "blk:  stmia r1!, {r2-r9}"),
        (0xE2822001, "      add   r2, r2, #1"),
        (0xE151000B, "      cmp   r1, r11"),
        (0x1AFFFFFB, "      bne   blk"),
        (0xE2500001, "      subs  r0, r0, #1"),
        (0x1AFFFFF8, "      bne   pass"),
    ],
    # One store per page (dirty-logging rows). In: r0 = stores, r2 = first value, r4 = base,
    # r6 = stride. Store i writes r2 + i at base + i*stride. Out: r2 += n, r4 = base + n*stride.
    "touch": [
        (0xE5842000, "loop: str   r2, [r4]"),
        (0xE2822001, "      add   r2, r2, #1"),
        (0xE0844006, "      add   r4, r4, r6"),
        (0xE2500001, "      subs  r0, r0, #1"),
        (0x1AFFFFFA, "      bne   loop"),
    ],
    # One load per page (dirty-logging rows). In: r0 = loads, r4 = base, r5 = seed, r6 = stride.
    # Out: r5 += the word at base + i*stride for every i, r4 = base + n*stride.
    "peek": [
        (0xE5941000, "loop: ldr   r1, [r4]"),
        (0xE0855001, "      add   r5, r5, r1"),
        (0xE0844006, "      add   r4, r4, r6"),
        (0xE2500001, "      subs  r0, r0, #1"),
        (0x1AFFFFFA, "      bne   loop"),
    ],
}


def _layout() -> tuple[bytes, dict[str, tuple[int, int]]]:
    """All programs in one code page at RAM_BASE, 64 bytes apart: name -> (entry, until)."""
    code = bytearray()
    where = {}
    for name, body in PROGRAMS.items():
        entry = RAM_BASE + len(code)
        words = [w for w, _ in body + _EXIT_SEQ]
        code += struct.pack(f"<{len(words)}I", *words)
        where[name] = (entry, entry + 4 * len(body))
        code += b"\0" * (-len(code) % 64)
    assert len(code) <= 0x1000
    return bytes(code), where


CODE, ENTRY = _layout()
DATA_OFFSET = 2 << 20            # data sweeps start at RAM_BASE + 2 MiB, away from the code
DATA = RAM_BASE + DATA_OFFSET


# ---- sizes ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    reps: int                    # measured repetitions per side (after one warm-up)
    alu_iters: int               # ALU loop iterations (4 instructions each)
    icount_iters: int            # ALU iterations for the icount-on side (it is ~8x slower)
    sweep: int                   # bytes swept by the load/store/STM loops
    load_passes: int
    store_passes: int
    stm_passes: int
    # dirty-logging rows
    dirty_pages: int             # "dirty fault": stores (= faults) per guest pass
    big_slot: int                # the "1 GiB" memslot (smaller with --quick; rows scale to 1 GiB)
    log_reps: int                # timed repetitions of enable_logging / get_dirty_log 1%
    half_reps: int               # timed repetitions of get_dirty_log 50% (re-dirtying is slow)
    blocks: int                  # 2 MiB blocks written once each ("lazy dissolve per block")
    block_sweep: int             # 2 MiB blocks whose every page is written / read
    policy_reps: int             # measured repetitions of the eager-vs-lazy guest passes


DEFAULT = Sizes(reps=7, alu_iters=200_000_000, icount_iters=25_000_000, sweep=16 << 20,
                load_passes=20, store_passes=6, stm_passes=6,
                dirty_pages=4096, big_slot=1 << 30, log_reps=5, half_reps=3, blocks=256,
                block_sweep=8, policy_reps=5)
QUICK = Sizes(reps=1, alu_iters=5_000_000, icount_iters=1_000_000, sweep=1 << 20,
              load_passes=2, store_passes=1, stm_passes=1,
              dirty_pages=256, big_slot=64 << 20, log_reps=1, half_reps=1, blocks=8,
              block_sweep=1, policy_reps=1)


# ---- the two sides ----------------------------------------------------------------------
class BenchError(Exception):
    """A measurement failed its correctness check: no number is printed for it."""


_R = [A.UC_ARM_REG_R0 + i for i in range(13)]


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out
    finally:
        gc.enable()


class RawUnicorn:
    """The baseline: Unicorn as a user would set it up for an identity-mapped guest."""
    label = ("raw Unicorn: Uc(UC_ARCH_ARM), ctl_set_page_size(4096), default TLB mode "
             "(UC_TLB_CPU, MMU off, VA = PA), RAM mapped RWX at 0x40000000 (mem_map_ptr of a "
             "numpy buffer), no hooks, emu_start(entry, until=exit, count=0)")
    exit_insns = 0               # stops on the movw: the exit sequence does not run

    def __init__(self, ram: int) -> None:
        uc = Uc(UC_ARCH_ARM, UC_MODE_ARM)
        uc.ctl_set_page_size(4096)
        self.mem = np.zeros(ram, dtype=np.uint8)
        uc.mem_map_ptr(RAM_BASE, ram, UC_PROT_ALL, self.mem.ctypes.data)
        self.mem[:len(CODE)] = np.frombuffer(CODE, dtype=np.uint8)
        self.uc = uc

    def data(self, size: int) -> np.ndarray:
        """The sweep region as uint32 words (a live view of guest memory)."""
        return self.mem[DATA_OFFSET:DATA_OFFSET + size].view("<u4")

    def reg(self, n: int) -> int:
        return self.uc.reg_read(_R[n])

    def run(self, prog: str, regs: dict[int, int]) -> float:
        entry, until = ENTRY[prog]
        for n, v in regs.items():
            self.uc.reg_write(_R[n], v & MASK32)
        dt, _ = _timed(lambda: self.uc.emu_start(entry, until))
        pc = self.uc.reg_read(A.UC_ARM_REG_PC)
        if pc != until:
            raise BenchError(f"raw unicorn stopped at {pc:#x}, expected {until:#x}")
        return dt


class Ours:
    """Our side: the full board under our hypervisor, stage 2 on and pre-faulted."""
    exit_insns = EXIT_INSNS

    def __init__(self, ram: int, *, icount: bool) -> None:
        m = Machine(ram=ram, icount=icount)
        m.vm.write_guest(RAM_BASE, CODE)
        m.vm.map_all()
        self.m = m
        self.icount = icount
        self.slot = m.ram
        self._data_off = self.slot.pa_of(DATA) - m.host.mem.base
        self.fills = 0               # TLB fills (Python hook calls) of the last run
        self.instructions = 0        # exact count of the last run (icount on only)
        self.label = ("ours:     emu.machine.Machine, icount " + ("on" if icount else "off") +
                      f", RAM IPA {RAM_BASE:#x} -> host PA {self.slot.pa:#x} by stage 2 "
                      "(vm.map_all(): 2 MiB blocks; runs must take no stage-2 fault), "
                      "UC_TLB_VIRTUAL + TLB-fill hook over the MMU model, hypervisor run loop "
                      "until the guest's PSCI SYSTEM_OFF")

    def data(self, size: int) -> np.ndarray:
        return self.m.host.mem.buf[self._data_off:self._data_off + size].view("<u4")

    def reg(self, n: int) -> int:
        return self.m.cpu.reg(n)

    def _faults(self) -> int:
        st = self.m.vm.stats
        return sum(v for k, v in st.items() if k.startswith("s2 ") or k.startswith("mmio")) + \
            self.m.cpu.stats["denied"] + st["inject pabt"]

    def run(self, prog: str, regs: dict[int, int]) -> float:
        entry, until = ENTRY[prog]
        cpu = self.m.cpu
        for n, v in regs.items():
            cpu.set_reg(n, v)
        cpu.set_pc(entry, False)
        faults, fills, insns = self._faults(), cpu.stats["fills"], cpu.instructions
        dt, res = _timed(self.m.run)
        if res.reason != "off" or not isinstance(res.exit, Hypercall) or \
                res.exit.pc != until + 4 * EXIT_INSNS:
            raise BenchError(f"ours did not power off at the exit HVC: {res}")
        if self._faults() != faults:
            raise BenchError(f"ours took stage-2 faults/MMIO exits in a timed run: "
                             f"{dict(self.m.vm.stats)} {cpu.stats}")
        self.fills = cpu.stats["fills"] - fills
        self.instructions = cpu.instructions - insns
        return dt


# ---- rows -------------------------------------------------------------------------------
class Result(NamedTuple):
    """One output row. JSON carries the first four fields; the rest is for the table."""
    row: str
    value: float
    unit: str
    target: str | None
    base_speed: float | None = None     # Minsn/s of the baseline side
    our_speed: float | None = None      # Minsn/s of the measured side
    note: str = ""
    noise: float | None = None          # relative run-to-run spread of the value (0.01 = 1%)


@dataclass
class Context:
    """Lazily built machines shared by the rows of one run."""
    sizes: Sizes
    progress: Callable[[str], None]
    _cache: dict = field(default_factory=dict)

    @property
    def ram(self) -> int:
        return DATA_OFFSET + max(self.sizes.sweep, 2 << 20)

    def _get(self, key, make):
        if key not in self._cache:
            self.progress(f"setting up {key} ...")
            self._cache[key] = make()
        return self._cache[key]

    @property
    def raw(self) -> RawUnicorn:
        return self._get("raw unicorn", lambda: RawUnicorn(self.ram))

    @property
    def ours(self) -> Ours:
        return self._get("ours (icount off)", lambda: Ours(self.ram, icount=False))

    @property
    def ours_icount(self) -> Ours:
        return self._get("ours (icount on)", lambda: Ours(self.ram, icount=True))


@dataclass
class Side:
    """One side of a comparison: which machine, which program, how much work, how to check."""
    machine: object
    prog: str
    insns: int                                  # guest instructions per run (incl. the exit)
    regs: Callable[[int], dict[int, int]]       # seed -> input registers
    check: Callable[[object, int], None]        # (machine, seed) -> raises BenchError

    @property
    def executed(self) -> int:
        return self.insns - EXIT_INSNS + self.machine.exit_insns


@dataclass(frozen=True)
class Measurement:
    base: float                  # best Minsn/s of the baseline side
    ours: float                  # best Minsn/s of the measured side
    noise: float                 # sum of both sides' (median - best) / best

    @property
    def ratio(self) -> float:
        return self.ours / self.base


def compare(ctx: Context, base: Side, ours: Side,
            cross: Callable[[object, object], None] | None = None) -> Measurement:
    """Warm up once, then `reps` interleaved runs of each side (alternating which goes first,
    so both see the same noise); every run is checked. Speeds are from each side's best run
    (noise only ever adds time); the median's distance from the best estimates the noise."""
    times: tuple[list[float], list[float]] = ([], [])
    for rep in range(ctx.sizes.reps + 1):
        seed = (0x1234_5678 + 0x9E37_79B9 * rep) & MASK32
        order = (0, 1) if rep % 2 == 0 else (1, 0)
        for i in order:
            side = (base, ours)[i]
            dt = side.machine.run(side.prog, side.regs(seed))
            side.check(side.machine, seed)
            if rep:                                  # rep 0 is the warm-up
                times[i].append(dt)
        if cross is not None:
            cross(base.machine, ours.machine)
    noise = sum(statistics.median(t) / min(t) - 1 for t in times)
    return Measurement(base.executed / min(times[0]) / 1e6,
                       ours.executed / min(times[1]) / 1e6, noise)


def _expect(what: str, got: int, want: int) -> None:
    if got != want:
        raise BenchError(f"{what}: got {got:#x}, expected {want:#x}")


def _same_regs(regs: range) -> Callable[[object, object], None]:
    def cross(a, b) -> None:
        va, vb = [a.reg(n) for n in regs], [b.reg(n) for n in regs]
        if va != vb:
            raise BenchError(f"registers differ between sides: {va} vs {vb}")
    return cross


def _same_memory(size: int, regs: range) -> Callable[[object, object], None]:
    same_regs = _same_regs(regs)

    def cross(a, b) -> None:
        same_regs(a, b)
        if not np.array_equal(a.data(size), b.data(size)):
            raise BenchError("memory differs between raw unicorn and ours")
    return cross


ROWS: list[tuple[tuple[str, ...], Callable[[Context], list[Result]]]] = []


def register(*names: str):
    """Add a row function producing the rows `names` (used by --rows before running it)."""
    def deco(fn):
        ROWS.append((names, fn))
        return fn
    return deco


def _ratio_row(name: str, m: Measurement, note: str) -> Result:
    return Result(name, round(m.ratio, 3), "x", ">= 1.0", m.base, m.ours, note, m.noise)


def _fills_note(ours: Ours, passes: int, size: int) -> str:
    visits = passes * (size >> 12)
    return (f"{size >> 20 if size >= 1 << 20 else size >> 10} "
            f"{'MiB' if size >= 1 << 20 else 'KiB'} x {passes} pass{'es' * (passes != 1)}; "
            f"ours {ours.fills} TLB fills/run ({ours.fills / visits:.2f} per page visited)")


# -- ALU --------------------------------------------------------------------------------
def _alu_side(machine, iters: int) -> Side:
    def regs(seed):
        return {0: iters, 1: seed, 2: seed ^ 0x5A5A_5A5A}

    def check(m, seed):
        _expect("ALU r1", m.reg(1), (seed + iters * (iters + 1) // 2) & MASK32)
        if machine.exit_insns == 0:
            _expect("ALU r0", m.reg(0), 0)
    return Side(machine, "alu", 4 * iters + EXIT_INSNS, regs, check)


@register("ALU loop vs raw unicorn")
def alu_vs_raw(ctx: Context) -> list[Result]:
    n = ctx.sizes.alu_iters
    m = compare(ctx, _alu_side(ctx.raw, n), _alu_side(ctx.ours, n), _same_regs(range(1, 13)))
    return [_ratio_row("ALU loop vs raw unicorn", m,
                       f"{4 * n / 1e6:.0f}M insns/run; ours {ctx.ours.fills} TLB fills/run")]


@register("ALU loop icount on vs off")
def alu_icount(ctx: Context) -> list[Result]:
    off, on = ctx.ours, ctx.ours_icount
    n_off, n_on = ctx.sizes.alu_iters, ctx.sizes.icount_iters
    on_side = _alu_side(on, n_on)
    check_on = on_side.check

    def check_exact(m, seed):
        check_on(m, seed)
        _expect("icount instructions", m.instructions, on_side.insns)   # exact, every run
    on_side.check = check_exact
    m = compare(ctx, _alu_side(off, n_off), on_side)
    return [Result("ALU loop icount on vs off", round(m.ratio, 3), "x", None, m.base, m.ours,
                   f"baseline = ours icount off ({4 * n_off / 1e6:.0f}M insns), measured = "
                   f"ours icount on ({4 * n_on / 1e6:.0f}M insns, counted exactly)", m.noise)]


# -- sweeps -----------------------------------------------------------------------------
def _sweep_insns(passes: int, iters_per_pass: int) -> int:
    return passes * (4 * iters_per_pass + 3) + EXIT_INSNS


@register("load sweep vs raw unicorn")
def load_sweep(ctx: Context) -> list[Result]:
    size, passes = ctx.sizes.sweep, ctx.sizes.load_passes
    words = size // 4
    pattern = ((np.arange(words, dtype=np.uint64) * 2654435761 + 12345) & MASK32).astype("<u4")
    total = int(pattern.sum(dtype=np.uint64))
    raw, ours = ctx.raw, ctx.ours
    for m in (raw, ours):
        m.data(size)[:] = pattern

    def side(machine):
        def regs(seed):
            return {0: passes, 4: DATA, 5: DATA + size, 6: seed}

        def check(m, seed):
            _expect("load checksum r6", m.reg(6), (seed + passes * total) & MASK32)
            _expect("load end r1", m.reg(1), DATA + size)
        return Side(machine, "load", _sweep_insns(passes, words), regs, check)

    m = compare(ctx, side(raw), side(ours), _same_regs(range(1, 13)))
    return [_ratio_row("load sweep vs raw unicorn", m, _fills_note(ours, passes, size))]


@register("store sweep vs raw unicorn")
def store_sweep(ctx: Context) -> list[Result]:
    size, passes = ctx.sizes.sweep, ctx.sizes.store_passes
    words = size // 4
    idx = np.arange(words, dtype=np.uint64)

    def side(machine):
        def regs(seed):
            return {0: passes, 2: seed, 4: DATA, 5: DATA + size}

        def check(m, seed):
            _expect("store r2", m.reg(2), (seed + passes * words) & MASK32)
            want = ((seed + (passes - 1) * words + idx) & MASK32).astype("<u4")
            if not np.array_equal(m.data(size), want):
                raise BenchError("store sweep: guest memory does not hold what was stored")
        return Side(machine, "store", _sweep_insns(passes, words), regs, check)

    raw, ours = ctx.raw, ctx.ours
    m = compare(ctx, side(raw), side(ours), _same_memory(size, range(1, 13)))
    return [_ratio_row("store sweep vs raw unicorn", m, _fills_note(ours, passes, size))]


@register("STM loop vs raw unicorn")
def stm_loop(ctx: Context) -> list[Result]:
    size, passes = ctx.sizes.sweep, ctx.sizes.stm_passes
    blocks = size // 32
    idx = np.arange(blocks, dtype=np.uint64)

    def values(seed):
        return [seed] + [(seed * (k + 3) + k) & MASK32 for k in range(1, 8)]

    def side(machine):
        def regs(seed):
            r = {0: passes, 10: DATA, 11: DATA + size}
            r.update({2 + k: v for k, v in enumerate(values(seed))})
            return r

        def check(m, seed):
            v = values(seed)
            _expect("STM r2", m.reg(2), (seed + passes * blocks) & MASK32)
            got = m.data(size).reshape(blocks, 8)
            first = ((seed + (passes - 1) * blocks + idx) & MASK32).astype("<u4")
            if not (np.array_equal(got[:, 0], first) and
                    (got[:, 1:] == np.array(v[1:], dtype="<u4")).all()):
                raise BenchError("STM loop: guest memory does not hold what was stored")
        return Side(machine, "stm", _sweep_insns(passes, blocks), regs, check)

    raw, ours = ctx.raw, ctx.ours
    m = compare(ctx, side(raw), side(ours), _same_memory(size, range(1, 13)))
    return [_ratio_row("STM loop vs raw unicorn", m, _fills_note(ours, passes, size))]


# ---- dirty logging ----------------------------------------------------------------------
# These rows run the hypervisor's dirty-logging paths (hyp/dirty.py, hyp/stage2.py) on a board
# with one extra memslot at LOG_IPA. Guest rows time whole `Machine.run`s of the `touch`/`peek`
# loops and subtract the same pass over pages that no longer fault (cold TLBs on both sides),
# so what remains is the faults: TLB-fill denial, exit, syndrome, handler, resume. Every pass
# is checked: fault/exit/flush/table-page counts, the values the guest stored or loaded, the
# dirty bitmap, and the stage-2 descriptors of the slot.
LOG_IPA = 0x8000_0000
PAGE = 4 << 10
BLOCK = 2 << 20
GIB = 1 << 30
_LEAF_SIZE = {1: GIB, 2: BLOCK, 3: PAGE}
_U64 = np.uint64
_DESC_W = _U64(d.S2_S2AP.set(0, 0b10))      # S2AP[1] (HAP[2]): write permission
_DESC_ADDR = _U64(d.ADDR_MASK)


class LogBench:
    """emu.machine.Machine (icount off, split policy `split`) with 2 MiB of RAM holding the
    code at RAM_BASE and a memslot of `size` bytes at LOG_IPA whose largest leaf is
    `max_level`; both pre-faulted with their largest leaves (flash stays unmapped: unused)."""

    def __init__(self, size: int, max_level: int, split: str = "lazy") -> None:
        if size % BLOCK:
            raise ValueError("dirty-logging slots are whole 2 MiB blocks")
        m = Machine(ram=2 << 20, icount=False, split=split, max_level=2,
                    extra=[Extra(LOG_IPA, size, max_level, "log")])
        m.vm.write_guest(RAM_BASE, CODE)
        m.vm.update_vmid()
        self.m, self.vm = m, m.vm
        self.slot = m.vm.memslot(LOG_IPA)
        for slot in (m.ram, self.slot):
            ipa = slot.ipa
            while ipa < slot.end:                       # vm.map_all() for these two slots
                level = self.vm.map_fault(slot, ipa)
                ipa = (ipa & ~(_LEAF_SIZE[level] - 1)) + _LEAF_SIZE[level]
        self.tables0 = m.host.pool.in_use

    # -- counters ------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        st, cs = self.vm.stats, self.m.cpu.stats
        other = sum(v for k, v in st.items() if k.startswith("s2 ") and
                    k not in ("s2 permission", "s2 translation"))
        return {"exits": st["exits"], "dirty": st["dirty faults"], "perm": st["s2 permission"],
                "trans": st["s2 translation"],
                "other": other + st["mmio read"] + st["mmio write"] + st["inject pabt"],
                "denied": cs["denied"], "fills": cs["fills"],
                "flushes": self.m.host.tlb.stats["flush_vmid"],
                "tables": self.m.host.pool.in_use}

    @staticmethod
    def expect(what: str, got: dict[str, int], **want: int) -> None:
        bad = [f"{k} {got[k]} (expected {v})" for k, v in want.items() if got[k] != v]
        if bad:
            raise BenchError(f"{what}: " + ", ".join(bad))

    def cold(self) -> None:
        """Empty both TLBs (model and Unicorn) so the next pass starts as a faulting one did."""
        self.vm.stage2.flush("bench: cold TLB")

    # -- guest passes ----------------------------------------------------------------------
    def _run(self, prog: str, regs: dict[int, int]) -> tuple[float, dict[str, int]]:
        entry, until = ENTRY[prog]
        cpu = self.m.cpu
        for n, v in regs.items():
            cpu.set_reg(n, v)
        cpu.set_pc(entry, False)
        before = self.counts()
        dt, res = _timed(self.m.run)
        if res.reason != "off" or not isinstance(res.exit, Hypercall) or \
                res.exit.pc != until + 4 * EXIT_INSNS:
            raise BenchError(f"{prog} pass did not power off at the exit HVC: {res}")
        after = self.counts()
        return dt, {k: after[k] - before[k] for k in after}

    def _words(self, ipa: int, n: int, stride: int) -> np.ndarray:
        """The word at ipa + i*stride for i < n, straight from host memory (a live view)."""
        first = (self.slot.pa_of(ipa) - self.m.host.mem.base) >> 2
        return self.m.host.mem.w[first:first + n * (stride >> 2):stride >> 2]

    def touch(self, ipa: int, n: int, stride: int, value: int) -> tuple[float, dict[str, int]]:
        """The guest stores value + i at ipa + i*stride for i < n."""
        dt, c = self._run("touch", {0: n, 2: value, 4: ipa, 6: stride})
        _expect("touch r4", self.m.cpu.reg(4), ipa + n * stride)
        want = ((value + np.arange(n, dtype=np.uint64)) & MASK32).astype("<u4")
        if not np.array_equal(self._words(ipa, n, stride), want):
            raise BenchError("touch: guest memory does not hold what the guest stored")
        return dt, c

    def peek(self, ipa: int, n: int, stride: int, seed: int) -> tuple[float, dict[str, int]]:
        """The guest sums the words at ipa + i*stride for i < n into seed."""
        total = int(self._words(ipa, n, stride).sum(dtype=np.uint64))
        dt, c = self._run("peek", {0: n, 4: ipa, 5: seed, 6: stride})
        _expect("peek r5", self.m.cpu.reg(5), (seed + total) & MASK32)
        return dt, c

    # -- stage-2 state of the slot, read straight from the tables ---------------------------
    def descriptors(self) -> tuple[np.ndarray, np.ndarray]:
        """(l2, l3): the level-2 descriptor of every 2 MiB of the slot, and where it is a
        table the 512 level-3 descriptors under it (zeros elsewhere)."""
        s2, mem, slot = self.vm.stage2, self.m.host.mem, self.slot
        cfg = s2.cfg
        n = slot.size // BLOCK
        l2 = np.zeros(n, dtype=_U64)
        l3 = np.zeros((n, 512), dtype=_U64)
        for k in range(n):
            ipa = slot.ipa + k * BLOCK
            table, level = s2.root, cfg.start_level
            desc = mem.read64(table + 8 * table_index(ipa, level, cfg))
            while level < 2:
                if d.kind(desc, level) is not d.Kind.TABLE:
                    raise BenchError(f"IPA {ipa:#x}: no level-2 table under level {level}")
                table, level = desc & d.ADDR_MASK, level + 1
                desc = mem.read64(table + 8 * table_index(ipa, level, cfg))
            l2[k] = desc
            if d.kind(desc, 2) is d.Kind.TABLE:
                l3[k] = mem.table(desc & d.ADDR_MASK)
        return l2, l3

    def check_pages(self, what: str, writable: np.ndarray | None = None) -> None:
        """Every page of the slot is a level-3 page of its own PA, writable exactly where
        `writable` is set (nowhere if None)."""
        l2, l3 = self.descriptors()
        if not (l2 & _U64(3) == _U64(3)).all():
            raise BenchError(f"{what}: not every 2 MiB of the slot is a level-3 table")
        pages = l3.reshape(-1)
        pa = _U64(self.slot.pa) + (np.arange(pages.size, dtype=_U64) << _U64(12))
        if not ((pages & _U64(3) == _U64(3)) & (pages & _DESC_ADDR == pa)).all():
            raise BenchError(f"{what}: a page of the slot is unmapped or maps the wrong PA")
        self._check_w(what, (pages & _DESC_W) != 0, writable, "pages")

    def check_blocks(self, what: str, writable: bool | np.ndarray) -> None:
        """Every 2 MiB of the slot is one block of its own PA, writable exactly where
        `writable` (one bool per block, or one for all) says."""
        l2, _ = self.descriptors()
        pa = _U64(self.slot.pa) + (np.arange(l2.size, dtype=_U64) << _U64(21))
        if not ((l2 & _U64(3) == _U64(1)) & (l2 & _DESC_ADDR == pa)).all():
            raise BenchError(f"{what}: the slot is not mapped by 2 MiB blocks of its PA")
        self._check_w(what, (l2 & _DESC_W) != 0,
                      np.broadcast_to(np.asarray(writable, dtype=bool), l2.size), "blocks")

    @staticmethod
    def _check_w(what: str, w: np.ndarray, want: np.ndarray | None, unit: str) -> None:
        want = np.zeros(w.size, dtype=bool) if want is None else want
        if not np.array_equal(w, want):
            raise BenchError(f"{what}: {int((w & ~want).sum())} {unit} writable that should be "
                             f"read-only, {int((~w & want).sum())} read-only that should be "
                             f"writable")


def _seed(rep: int) -> int:
    return (0x1234_5678 + 0x9E37_79B9 * rep) & MASK32


def _spread(times: list[float]) -> float:
    return statistics.median(times) / min(times) - 1


def _fault_cost(with_faults: list[float], without: list[float], n: int) -> tuple[float, float]:
    """(us per fault, noise): best pass with faults minus best pass without, over n faults;
    noise = both sides' (median - best) relative to that difference."""
    diff = min(with_faults) - min(without)
    spread = (statistics.median(with_faults) - min(with_faults) +
              statistics.median(without) - min(without))
    return diff / n * 1e6, spread / diff if diff > 0 else float("inf")


def _scale_note(ctx: Context) -> tuple[float, str]:
    """Rows named per GiB / 1GiB: --quick measures a smaller slot and scales linearly."""
    size = ctx.sizes.big_slot
    if size == GIB:
        return 1.0, ""
    return GIB / size, f" [measured on {size >> 20} MiB, scaled x{GIB // size} to 1 GiB]"


DIRTY_ROWS: set[str] = set()


def register_dirty(*names: str):
    DIRTY_ROWS.update(names)
    return register(*names)


@register_dirty("dirty fault")
def dirty_fault(ctx: Context) -> list[Result]:
    n = ctx.sizes.dirty_pages
    b = LogBench(2 * n * PAGE, max_level=3)             # n stores to every other page
    slot, vm = b.slot, b.vm
    want_bitmap = np.zeros(slot.npages, dtype=bool)
    want_bitmap[::2] = True
    dirty.enable_logging(vm, slot)
    b.check_pages("after enable_logging")
    with_f, without = [], []
    fills = (0, 0)
    for rep in range(ctx.sizes.reps + 1):
        seed = _seed(rep)
        # Every store hits a write-protected page of the logging slot: one dirty fault each.
        dt_a, ca = b.touch(LOG_IPA, n, 2 * PAGE, seed)
        b.expect("dirty pass", ca, dirty=n, perm=n, trans=0, other=0, denied=n, exits=n + 1,
                 flushes=0, tables=0)
        # The same pass again, every page now writable: guest code + ordinary TLB fills.
        b.cold()
        dt_b, cb = b.touch(LOG_IPA, n, 2 * PAGE, seed ^ 0xFFFF)
        b.expect("writable pass", cb, dirty=0, perm=0, trans=0, other=0, denied=0, exits=1,
                 flushes=0, tables=0)
        b.check_pages("after the dirty pass", want_bitmap)
        f0 = b.counts()["flushes"]
        bitmap = dirty.get_dirty_log(vm, slot)          # re-protects exactly those pages
        if not np.array_equal(bitmap, want_bitmap):
            raise BenchError(f"dirty bitmap has {int(bitmap.sum())} pages, expected exactly "
                             f"the {n} the guest stored to")
        b.expect("get_dirty_log", b.counts(), flushes=f0 + 1)
        b.check_pages("after get_dirty_log")
        if rep:
            with_f.append(dt_a)
            without.append(dt_b)
            fills = (ca["fills"], cb["fills"])
    us, noise = _fault_cost(with_f, without, n)
    note = (f"{n} stores, one to every other page of a {slot.size >> 20} MiB 4K-mapped logging "
            f"slot, minus the same pass on writable pages: {min(with_f) / n * 1e6:.1f} vs "
            f"{min(without) / n * 1e6:.1f} us/store ({fills[0]} vs {fills[1]} TLB fills); "
            f"1 exit, 0 flushes per fault")
    return [Result("dirty fault", round(us, 3), "us", "<= 10", note=note, noise=noise)]


def _big_4k(ctx: Context) -> LogBench:
    return ctx._get("1 GiB-row slot mapped by 4 KiB pages",
                    lambda: LogBench(ctx.sizes.big_slot, max_level=3))


def _big_2m(ctx: Context, split: str) -> LogBench:
    return ctx._get(f"1 GiB-row slot mapped by 2 MiB blocks ({split} split)",
                    lambda: LogBench(ctx.sizes.big_slot, max_level=2, split=split))


@register_dirty("enable logging 4K per GiB", "enable logging 2M per GiB")
def enable_rows(ctx: Context) -> list[Result]:
    scale, scaled = _scale_note(ctx)
    out = []
    for name, b, leaves in (("enable logging 4K per GiB", _big_4k(ctx), "pages"),
                            ("enable logging 2M per GiB", _big_2m(ctx, "lazy"), "blocks")):
        vm, slot = b.vm, b.slot
        nleaves = slot.npages if leaves == "pages" else slot.size // BLOCK
        times = []
        for rep in range(ctx.sizes.log_reps):
            if slot.log_dirty:
                dirty.disable_logging(vm, slot)
            vm.stage2.set_prot(slot.ipa, slot.end, add=Prot.W)    # back to all writable
            if rep == 0:
                if leaves == "pages":
                    b.check_pages("before enable_logging", np.ones(slot.npages, dtype=bool))
                else:
                    b.check_blocks("before enable_logging", True)
            before = b.counts()
            dt, _ = _timed(lambda: dirty.enable_logging(vm, slot))
            times.append(dt)
            b.expect("enable_logging", b.counts(), flushes=before["flushes"] + 1,
                     tables=before["tables"])
            if leaves == "pages":
                b.check_pages("after enable_logging")
            else:
                b.check_blocks("after enable_logging", False)
            if slot.dirty.any():
                raise BenchError("enable_logging left dirty bits set")
        dirty.disable_logging(vm, slot)
        vm.stage2.set_prot(slot.ipa, slot.end, add=Prot.W)
        ms = min(times) * 1e3 * scale
        out.append(Result(name, round(ms, 3), "ms", "<= 10",
                          note=f"{nleaves} {leaves} write-protected + 1 VMID flush "
                               f"({min(times) / nleaves * 1e9:.0f} ns/{leaves[:-1]}), lazy "
                               f"split, best of {len(times)}{scaled}",
                          noise=_spread(times)))
    return out


@register_dirty("get_dirty_log 1GiB 1%", "get_dirty_log 1GiB 50%")
def get_dirty_log_rows(ctx: Context) -> list[Result]:
    scale, scaled = _scale_note(ctx)
    b = _big_4k(ctx)
    vm, slot = b.vm, b.slot
    if not slot.log_dirty:
        dirty.enable_logging(vm, slot)
    dirty.get_dirty_log(vm, slot)                  # start from a clean, fully protected slot
    b.check_pages("before dirtying")
    out = []
    for pct, target, reps in ((1, "<= 5", ctx.sizes.log_reps), (50, "<= 50", ctx.sizes.half_reps)):
        k = slot.npages * pct // 100
        times = []
        for rep in range(reps):
            rng = np.random.default_rng(0xD1 + 1000 * pct + rep)
            pages = np.sort(rng.choice(slot.npages, k, replace=False))
            want = np.zeros(slot.npages, dtype=bool)
            want[pages] = True
            # What hyp.abort does on a write fault to a logging slot, page by page (untimed).
            for gfn in pages.tolist():
                dirty.mark_dirty(vm, slot, gfn)
                vm.map_fault(slot, slot.ipa + gfn * PAGE, writable=True)
            if rep == 0:
                b.check_pages("after dirtying", want)
            before = b.counts()
            dt, bitmap = _timed(lambda: dirty.get_dirty_log(vm, slot))
            times.append(dt)
            if not np.array_equal(bitmap, want):
                raise BenchError(f"get_dirty_log {pct}%: bitmap has {int(bitmap.sum())} pages "
                                 f"({int((bitmap != want).sum())} differ from the {k} dirtied)")
            b.expect(f"get_dirty_log {pct}%", b.counts(), flushes=before["flushes"] + 1,
                     tables=before["tables"])
            if slot.dirty.any():
                raise BenchError("get_dirty_log left dirty bits set")
            b.check_pages(f"after get_dirty_log {pct}%")      # exactly those re-protected
        ms = min(times) * 1e3 * scale
        out.append(Result(f"get_dirty_log 1GiB {pct}%", round(ms, 3), "ms", target,
                          note=f"{k} of {slot.npages} pages dirty (random), taken, cleared and "
                               f"re-protected + 1 VMID flush; best of {len(times)}{scaled}",
                          noise=_spread(times)))
    return out


@register_dirty("eager split 1GiB at enable")
def eager_split_row(ctx: Context) -> list[Result]:
    scale, scaled = _scale_note(ctx)
    b = _big_2m(ctx, "eager")
    vm, slot = b.vm, b.slot
    nblocks = slot.size // BLOCK
    times, flushes = [], 0
    b.check_blocks("before enable_logging", True)
    for rep in range(ctx.sizes.log_reps):
        before, splits = b.counts(), vm.stats["eager splits"]
        dt, _ = _timed(lambda: dirty.enable_logging(vm, slot))
        times.append(dt)
        after = b.counts()
        flushes = after["flushes"] - before["flushes"]
        _expect("eager splits", vm.stats["eager splits"] - splits, nblocks)
        b.expect("eager enable_logging", after, tables=before["tables"] + nblocks)
        b.check_pages("after eager enable_logging")
        dirty.disable_logging(vm, slot)
        _expect("rebuilt blocks", dirty.rebuild_huge(vm, slot), nblocks)
        b.expect("rebuild_huge", b.counts(), tables=b.tables0)
        b.check_blocks("after rebuild_huge", True)
    ms = min(times) * 1e3 * scale
    return [Result("eager split 1GiB at enable", round(ms, 3), "ms", None,
                   note=f"enable_logging, split='eager': {nblocks} blocks -> {nblocks} level-3 "
                        f"tables of write-protected pages ({min(times) / nblocks * 1e6:.1f} "
                        f"us/block), {flushes} VMID flushes (one break-before-make per split "
                        f"+ the final one); best of {len(times)}{scaled}",
                   noise=_spread(times))]


@register_dirty("lazy dissolve per block", "dirty 2M block lazy", "dirty 2M block eager",
                "read 2M block after 1st write lazy", "read 2M block after 1st write eager")
def policy_rows(ctx: Context) -> list[Result]:
    """The split policies on a guest: (A) write every page of K blocks, (B) write one page of
    each of N blocks (lazy: dissolve), (C) after B, read every page of K blocks."""
    nblocks, k = ctx.sizes.blocks, ctx.sizes.block_sweep
    kp = k * 512
    res: dict[str, dict[str, tuple[float, float]]] = {}
    notes: dict[str, dict[str, dict[str, int]]] = {}
    for split in ("lazy", "eager"):
        b = LogBench(nblocks * BLOCK, max_level=2, split=split)
        vm, slot = b.vm, b.slot
        lazy = split == "lazy"
        every_page = np.zeros(slot.npages, dtype=bool)
        every_page[:kp] = True
        first_pages = np.zeros(slot.npages, dtype=bool)
        first_pages[::512] = True

        def arm() -> None:
            splits = vm.stats["eager splits"]
            dirty.enable_logging(vm, slot)
            _expect("eager splits", vm.stats["eager splits"] - splits, 0 if lazy else nblocks)

        def rearm(want: np.ndarray, dissolved: int) -> None:
            """Harvest, stop logging, rebuild the blocks that became tables, log again."""
            bitmap = dirty.get_dirty_log(vm, slot)
            if not np.array_equal(bitmap, want):
                raise BenchError(f"{split}: dirty bitmap has {int(bitmap.sum())} pages, "
                                 f"expected {int(want.sum())}")
            dirty.disable_logging(vm, slot)
            _expect("rebuilt blocks", dirty.rebuild_huge(vm, slot), dissolved)
            b.expect("rebuild_huge", b.counts(), tables=b.tables0)
            # rebuilt blocks are writable; blocks never split stay write-protected
            b.check_blocks("after rebuild_huge", np.arange(nblocks) < dissolved)
            arm()

        arm()
        times: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in "ABC"}
        counts: dict[str, dict[str, int]] = {}
        for rep in range(ctx.sizes.policy_reps + 1):
            seed = _seed(rep)
            # A: write every page of the first k blocks.
            dt_a, ca = b.touch(LOG_IPA, kp, PAGE, seed)
            b.expect(f"{split} A", ca, dirty=kp, perm=k if lazy else kp,
                     trans=kp - k if lazy else 0, other=0, flushes=k if lazy else 0,
                     tables=k if lazy else 0)
            b.cold()
            dt_b, cb = b.touch(LOG_IPA, kp, PAGE, seed ^ 0xFFFF)
            b.expect(f"{split} A writable", cb, exits=1, denied=0)
            counts["A"] = ca
            rearm(every_page, k if lazy else nblocks)
            times["A"][0].append(dt_a)
            times["A"][1].append(dt_b)
            # B: write the first page of every block.
            dt_a, ca = b.touch(LOG_IPA, nblocks, BLOCK, seed)
            b.expect(f"{split} B", ca, dirty=nblocks, perm=nblocks, trans=0, other=0,
                     flushes=nblocks if lazy else 0, tables=nblocks if lazy else 0)
            b.cold()
            dt_b, cb = b.touch(LOG_IPA, nblocks, BLOCK, seed ^ 0xFFFF)
            b.expect(f"{split} B writable", cb, exits=1, denied=0)
            counts["B"] = ca
            times["B"][0].append(dt_a)
            times["B"][1].append(dt_b)
            # C: then read every page of the first k blocks.
            b.cold()
            dt_a, ca = b.peek(LOG_IPA, kp, PAGE, seed)
            b.expect(f"{split} C", ca, dirty=0, perm=0, trans=kp - k if lazy else 0, other=0,
                     flushes=0, tables=0)
            b.cold()
            dt_b, cb = b.peek(LOG_IPA, kp, PAGE, seed)
            b.expect(f"{split} C again", cb, exits=1, denied=0)
            counts["C"] = ca
            times["C"][0].append(dt_a)
            times["C"][1].append(dt_b)
            rearm(first_pages, nblocks)
            if rep == 0:                                   # warm-up
                times = {p: ([], []) for p in "ABC"}
        res[split] = {p: _fault_cost(t[0], t[1], 1) for p, t in times.items()}
        notes[split] = counts
        del b

    def per(split: str, p: str, n: int) -> tuple[float, float]:
        us, noise = res[split][p]
        return us / n, noise

    def faults(split: str, p: str, n: int) -> str:
        c = notes[split][p]
        return (f"{c['perm'] / n:g} permission + {c['trans'] / n:g} translation faults, "
                f"VMID flushes {c['flushes'] / n:g}, new table pages {c['tables'] / n:g}")

    out = []
    us, noise = per("lazy", "B", nblocks)
    eager_us, _ = per("eager", "B", nblocks)
    out.append(Result("lazy dissolve per block", round(us, 3), "us", None,
                      note=f"first write into each of {nblocks} write-protected 2 MiB blocks, "
                           f"guest end to end minus the writable pass: "
                           f"{faults('lazy', 'B', nblocks)} (eager: the same write is a plain "
                           f"dirty fault, {eager_us:.1f} us)",
                      noise=noise))
    for split in ("lazy", "eager"):
        us, noise = per(split, "A", k)
        extra = "" if split == "lazy" else \
            " (+ the block's split at enable: see 'eager split 1GiB at enable' / 512)"
        out.append(Result(f"dirty 2M block {split}", round(us / 1e3, 3), "ms", None,
                          note=f"write all 512 pages of {k} block(s), per block: "
                               f"{faults(split, 'A', k)}{extra}", noise=noise))
    for split in ("lazy", "eager"):
        us, noise = per(split, "C", k)
        out.append(Result(f"read 2M block after 1st write {split}", round(us / 1e3, 3), "ms", None,
                          note=f"read all 512 pages of {k} block(s) after one write into each, "
                               f"per block: {faults(split, 'C', k)}", noise=noise))
    return out


# ---- output -----------------------------------------------------------------------------
def status(value: float, target: str | None, noise: float | None) -> str:
    """ok / BELOW / ABOVE against the target; "tie" when the miss is within the run-to-run
    noise measured for this row (the value itself is never adjusted)."""
    if target is None:
        return "info"
    op, _, num = target.partition(" ")
    goal = float(num)
    ok = {">=": value >= goal, "<=": value <= goal, ">": value > goal, "<": value < goal}[op]
    if ok:
        return "ok"
    if noise is not None and abs(value - goal) <= goal * noise:
        return "tie"
    return "BELOW" if op.startswith(">") else "ABOVE"


def table(results: list[Result]) -> str:
    head = ("row", "value", "unit", "target", "status", "noise", "baseline Minsn/s",
            "ours Minsn/s", "notes")
    lines = [head]
    for r in results:
        fmt = (lambda s: "-" if s is None else f"{s:.0f}" if s >= 100 else f"{s:.1f}")
        lines.append((r.row, f"{r.value:.3f}", r.unit, r.target or "-",
                      status(r.value, r.target, r.noise),
                      "-" if r.noise is None else f"{100 * r.noise:.1f}%",
                      fmt(r.base_speed), fmt(r.our_speed), r.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    out = []
    for k, line in enumerate(lines):
        cells = [c.ljust(w) if i in (0, 2, 3, 4) else c.rjust(w)
                 for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells + [line[-1]]).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths) + "  -----")
    return "\n".join(out)


def header(ctx: Context, quick: bool, rows: list[str] | None = None) -> str:
    s = ctx.sizes
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    speed = rows is None or any(r not in DIRTY_ROWS for r in rows)
    logging = rows is None or any(r in DIRTY_ROWS for r in rows)
    lines = [
        f"s2emu benchmark{' (--quick)' if quick else ''}: unicorn "
        f"{unicorn.__version__}, Python {platform.python_version()}, {cpu}, "
        f"{os.cpu_count()} CPUs",
    ]
    if speed:
        lines += [
            f"guest speed rows: 1 warm-up + best of {s.reps} runs per side, the two sides "
            f"interleaved (alternating which runs first); every run checked (registers, memory, "
            f"no faults)",
            f"  baseline: {RawUnicorn.label}",
            f"  {ctx.ours.label}",
            "  value = ours Minsn/s / baseline Minsn/s (> 1: ours is faster); noise = both "
            "sides' (median - best) / best; status 'tie': missed the target by less than the "
            "noise",
        ]
    if logging:
        lines += [
            "dirty-logging rows: Machine (icount off) + a memslot at "
            f"{LOG_IPA:#x}; guest rows (us) = (best pass that faults - best same pass on "
            f"writable pages, both from cold TLBs) / faults or blocks, 1 warm-up + best of "
            f"{s.reps} ('dirty fault') / {s.policy_reps} (policy rows); hypervisor rows (ms) = "
            f"best of {s.log_reps} (get_dirty_log 50%: {s.half_reps}) direct calls; every pass "
            "checked (fault/exit/flush/table counts, memory, bitmap, descriptors); noise = "
            "(median - best) / value",
        ]
    return "\n".join(lines)


def pin_malloc() -> str:
    """glibc malloc raises its mmap threshold whenever a large mmapped block is freed, so
    whether a 2 MiB numpy temporary comes back as ~500 fresh zero pages (page faults) or as
    reused heap depends on what the process freed before: a row's value would depend on
    which rows ran earlier (measured: enable_logging 4K 13.5 ms alone vs 4.4 ms after the
    guest-speed rows). Pin glibc's default threshold (128 KiB; setting it turns the dynamic
    adjustment off) unless MALLOC_MMAP_THRESHOLD_ is set in the environment."""
    env = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if env is not None:
        return f"malloc: MALLOC_MMAP_THRESHOLD_={env} from the environment"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "malloc: not pinned (no mallopt)"
    if mallopt(-3, 128 << 10) != 1:                    # M_MMAP_THRESHOLD
        return "malloc: not pinned (mallopt failed)"
    return ("malloc: glibc M_MMAP_THRESHOLD pinned at its default 128 KiB (no dynamic "
            "threshold), so rows do not depend on which rows ran before")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object per row on stdout")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds): schema checks")
    ap.add_argument("--rows", metavar="SUBSTRING",
                    help="run only rows whose name contains SUBSTRING (case-insensitive)")
    args = ap.parse_args(argv)

    selected = [(names, fn) for names, fn in ROWS
                if not args.rows or any(args.rows.lower() in n.lower() for n in names)]
    if not selected:
        all_rows = "; ".join(n for names, _ in ROWS for n in names)
        print(f"no row matches {args.rows!r}; rows: {all_rows}", file=sys.stderr)
        return 2

    def progress(msg: str) -> None:
        if not args.json:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    malloc = pin_malloc()
    ctx = Context(QUICK if args.quick else DEFAULT, progress)
    results: list[Result] = []
    t0 = time.perf_counter()
    for names, fn in selected:
        progress(f"{' / '.join(names)} ...")
        try:
            out = fn(ctx)
        except BenchError as e:
            print(f"bench: {' / '.join(names)}: CHECK FAILED: {e}", file=sys.stderr)
            return 1
        wanted = [r for r in out
                  if not args.rows or args.rows.lower() in r.row.lower()]
        results.extend(wanted)
        if args.json:
            for r in wanted:
                print(json.dumps({"row": r.row, "value": r.value, "unit": r.unit,
                                  "target": r.target}), flush=True)
    if not args.json:
        print(header(ctx, args.quick, [r.row for r in results]))
        print(malloc)
        print()
        print(table(results))
        print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
