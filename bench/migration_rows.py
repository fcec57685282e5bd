"""Live-migration rows: the stream's serialiser and parser, the modelled (virtual) downtime of
an idle and a dirtying guest, and the wall time per GiB of an idle guest's migration. All in
one process: the stream goes through memory, the destination is a second board.

  stream rows     MiB/s of guest memory (every memslot: RAM + the two 64 MiB flash slots),
                  all-zero ("zero pages", untouched host memory, as an idle guest's) or random
                  ("dirty pages"). serialise = the pre-copy's full pass (MigrationSource._send:
                  zero-page detection + stream.Writer framing/CRC) into a sink that keeps the
                  Writer's bytes (no sink copy); parse = emu.migration.incoming on that stream
                  (Reader + hyp.migration.incoming + a fresh board + its checksums). Baseline,
                  same run, interleaved: a plain bytes() copy of the same memslots ("bytes
                  copy" rows), the least any serialiser or parser does with a dirty page.
  downtime rows   a dirtyram guest under QEMU's default limits (Params(): 128 MiB/s, 300 ms);
                  value = the modelled downtime (stop-and-copy bytes / bandwidth) in virtual
                  ms, the same in every run; the "wall" rows are what complete() took.
  per GiB rows    an idle guest on Machine(1 GiB): wall seconds of migrate_out + the run to
                  switch-over + complete() (the full pass and the switch-over, checksums
                  included), and separately the destination's incoming(), per GiB of RAM.
Every run is checked: the destination's per-memslot digests equal the source's (and the
expected ones), page counts add up (the full pass covers every page of every memslot, what
was sent is what arrived), the clock is carried, and the migrated guest runs on.
"""
from __future__ import annotations

import io
import os
import statistics

import numpy as np

from bench.common import BenchError, Context, Result, Rows, check_eq, timed
from emu.machine import FLASH_SIZE, Machine
from emu.migration import incoming, migrate_out
from hyp.migration.checksum import digests
from hyp.migration.precopy import Params
from hyp.migration.stream import PAGE

ROWS = Rows()
MIGRATION_ROWS: set[str] = set()             # every row name in ROWS (for the table header)
GIB = 1 << 30
MIB = 1 << 20
GUEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "guests", "dirtyram.elf")
IDLE = "16 1 1000 0"                         # 1 page written per second of virtual time
MEDIUM = "8192 256 10 0"                     # 256 pages per 10 ms over 32 MiB: ~100 MiB/s
RUN_LIMIT = 50_000_000                       # instructions a source may run to switch-over


def register_migration(*names: str):
    MIGRATION_ROWS.update(names)
    return ROWS.register(*names)


