"""Live migration from the command line and the monitors: start, watch, finish, cancel and
report one VM's pre-copy migration (hyp.migration.precopy over emu.migration's channels).

The report: a progress bar on a terminal (tqdm), a per-iteration table and both ends' RAM
checksums on stderr, `--migrate-report FILE.json`, `--migrate-plot FILE.png` (matplotlib,
the s2emu[migrate] extra).
"""
from __future__ import annotations

import json
import sys
from typing import TextIO

from hyp.migration.precopy import MigrationSource, Params, Report

from ..migration import MigrationError, migrate_out, open_outgoing

MiB = 1 << 20


class Migration:
    """One outgoing migration of a Session's machine."""

    def __init__(self, session, uri: str, params: Params, *, report_file: str | None = None,
                 plot_file: str | None = None, err: TextIO | None = None,
                 on_status=None) -> None:
        self.session, self.uri, self.params = session, uri, params
        self.report_file, self.plot_file = report_file, plot_file
        self.err = err or sys.stderr
        self.on_status = on_status or (lambda status: None)
        self.source: MigrationSource | None = None
        self._bar = None
        self._bar_iter = 0
        self._sink = None

    @property
    def status(self) -> str:
        return self.source.report.status if self.source else "setup"

    def start(self) -> None:
        """Open the channel and begin pre-copy; MigrationError if the channel will not open."""
        self.on_status("setup")
        self._sink = open_outgoing(self.uri)
        m = self.session.m
        self.say(f"migrating {m.vm.name} to {self.uri} ({m.ram.size // MiB} MiB RAM, "
                 f"bandwidth {self.params.bandwidth / MiB:g} MiB/s, downtime limit "
                 f"{self.params.downtime_ns / 1e6:g} ms, at {m.vm.clock.now_ns() / 1e6:.3f} ms)")
        self.source = migrate_out(m, self._sink, self.params, progress=self._progress)
        if self.source.report.status == "failed":
            self._close()
            raise MigrationError(self.source.report.error)
        self.on_status("active")

    def complete(self) -> Report:
        """The guest stopped for the switch-over: send the rest, print the report."""
        r = self.source.complete()
        self._close()
        self._finish(r)
        return r

    def cancel(self, reason: str = "cancelled") -> Report:
        r = self.source.cancel(reason)
        self._close()
        self._finish(r)
        return r

    def failed_while_running(self) -> bool:
        """Did the link fail during a timer tick (the destination went away)? Then report
        it once; the guest goes on."""
        if self.source is not None and self.source.report.status == "failed" and self._sink:
            self._close()
            self._finish(self.source.report)
            return True
        return False

    # ---- QMP query-migrate ------------------------------------------------------------
    def query(self) -> dict:
        if self.source is None:
            return {"status": "setup"}
        r = self.source.report
        it = r.iterations[-1] if r.iterations else None
        total_ms = ((r.end_ns if r.status != "active" else self.session.m.vm.clock.now_ns())
                    - r.start_ns) // 1_000_000
        remaining = 0 if it is None or r.status != "active" else \
            (it.queued_pages - it.sent_pages - it.zero_pages) * 4096
        sent = self.source.writer.bytes if self.source.writer else 0
        out = {"status": r.status, "total-time": total_ms, "setup-time": 0,
               "expected-downtime": int(remaining * 1000 // max(1, self.params.bandwidth)),
               "cpu-throttle-percentage": r.throttle,
               "ram": {"transferred": sent, "remaining": remaining,
                       "total": sum(s.size for s in self.session.m.vm.memslots),
                       "duplicate": sum(i.zero_pages for i in r.iterations),
                       "normal": sum(i.sent_pages for i in r.iterations),
                       "normal-bytes": 4096 * sum(i.sent_pages for i in r.iterations),
                       "dirty-pages-rate": int(r.iterations[-2].dirty_rate)
                       if len(r.iterations) > 1 else 0,
                       "mbps": round(self.params.bandwidth * 8 / 1e6, 3),
                       "dirty-sync-count": max(0, len(r.iterations) - 1),
                       "page-size": 4096}}
        if r.status == "completed":
            out["downtime"] = r.downtime_ns // 1_000_000
        if r.status == "failed" and r.error:
            out["error-desc"] = r.error
        return out

    # ---- reporting ----------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[s2emu] {text}", file=self.err, flush=True)

    def _progress(self, r: Report) -> None:
        if not self.err.isatty() or not r.iterations:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        it = r.iterations[-1]
        if self._bar is None or self._bar_iter != it.number:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=it.queued_pages * 4096, unit="B", unit_scale=True,
                             desc=f"iteration {it.number}", file=self.err, leave=False)
            self._bar_iter = it.number
        done = (it.sent_pages + it.zero_pages) * 4096
        self._bar.update(done - self._bar.n)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._sink is not None:
            try:
                self._sink.close()
            except OSError:
                pass
            self._sink = None

    def _finish(self, r: Report) -> None:
        self.on_status(r.status)
        for line in report_lines(r, self.params):
            self.say(line)
        if self.report_file:
            with open(self.report_file, "w", encoding="utf-8") as f:
                json.dump(dict(r.to_json(), uri=self.uri,
                               params=dict(vars(self.params))), f, indent=1)
        if self.plot_file and r.iterations:
            plot(r, self.plot_file)


