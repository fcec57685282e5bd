"""Guest speed rows: our stage-2 (no faults) against raw Unicorn, in one process.

The two sides of a "vs raw unicorn" row run the same machine code for the same iterations:
  baseline  raw Unicorn: Uc(UC_ARCH_ARM), ctl_set_page_size(4096), guest MMU off (VA = PA),
            RAM mapped RWX at its guest address by mem_map_ptr, the run ends at an `until`
            address, count=0, in one of two TLB modes (each row names which):
              cpu tlb      Unicorn's default (UC_TLB_CPU), no hooks at all;
              virtual tlb  UC_TLB_VIRTUAL with a native identity TLB-fill callback (emu/native's
                           `identity_fill`, registered by uc_hook_add on the engine): the
                           fastest raw configuration (DESIGN 5b: ~7x the cpu-tlb mode on stores).
  ours      emu.machine.Machine: RAM at IPA 0x40000000 backed by host memory at PA >=
            0x1_0000_0000, vm.map_slot(RAM) pre-faults guest RAM (2 MiB blocks), and the
            hypervisor's run loop runs the guest until its PSCI SYSTEM_OFF HVC. Every guest
            access goes through the TLB-fill hooks and the MMU model. "... vs raw unicorn
            (virtual tlb)" rows run ours in its default mode (exact instruction counts, checked
            every run); "... no-icount vs raw unicorn (virtual tlb)" and the cpu-tlb rows with
            icount off.
Every measurement is checked: registers against closed forms or the other side, memory
against a numpy model, zero stage-2 faults on our side, so a broken translation cannot
produce a fast number.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bench.common import MASK32, BenchError, Context, Result, Rows, check_eq, timed
from bench.programs import CODE, DATA, DATA_OFFSET, ENTRY, EXIT_INSNS
from bench.raw_unicorn import RawUnicorn, baseline_label, native_identity_fill
from emu.machine import RAM_BASE, Machine
from hyp.exits import Hypercall

ROWS = Rows()
register = ROWS.register

# ---- our side (the baselines are in bench/raw_unicorn.py) -----------------------------
class Ours:
    """Our side: the full board under our hypervisor, stage 2 on and pre-faulted."""
    exit_insns = EXIT_INSNS

    def __init__(self, ram: int, *, icount: bool) -> None:
        m = Machine(ram=ram, icount=icount)
        m.vm.write_guest(RAM_BASE, CODE)
        m.vm.map_slot(m.ram)
        self.m = m
        self.icount = icount
        self.slot = m.ram
        self._data_off = self.slot.pa_of(DATA) - m.host.mem.base
        self.fills = 0               # TLB fills of the last run (Python's and the native mirror's)
        self.instructions = 0        # exact count of the last run (icount on only)
        self.label = ("ours:     emu.machine.Machine, icount " + ("on" if icount else "off") +
                      f", RAM IPA {RAM_BASE:#x} -> host PA {self.slot.pa:#x} by stage 2 "
                      "(vm.map_slot(ram): 2 MiB blocks; runs must take no stage-2 fault), "
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
        faults, insns = self._faults(), cpu.instructions
        fills = cpu.stats["fills"] + cpu.native_fills
        dt, res = timed(self.m.run)
        if res.reason != "off" or not isinstance(res.exit, Hypercall) or \
                res.exit.pc != until + 4 * EXIT_INSNS:
            raise BenchError(f"ours did not power off at the exit HVC: {res}")
        if self._faults() != faults:
            raise BenchError(f"ours took stage-2 faults/MMIO exits in a timed run: "
                             f"{dict(self.m.vm.stats)} {cpu.stats}")
        self.fills = cpu.stats["fills"] + cpu.native_fills - fills
        self.instructions = cpu.instructions - insns
        return dt


def _ram(ctx: Context) -> int:
    return DATA_OFFSET + max(ctx.sizes.sweep, 2 << 20)


def shared_raw(ctx: Context, tlb: str = "cpu") -> RawUnicorn:
    return ctx.get(f"raw unicorn ({tlb} tlb)", lambda: RawUnicorn(_ram(ctx), tlb))


def shared_ours(ctx: Context) -> Ours:
    return ctx.get("ours (icount off)", lambda: Ours(_ram(ctx), icount=False))


def shared_ours_icount(ctx: Context) -> Ours:
    return ctx.get("ours (icount on)", lambda: Ours(_ram(ctx), icount=True))


def header_lines(ctx: Context) -> list[str]:
    """How these rows are measured, for the table's header."""
    s = ctx.sizes
    return [
        f"guest speed rows: 1 warm-up + best of {s.reps} runs per side, the two sides "
        f"interleaved (alternating which runs first); every run checked (registers, memory, "
        f"no faults, exact instruction counts with icount on)",
        f"  baseline (cpu tlb): {baseline_label('cpu')}",
        f"  baseline (virtual tlb): "
        f"{baseline_label('virtual', native_identity_fill() is None)}",
        f"  {shared_ours(ctx).label}",
        "  value = ours Minsn/s / baseline Minsn/s (> 1: ours is faster); noise = both "
        "sides' (median - best) / best; status 'tie': missed the target by less than the "
        "noise",
    ]


