"""Trace dumps: the Tracer, which collects events from a machine and writes them.

A `Tracer` subscribes to the machine's observer lists and, for `insn` and `mem` only, installs
Unicorn hooks (emu/debug/trace_uc.py). Nothing is subscribed or installed for a kind that was
not asked for, and nothing at all without a tracer: tracing off costs nothing (DESIGN 6).

With several vCPUs the tracer subscribes to each one's observers and engine: every vCPU's MMU
(stage-1 and stage-2 walks), its exceptions and its Unicorn hooks; exits come from the one
observer list all vCPUs share (hyp.smp.Scheduler). Each event names its vCPU and counts the
machine's steps (emu/debug/trace_format.py).

The kinds, the event indices, the text and JSON Lines formats, the address filter and ring
mode are described in emu/debug/trace_format.py, which also holds the Event record, the
formatting and parse_kinds / parse_range; its public names are re-exported here.
"""
from __future__ import annotations

import sys
from collections import deque
from functools import partial
from typing import Callable, TextIO

from hyp import hypercall
from hyp.arch import descriptors as d
from hyp.arch.exception import GuestException
from hyp.arch.fault import Access, Fault
from hyp.arch.walk import translate
from hyp.exits import BudgetExhausted, Hypercall, Stage2Abort

from .trace_s1 import s1_fields
from .trace_format import (ACCESS_NAMES, FAULT_NAMES, FORMATS, KINDS, Event, TraceError,
                           disassemble, exception_name, exit_fields, exit_name, format_json,
                           format_text, json_fields, parse_kinds, parse_range, prot_text)
from .trace_uc import UnicornHooks


def _walk_index(cpu, access: Access) -> int:
    """The instruction count for a walk. cpu.insn_index() treats the instruction Unicorn has
    counted as in progress: right for a data access; a fetch fill happens when Unicorn
    translates the next block, after every counted instruction completed."""
    index = cpu.insn_index()
    counter = getattr(cpu, "_counter", None)
    if access == Access.FETCH and getattr(cpu, "_running", False) and counter is not None \
            and counter.value > 0:
        index += 1
    return index


