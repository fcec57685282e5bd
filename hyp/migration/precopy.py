"""Pre-copy live migration, as QEMU does it (migration/ram.c), over the dirty log.

A full pass sends every page; each later iteration sends the pages the dirty log reported
during the previous one (`dirty.collect`: bitmap, manual protect or ring). When what is left
fits in bandwidth x downtime limit, the guest stops (the source's vCPU loop returns
"migrate"), the rest is sent with the vCPU, device and clock state and the memslots'
checksums, and the destination may start.

Time is the guest's virtual time. The link is a model: while the guest runs it lets through at
most `bandwidth` bytes per second of virtual time (a credit refilled by a timer every
`tick_ns`), so iterations, dirty rates and downtime are deterministic and independent of the
host; the wall clock is only measured and reported. The modelled downtime is the stop-and-copy
bytes / bandwidth; the destination's clock resumes from the source's plus that downtime.

Auto-converge (QEMU's cpu-throttle): when an iteration dirties more than half of what it sent,
twice in a row, the guest is throttled - for every ns it runs, it is kept off the CPU
throttle/(1 - throttle) ns - starting at 20 % and rising by 10 % per further trigger, up to 99 %.
An iteration cap forces the switch-over (the report then shows the downtime it cost).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .. import dirty
from .checksum import digests
from .params import Params
from .state import save_devices
from .stream import MAX_PAGES_PER_RECORD, PAGE, Rec, Writer, page_record_size


@dataclass
class Iteration:
    number: int
    queued_pages: int                        # pages this iteration had to send
    sent_pages: int = 0
    zero_pages: int = 0
    bytes: int = 0
    dirtied_pages: int = 0                   # reported by the dirty log at its end
    dirty_rate: float = 0.0                  # pages per second of virtual time
    start_ns: int = 0
    end_ns: int = 0
    wall_s: float = 0.0
    throttle: int = 0


@dataclass
class Report:
    status: str = "setup"                    # setup, active, completed, cancelled, failed
    iterations: list[Iteration] = field(default_factory=list)
    total_bytes: int = 0
    pages_sent: int = 0
    zero_pages: int = 0
    downtime_ns: int = 0
    start_ns: int = 0
    end_ns: int = 0
    wall_s: float = 0.0
    downtime_wall_s: float = 0.0
    throttle: int = 0
    forced: bool = False                     # switched over at the iteration cap
    compression_ratio: float = 1.0
    digests: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def remaining_pages(self) -> int:
        it = self.iterations[-1] if self.iterations else None
        return 0 if it is None else it.queued_pages - it.sent_pages - it.zero_pages


class MigrationSource:
    """Pre-copy of one VM to `sink` (a binary file-like object: socket file, pipe, file).

    `config` describes the VM for the destination; `save_vcpus()` returns the vCPUs' states
    (JSON-able) at switch-over. Drive it with `start()`, let the VM run (its timer sends pages
    as virtual time passes) until the vCPU loop returns "migrate", then call `complete()`.
    `cancel()` at any time before that resumes normal operation."""

    def __init__(self, vm, sink, config: dict, save_vcpus: Callable[[], list[dict]],
                 params: Params | None = None,
                 progress: Callable[[Report], None] | None = None) -> None:
        self.vm, self.sink, self.config = vm, sink, config
        self.save_vcpus = save_vcpus
        self.p = params or Params()
        self.report = Report()
        self.progress = progress
        self.writer: Writer | None = None
        self._queue: list[tuple[int, np.ndarray]] = []
        self._credit = 0.0
        self._last_ns = 0
        self._last_insns = 0
        self._timer: int | None = None
        self._wall0 = 0.0
        self._open: Iteration | None = None      # the iteration in progress
        self._over_half = 0
        self.converged = False

    # ---- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        vm, p = self.vm, self.p
        self._wall0 = time.monotonic()
        now = vm.clock.now_ns()
        self.report.start_ns = self._last_ns = now
        self._last_insns = vm.clock.instructions
        try:
            self.writer = Writer(self.sink, compress=p.compress)
            self.writer.json(Rec.CONFIG, self.config)
        except OSError as e:
            self._fail(f"cannot send to the destination: {e}")
            return
        for slot in vm.memslots:
            if not slot.log_dirty:
                dirty.enable_logging(vm, slot)
        self._begin_iteration([(s.slot, np.arange(s.npages, dtype=np.int64))
                               for s in vm.memslots], now)
        self.report.status = "active"
        self._timer = vm.clock.add_timer(now + p.tick_ns, self._tick)

    def complete(self) -> Report:
        """Stop-and-copy (the guest is stopped): send the rest and the state, then END. Also
        valid before convergence (the user forces the switch-over of a paused VM)."""
        vm, r = self.vm, self.report
        if r.status != "active":
            return r
        t0 = time.monotonic()
        now = vm.clock.now_ns()
        try:
            pending = self._collect()
            if not self.converged:
                self._end_iteration(now)
                self._begin_iteration(_merge(self._queue, pending), now)
            else:
                self._queue = _merge(self._queue, pending)
            before = self.writer.bytes
            self._send(float("inf"))
            self._end_iteration(now, final=True)
            for state in self.save_vcpus():
                self.writer.json(Rec.VCPU, state)
            for dev in save_devices(vm.bus):
                self.writer.json(Rec.DEVICE, dev)
            final = self.writer.bytes - before
            r.downtime_ns = final * 1_000_000_000 // self.p.bandwidth
            self.writer.json(Rec.CLOCK, {"instructions": vm.clock.instructions,
                                         "slept_ns": vm.clock.slept_ns,
                                         "downtime_ns": r.downtime_ns})
            r.digests = digests(vm)
            self.writer.json(Rec.CHECKSUMS, r.digests)
            self.writer.record(Rec.END)
            self.sink.flush()
        except OSError as e:
            self._fail(f"the destination went away during switch-over: {e}")
            return r
        self._stop_logging()
        r.status = "completed"
        r.end_ns = now
        r.downtime_wall_s = time.monotonic() - t0
        self._finish()
        return r

    def cancel(self, reason: str = "cancelled") -> Report:
        """migrate_cancel: logging off, huge mappings back (lazily, or now with
        rebuild="now"), the guest runs on as if nothing happened."""
        r = self.report
        if r.status not in ("active", "setup"):
            return r
        r.status = "cancelled"
        r.error = None if reason == "cancelled" else reason
        self._stop_logging()
        self._finish()
        return r

    # ---- the timer: the link model ----------------------------------------------------------
    def _tick(self, now: int) -> int | None:
        if self.report.status != "active":
            return None
        self._throttle(now)
        self._credit += (now - self._last_ns) * self.p.bandwidth / 1e9
        self._last_ns = now
        try:
            while not self.converged:
                self._send(self._credit)
                if self._queue:
                    break                            # out of credit until the next tick
                self._end_iteration(now)
                pending = self._collect()
                it = self.report.iterations[-1]
                it.dirtied_pages = sum(g.size for _, g in pending)
                it.dirty_rate = it.dirtied_pages * 1e9 / max(1, it.end_ns - it.start_ns)
                fits = page_record_size(it.dirtied_pages) <= \
                    self.p.bandwidth * self.p.downtime_ns // 1_000_000_000
                capped = self.p.max_iterations is not None and it.number >= self.p.max_iterations
                self._begin_iteration(pending, now)
                if fits or capped:
                    self.report.forced = capped and not fits
                    self.converged = True
                    self.vm.request_exit("migrate")          # the vCPU loop returns: stop
                elif self.p.auto_converge:
                    self._auto_converge(it)
        except OSError as e:
            self._fail(f"the destination went away: {e}")
            return None
        if self.progress:
            self.progress(self.report)
        return None if self.converged else now + self.p.tick_ns

    def _throttle(self, now: int) -> None:
        """Keep a throttled guest off the CPU for its share of the time it just ran."""
        pct = self.report.throttle
        ran_ns = (self.vm.clock.instructions - self._last_insns) * self.vm.clock.ns_per_insn
        self._last_insns = self.vm.clock.instructions
        if pct and ran_ns > 0:
            self.vm.clock.sleep(ran_ns * pct // (100 - pct))

    # ---- iterations ------------------------------------------------------------------------
    def _begin_iteration(self, queue: list[tuple[int, np.ndarray]], now: int) -> None:
        self._queue = [(s, g) for s, g in queue if g.size]
        n = sum(g.size for _, g in self._queue)
        it = Iteration(number=len(self.report.iterations) + 1, queued_pages=n, start_ns=now,
                       throttle=self.report.throttle)
        it.wall_s = time.monotonic()
        self.report.iterations.append(it)
        self._open = it

    def _end_iteration(self, now: int, final: bool = False) -> None:
        it = self.report.iterations[-1]
        self._close_iteration(it, now)
        # the wall clock stays out of the stream: the same run gives the same bytes
        self.writer.json(Rec.ITERATION, dict(asdict(it), wall_s=None, final=final))

    def _close_iteration(self, it: Iteration, now: int) -> None:
        """The iteration ends at `now`: its virtual end and its wall seconds."""
        it.end_ns = now
        it.wall_s = time.monotonic() - it.wall_s
        self._open = None

    def _collect(self) -> list[tuple[int, np.ndarray]]:
        """The dirty log of every memslot, harvested (and re-protected)."""
        return [(slot.slot, np.flatnonzero(dirty.collect(self.vm, slot)))
                for slot in self.vm.memslots]

    def _auto_converge(self, it: Iteration) -> None:
        """QEMU's trigger: more dirtied than half of what was sent, twice in a row."""
        self._over_half = self._over_half + 1 if it.dirtied_pages * PAGE > it.bytes / 2 else 0
        if self._over_half >= 2:
            r = self.report
            r.throttle = min(self.p.throttle_max, r.throttle + self.p.throttle_increment
                             if r.throttle else self.p.throttle_initial)
            self._over_half = 0

    # ---- sending pages --------------------------------------------------------------------
    def _send(self, credit: float) -> None:
        """Send queued pages while there is credit (bytes the link lets through)."""
        mem, w, it = self.vm.host.mem, self.writer, self.report.iterations[-1]
        slots = self.vm.memslots
        while self._queue and credit > 0:
            sid, gfns = self._queue[0]
            run = _first_run(gfns)
            slot = slots[sid]
            off = slot.pa - mem.base + int(gfns[0]) * PAGE
            block = mem.buf[off:off + run * PAGE]
            nonzero = block.view(np.uint64).reshape(run, PAGE // 8).any(axis=1)
            sent = 0
            for start, stop, is_data in _runs(nonzero):
                gfn = int(gfns[0]) + start
                if is_data:
                    sent += w.pages(sid, gfn, memoryview(block[start * PAGE:stop * PAGE]))
                    it.sent_pages += stop - start
                else:
                    sent += w.zero(sid, gfn, stop - start)
                    it.zero_pages += stop - start
            it.bytes += sent
            credit -= sent
            self._credit -= sent
            rest = gfns[run:]
            self._queue[0] = (sid, rest)
            if not rest.size:
                self._queue.pop(0)

    # ---- the end ---------------------------------------------------------------------------
    def _stop_logging(self) -> None:
        for slot in self.vm.memslots:
            if slot.log_dirty:
                dirty.disable_logging(self.vm, slot)
                if self.p.rebuild == "now":
                    dirty.rebuild_huge(self.vm, slot)
        if self.vm.dirty_ring is not None:
            self.vm.dirty_ring = None

    def _fail(self, message: str) -> None:
        r = self.report
        r.status = "failed"
        r.error = message
        self._stop_logging()
        self._finish()

    def _finish(self) -> None:
        r = self.report
        if self._timer is not None:
            self.vm.clock.cancel(self._timer)
            self._timer = None
        r.end_ns = r.end_ns or self.vm.clock.now_ns()
        r.wall_s = time.monotonic() - self._wall0
        if self._open is not None:               # cut short (cancelled, failed): ends here
            self._close_iteration(self._open, r.end_ns)
        if self.writer is not None:
            r.total_bytes = self.writer.bytes
            if self.writer.page_bytes:
                r.compression_ratio = self.writer.raw_page_bytes / self.writer.page_bytes
        r.pages_sent = sum(i.sent_pages for i in r.iterations)
        r.zero_pages = sum(i.zero_pages for i in r.iterations)
        if self.progress:
            self.progress(r)


def _merge(queue, extra) -> list[tuple[int, np.ndarray]]:
    """Per-slot union of two page queues."""
    by_slot: dict[int, np.ndarray] = {}
    for sid, g in list(queue) + list(extra):
        by_slot[sid] = np.union1d(by_slot[sid], g) if sid in by_slot else np.asarray(g)
    return [(sid, g.astype(np.int64)) for sid, g in sorted(by_slot.items()) if g.size]


def _first_run(gfns: np.ndarray) -> int:
    """Length of the leading run of consecutive page numbers, at most 64."""
    head = gfns[:MAX_PAGES_PER_RECORD]
    breaks = np.flatnonzero(np.diff(head) != 1)
    return int(breaks[0]) + 1 if breaks.size else head.size


def _runs(mask: np.ndarray):
    """(start, stop, value) of the runs of equal values in a bool array."""
    edges = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), mask.size]
    for a, b in zip(bounds, bounds[1:]):
        yield a, b, bool(mask[a])
