"""Live migration of `dirtyram` under the two block-split policies of ARMv7 dirty logging.

The study the cover letter left open: RAM mapped with 2 MiB stage-2 blocks (pre-faulted before
logging starts), then pre-copy under `lazy` (option 2: a block is dissolved on its first write
fault, its other 511 pages fault in later) or `eager` (option 1, arm64's eager splitting: every
block becomes 512 write-protected pages when logging starts), across dirty rates from light to
non-converging.

One point (`run_point`) is a whole in-process migration and a pure function of its parameters:
the guest, the virtual clock and the link model are deterministic, so there is no random input
(and no seed to choose); everything but the `host` entry (wall/CPU seconds) is identical
wherever and however often it runs. The sweep runs on an existing engine: a
`concurrent.futures.ProcessPoolExecutor`, or a Dask cluster (`--scheduler ADDRESS`, or
`--scheduler local` for a LocalCluster). Remote Dask workers must import this checkout
(`PYTHONPATH=/path/to/checkout dask worker ADDRESS`); a worker that would run another copy of
emu/hyp refuses the point.

    python studies/split_policy.py [--quick] [--scheduler ADDR] [--workers N] [--json OUT]
                                   [--plot OUT.png] [--markdown OUT.md]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path[:1]:
    sys.path.insert(0, ROOT)         # this checkout's emu/hyp, never an installed copy

import emu                                                    # noqa: E402
from emu.machine import Machine                               # noqa: E402
from emu.migration import incoming, migrate_out               # noqa: E402
from hyp.exits import Stage2Abort                             # noqa: E402
from hyp.migration import precopy                             # noqa: E402
from hyp.migration.precopy import Params                      # noqa: E402
from hyp.migration.stream import PAGE, page_record_size       # noqa: E402

ELF = os.path.join(ROOT, "guests", "dirtyram.elf")
POLICIES = ("lazy", "eager")


@dataclass(frozen=True)
class Point:
    policy: str                      # "lazy" | "eager"
    per_round: int                   # dirtyram: pages written per round
    sleep_ms: int                    # dirtyram: virtual ms slept after each round
    total: int = 12288               # pages written round-robin (48 MiB: > the downtime residue)
    ram_mib: int = 64                # 32 blocks of 2 MiB; the region needs 2 MiB + total pages
    spin: int = 0                    # dirtyram: busy loop before each store (CPU-bound dirtying)
    bandwidth: int = 128 << 20       # QEMU defaults: 128 MiB/s ...
    downtime_ms: int = 300           # ... and a 300 ms downtime limit
    max_iterations: int = 30         # the cap that marks non-convergence
    warmup_insns: int = 0            # 0: 16 * total + 20000 steps, over a full pass of the region
    budget_insns: int = 2_000_000_000
    fault_ns: int = 0                # what-if: virtual ns each stage-2 fault costs the guest
    verify: bool = False             # receive the stream on a second board, compare digests

    @property
    def rate(self) -> float:
        """Nominal dirty rate, pages per ms of virtual time."""
        return self.per_round / self.sleep_ms if self.sleep_ms else float("inf")

    @property
    def warmup(self) -> int:
        return self.warmup_insns or 16 * self.total + 20_000


# ---- the model's own prediction -----------------------------------------------------------------
def residue_pages(bandwidth: int, downtime_ms: int) -> int:
    """Most dirty pages the switch-over test lets through (precopy: page_record_size(n) <=
    bandwidth x downtime)."""
    limit = bandwidth * downtime_ms // 1000
    n = limit // PAGE
    while page_record_size(n) > limit:
        n -= 1
    return n


def link_pages_per_ms(bandwidth: int) -> float:
    """Pages per ms the link carries (64-page records, 20 bytes of framing each)."""
    return bandwidth / (page_record_size(64) / 64) / 1000


def predict(rate: float, *, total: int, first_pass_ms: float, bandwidth: int = 128 << 20,
            downtime_ms: int = 300, cap: int = 30) -> tuple[bool, int]:
    """(converges, iterations incl. stop-and-copy) by the textbook recurrence: iteration 1 (the
    full pass) lasts first_pass_ms and leaves D1 = min(total, rate x first_pass_ms) dirty; then
    D(k) = min(total, q D(k-1)) with q = rate / link rate; switch-over once D(k) <= residue,
    or forced at the cap."""
    q = rate / link_pages_per_ms(bandwidth)
    thr = residue_pages(bandwidth, downtime_ms)
    d = min(total, rate * first_pass_ms)
    k = 1
    while d > thr and k < cap:
        d = min(total, q * d)
        k += 1
    return d <= thr, k + 1


# ---- one point --------------------------------------------------------------------------------
class Sink:
    """The destination end of the link: counts and hashes the stream (keeps it to verify)."""

    def __init__(self, keep: bool = False) -> None:
        self.bytes = 0
        self.hash = hashlib.blake2b(digest_size=16)
        self.buf = io.BytesIO() if keep else None

    def write(self, b) -> int:
        self.bytes += len(b)
        self.hash.update(b)
        if self.buf is not None:
            self.buf.write(b)
        return len(b)

    def flush(self) -> None:
        pass


class FaultProbe:
    """A vCPU observer: stage-2 faults by kind and level, the wall and CPU time the hypervisor
    spent handling each kind, and (what-if) `fault_ns` of virtual time charged per fault."""

    def __init__(self, m: Machine, fault_ns: int) -> None:
        self.m, self.fault_ns = m, fault_ns
        self.count: Counter[str] = Counter()
        self.wall: Counter[str] = Counter()
        self.cpu: Counter[str] = Counter()
        self._t = self._c = 0.0
        m.vcpu.observers.append(self)

    def __call__(self, kind: str, ex, outcome) -> None:
        if not isinstance(ex, Stage2Abort):
            return
        if kind == "exit":
            self._t, self._c = time.perf_counter(), time.thread_time()
            return
        f = ex.page_fault
        key = f"{f.type.name.lower()} L{f.level}"
        self.wall[key] += time.perf_counter() - self._t
        self.cpu[key] += time.thread_time() - self._c
        self.count[key] += 1
        if self.fault_ns:
            self.m.vm.clock.sleep(self.fault_ns)


def _faults(stats) -> dict[str, int]:
    out = {k: v for k, v in sorted(stats.items()) if k.startswith("s2 ") or k == "dirty faults"}
    out["total"] = sum(v for k, v in out.items() if k.startswith("s2 "))
    return out


class _NoWallClock:
    """Stands in for `time` inside hyp.migration.precopy while a point runs. Pre-copy writes
    each iteration's wall seconds into its ITERATION record, so the stream's length - and with
    it the bytes sent and the modelled downtime (the final record is part of the stop-and-copy)
    - would vary by a few bytes with the host's speed. The study measures wall time itself."""

    @staticmethod
    def monotonic() -> float:
        return 0.0