# ---- the tracer ----------------------------------------------------------------------
class Tracer:
    """Collect events of `kinds` from a machine and write them to `out` (None: stderr).

        with Tracer({"exit", "mmio"}, out=f, fmt="jsonl") as t:
            t.attach(machine)
            machine.run()
    """

    def __init__(self, kinds: set[str] | str, out: TextIO | None = None, fmt: str = "text",
                 addr_range: tuple[int, int] | None = None, ring: int | None = None,
                 slices: bool = True) -> None:
        self.kinds = parse_kinds(kinds) if isinstance(kinds, str) else set(kinds)
        bad = self.kinds - set(KINDS)
        if bad or not self.kinds:
            parse_kinds(",".join(sorted(bad)) if bad else "")      # raises with the message
        if fmt not in FORMATS:
            raise TraceError(f"unknown trace format {fmt!r} (choose from {', '.join(FORMATS)})")
        if addr_range is not None and not 0 <= addr_range[0] < addr_range[1]:
            raise TraceError(f"empty address range {addr_range!r}")
        if ring is not None and ring <= 0:
            raise TraceError("the trace ring needs at least one entry")
        self.out = out
        self.slices = slices        # False: leave out the emulator's time-slice exits
        self.fmt = fmt
        self.range = addr_range
        self.ring: deque[Event] | None = deque(maxlen=ring) if ring else None
        self.count = 0                       # events recorded (kept or not by the ring)
        self._format = format_text if fmt == "text" else format_json
        self._m = None
        self._cpus: list | None = None       # every vCPU, when there are several
        self._subs: list[tuple[list, Callable]] = []
        self._hooks: UnicornHooks | None = None
        self._held: list[Event] | None = None    # events while an exit is being handled
        self._exit: tuple[int, object, dict | None, object] | None = None
        self._in_exit = False
        self._flush_reason: str | None = None

    # ---- life cycle -----------------------------------------------------------------
    def attach(self, machine) -> Tracer:
        """Subscribe to `machine` (an emu.machine.Machine) for the requested kinds."""
        if self._m is not None:
            raise RuntimeError("tracer already attached")
        self._m = machine
        k = self.kinds
        vm = machine.vm
        cpus = list(getattr(machine, "cpus", [machine.cpu]))
        self._cpus = cpus if len(cpus) > 1 else None
        for cpu in cpus:
            if "s1" in k:
                self._subscribe(cpu.mmu.s1_observers, partial(self._on_s1_walk, cpu))
            if "s2" in k:
                self._subscribe(cpu.mmu.observers, partial(self._on_walk, cpu))
        if k & {"s2", "tlb"}:
            self._subscribe(vm.stage2.observers, self._on_stage2)
        if "tlb" in k:
            self._subscribe(machine.host.tlb.listeners, self._on_tlb)
        if "dirty" in k:
            self._subscribe(vm.dirty_observers, self._on_dirty)
        if "exc" in k:
            for cpu in cpus:
                self._subscribe(cpu.exception_observers, partial(self._on_exception, cpu))
        if k & {"exit", "mmio", "hyp", "exc"}:
            self._subscribe(machine.vcpu.observers, self._on_vcpu)
        if k & {"insn", "mem"}:
            self._hooks = UnicornHooks(machine, k, self.range, self._record, self._index,
                                       self._tag, self._in_range)
            self._hooks.install()
        return self

    def detach(self) -> None:
        """Remove every observer and hook; later events are not recorded."""
        if self._m is None:
            return
        self._release_held(None)
        for lst, fn in self._subs:
            lst.remove(fn)
        self._subs = []
        if self._hooks is not None:
            self._hooks.remove()
            self._hooks = None
        self._m = None

    def dump(self, error: str | None = None) -> None:
        """Write what is pending: an exit still being handled (outcome "error" and `error`,
        as when the hypervisor gave up), or an `error` with no exit (a fatal stop outside
        the hypervisor, e.g. emu.cpu.GuestCrash); then, in ring mode, the last N events."""
        if self._exit is not None:
            self._release_held("error", error)
        elif error is not None:
            cpu = self._current()
            pc = cpu.pc if cpu is not None else 0
            self._record(Event(self._insn(), "exit", {"exit": "fatal", "pc": pc,
                                                      "outcome": "error", "error": error},
                               self._tag(cpu)), force=True)
        out = self._stream()
        if self.ring is not None:
            if self.fmt == "text" and self.count > len(self.ring):
                out.write(f"# trace ring: last {len(self.ring)} of {self.count} events\n")
            for ev in self.ring:
                out.write(self._format(ev) + "\n")
            self.ring.clear()
        out.flush()

    def close(self, error: str | None = None) -> None:
        """dump() and detach(); `out` stays open (it belongs to the caller)."""
        self.dump(error)
        self.detach()

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(None if exc is None else f"{exc_type.__name__}: {exc}")

    # ---- plumbing ---------------------------------------------------------------------
    def _subscribe(self, lst: list, fn: Callable) -> None:
        lst.append(fn)
        self._subs.append((lst, fn))

    def _stream(self) -> TextIO:
        return self.out if self.out is not None else sys.stderr

    def _current(self):
        """The vCPU running now (whose exit the hypervisor handles): machine-wide events
        are its; None when detached."""
        m = self._m
        if m is None:
            return None
        return m.cpus[m.current] if self._cpus is not None else m.cpu

    def _index(self, cpu, own: int | None = None) -> int:
        """The event count of an event of `cpu` (`own`: its own count, default
        cpu.insn_index()): that on a one-vCPU machine; with several, plus every other
        vCPU's steps (only one runs at a time: theirs are all complete)."""
        index = cpu.insn_index() if own is None else own
        if self._cpus is not None:
            index += sum(c.progress for c in self._cpus if c is not cpu)
        return index

    def _tag(self, cpu) -> int | None:
        """The event's `cpu` field: the vCPU's index when the machine has several."""
        return cpu.index if self._cpus is not None and cpu is not None else None

    def _insn(self) -> int:
        cpu = self._current()
        return self._index(cpu) if cpu is not None else 0

    def _record(self, ev: Event, force: bool = False) -> None:
        if self._held is not None and not force:
            self._held.append(ev)
            return
        self.count += 1
        if self.ring is not None:
            self.ring.append(ev)
        else:
            self._stream().write(self._format(ev) + "\n")

    def _in_range(self, lo: int, hi: int | None = None) -> bool:
        """Does [lo, hi) (or the address lo) overlap the filter?"""
        if self.range is None:
            return True
        r_lo, r_hi = self.range
        return lo < r_hi and (lo + 1 if hi is None else hi) > r_lo

    # ---- observers ------------------------------------------------------------------------
    def _on_walk(self, cpu, va: int, access: Access, result) -> None:
        ipa = result.ipa
        if not self._in_range(va & ~0xFFF, (va & ~0xFFF) + 0x1000):
            return
        if isinstance(result, Fault):
            # A Fault value carries no steps: re-read the same descriptors (a pure walk;
            # nothing has changed since the MMU's own walk a moment ago).
            steps: list = []
            mmu = cpu.mmu
            translate(mmu.mem, mmu.cfg, ipa, access, steps=steps)
        else:
            steps = result.steps
        data = {"event": "walk", "access": ACCESS_NAMES[access], "va": va, "ipa": ipa,
                "steps": [{"level": s.level, "desc_pa": s.desc_pa, "desc": s.desc,
                           "type": d.kind(s.desc, s.level).value} for s in steps]}
        if isinstance(result, Fault):
            data.update(result="fault", level=result.level, pa=None, prot=None,
                        fault=FAULT_NAMES[result.type])
        else:
            data.update(result="ok", level=result.level, pa=result.pa,
                        prot=prot_text(result.prot), fault=None)
        self._record(Event(self._index(cpu, _walk_index(cpu, access)), "s2", data,
                           self._tag(cpu)))

    def _on_s1_walk(self, cpu, va: int, access: Access, leaf, reads) -> None:
        if not self._in_range(va & ~0xFFF, (va & ~0xFFF) + 0x1000):
            return
        data = s1_fields(va, ACCESS_NAMES[access], leaf, reads, cpu.mmu.s1, FAULT_NAMES)
        self._record(Event(self._index(cpu, _walk_index(cpu, access)), "s1", data,
                           self._tag(cpu)))

    def _on_stage2(self, kind: str, **info) -> None:
        if kind == "tlb_flush":
            if "tlb" not in self.kinds:
                return
            if info.get("skipped"):
                self._record(Event(self._insn(), "tlb", {
                    "event": "flush_vmid", "vmid": self._m.vm.vmid,
                    "reason": info.get("reason"), "skipped": True}, self._tag(self._current())))
            else:
                self._flush_reason = info.get("reason")      # the TLB listener follows
            return
        if "s2" not in self.kinds:
            return
        if kind == "table_free":
            data = {"event": kind, "pa": info["pa"], "level": info["level"]}
        else:
            ipa, level = info["ipa"], info["level"]
            if not self._in_range(ipa, ipa + d.LEVEL_SIZE[level]):
                return
            data = {"event": kind, "ipa": ipa, "level": level}
        self._record(Event(self._insn(), "s2", data, self._tag(self._current())))

    def _on_tlb(self, op: str, vmid: int | None) -> None:
        reason, self._flush_reason = self._flush_reason, None
        self._record(Event(self._insn(), "tlb", {"event": op, "vmid": vmid, "reason": reason,
                                                 "skipped": False}, self._tag(self._current())))

    def _on_dirty(self, slot, gfn: int, source: str) -> None:
        ipa = slot.ipa + (gfn << 12)
        if not self._in_range(ipa, ipa + 0x1000):
            return
        self._record(Event(self._insn(), "dirty", {"slot": slot.name, "gfn": gfn, "ipa": ipa,
                                                   "source": source},
                           self._tag(self._current())))

    def _on_exception(self, cpu, exc: GuestException, lr: int, vector: int) -> None:
        self._record(Event(self._index(cpu), "exc", {"exception": exception_name(exc),
                                                     "lr": lr, "vector": vector,
                                                     "injected": self._in_exit},
                           self._tag(cpu)))

    def _on_vcpu(self, kind: str, ex, outcome: str | None) -> None:
        if kind == "exit":
            if self._exit is not None:
                self._release_held("error")        # the previous run ended in an error
            hvc = None
            cpu = self._current()
            if "hyp" in self.kinds and isinstance(ex, Hypercall):
                hvc = {"fid": cpu.reg(0), "args": [cpu.reg(1), cpu.reg(2), cpu.reg(3)]}
            self._exit = (self._index(cpu), ex, hvc, cpu)
            self._in_exit = True
            if "exit" in self.kinds:
                self._held = []
            return
        self._release_held(outcome)

    def _release_held(self, outcome: str | None, error: str | None = None) -> None:
        """The exit being handled is done (outcome None: only drop the state): write its
        line, then the events its handling caused, then its mmio / hyp events."""
        pending, self._exit = self._exit, None
        held, self._held = self._held, None
        self._in_exit = False
        if pending is None or outcome is None:
            for ev in held or ():
                self._record(ev)
            return
        insn, ex, hvc, cpu = pending
        tag = self._tag(cpu)
        if "exit" in self.kinds and self._exit_in_range(ex) and \
                (self.slices or not isinstance(ex, BudgetExhausted)):
            data = exit_fields(ex)
            data["outcome"] = outcome
            if outcome == "error":
                data["error"] = error or "the hypervisor could not handle this exit"
            self._record(Event(insn, "exit", data, tag))
        for ev in held or ():
            self._record(ev)
        m = self._m
        if "mmio" in self.kinds and outcome == "mmio" and m is not None:
            acc = m.vm.last_mmio
            if self._in_range(acc.ipa):
                self._record(Event(insn, "mmio", {"access": "W" if acc.write else "R",
                                                  "ipa": acc.ipa, "size": acc.size,
                                                  "value": acc.value, "device": acc.device},
                                   tag))
        if hvc is not None and m is not None and outcome != "error":
            name = hypercall.NAMES.get(hvc["fid"], "unknown")
            stop = outcome if outcome in ("off", "reset") else None
            result = None if stop else [cpu.reg(0), cpu.reg(1)]
            self._record(Event(insn, "hyp", {"call": "hvc", "name": name, "fid": hvc["fid"],
                                             "args": hvc["args"], "result": result,
                                             "stop": stop}, tag))

    def _exit_in_range(self, ex) -> bool:
        if self.range is None or not isinstance(ex, Stage2Abort):
            return True
        f = ex.fault
        return self._in_range(f.ipa) or (f.va is not None and self._in_range(f.va))


__all__ = ["KINDS", "FORMATS", "Event", "TraceError", "Tracer", "parse_kinds", "parse_range",
           "format_text", "format_json", "json_fields", "disassemble", "exit_name",
           "exit_fields", "exception_name"]
