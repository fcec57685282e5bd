#!/usr/bin/env python3
"""Guest speed benchmarks: our stage-2 (no faults) against raw Unicorn, in one process; and
the cost of dirty page logging (faults, enable, get_dirty_log, eager vs lazy block splitting).

    python bench/run.py [--json] [--quick] [--rows SUBSTRING]     (or python -m bench.run)

Each row is a registered function returning `Result` tuples whose first four fields are
(row, value, unit, target); `--json` prints exactly those four as one JSON object per line.

The rows and how each is measured and checked:
  bench/guest_speed.py  "<ALU loop|load sweep|store sweep|STM loop> vs raw unicorn (cpu tlb)"
                        (ours icount off vs Unicorn's default TLB mode), "... vs raw unicorn
                        (virtual tlb)" (ours with exact counts vs virtual-TLB mode with a native
                        identity fill: the fastest raw configuration), "... no-icount vs raw
                        unicorn (virtual tlb)", and "ALU loop icount on vs off" (guest code in
                        programs.py, baselines in raw_unicorn.py)
  bench/dirty_rows.py   dirty logging: "dirty fault", "round-trip floor" (the bare deny ->
                        exit -> resume on raw Unicorn, same run) and "dirty fault vs floor",
                        "model tlb refill", enable/get_dirty_log, eager vs lazy splitting
                        (on the LogBench board of bench/logbench.py)
  bench/trace_rows.py   tracing off vs never attached, the cost of a traced instruction
  bench/migration_rows.py  live migration: stream serialise/parse MiB/s vs a bytes copy,
                        virtual downtime (idle, dirtying guest), wall seconds per GiB
  bench/mmu_rows.py     the guest's own MMU: ALU/load/store MMU on vs off, the cost of a TLB
                        miss that walks both stages (guest end to end, and MMU.fill alone)
  bench/native_rows.py  peers, whole processes: "compute guest ns per insn", "compute guest
                        cost vs qemu icount", "compute guest cost vs qemu", "compute guest
                        no-icount cost vs qemu" (CPU per guest instruction of guests/compute.elf,
                        start-up subtracted) and "hello whole process vs qemu" (wall)
  bench/numba_rows.py   "numba block hook vs native C" and "numba start-up": the measurement
                        behind choosing a C extension (skipped without numba)
  bench/linux_rows.py   Debian's kernel: boot to /init in wall seconds, guest MIPS, and the
                        ratio to qemu-system-arm TCG on the same kernel and initrd
Shared machinery (sizes, timing, Result, the row registry, output) is in bench/common.py.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if not __package__:
    # Run as a script: Python put bench/ itself first on sys.path. Import the row modules as
    # the bench package from the repo root instead, so they are loaded once, under one name.
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.realpath(HERE)]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import unicorn  # noqa: E402

from bench import (dirty_rows, guest_speed, linux_rows, migration_rows, mmu_rows,  # noqa: E402
                   native_rows, numba_rows, trace_rows)
from bench.common import (DEFAULT, QUICK, BenchError, Context, Result,  # noqa: E402
                          json_line, pin_malloc, table)

# every row function, in the order they run
ROWS = guest_speed.ROWS + dirty_rows.ROWS + trace_rows.ROWS + migration_rows.ROWS + \
    mmu_rows.ROWS + native_rows.ROWS + numba_rows.ROWS + linux_rows.ROWS


def header(ctx: Context, quick: bool, rows: list[str] | None = None) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    own = dirty_rows.DIRTY_ROWS | migration_rows.MIGRATION_ROWS | mmu_rows.MMU_ROWS | \
        linux_rows.LINUX_ROWS | native_rows.NATIVE_ROWS
    speed = rows is None or any(r not in own for r in rows)
    logging = rows is None or any(r in dirty_rows.DIRTY_ROWS for r in rows)
    migration = rows is None or any(r in migration_rows.MIGRATION_ROWS for r in rows)
    mmu = rows is None or any(r in mmu_rows.MMU_ROWS for r in rows)
    lines = [
        f"s2emu benchmark{' (--quick)' if quick else ''}: unicorn "
        f"{unicorn.__version__}, Python {platform.python_version()}, {cpu}, "
        f"{os.cpu_count()} CPUs",
    ]
    if speed:
        lines += guest_speed.header_lines(ctx)
    if logging:
        lines += dirty_rows.header_lines(ctx)
    if migration:
        lines += migration_rows.header_lines(ctx)
    if mmu:
        lines += mmu_rows.header_lines(ctx)
    if rows is None or any(r in native_rows.NATIVE_ROWS for r in rows):
        lines += native_rows.header_lines(ctx)
    if rows is None or any(r in linux_rows.LINUX_ROWS for r in rows):
        lines += linux_rows.header_lines(ctx)
    return "\n".join(lines)


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
                print(json_line(r), flush=True)
    if not args.json:
        print(header(ctx, args.quick, [r.row for r in results]))
        print(malloc)
        print()
        print(table(results))
        print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