@contextmanager
def _deterministic_stream():
    saved, precopy.time = precopy.time, _NoWallClock
    try:
        yield
    finally:
        precopy.time = saved


def _check_checkout() -> None:
    here = os.path.dirname(os.path.abspath(emu.__file__))
    if os.path.dirname(here) != ROOT:
        raise RuntimeError(f"this worker runs emu from {here}, not from the study's checkout "
                           f"{ROOT}: start it with PYTHONPATH={ROOT}")


def run_point(point: Point | dict) -> dict:
    """Build, pre-fault, warm up, migrate; everything the study reports about one point."""
    p = point if isinstance(point, Point) else Point(**point)
    _check_checkout()
    with _deterministic_stream():
        return _run(p)


def _run(p: Point) -> dict:
    m = Machine(p.ram_mib << 20, split=p.policy)
    image = m.load(ELF, f"{p.total} {p.per_round} {p.sleep_ms} 0 {p.spin}")
    m.vm.update_vmid()
    m.vm.map_slot(m.ram)                              # 2 MiB blocks before logging starts
    warm = m.run(max_insns=p.warmup)
    if warm.reason != "budget":
        raise RuntimeError(f"warm-up ended with {warm.reason}: {warm.error or m.uart.text}")
    round_ipa = image.symbol("dirtyram_round")
    rounds0 = int.from_bytes(m.vm.read_guest(round_ipa, 4), "little")
    stats0, tlb0, tables0 = Counter(m.vm.stats), Counter(m.host.tlb.stats), m.host.pool.in_use
    probe = FaultProbe(m, p.fault_ns)
    snaps = [Counter(m.vm.stats)]                     # stats as each iteration began
    walls = [time.perf_counter()]

    def progress(report) -> None:
        while len(snaps) < len(report.iterations):
            snaps.append(Counter(m.vm.stats))
            walls.append(time.perf_counter())

    sink = Sink(keep=p.verify)
    params = Params(bandwidth=p.bandwidth, downtime_ns=p.downtime_ms * 1_000_000,
                    max_iterations=p.max_iterations)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    src = migrate_out(m, sink, params, progress)
    setup_wall, setup_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    ran = m.run(max_insns=p.budget_insns)
    if ran.reason not in ("migrate", "budget"):
        raise RuntimeError(f"the guest stopped during migration: {ran.reason} {ran.error or ''}")
    stats, tables = Counter(m.vm.stats), m.host.pool.in_use
    rounds1 = int.from_bytes(m.vm.read_guest(round_ipa, 4), "little")
    report = src.complete()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if report.status != "completed":
        raise RuntimeError(f"migration {report.status}: {report.error}")
    run_ms = (report.end_ns - report.start_ns) / 1e6
    snaps.append(stats)
    walls[len(snaps) - 1:] = [wall0 + wall]
    per_iter = []
    for i, it in enumerate(report.iterations):
        f = _faults(snaps[min(i + 1, len(snaps) - 1)] - snaps[min(i, len(snaps) - 1)])
        per_iter.append({"n": it.number, "queued": it.queued_pages, "sent": it.sent_pages,
                         "zero": it.zero_pages, "dirtied": it.dirtied_pages,
                         "start_ms": (it.start_ns - report.start_ns) / 1e6,
                         "end_ms": (it.end_ns - report.start_ns) / 1e6,
                         "faults": f["total"]})
    converged = ran.reason == "migrate" and not report.forced
    res = {
        "point": asdict(p), "rate": p.rate,
        "rate_measured": (rounds1 - rounds0) * p.per_round / run_ms if run_ms else 0.0,
        "converged": converged,
        "end": "converged" if converged else ("cap" if report.forced else "budget"),
        "iterations": len(report.iterations),
        "total_ms": run_ms + report.downtime_ns / 1e6, "downtime_ms": report.downtime_ns / 1e6,
        "pages_sent": report.pages_sent, "zero_pages": report.zero_pages,
        "bytes": report.total_bytes, "ram_digests": dict(report.digests),
        "faults": _faults(stats - stats0), "faults_by_kind": dict(sorted(probe.count.items())),
        "eager_splits": stats["eager splits"] - stats0["eager splits"],
        "tables_before": tables0, "tables_at_switchover": tables,
        "tlb_flushes": sum(v for k, v in m.host.tlb.stats.items() if k.startswith("flush"))
        - sum(v for k, v in tlb0.items() if k.startswith("flush")),
        "tlb_fills": m.host.tlb.stats["fill"] - tlb0["fill"],
        "warmup_rounds": rounds0, "guest_rounds": rounds1 - rounds0,
        "per_iteration": per_iter, "verified": None,
        # the stream carries each vCPU's CNTVCT high-water mark, from the host clock
        "host": {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                 "stream_blake2b": sink.hash.hexdigest(),
                 "setup_wall_s": round(setup_wall, 6), "setup_cpu_s": round(setup_cpu, 6),
                 "fault_wall_s": {k: round(v, 4) for k, v in sorted(probe.wall.items())},
                 "fault_cpu_s": {k: round(v, 4) for k, v in sorted(probe.cpu.items())},
                 "iteration_wall_s": [round(b - a, 3) for a, b in zip(walls, walls[1:])]},
    }
    if p.verify:
        sink.buf.seek(0)
        dest, inc = incoming(sink.buf)
        after = dest.run(max_insns=200_000)
        dest_rounds = int.from_bytes(dest.vm.read_guest(round_ipa, 4), "little")
        res["verified"] = (inc.digests == report.digests and after.reason == "budget"
                           and dest_rounds > rounds1)
    return res