# ---- comparing two sides ----------------------------------------------------------------
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


def _ratio_row(name: str, m: Measurement, note: str, target: str = ">= 1.0") -> Result:
    return Result(name, round(m.ratio, 3), "x", target, m.base, m.ours, note, m.noise)


def _fills_note(ours: Ours, passes: int, size: int) -> str:
    visits = passes * (size >> 12)
    return (f"{size >> 20 if size >= 1 << 20 else size >> 10} "
            f"{'MiB' if size >= 1 << 20 else 'KiB'} x {passes} pass{'es' * (passes != 1)}; "
            f"ours {ours.fills} TLB fills/run ({ours.fills / visits:.2f} per page visited)")


def _sweep_insns(passes: int, iters_per_pass: int) -> int:
    return passes * (4 * iters_per_pass + 3) + EXIT_INSNS


# ---- the programs: Side builders (machine, ctx) -> (Side, cross check, note) ------------
def _alu_side(machine, iters: int) -> Side:
    def regs(seed):
        return {0: iters, 1: seed, 2: seed ^ 0x5A5A_5A5A}

    def check(m, seed):
        check_eq("ALU r1", m.reg(1), (seed + iters * (iters + 1) // 2) & MASK32)
        if machine.exit_insns == 0:
            check_eq("ALU r0", m.reg(0), 0)
    return Side(machine, "alu", 4 * iters + EXIT_INSNS, regs, check)


def _alu(machine, ctx: Context):
    n = ctx.sizes.alu_iters
    return (_alu_side(machine, n), _same_regs(range(1, 13)),
            lambda ours: f"{4 * n / 1e6:.0f}M insns/run; ours {ours.fills} TLB fills/run")


def _load(machine, ctx: Context):
    size, passes = ctx.sizes.sweep, ctx.sizes.load_passes
    words = size // 4
    pattern = ((np.arange(words, dtype=np.uint64) * 2654435761 + 12345) & MASK32).astype("<u4")
    total = int(pattern.sum(dtype=np.uint64))
    machine.data(size)[:] = pattern

    def regs(seed):
        return {0: passes, 4: DATA, 5: DATA + size, 6: seed}

    def check(m, seed):
        check_eq("load checksum r6", m.reg(6), (seed + passes * total) & MASK32)
        check_eq("load end r1", m.reg(1), DATA + size)
    return (Side(machine, "load", _sweep_insns(passes, words), regs, check),
            _same_regs(range(1, 13)), lambda ours: _fills_note(ours, passes, size))


def _store(machine, ctx: Context):
    size, passes = ctx.sizes.sweep, ctx.sizes.store_passes
    words = size // 4
    idx = np.arange(words, dtype=np.uint64)

    def regs(seed):
        return {0: passes, 2: seed, 4: DATA, 5: DATA + size}

    def check(m, seed):
        check_eq("store r2", m.reg(2), (seed + passes * words) & MASK32)
        want = ((seed + (passes - 1) * words + idx) & MASK32).astype("<u4")
        if not np.array_equal(m.data(size), want):
            raise BenchError("store sweep: guest memory does not hold what was stored")
    return (Side(machine, "store", _sweep_insns(passes, words), regs, check),
            _same_memory(size, range(1, 13)), lambda ours: _fills_note(ours, passes, size))


def _stm(machine, ctx: Context):
    size, passes = ctx.sizes.sweep, ctx.sizes.stm_passes
    blocks = size // 32
    idx = np.arange(blocks, dtype=np.uint64)

    def values(seed):
        return [seed] + [(seed * (k + 3) + k) & MASK32 for k in range(1, 8)]

    def regs(seed):
        r = {0: passes, 10: DATA, 11: DATA + size}
        r.update({2 + k: v for k, v in enumerate(values(seed))})
        return r

    def check(m, seed):
        v = values(seed)
        check_eq("STM r2", m.reg(2), (seed + passes * blocks) & MASK32)
        got = m.data(size).reshape(blocks, 8)
        first = ((seed + (passes - 1) * blocks + idx) & MASK32).astype("<u4")
        if not (np.array_equal(got[:, 0], first) and
                (got[:, 1:] == np.array(v[1:], dtype="<u4")).all()):
            raise BenchError("STM loop: guest memory does not hold what was stored")
    return (Side(machine, "stm", _sweep_insns(passes, blocks), regs, check),
            _same_memory(size, range(1, 13)), lambda ours: _fills_note(ours, passes, size))


PROGRAMS = {"ALU loop": _alu, "load sweep": _load, "store sweep": _store, "STM loop": _stm}
# (row suffix, raw Unicorn's TLB mode, ours with exact counts, target)
VARIANTS = [("vs raw unicorn (cpu tlb)", "cpu", False, ">= 1.0"),
            ("vs raw unicorn (virtual tlb)", "virtual", True, ">= 0.8"),
            ("no-icount vs raw unicorn (virtual tlb)", "virtual", False, ">= 1.0")]


def _exact(side: Side) -> Side:
    """Our icount-on side: the exact instruction count is checked on every run."""
    check = side.check

    def check_exact(m, seed):
        check(m, seed)
        check_eq("icount instructions", m.instructions, side.insns)
    side.check = check_exact
    return side


def _vs_raw_row(prog: str, suffix: str, tlb: str, icount: bool, target: str):
    build = PROGRAMS[prog]
    name = f"{prog} {suffix}"

    def row(ctx: Context) -> list[Result]:
        raw = shared_raw(ctx, tlb)
        ours = shared_ours_icount(ctx) if icount else shared_ours(ctx)
        base, cross, note = build(raw, ctx)
        mine, _, _ = build(ours, ctx)
        m = compare(ctx, base, _exact(mine) if icount else mine, cross)
        if raw.python_fill:
            name_ = name.replace("(virtual tlb)", "(virtual tlb, python fill)")
        else:
            name_ = name
        what = "ours icount on (exact counts checked)" if icount else "ours icount off"
        return [_ratio_row(name_, m, f"{what}; {note(ours)}", target)]
    return name, row


for _prog in PROGRAMS:
    for _suffix, _tlb, _icount, _target in VARIANTS:
        _name, _fn = _vs_raw_row(_prog, _suffix, _tlb, _icount, _target)
        register(_name)(_fn)


@register("ALU loop icount on vs off")
def alu_icount(ctx: Context) -> list[Result]:
    off, on = shared_ours(ctx), shared_ours_icount(ctx)
    n_off, n_on = ctx.sizes.alu_iters, ctx.sizes.icount_iters
    on_side = _exact(_alu_side(on, n_on))
    m = compare(ctx, _alu_side(off, n_off), on_side)
    return [Result("ALU loop icount on vs off", round(m.ratio, 3), "x", None, m.base, m.ours,
                   f"baseline = ours icount off ({4 * n_off / 1e6:.0f}M insns), measured = "
                   f"ours icount on ({4 * n_on / 1e6:.0f}M insns, counted exactly)", m.noise)]
