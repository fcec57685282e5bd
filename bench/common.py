"""Shared benchmark machinery: sizes, timing, the Result row and its registry, the per-run
Context, output (table, JSON lines) and malloc pinning. The rows themselves are in
bench/guest_speed.py and bench/dirty_rows.py; bench/run.py is the command line."""
from __future__ import annotations

import ctypes
import gc
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

MASK32 = 0xFFFF_FFFF


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


# ---- measurement ------------------------------------------------------------------------
class BenchError(Exception):
    """A measurement failed its correctness check: no number is printed for it."""


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out
    finally:
        gc.enable()


def check_eq(what: str, got: int, want: int) -> None:
    if got != want:
        raise BenchError(f"{what}: got {got:#x}, expected {want:#x}")


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
    """The sizes of one run and the machines its rows share, built lazily by `get`."""
    sizes: Sizes
    progress: Callable[[str], None]
    _cache: dict = field(default_factory=dict)

    def get(self, key, make):
        if key not in self._cache:
            self.progress(f"setting up {key} ...")
            self._cache[key] = make()
        return self._cache[key]


class Rows(list):
    """A row module's registry: (names, fn) pairs, where fn(ctx) returns the Results of the
    rows `names`. Rows run in registration order; bench/run.py concatenates the modules'."""

    def register(self, *names: str):
        """Add a row function producing the rows `names` (used by --rows before running it)."""
        def deco(fn: Callable[[Context], list[Result]]):
            self.append((names, fn))
            return fn
        return deco


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



def json_line(r: Result) -> str:
    """--json: exactly the first four fields of a row, one JSON object per line."""
    return json.dumps({"row": r.row, "value": r.value, "unit": r.unit, "target": r.target})


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

