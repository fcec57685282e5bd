"""A run on the virtual time line: Chrome trace-event JSON for ui.perfetto.dev / chrome://tracing.

    exporter = PerfettoExporter(machine)      # subscribes to the machine's observer lists
    ... machine.vcpu.run(...); exporter.harvest(pages) after each dirty-log harvest ...
    exporter.write("run.json")

Time is VIRTUAL (hyp.vtime: guest steps x ns_per_insn + sleeps), in microseconds as the
format wants; it never reads the wall clock, so two runs give the same file. Events are kept in
integer nanoseconds and written as exact decimals (`ts` 11.839 is 11839 ns, never a float
rounding of it), so a slice ends exactly where the next one starts. One process (the VM), four
tracks, or three plus one per vCPU when the machine has several:

  vCPU N          "guest" slices while guest code runs (duration = instructions executed),
                  one slice per exit named "<exit>: <outcome>" (e.g. "data-abort: dirty",
                  "hvc: hvc") lasting until the vCPU resumes (zero unless the exit slept),
                  instants for exceptions delivered to the guest ("exc svc")
  stage-2 faults  an instant per stage-2 abort, named "<fault> L<level>", args HSR/HPFAR/IPA/VA
                  (and cpu, the vCPU's index, with several)
  dirty log       an instant per harvest ("harvest", args pages) and the counter "dirty pages"
                  (pages dirtied since the last harvest)
  TLB             an instant per flush ("flush_vmid", args vmid/reason/skipped)

Events: "M" metadata (names), "X" complete slices (ts, dur), "i" instants (s = "t"),
"C" counters; every event has name/ph/ts/pid/tid. Written sorted by ts.

Track ids (tid): vCPU 0 is 1, then stage-2 faults 2, dirty log 3, TLB 4, and vCPU N > 0 is
4 + N; the vCPU tracks are sorted first. Only one vCPU runs at a time (hyp.smp), so a vCPU's
guest slice starts when its previous exit ended or another vCPU's last did, whichever is later
(as with one vCPU, virtual time the machine slept in WFI is inside the next guest slice).
"""
from __future__ import annotations

import json
import os
import re
from functools import partial
from typing import TextIO

from hyp.arch.fault import FaultType
from hyp.exits import Hypercall, Stage2Abort
from hyp import hypercall

from .trace import exception_name, exit_name

PID = 1
TID_VCPU, TID_FAULTS, TID_DIRTY, TID_TLB = 1, 2, 3, 4


def vcpu_tid(i: int) -> int:
    """The track of vCPU i."""
    return TID_VCPU if i == 0 else TID_TLB + i
_FAULT = {FaultType.ADDRESS_SIZE: "address-size", FaultType.TRANSLATION: "translation",
          FaultType.ACCESS_FLAG: "access-flag", FaultType.PERMISSION: "permission",
          FaultType.EXTERNAL: "external", FaultType.EXTERNAL_WALK: "external-walk"}


