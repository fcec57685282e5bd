"""Guest-MMU rows (issue 9): what the guest's own stage 1 costs, measured on the bundled
mmubench guest (guests/mmubench.c) under Machine (icount off), in one process.

  on vs off rows  the same hand-written loop (ALU, load sweep, store sweep: the A32 code of
                  bench/programs.py) with the guest's MMU off, and on with an identity map of
                  sections (short descriptors) or 2 MiB blocks (LPAE). Each boot runs a warm-up
                  rep and 3 timed reps, each between two marks (HV_TIME_NS hypercalls): the
                  time from the hypervisor finishing the first mark to the exit of the second.
                  Boots of the three sides are interleaved; each side's best rep counts.
                  value = the lower of (short Minsn/s / off Minsn/s) and (LPAE / off).
  TLB miss rows   mmubench touch: one load from each of N pages of a region mapped with 4 KiB
                  pages (MMU on: every page its own stage-1 walk - 2 descriptor reads short,
                  3 LPAE - each descriptor's IPA translated by stage 2, then the page's IPA
                  walked by stage 2; MMU off: the stage-2 walk only). Per rep: TLBIALL, a cold
                  sweep (every page misses in the model's TLB and in Unicorn's), a warm sweep
                  (no miss). value = (best cold - best warm) / TLB fills of the cold sweep:
                  the guest's end-to-end cost of one miss - Unicorn's miss path, the TLB-fill
                  hook through the Python binding, the privilege check (CPSR, and with the MMU
                  on the instruction at PC decoded for LDRT/STRT), MMU.fill, the entry handed
                  back. No exit, no fault. "stage-1 extra" = MMU on minus MMU off.
  MMU.fill rows   MMU.fill(va, READ) alone, timed directly on the state the touch guest left
                  (its MMU still on), N pages after a TLBIALL: pure Python, no Unicorn.
Every boot is checked: the console (the checksum of every word loaded or stored against its
closed form), the marks, one exit (the closing mark) and no stage-2 fault in a timed
interval; the MMU.fill rows check every PA.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from bench.common import MASK32, BenchError, Context, Result, Rows, timed
from emu.machine import RAM_BASE, Machine
from hyp.arch.fault import Access
from hyp.arch.s1 import PL1
from hyp.arch.tlb import TLBEntry
from hyp.exits import Hypercall
from hyp.hypercall import S2EMU_TIME_NS

ROWS = Rows()
TIMED = 3                                    # timed reps per boot of the on vs off rows
MMU_ROWS: set[str] = set()                   # every row name in ROWS (for the table header)
GUEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "guests", "mmubench.elf")
REGION = RAM_BASE + (2 << 20)                # __guest_region_start of mmubench.elf
PAGE = 4096
SIDES = ("off", "short", "long")
FORMAT = {"short": "short", "long": "LPAE"}

# guests/mmubench.c
ALU_SEED, STORE_SEED = 0x12345678, 0x9ABCDEF0
LOAD_MUL, LOAD_ADD, TOUCH_MUL = 2654435761, 12345, 0x9E3779B9


def register_mmu(*names: str):
    MMU_ROWS.update(names)
    return ROWS.register(*names)


def header_lines(ctx: Context) -> list[str]:
    """How these rows are measured, for the table's header."""
    return [
        f"guest-MMU rows: guests/mmubench.elf on Machine (icount off), {ctx.sizes.reps} "
        "boot(s) per side interleaved (MMU off / short / LPAE), each a warm-up rep and timed "
        f"reps ({TIMED} on vs off, 1 TLB miss) between HV_TIME_NS marks, best rep per side; "
        "every boot checked (console "
        "checksum, marks, no fault or exit inside a timed rep); on vs off = the lower of the "
        "two formats' ratios; TLB miss = (cold - warm sweep) / fills; noise = (median - "
        "best) / best summed over the sides",
    ]


# ---- one boot of mmubench -------------------------------------------------------------------
@dataclass
class Interval:
    seconds: float
    fills: int                   # TLB fills (Python hook calls)
    exits: int                   # exits to the hypervisor (1: the closing mark)
    faults: int                  # stage-2 faults, MMIO, denied fills, injected aborts


@dataclass
class Boot:
    machine: Machine
    text: str
    intervals: list[Interval] = field(default_factory=list)   # between consecutive marks


def _counters(m: Machine) -> tuple[int, int, int]:
    st, cs = m.vm.stats, m.cpu.stats
    faults = sum(v for k, v in st.items() if k.startswith(("s2 ", "mmio"))) + cs["denied"]
    return cs["fills"], st["exits"], faults