def deterministic(result: dict) -> dict:
    """A result without its host measurements: what must be identical wherever it ran."""
    return {k: v for k, v in result.items() if k != "host"}


# ---- the sweep ----------------------------------------------------------------------------------
# (sleep ms, pages per round): nominal rates from light to 4x the link (32.77 pages/ms), the
# sleeps refining the rates around the boundary (65 / 2 ms = 32.5, 326 / 10 ms = 32.6 pages/ms).
FULL_GRID = {1: (8, 16, 24, 28, 30, 31, 32, 33, 40, 128),
             2: (16, 62, 65),
             5: (40, 162),
             10: (80, 310, 326, 640)}
# What-if (the model charges faults no virtual time): (sleep ms, pages per round, ns per fault).
WHAT_IF = ((1, 33, 2000), (1, 33, 5000), (1, 40, 5000))
QUICK_GRID = {1: (8, 31, 40)}
QUICK_CAP = 6                        # --quick: a low cap so the non-converging point is cheap


def grid(quick: bool = False, policies=POLICIES) -> list[Point]:
    if quick:
        return [Point(pol, per, sleep, max_iterations=QUICK_CAP) for pol in policies
                for sleep, pers in sorted(QUICK_GRID.items()) for per in pers]
    main = [Point(pol, per, sleep) for pol in policies
            for sleep, pers in sorted(FULL_GRID.items()) for per in pers]
    return main + [Point(pol, per, sleep, fault_ns=ns) for pol in policies
                   for sleep, per, ns in WHAT_IF]