def _stream_ram(ctx: Context) -> int:
    """RAM of the stream rows' board: 64 MiB (--quick: 4 MiB); flash adds 128 MiB."""
    return max(4 * MIB, ctx.sizes.big_slot // 16)


def _reps(ctx: Context, most: int) -> int:
    return max(1, min(most, ctx.sizes.reps))


def header_lines(ctx: Context) -> list[str]:
    """How these rows are measured, for the table's header."""
    return [
        "migration rows: in-process (the stream through memory), Params() = QEMU defaults "
        "(128 MiB/s, 300 ms downtime limit), icount on; stream rows best of "
        f"{_reps(ctx, 5)} on a {_stream_ram(ctx) >> 20} MiB board, interleaved with their "
        f"bytes-copy baseline; downtime rows best of {_reps(ctx, 3)} (virtual downtime is the "
        f"same in every run), per-GiB rows best of {_reps(ctx, 5)}; every run checked "
        "(destination digests = source's, page counts, clock carried, guest runs on); noise "
        "= (median - best) / best",
    ]


def _spread(times: list[float]) -> float:
    return statistics.median(times) / min(times) - 1


def _slots(m: Machine) -> list[tuple[str, int, int]]:
    """(name, offset in host memory, size) of every memslot."""
    base = m.host.mem.base
    return [(s.name, s.pa - base, s.size) for s in m.vm.memslots]


def _pages(m: Machine) -> int:
    return sum(s.npages for s in m.vm.memslots)


class _Chunks:
    """A sink that keeps what the Writer wrote (its bytes objects, no copy)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, b: bytes) -> int:
        self.chunks.append(b)
        return len(b)

    def flush(self) -> None:
        pass

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)


def _check_received(what: str, report, inc, want: dict[str, str] | None = None) -> None:
    """The destination's digests are the source's (and `want`), and what was sent arrived."""
    if report.status != "completed":
        raise BenchError(f"{what}: migration {report.status}: {report.error}")
    if want is not None and report.digests != want:
        raise BenchError(f"{what}: source digests {report.digests} at switch-over, expected "
                         f"{want}")
    if inc.digests != report.digests or set(inc.digests) != set(report.digests):
        raise BenchError(f"{what}: destination digests {inc.digests} != source's "
                         f"{report.digests}")
    check_eq(f"{what}: pages received", inc.pages, report.pages_sent)
    check_eq(f"{what}: zero pages received", inc.zero_pages, report.zero_pages)
    check_eq(f"{what}: stream bytes", inc.bytes, report.total_bytes)


def _check_iterations(what: str, report, total_pages: int) -> None:
    its = report.iterations
    if not its:
        raise BenchError(f"{what}: no iterations")
    check_eq(f"{what}: full pass pages", its[0].queued_pages, total_pages)
    for it in its:
        check_eq(f"{what}: iteration {it.number} pages sent + zero", it.sent_pages +
                 it.zero_pages, it.queued_pages)
    check_eq(f"{what}: pages sent", report.pages_sent, sum(i.sent_pages for i in its))
    check_eq(f"{what}: zero pages", report.zero_pages, sum(i.zero_pages for i in its))


# ---- the stream ---------------------------------------------------------------------------
def _stream_board(ctx: Context, kind: str) -> Machine:
    m = Machine(_stream_ram(ctx))
    if kind == "dirty":
        rng = np.random.default_rng(0x5EED)
        for _, off, size in _slots(m):
            m.host.mem.buf[off:off + size] = rng.integers(0, 256, size, dtype=np.uint8)
    return m


@register_migration("migration stream bytes copy zero pages",
                    "migration stream serialise zero pages",
                    "migration stream parse zero pages",
                    "migration stream bytes copy dirty pages",
                    "migration stream serialise dirty pages",
                    "migration stream parse dirty pages")
def stream_rows(ctx: Context) -> list[Result]:
    reps = _reps(ctx, 5)
    out = []
    for kind in ("zero", "dirty"):
        m = _stream_board(ctx, kind)
        mem, slots, npages = m.host.mem, _slots(m), _pages(m)
        total = sum(size for _, _, size in slots)
        mib = total / MIB
        want = digests(m.vm)
        copy_t, ser_t, parse_t, digest_t = [], [], [], []
        stream_bytes = 0
        for rep in range(reps + 1):                      # rep 0: warm-up
            # baseline: one plain copy of every memslot into new bytes objects
            dt_c, copies = timed(lambda: [bytes(mem.buf[off:off + size])
                                          for _, off, size in slots])
            for (name, off, size), c in zip(slots, copies):
                if not np.array_equal(np.frombuffer(c, dtype=np.uint8), mem.buf[off:off + size]):
                    raise BenchError(f"bytes copy of memslot {name} differs")
            del copies
            # serialise: the pre-copy's full pass, every page of every memslot
            sink = _Chunks()
            src = migrate_out(m, sink, Params())
            dt_s, _ = timed(lambda: src._send(float("inf")))
            it = src.report.iterations[0]
            if src._queue:
                raise BenchError(f"{kind}: the full pass left pages queued")
            check_eq(f"{kind}: pages sent", it.sent_pages, npages if kind == "dirty" else 0)
            check_eq(f"{kind}: zero pages", it.zero_pages, 0 if kind == "dirty" else npages)
            report = src.complete()                      # nothing dirtied: state + END
            _check_iterations(kind, report, npages)
            check_eq(f"{kind}: pages re-sent at switch-over",
                     sum(i.queued_pages for i in report.iterations[1:]), 0)
            data = sink.getvalue()
            stream_bytes = len(data)
            # parse: a fresh board from the stream, pages written, checksums compared
            dt_p, (dest, inc) = timed(lambda: incoming(io.BytesIO(data)))
            _check_received(kind, report, inc, want)
            if rep == 0:                                 # and the memory itself, once
                dmem = dest.host.mem
                for (name, off, size), (_, doff, _) in zip(slots, _slots(dest)):
                    if not np.array_equal(dmem.buf[doff:doff + size], mem.buf[off:off + size]):
                        raise BenchError(f"{kind}: destination memslot {name} differs")
            dt_d, _ = timed(lambda: digests(dest.vm))    # the checksum part of the parse
            del dest, inc, data, sink, src
            if rep:
                copy_t.append(dt_c)
                ser_t.append(dt_s)
                parse_t.append(dt_p)
                digest_t.append(dt_d)
        base = mib / min(copy_t)
        ser = mib / min(ser_t)
        parse = mib / min(parse_t)
        what = (f"{total >> 20} MiB ({_stream_ram(ctx) >> 20} MiB RAM + 2 x 64 MiB flash), "
                + ("all zero (untouched host memory)" if kind == "zero" else "random bytes"))
        out.append(Result(f"migration stream bytes copy {kind} pages", round(base, 1), "MiB/s",
                          None, note=f"baseline: bytes() of every memslot of {what} (new, "
                                     f"unfaulted host memory each time); best of {reps}",
                          noise=_spread(copy_t)))
        out.append(Result(f"migration stream serialise {kind} pages", round(ser, 1), "MiB/s",
                          None,
                          note=f"{ser / base:.2f}x the bytes copy: the pre-copy's full pass "
                               f"(zero detection + Writer) over {what} -> {stream_bytes} "
                               f"stream bytes; best of {reps}",
                          noise=_spread(ser_t)))
        out.append(Result(f"migration stream parse {kind} pages", round(parse, 1), "MiB/s", None,
                          note=f"{parse / base:.2f}x the bytes copy: emu.migration.incoming "
                               f"of that stream (Reader, fresh board, pages written, "
                               f"destination checksums: {min(digest_t) * 1e3:.0f} ms of "
                               f"{min(parse_t) * 1e3:.0f} ms); best of {reps}",
                          noise=_spread(parse_t)))
        del m
    return out


# ---- a guest migrated ---------------------------------------------------------------------
def _migrate_guest(what: str, ram: int, args: str, pre_insns: int,
                   time_checksums: bool = False) -> dict:
    """Boot dirtyram `args` on Machine(ram), run `pre_insns`, migrate it with Params() to a
    second board, check everything; the measurements of that one run (`time_checksums`: also
    time the source's digests alone, again, after the switch-over)."""
    m = Machine(ram)
    img = m.load(GUEST, args)
    round_addr = img.symbol("dirtyram_round")

    def rounds(mm: Machine) -> int:
        return int.from_bytes(mm.vm.read_guest(round_addr, 4), "little")

    r = m.run(max_insns=pre_insns)
    if r.reason != "budget" or not m.uart.text.startswith("dirtyram: start"):
        raise BenchError(f"{what}: source guest did not start: {r} {m.uart.text!r}")
    buf = io.BytesIO()

    def source_side():
        src = migrate_out(m, buf, Params())
        res = m.run(max_insns=RUN_LIMIT)
        return src, res, src.complete()

    wall, (src, res, report) = timed(source_side)
    if res.reason != "migrate":
        raise BenchError(f"{what}: the source did not reach switch-over: {res}")
    if report.forced:
        raise BenchError(f"{what}: switch-over forced (did not converge)")
    _check_iterations(what, report, _pages(m))
    source_round = rounds(m)
    clock = m.vm.clock
    buf.seek(0)
    recv, (dest, inc) = timed(lambda: incoming(buf))
    _check_received(what, report, inc)
    check_eq(f"{what}: destination instructions", dest.vm.clock.instructions, clock.instructions)
    check_eq(f"{what}: destination slept ns", dest.vm.clock.slept_ns,
             clock.slept_ns + report.downtime_ns)
    check_eq(f"{what}: round at switch-over", rounds(dest), source_round)
    r = dest.run(max_insns=200_000)
    if r.reason != "budget" or rounds(dest) <= source_round:
        raise BenchError(f"{what}: the migrated guest did not run on: {r}, round "
                         f"{rounds(dest)} (was {source_round})")
    check_t = timed(lambda: digests(m.vm))[0] if time_checksums else None
    return {"report": report, "wall": wall, "recv": recv, "checksums": check_t,
            "mem": sum(s.size for s in m.vm.memslots),
            "precopy": report.wall_s - report.downtime_wall_s}


def _check_same(what: str, runs: list[dict]) -> None:
    """Virtual time is deterministic: every run migrates the same pages at the same virtual
    times. The downtime may differ by a few bytes' worth: the final ITERATION record carries
    the wall-clock seconds (wall_s) as JSON, whose length varies."""
    def shape(rep):
        return ([(i.number, i.queued_pages, i.sent_pages, i.zero_pages, i.dirtied_pages,
                  i.start_ns, i.end_ns) for i in rep.iterations], rep.start_ns, rep.end_ns)
    first = runs[0]["report"]
    for run in runs[1:]:
        rep = run["report"]
        if shape(rep) != shape(first):
            raise BenchError(f"{what}: virtual time differs between runs: {shape(rep)} vs "
                             f"{shape(first)}")
        slack = 64 * 1_000_000_000 // Params().bandwidth          # 64 bytes on the link
        if abs(rep.downtime_ns - first.downtime_ns) > slack:
            raise BenchError(f"{what}: downtime {rep.downtime_ns} ns vs {first.downtime_ns} "
                             f"ns in another run")


def _downtime_rows(ctx: Context, name: str, ram: int, args: str, pre_insns: int,
                   guest: str) -> list[Result]:
    reps = _reps(ctx, 3)
    runs = [_migrate_guest(name, ram, args, pre_insns) for _ in range(reps)]
    _check_same(name, runs)
    rep = runs[0]["report"]
    its = rep.iterations
    walls = [r["report"].downtime_wall_s for r in runs]
    final_bytes = rep.downtime_ns * Params().bandwidth // 1_000_000_000
    note = (f"{guest}: {len(its)} iterations ({', '.join(str(i.queued_pages) for i in its)} "
            f"pages queued), migration {(rep.end_ns - rep.start_ns) / 1e6:.1f} virtual ms; "
            f"downtime = {final_bytes} stop-and-copy bytes ({its[-1].queued_pages} pages + "
            f"state) / 128 MiB/s; the same in all {reps} runs; target: the 300 ms downtime limit")
    wall_note = (f"{guest}: wall time of complete() (stop-and-copy, state, checksums of "
                 f"{runs[0]['mem'] >> 20} MiB of memslots); best of {reps}")
    return [Result(name, round(rep.downtime_ns / 1e6, 3), "ms", "<= 300", note=note),
            Result(f"{name} wall", round(min(walls), 3), "s", None, note=wall_note,
                   noise=_spread(walls))]


@register_migration("migration downtime 256 MiB idle", "migration downtime 256 MiB idle wall")
def downtime_idle(ctx: Context) -> list[Result]:
    return _downtime_rows(ctx, "migration downtime 256 MiB idle", 256 * MIB, IDLE, 200_000,
                          f"dirtyram {IDLE} on 256 MiB (1 page per virtual second)")


@register_migration("migration downtime dirtyram medium", "migration downtime dirtyram medium wall")
def downtime_medium(ctx: Context) -> list[Result]:
    return _downtime_rows(ctx, "migration downtime dirtyram medium", 64 * MIB, MEDIUM, 2_000_000,
                          f"dirtyram {MEDIUM} on 64 MiB (256 pages / 10 ms over 32 MiB)")


@register_migration("migration total per GiB idle", "migration receive per GiB idle")
def per_gib_idle(ctx: Context) -> list[Result]:
    size = ctx.sizes.big_slot
    # per GiB of RAM, on Machine(1 GiB) (its memslots: 1 GiB RAM + 128 MiB flash); --quick
    # scales a smaller board's time by memslot bytes to that board's
    flash = 2 * FLASH_SIZE
    scale = (GIB + flash) / (size + flash)
    scaled = "" if size == GIB else \
        f" [measured on {size >> 20} MiB RAM, scaled x{scale:.2f} to Machine(1 GiB)]"
    reps = _reps(ctx, 5)
    runs = [_migrate_guest("migration total per GiB idle", size, IDLE, 200_000,
                           time_checksums=True) for _ in range(reps)]
    _check_same("migration total per GiB idle", runs)
    walls = [r["wall"] for r in runs]
    recvs = [r["recv"] for r in runs]
    best = min(runs, key=lambda r: r["wall"])
    rep = best["report"]
    mem = best["mem"]
    checks = min(r["checksums"] for r in runs)
    note = (f"dirtyram {IDLE} on Machine({size >> 20} MiB) ({mem >> 20} MiB of memslots with "
            f"flash): migrate_out + run to switch-over + complete(), best "
            f"{best['wall']:.2f} s = pre-copy {best['precopy']:.2f} s ({rep.zero_pages} zero "
            f"pages, {rep.pages_sent} sent) + switch-over {rep.downtime_wall_s:.2f} s "
            f"(the per-memslot checksums alone, timed again: best {checks:.2f} s); best of "
            f"{reps}{scaled}")
    recv_note = (f"the destination's emu.migration.incoming of that stream: fresh board, ZERO "
                 f"records written as zeros, checksums; best of {reps}{scaled}")
    return [Result("migration total per GiB idle", round(min(walls) * scale, 3), "s", "<= 1",
                   note=note, noise=_spread(walls)),
            Result("migration receive per GiB idle", round(min(recvs) * scale, 3), "s", None,
                   note=recv_note, noise=_spread(recvs))]