def run_guest(args: str, region: int) -> Boot:
    """Boot mmubench `args` with RAM for a `region`-byte region; time between its marks."""
    ram = (4 << 20) + -(-region // (2 << 20)) * (2 << 20)
    m = Machine(ram=ram, icount=False)
    m.load(GUEST, args)
    opened: list[tuple[float, tuple[int, int, int]]] = []    # after each mark was handled
    closed: list[tuple[float, tuple[int, int, int]]] = []    # at each mark's exit
    pending = [False]

    def observe(kind: str, ex, _outcome) -> None:
        if not isinstance(ex, Hypercall):
            return
        if kind == "exit":
            t = time.perf_counter()
            pending[0] = m.cpu.reg(0) == S2EMU_TIME_NS
            if pending[0]:
                closed.append((t, _counters(m)))
        elif pending[0]:
            opened.append((time.perf_counter(), _counters(m)))
    m.vcpu.observers.append(observe)
    res = m.run()
    if res.reason != "off":
        raise BenchError(f"mmubench {args}: stopped with {res.reason} ({res.error}), console "
                         f"{m.uart.text!r}")
    boot = Boot(m, m.uart.text)
    for (t0, c0), (t1, c1) in zip(opened, closed[1:]):
        boot.intervals.append(Interval(t1 - t0, c1[0] - c0[0], c1[1] - c0[1], c1[2] - c0[2]))
    return boot


def _expect(boot: Boot, args: str, result: int, marks: int) -> None:
    want = f"mmubench: {args}\nmmubench: result {result & MASK32:08x}\nmmubench: done\n"
    if boot.text != want:
        raise BenchError(f"mmubench {args}: console {boot.text!r}, expected {want!r}")
    if len(boot.intervals) != marks - 1:
        raise BenchError(f"mmubench {args}: {len(boot.intervals) + 1} marks, expected {marks}")


def _timed(boot: Boot, args: str, i: int) -> Interval:
    iv = boot.intervals[i]
    if iv.exits != 1 or iv.faults:
        raise BenchError(f"mmubench {args}: timed interval {i} had {iv.exits} exits and "
                         f"{iv.faults} faults (expected 1 exit, the closing mark, and none)")
    return iv


def _spread(times: list[float]) -> float:
    return statistics.median(times) / min(times) - 1


def _sides(ctx: Context, measure) -> dict[str, list]:
    """`reps` boots per side, the sides interleaved (rotating which goes first)."""
    out: dict[str, list] = {s: [] for s in SIDES}
    for b in range(ctx.sizes.reps):
        for s in SIDES[b % 3:] + SIDES[:b % 3]:
            out[s].append(measure(s))
    return out


# ---- MMU on vs off ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    row: str
    name: str                    # mmubench's workload argument
    size: int                    # iterations (alu) or bytes
    passes: int
    insns: int                   # loop instructions in one rep
    result: int                  # the console checksum after the warm-up and TIMED reps

    def args(self, side: str) -> str:
        return f"{self.name} {self.size} {self.passes} {TIMED} {side}"


def _workloads(ctx: Context) -> dict[str, Workload]:
    """The three loops at this run's sizes: the guest-speed rows' (bench/common.py Sizes),
    but ALU at a quarter of the iterations and loads at half the sweeps (four reps a boot,
    three sides)."""
    s = ctx.sizes
    n, size = s.alu_iters // 4, s.sweep
    words = size // 4
    reps = 1 + TIMED                                    # the warm-up and the timed reps
    load_sum = LOAD_MUL * words * (words - 1) // 2 + LOAD_ADD * words
    # at least 3 sweeps per rep: the warm-up rep must leave Unicorn's TLB grown to hold the
    # region (it grows only when flushed while mostly used), or the timed rep still fills
    load_passes, store_passes = max(3, s.load_passes // 2), max(3, s.store_passes)
    last = STORE_SEED + (reps * store_passes - 1) * words       # the last sweep's first word
    return {
        "alu": Workload("ALU loop MMU on vs off", "alu", n, 1, 4 * n + 3,
                        ALU_SEED + reps * n * (n + 1) // 2),
        "load": Workload("load sweep MMU on vs off", "load", size, load_passes,
                         load_passes * (4 * words + 3),
                         ALU_SEED + reps * load_passes * load_sum),
        "store": Workload("store sweep MMU on vs off", "store", size, store_passes,
                          store_passes * (4 * words + 3),
                          words * last + words * (words - 1) // 2),
    }


def _check_stored(boot: Boot, args: str, w: Workload) -> None:
    """The last sweep's values are in host memory at the region's own address: with the MMU
    on, the identity map really is one."""
    m = boot.machine
    off = m.ram.pa_of(REGION) - m.host.mem.base
    got = m.host.mem.buf[off:off + w.size].view("<u4")
    words = w.size // 4
    first = STORE_SEED + ((1 + TIMED) * w.passes - 1) * words
    want = ((first + np.arange(words, dtype=np.uint64)) & MASK32).astype("<u4")
    if not np.array_equal(got, want):
        raise BenchError(f"mmubench {args}: guest RAM does not hold what the last sweep "
                         f"stored ({int((got != want).sum())} words differ)")


def _ratio_row(ctx: Context, w: Workload) -> Result:
    def measure(side: str) -> list[tuple[float, int]]:
        args = w.args(side)
        boot = run_guest(args, 0 if w.name == "alu" else w.size)
        _expect(boot, args, w.result, 2 * (1 + TIMED))
        if w.name == "store":
            _check_stored(boot, args, w)
        # marks 2r and 2r + 1 bracket rep r; rep 0 is the warm-up
        return [(iv.seconds, iv.fills) for iv in
                (_timed(boot, args, 2 * r) for r in range(1, 1 + TIMED))]
    runs = {s: [x for boot in boots for x in boot] for s, boots in _sides(ctx, measure).items()}
    best = {s: min(t for t, _ in runs[s]) for s in SIDES}
    mips = {s: w.insns / best[s] / 1e6 for s in SIDES}
    ratio = {s: mips[s] / mips["off"] for s in ("short", "long")}
    worst = min(ratio.values())
    noise = sum(_spread([t for t, _ in runs[s]]) for s in SIDES)
    fills = {s: max(f for _, f in runs[s]) for s in SIDES}
    size = f"{w.size / 1e6:.0f}M iterations" if w.name == "alu" else \
        f"{w.size >> 20 if w.size >= 1 << 20 else w.size >> 10} " \
        f"{'MiB' if w.size >= 1 << 20 else 'KiB'} x {w.passes}"
    note = (f"{size}; short {ratio['short']:.3f}x ({mips['short']:.0f} Minsn/s), LPAE "
            f"{ratio['long']:.3f}x ({mips['long']:.0f}); TLB fills per timed rep: off "
            f"{fills['off']}, short {fills['short']}, LPAE {fills['long']}")
    return Result(w.row, round(worst, 3), "x", ">= 0.9", mips["off"],
                  min(mips["short"], mips["long"]), note, noise)


@register_mmu("ALU loop MMU on vs off")
def alu_on_off(ctx: Context) -> list[Result]:
    return [_ratio_row(ctx, _workloads(ctx)["alu"])]


@register_mmu("load sweep MMU on vs off")
def load_on_off(ctx: Context) -> list[Result]:
    return [_ratio_row(ctx, _workloads(ctx)["load"])]


@register_mmu("store sweep MMU on vs off")
def store_on_off(ctx: Context) -> list[Result]:
    return [_ratio_row(ctx, _workloads(ctx)["store"])]


# ---- TLB misses ---------------------------------------------------------------------------------
FILL_ROW = {"off": "MMU.fill MMU off", "short": "MMU.fill MMU on short",
            "long": "MMU.fill MMU on LPAE"}
MISS_ROWS = ("TLB miss MMU off", "TLB miss MMU on short", "TLB miss MMU on LPAE",
             "TLB miss MMU on short, stage-1 extra", "TLB miss MMU on LPAE, stage-1 extra",
             "MMU.fill MMU off", "MMU.fill MMU on short", "MMU.fill MMU on LPAE")


def _touch_result(pages: int, sweeps: int) -> int:
    """mmubench touch's checksum: acc = rotl(acc, 1) + the first word of each page, in
    order, every sweep (page i holds TOUCH_MUL * i)."""
    acc = ALU_SEED
    for _ in range(sweeps):
        for i in range(pages):
            acc = (((acc << 1 | acc >> 31) & MASK32) + (TOUCH_MUL * i & MASK32)) & MASK32
    return acc


def _fill_direct(m: Machine, pages: int, reps: int) -> list[float]:
    """Seconds per MMU.fill of each of `pages` pages after a TLBIALL, `reps` times; every
    result checked (a TLB entry mapping the page to its RAM)."""
    mmu, tlb, slot = m.mmu, m.mmu.tlb, m.ram
    vas = [REGION + i * PAGE for i in range(pages)]
    want = [slot.pa_of(va) for va in vas]
    out = []
    for _ in range(reps):
        tlb.invalidate_all(mmu.vmid)                     # as the guest's TLBIALL does
        dt, got = timed(lambda: [mmu.fill(va, Access.READ, PL1) for va in vas])
        bad = [(hex(va), e) for va, e, pa in zip(vas, got, want)
               if not isinstance(e, TLBEntry) or e.pa_page != pa]
        if bad:
            raise BenchError(f"MMU.fill: {len(bad)} pages wrong, first {bad[0]}")
        out.append(dt / pages)
    return out


@register_mmu(*MISS_ROWS)
def miss_rows(ctx: Context) -> list[Result]:
    pages = ctx.sizes.dirty_pages
    want = _touch_result(pages, sweeps=2 * 2)           # 2 reps of a cold and a warm sweep

    def measure(side: str) -> tuple[float, float, int, list[float]]:
        args = f"touch {pages} 1 1 {side}" + ("" if side == "off" else " page")
        boot = run_guest(args, pages * PAGE)
        _expect(boot, args, want, 6)
        cold, warm = _timed(boot, args, 3), _timed(boot, args, 4)   # rep 1: marks 3-4-5
        if cold.fills < pages or warm.fills > 2:
            raise BenchError(f"mmubench {args}: {cold.fills} fills in the cold sweep (>= "
                             f"{pages} expected), {warm.fills} in the warm one")
        direct = _fill_direct(boot.machine, pages, 1)
        return cold.seconds, warm.seconds, cold.fills, direct
    runs = _sides(ctx, measure)
    miss, noise, fills = {}, {}, {}
    for s in SIDES:
        cold = [r[0] for r in runs[s]]
        warm = [r[1] for r in runs[s]]
        fills[s] = max(r[2] for r in runs[s])
        diff = min(cold) - min(warm)
        miss[s] = diff / fills[s] * 1e6
        spread = statistics.median(cold) - min(cold) + statistics.median(warm) - min(warm)
        noise[s] = spread / diff if diff > 0 else float("inf")
    fill = {s: [d for r in runs[s] for d in r[3]] for s in SIDES}
    reads = {"short": "2 descriptor reads", "long": "3 descriptor reads"}
    out = [Result("TLB miss MMU off", round(miss["off"], 3), "us", None,
                  note=f"{pages} pages, one load each, from a cold TLB (TLBIALL) minus the "
                       f"warm sweep, per fill ({fills['off']} fills); stage-2 walk only (RAM "
                       f"by 2 MiB stage-2 blocks); MMU.fill alone "
                       f"{min(fill['off']) * 1e6:.1f} us", noise=noise["off"])]
    for s in ("short", "long"):
        out.append(Result(
            f"TLB miss MMU on {FORMAT[s]}", round(miss[s], 3), "us", None,
            note=f"the same over 4 KiB stage-1 pages ({fills[s]} fills): stage-1 walk "
                 f"({reads[s]}, each descriptor IPA through stage 2 - the walk cache hits "
                 f"after the first of each table page) + stage-2 walk of the page; "
                 f"MMU.fill alone {min(fill[s]) * 1e6:.1f} us, the rest is the hook path",
            noise=noise[s]))
    for s in ("short", "long"):
        extra = miss[s] - miss["off"]
        out.append(Result(
            f"TLB miss MMU on {FORMAT[s]}, stage-1 extra", round(extra, 3), "us", None,
            note=f"'TLB miss MMU on {FORMAT[s]}' minus 'TLB miss MMU off': the stage-1 walk, "
                 f"its permission check and the LDRT/STRT decode at PC; MMU.fill alone "
                 f"+{(min(fill[s]) - min(fill['off'])) * 1e6:.1f} us",
            noise=noise[s] + noise["off"]))
    for s in SIDES:
        out.append(Result(
            FILL_ROW[s],
            round(min(fill[s]) * 1e6, 3), "us", None,
            note=f"hyp.arch.mmu.MMU.fill(va, READ, PL1) of {pages} pages after TLBIALL, on "
                 f"the touch guest's final state; pure Python (model TLB lookup, "
                 f"{'stage-1 walk, permission check, ' if s != 'off' else ''}stage-2 walk, "
                 f"TLB insert); best of {len(fill[s])}",
            noise=_spread(fill[s])))
    return out