def cost(p: Point) -> float:
    """Rough relative cost (pages faulted and sent), to start the longest points first."""
    _, iters = predict(p.rate, total=p.total, first_pass_ms=p.total / link_pages_per_ms(
        p.bandwidth), bandwidth=p.bandwidth, downtime_ms=p.downtime_ms, cap=p.max_iterations)
    return iters * min(p.total, p.rate * 400)


def sweep(points: list[Point], *, workers: int = 2, scheduler: str | None = None) -> list[dict]:
    """Run every point on a process pool, or on the Dask cluster at `scheduler` ("local":
    a LocalCluster of `workers` processes); results in the order of `points`."""
    order = sorted(range(len(points)), key=lambda i: -cost(points[i]))
    todo = [asdict(points[i]) for i in order]             # plain dicts travel anywhere
    if scheduler is None:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(run_point, todo))
    else:
        from dask.distributed import Client, LocalCluster
        if scheduler == "local":
            with LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                done = client.gather(client.map(run_point, todo))
        else:
            with Client(scheduler) as client:
                done = client.gather(client.map(run_point, todo))
    out: list[dict] = [{}] * len(points)
    for i, res in zip(order, done):
        out[i] = res
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python studies/split_policy.py",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a handful of points (< 60 s on 2 cores)")
    ap.add_argument("--scheduler", metavar="ADDR",
                    help="run on the Dask scheduler at ADDR ('local': a LocalCluster)")
    ap.add_argument("--workers", metavar="N", type=int, default=os.cpu_count() or 2,
                    help="processes (process pool, or the LocalCluster's workers)")
    ap.add_argument("--json", metavar="OUT", help="write every result (and the run's meta) here")
    ap.add_argument("--plot", metavar="OUT.png", help="write the plot here (needs matplotlib)")
    ap.add_argument("--markdown", metavar="OUT.md", help="write the tables and boundaries here")
    a = ap.parse_args(argv)
    from studies import split_report as rep
    points = grid(a.quick)
    engine = f"dask {a.scheduler}" if a.scheduler else f"ProcessPoolExecutor({a.workers})"
    print(f"split_policy: {len(points)} points on {engine}", file=sys.stderr)
    t0 = time.perf_counter()
    results = sweep(points, workers=a.workers, scheduler=a.scheduler)
    meta = {"points": len(points), "engine": engine, "wall_s": round(time.perf_counter() - t0, 1),
            "quick": a.quick, "cpu_count": os.cpu_count()}
    text = rep.markdown(results, meta)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text)
    if a.plot:
        rep.plot(results, a.plot)
    print(f"split_policy: {len(points)} points in {meta['wall_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from studies import split_policy as _study      # pickle run_point by its importable name
    sys.exit(_study.main())
