#!/usr/bin/env python3
"""Guest speed benchmarks: our stage-2 (no faults) against raw Unicorn, in one process.

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
"""
from __future__ import annotations

import argparse
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

from emu.machine import RAM_BASE, Machine  # noqa: E402
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


DEFAULT = Sizes(reps=7, alu_iters=200_000_000, icount_iters=25_000_000, sweep=16 << 20,
                load_passes=20, store_passes=6, stm_passes=6)
QUICK = Sizes(reps=1, alu_iters=5_000_000, icount_iters=1_000_000, sweep=1 << 20,
              load_passes=2, store_passes=1, stm_passes=1)


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


def header(ctx: Context, quick: bool) -> str:
    s = ctx.sizes
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    return "\n".join([
        f"s2emu guest speed benchmark{' (--quick)' if quick else ''}: unicorn "
        f"{unicorn.__version__}, Python {platform.python_version()}, {cpu}, "
        f"{os.cpu_count()} CPUs",
        f"method: 1 warm-up + best of {s.reps} runs per side, the two sides interleaved "
        f"(alternating which runs first); every run checked (registers, memory, no faults)",
        f"  baseline: {RawUnicorn.label}",
        f"  {ctx.ours.label}",
        "  value = ours Minsn/s / baseline Minsn/s (> 1: ours is faster); noise = both sides'"
        " (median - best) / best; status 'tie': missed the target by less than the noise",
    ])


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
        print(header(ctx, args.quick))
        print()
        print(table(results))
        print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