def report_lines(r: Report, p: Params) -> list[str]:
    """The end-of-migration summary and per-iteration table."""
    sent = sum(i.bytes for i in r.iterations)
    head = (f"migration {r.status}: {len(r.iterations)} iterations, {sent / MiB:.2f} MiB sent "
            f"({r.pages_sent} pages, {r.zero_pages} zero), total "
            f"{(r.end_ns - r.start_ns) / 1e6:.1f} ms")
    if r.status == "completed":
        head += (f", downtime {r.downtime_ns / 1e6:.1f} ms (limit {p.downtime_ns / 1e6:g} ms"
                 f"{', exceeded: iteration cap' if r.forced else ''})")
    head += f"; wall {r.wall_s:.2f} s"
    if r.throttle:
        head += f"; throttled to {100 - r.throttle}%"
    if p.compress and r.compression_ratio != 1.0:
        head += f"; zstd ratio {r.compression_ratio:.2f}"
    lines = [head]
    if r.error:
        lines.append(f"  error: {r.error}")
    lines.append("  iter    pages     zero  dirtied   MiB sent  dirty rate/s  virtual ms"
                 "   wall s  throttle")
    for i in r.iterations:
        lines.append(f"  {i.number:4d} {i.sent_pages:8d} {i.zero_pages:8d} {i.dirtied_pages:8d} "
                     f"{i.bytes / MiB:10.2f} {i.dirty_rate:13.0f} "
                     f"{(i.end_ns - i.start_ns) / 1e6:11.1f} {i.wall_s:8.3f} {i.throttle:8d}%")
    if r.digests:
        lines.append("RAM checksums at switch-over (source): " +
                     " ".join(f"{k} {v}" for k, v in r.digests.items()))
    return lines


def plot(r: Report, path: str) -> None:
    """Dirty pages and bytes sent per iteration (matplotlib, the s2emu[migrate] extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MigrationError("--migrate-plot needs matplotlib: pip install 's2emu[migrate]'") \
            from None
    n = [i.number for i in r.iterations]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(n, [i.bytes / MiB for i in r.iterations], color="#8ab", label="MiB sent")
    ax.set_xlabel("iteration")
    ax.set_ylabel("MiB sent")
    ax2 = ax.twinx()
    ax2.plot(n, [i.dirtied_pages for i in r.iterations], "o-", color="#c44",
             label="pages dirtied")
    ax2.set_ylabel("pages dirtied during the iteration")
    ax.set_title(f"pre-copy: {r.status}, downtime {r.downtime_ns / 1e6:.1f} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