class PerfettoExporter:
    """Collects exits, stage-2 faults, harvests, TLB flushes and dirty-page counts of one
    machine (an emu.machine.Machine) from the moment it is created."""

    def __init__(self, machine) -> None:
        self.m = machine
        self.events: list[dict] = []
        self._cpus = list(getattr(machine, "cpus", [machine.cpu]))
        clock = machine.vm.clock
        # cpu.instructions - clock.instructions: the clock catches up after each cpu.run
        self._insn_offset = self._steps() - clock.instructions
        self._resume_ns = [clock.now_ns()] * len(self._cpus)   # each vCPU's last exit end
        self._last_end_ns = clock.now_ns()                     # any vCPU's last exit end
        self._exit: tuple[int, object, dict, dict | None, int] | None = None
        self._flush_reason: str | None = None
        self._dirty: set[tuple[int, int]] = set()   # (slot, gfn) dirtied since the last harvest
        self._dirty_shown = 0
        self._harvests = 0
        self._subs = [(machine.vcpu.observers, self._on_vcpu),
                      (machine.vm.stage2.observers, self._on_stage2),
                      (machine.host.tlb.listeners, self._on_tlb),
                      (machine.vm.dirty_observers, self._on_dirty)]
        self._subs += [(cpu.exception_observers, partial(self._on_exception, i))
                       for i, cpu in enumerate(self._cpus)]
        for lst, fn in self._subs:
            lst.append(fn)
        self._counter()

    # ---- what the CLI calls ----------------------------------------------------------
    def harvest(self, n_pages: int) -> None:
        """A dirty-log harvest just returned `n_pages` dirty pages (GET_DIRTY_LOG, the ring)."""
        self._harvests += 1
        self._instant(TID_DIRTY, "harvest", {"pages": int(n_pages), "n": self._harvests})
        self._dirty.clear()
        self._counter()

    def detach(self) -> None:
        """Stop collecting (the events so far stay)."""
        self._finish_exit("error")
        for lst, fn in self._subs:
            if fn in lst:
                lst.remove(fn)
        self._subs = []

    def trace(self, exact: bool = False) -> dict:
        """The Chrome trace-event object: metadata first, then every event sorted by ts.
        `ts`/`dur` are microseconds as floats (or, with `exact`, placeholders that `write`
        turns into exact decimal text)."""
        self._finish_exit("error")
        meta: list[dict] = [{"name": "process_name", "ph": "M", "ts": 0, "pid": PID, "tid": 0,
                             "args": {"name": f"s2emu {self.m.vm.name} (virtual time)"}}]
        n = len(self._cpus)
        tracks = [(vcpu_tid(i), f"vCPU {i}", i + 1) for i in range(n)]
        tracks[1:1] = [(TID_FAULTS, "stage-2 faults", n + 1), (TID_DIRTY, "dirty log", n + 2),
                       (TID_TLB, "TLB", n + 3)]
        for tid, name, order in tracks:
            meta.append({"name": "thread_name", "ph": "M", "ts": 0, "pid": PID, "tid": tid,
                         "args": {"name": name}})
            meta.append({"name": "thread_sort_index", "ph": "M", "ts": 0, "pid": PID,
                         "tid": tid, "args": {"sort_index": order}})
        conv = _exact if exact else (lambda ns: ns / 1000)
        events = []
        for e in sorted(self.events, key=lambda e: e["ts"]):         # stable
            e = dict(e, ts=conv(e["ts"]))
            if "dur" in e:
                e["dur"] = conv(e["dur"])
            events.append(e)
        return {"traceEvents": meta + events, "displayTimeUnit": "ns",
                "otherData": {"clock": "virtual: guest steps x ns_per_insn + sleeps",
                              "ns_per_insn": self.m.vm.clock.ns_per_insn}}

    def write(self, path: str | os.PathLike | TextIO) -> None:
        """Write the JSON to a path or an open text file (times as exact decimals)."""
        text = _EXACT_RE.sub(_exact_text, json.dumps(self.trace(exact=True),
                                                     separators=(",", ":")))
        if hasattr(path, "write"):
            path.write(text)
            return
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    # ---- events ------------------------------------------------------------------------
    def _steps(self) -> int:
        """Steps of every vCPU so far, exact from inside a run too."""
        return sum(c.insn_index() for c in self._cpus)

    def _current(self) -> int:
        """The vCPU running now."""
        return getattr(self.m, "current", 0) if len(self._cpus) > 1 else 0

    def _now_ns(self) -> int:
        """Virtual time now, also from inside a run (an exception delivered by the CPU): the
        clock plus the instructions the CPU ran since the clock last caught up."""
        clock = self.m.vm.clock
        lag = self._steps() - self._insn_offset - clock.instructions - clock.in_flight()
        return clock.now_ns() + max(0, lag) * clock.ns_per_insn

    def _ts(self, ns: int | None = None) -> int:
        """Event times are kept in integer ns until written."""
        return self._now_ns() if ns is None else ns

    def _instant(self, tid: int, name: str, args: dict, ns: int | None = None) -> dict:
        ev = {"name": name, "ph": "i", "s": "t", "ts": self._ts(ns), "pid": PID, "tid": tid,
              "args": args}
        self.events.append(ev)
        return ev

    def _slice(self, name: str, start_ns: int, end_ns: int, args: dict, cpu: int) -> None:
        self.events.append({"name": name, "ph": "X", "ts": self._ts(start_ns),
                            "dur": end_ns - start_ns, "pid": PID, "tid": vcpu_tid(cpu),
                            "args": args})

    def _counter(self) -> None:
        self._dirty_shown = len(self._dirty)
        self.events.append({"name": "dirty", "ph": "C", "ts": self._ts(), "pid": PID,
                            "tid": TID_DIRTY, "args": {"pages": self._dirty_shown}})

    # ---- observers ---------------------------------------------------------------------
    def _on_vcpu(self, kind: str, ex, outcome: str | None) -> None:
        now = self._now_ns()
        if kind == "exit":
            self._finish_exit("error")
            cpu = self._current()
            resumed = max(self._resume_ns[cpu], self._last_end_ns)
            if now > resumed:
                self._slice("guest", resumed, now,
                            {"instructions": (now - resumed) // self.m.vm.clock.ns_per_insn},
                            cpu)
            args = {"pc": f"{ex.pc:#010x}"}
            fault_ev = None
            if isinstance(ex, Stage2Abort):
                f, syn = ex.fault, ex.syndrome
                args.update(hsr=f"{syn.hsr:#010x}", hpfar=f"{syn.hpfar:#010x}",
                            ipa=f"{f.ipa:#x}", va=f"{f.va:#010x}", fault=_FAULT[f.type],
                            level=f.level, access=f.access.name.lower())
                fault_args = dict(args) if len(self._cpus) == 1 else dict(args, cpu=cpu)
                fault_ev = self._instant(TID_FAULTS, f"{_FAULT[f.type]} L{f.level}",
                                         fault_args, now)
            elif isinstance(ex, Hypercall):
                fid = self._cpus[cpu].reg(0)
                args.update(hsr=f"{ex.hsr:#010x}", fid=f"{fid:#010x}",
                            call=hypercall.NAMES.get(fid, "unknown"))
            self._exit = (now, ex, args, fault_ev, cpu)
            return
        self._finish_exit(outcome)

    def _finish_exit(self, outcome: str) -> None:
        if self._exit is None:
            return
        start, ex, args, fault_ev, cpu = self._exit
        self._exit = None
        now = self._now_ns()
        args["outcome"] = outcome
        if fault_ev is not None:
            fault_ev["args"]["outcome"] = outcome
        name = exit_name(ex)
        if "call" in args:
            name = f"hvc {args['call']}"
        self._slice(f"{name}: {outcome}", start, now, args, cpu)
        self._resume_ns[cpu] = self._last_end_ns = now
        if len(self._dirty) != self._dirty_shown:
            self._counter()

    def _on_stage2(self, kind: str, **info) -> None:
        if kind != "tlb_flush":
            return
        if info.get("skipped"):
            self._instant(TID_TLB, "flush_vmid", {"vmid": self.m.vm.vmid,
                                                  "reason": info.get("reason"),
                                                  "skipped": True})
        else:
            self._flush_reason = info.get("reason")

    def _on_tlb(self, op: str, vmid: int | None) -> None:
        reason, self._flush_reason = self._flush_reason, None
        self._instant(TID_TLB, op, {"vmid": vmid, "reason": reason, "skipped": False})

    def _on_dirty(self, slot, gfn: int, source: str) -> None:
        self._dirty.add((slot.slot, gfn))
        if self._exit is None and len(self._dirty) != self._dirty_shown:
            self._counter()             # outside an exit (e.g. the user wrote guest memory)

    def _on_exception(self, cpu: int, exc, lr: int, vector: int) -> None:
        self._instant(vcpu_tid(cpu), f"exc {exception_name(exc)}",
                      {"lr": f"{lr:#010x}", "vector": f"{vector:#010x}",
                       "injected": self._exit is not None})


_EXACT_RE = re.compile(r'"@ns:(\d+)@"')


def _exact(ns: int) -> str:
    return f"@ns:{ns}@"


def _exact_text(m: re.Match) -> str:
    """ns -> microseconds as a decimal number with three places: exact, no float rounding."""
    ns = int(m.group(1))
    return f"{ns // 1000}.{ns % 1000:03d}"


__all__ = ["PerfettoExporter"]
