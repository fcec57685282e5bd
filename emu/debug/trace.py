"""Trace dumps: the Tracer, which collects events from a machine and writes them.

A `Tracer` subscribes to the machine's observer lists and, for `insn` and `mem` only, installs
Unicorn hooks. Nothing is subscribed or installed for a kind that was not asked for, and
nothing at all without a tracer: tracing off costs nothing (DESIGN 6).

The kinds, the event indices, the text and JSON Lines formats, the address filter and ring
mode are described in emu/trace_format.py, which also holds the Event record, the formatting
and parse_kinds / parse_range; its public names are re-exported here.
"""
from __future__ import annotations

import sys
from collections import deque
from typing import Callable, TextIO

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE
from unicorn import arm_const as A

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

_CPSR_T = 1 << 5
_CPSR_IT = (0x3F << 10) | (0x3 << 25)      # IT[7:2], IT[1:0]


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
        self._subs: list[tuple[list, Callable]] = []
        self._uc_hooks: list[int] = []
        self._held: list[Event] | None = None    # events while an exit is being handled
        self._exit: tuple[int, object, dict | None] | None = None
        self._in_exit = False
        self._flush_reason: str | None = None
        self._slots: list[tuple[int, int, int]] = []   # (pa, pa_end, ipa) per memslot
        self._code_pages: dict[int, int] = {}          # VA page -> offset in host memory
        self._rmap: dict[tuple[int, int, int], int] = {}  # (VMID, ASID, PA page) -> VA page
        self._buf = None

    # ---- life cycle -----------------------------------------------------------------
    def attach(self, machine) -> Tracer:
        """Subscribe to `machine` (an emu.machine.Machine) for the requested kinds."""
        if self._m is not None:
            raise RuntimeError("tracer already attached")
        self._m = machine
        k = self.kinds
        cpu, vm = machine.cpu, machine.vm
        if "s1" in k:
            self._subscribe(machine.mmu.s1_observers, self._on_s1_walk)
        if "s2" in k:
            self._subscribe(machine.mmu.observers, self._on_walk)
        if k & {"s2", "tlb"}:
            self._subscribe(vm.stage2.observers, self._on_stage2)
        if "tlb" in k:
            self._subscribe(machine.host.tlb.listeners, self._on_tlb)
        if "dirty" in k:
            self._subscribe(vm.dirty_observers, self._on_dirty)
        if "exc" in k:
            self._subscribe(cpu.exception_observers, self._on_exception)
        if k & {"exit", "mmio", "hyp", "exc"}:
            self._subscribe(machine.vcpu.observers, self._on_vcpu)
        uc = cpu.uc
        # Unicorn calls a hook for begin <= address <= end; begin > end means everywhere.
        if "insn" in k:
            self._buf = machine.host.mem.buf
            self._subscribe(machine.host.tlb.listeners, self._forget_code_pages)
            lo, hi = self.range if self.range else (1, 1)
            self._uc_hooks.append(uc.hook_add(UC_HOOK_CODE, self._on_code, begin=lo,
                                              end=hi - 1))
        if "mem" in k:
            self._subscribe(machine.host.tlb.listeners, self._forget_rmap)
            # In Unicorn's virtual-TLB mode memory hooks report the *physical* address:
            # bound them to the host PAs that back the VA (= IPA) range.
            self._slots = sorted((s.pa, s.pa + s.size, s.ipa) for s in vm.memslots)
            for pa_lo, pa_hi in self._pa_ranges():
                self._uc_hooks.append(uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE,
                                                  self._on_mem, begin=pa_lo, end=pa_hi - 1))
        if self._uc_hooks:
            uc.ctl_flush_tb()        # blocks translated before now must call the hooks
        return self

    def detach(self) -> None:
        """Remove every observer and hook; later events are not recorded."""
        if self._m is None:
            return
        self._release_held(None)
        for lst, fn in self._subs:
            lst.remove(fn)
        self._subs = []
        if self._uc_hooks:
            uc = self._m.cpu.uc
            for h in self._uc_hooks:
                uc.hook_del(h)
            self._uc_hooks = []
            uc.ctl_flush_tb()        # drop the blocks that call the hooks: full speed again
        self._m = None

    def dump(self, error: str | None = None) -> None:
        """Write what is pending: an exit still being handled (outcome "error" and `error`,
        as when the hypervisor gave up), or an `error` with no exit (a fatal stop outside
        the hypervisor, e.g. emu.cpu.GuestCrash); then, in ring mode, the last N events."""
        if self._exit is not None:
            self._release_held("error", error)
        elif error is not None:
            pc = self._m.cpu.pc if self._m is not None else 0
            insn = self._insn()
            self._record(Event(insn, "exit", {"exit": "fatal", "pc": pc, "outcome": "error",
                                              "error": error}), force=True)
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

    def _insn(self) -> int:
        return self._m.cpu.insn_index() if self._m is not None else 0

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

    def _pa_ranges(self) -> list[tuple[int, int]]:
        if self.range is None:
            return [(1, 1)]            # hook begin 1 > end 0: every address
        lo, hi = self.range
        out = []
        for pa, pa_end, ipa in self._slots:
            a, b = max(lo, ipa), min(hi, ipa + (pa_end - pa))
            if a < b:
                out.append((pa + a - ipa, pa + b - ipa))
        return out

    def _pa_to_ipa(self, pa: int) -> int | None:
        for s_pa, s_end, ipa in self._slots:
            if s_pa <= pa < s_end:
                return ipa + (pa - s_pa)
        return None

    def _pa_to_va(self, pa: int) -> int:
        """The VA of an access Unicorn reports by PA, with the guest's MMU on: the model TLB
        entry of this VMID and ASID (or global) for that PA page - the access just filled or
        hit it. An aliased page gives the most recently filled VA."""
        mmu = self._m.mmu
        key = (mmu.vmid, mmu.s1.asid, pa & ~0xFFF)
        va_page = self._rmap.get(key)
        if va_page is None:
            for e in mmu.tlb.entries(mmu.vmid):
                if e.tag in (-1, mmu.s1.asid):             # GLOBAL or this ASID
                    self._rmap[(mmu.vmid, mmu.s1.asid, e.pa_page)] = e.va_page
            va_page = self._rmap.get(key, pa & ~0xFFF)
        return va_page | (pa & 0xFFF)

    # ---- Unicorn hooks (installed only for insn / mem) -----------------------------------
    def _on_code(self, uc, address: int, size: int, _ud) -> None:
        cpu = self._m.cpu
        thumb = size == 2 or bool(uc.reg_read(A.UC_ARM_REG_CPSR) & _CPSR_T)
        off = self._code_pages.get(address & ~0xFFF)
        if off is None or (address & 0xFFF) + size > 0x1000:
            code = self._code_bytes(address, size)
        else:
            off += address & 0xFFF
            code = self._buf[off:off + size].tobytes()
        self._record(Event(cpu.insn_index(), "insn", {"pc": address, "thumb": thumb,
                                                      "code": code}))

    def _code_bytes(self, address: int, size: int) -> bytes:
        """The instruction's bytes through the side-effect-free debug path, caching the
        page's host offset until the next TLB flush (the code hook fires after the fetch
        filled the TLB, so this is the page the CPU executes)."""
        cpu = self._m.cpu
        pa = cpu.debug_translate(address & ~0xFFF)
        if pa is not None:
            self._code_pages[address & ~0xFFF] = pa - self._m.host.mem.base
        return cpu.read_code(address, size)

    def _on_mem(self, uc, access: int, address: int, size: int, value: int, _ud) -> None:
        # Unicorn 2.1.4: calling a memory hook from inside a Thumb IT block writes the block's
        # state into CPSR and nothing clears it when the block ends, so the first instruction
        # of the next translation block runs as if it were conditional (a thumb guest then
        # computes wrong results). Translated code never reads CPSR.IT (QEMU tracks it at
        # translation time and restores it from the instruction's own record on an
        # exception), so clearing it here is always safe and restores QEMU's invariant.
        cpsr = uc.reg_read(A.UC_ARM_REG_CPSR)
        if cpsr & _CPSR_IT:
            uc.reg_write(A.UC_ARM_REG_CPSR, cpsr & ~_CPSR_IT)
        m = self._m
        pa = address                           # see attach(): a host physical address
        ipa = self._pa_to_ipa(pa)
        if ipa is None:
            return                            # not guest RAM (e.g. Unicorn's exit page)
        va = self._pa_to_va(pa) if m.mmu.s1.enabled else ipa
        if self.range is not None and not self._in_range(va):
            return
        if access == UC_MEM_WRITE:
            acc = "W"
            value &= (1 << (8 * size)) - 1
        else:
            acc = "R"                         # the hook runs before the load: read it here
            value = int.from_bytes(m.host.mem.read(pa, size), "little")
        self._record(Event(m.cpu.insn_index(), "mem", {"access": acc, "va": va, "ipa": ipa,
                                                       "pa": pa, "size": size, "value": value}))

    # ---- observers ------------------------------------------------------------------------
    def _on_walk(self, va: int, access: Access, result) -> None:
        ipa = result.ipa
        if not self._in_range(va & ~0xFFF, (va & ~0xFFF) + 0x1000):
            return
        if isinstance(result, Fault):
            # A Fault value carries no steps: re-read the same descriptors (a pure walk;
            # nothing has changed since the MMU's own walk a moment ago).
            steps: list = []
            mmu = self._m.mmu
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
        self._record(Event(_walk_index(self._m.cpu, access), "s2", data))

    def _on_s1_walk(self, va: int, access: Access, leaf, reads) -> None:
        if not self._in_range(va & ~0xFFF, (va & ~0xFFF) + 0x1000):
            return
        data = s1_fields(va, ACCESS_NAMES[access], leaf, reads, self._m.mmu.s1, FAULT_NAMES)
        self._record(Event(_walk_index(self._m.cpu, access), "s1", data))

    def _on_stage2(self, kind: str, **info) -> None:
        if kind == "tlb_flush":
            if "tlb" not in self.kinds:
                return
            if info.get("skipped"):
                self._record(Event(self._insn(), "tlb", {
                    "event": "flush_vmid", "vmid": self._m.vm.vmid,
                    "reason": info.get("reason"), "skipped": True}))
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
        self._record(Event(self._insn(), "s2", data))

    def _on_tlb(self, op: str, vmid: int | None) -> None:
        reason, self._flush_reason = self._flush_reason, None
        self._record(Event(self._insn(), "tlb", {"event": op, "vmid": vmid, "reason": reason,
                                                 "skipped": False}))

    def _forget_code_pages(self, op: str, vmid: int | None) -> None:
        self._code_pages.clear()

    def _forget_rmap(self, op: str, vmid: int | None) -> None:
        self._rmap.clear()

    def _on_dirty(self, slot, gfn: int, source: str) -> None:
        ipa = slot.ipa + (gfn << 12)
        if not self._in_range(ipa, ipa + 0x1000):
            return
        self._record(Event(self._insn(), "dirty", {"slot": slot.name, "gfn": gfn, "ipa": ipa,
                                                   "source": source}))

    def _on_exception(self, exc: GuestException, lr: int, vector: int) -> None:
        self._record(Event(self._insn(), "exc", {"exception": exception_name(exc), "lr": lr,
                                                 "vector": vector, "injected": self._in_exit}))

    def _on_vcpu(self, kind: str, ex, outcome: str | None) -> None:
        if kind == "exit":
            if self._exit is not None:
                self._release_held("error")        # the previous run ended in an error
            hvc = None
            if "hyp" in self.kinds and isinstance(ex, Hypercall):
                cpu = self._m.cpu
                hvc = {"fid": cpu.reg(0), "args": [cpu.reg(1), cpu.reg(2), cpu.reg(3)]}
            self._exit = (self._insn(), ex, hvc)
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
        insn, ex, hvc = pending
        if "exit" in self.kinds and self._exit_in_range(ex) and \
                (self.slices or not isinstance(ex, BudgetExhausted)):
            data = exit_fields(ex)
            data["outcome"] = outcome
            if outcome == "error":
                data["error"] = error or "the hypervisor could not handle this exit"
            self._record(Event(insn, "exit", data))
        for ev in held or ():
            self._record(ev)
        m = self._m
        if "mmio" in self.kinds and outcome == "mmio" and m is not None:
            acc = m.vm.last_mmio
            if self._in_range(acc.ipa):
                self._record(Event(insn, "mmio", {"access": "W" if acc.write else "R",
                                                  "ipa": acc.ipa, "size": acc.size,
                                                  "value": acc.value, "device": acc.device}))
        if hvc is not None and m is not None and outcome != "error":
            name = hypercall.NAMES.get(hvc["fid"], "unknown")
            stop = outcome if outcome in ("off", "reset") else None
            result = None if stop else [m.cpu.reg(0), m.cpu.reg(1)]
            self._record(Event(insn, "hyp", {"call": "hvc", "name": name, "fid": hvc["fid"],
                                             "args": hvc["args"], "result": result,
                                             "stop": stop}))

    def _exit_in_range(self, ex) -> bool:
        if self.range is None or not isinstance(ex, Stage2Abort):
            return True
        f = ex.fault
        return self._in_range(f.ipa) or (f.va is not None and self._in_range(f.va))


__all__ = ["KINDS", "FORMATS", "Event", "TraceError", "Tracer", "parse_kinds", "parse_range",
           "format_text", "format_json", "json_fields", "disassemble", "exit_name",
           "exit_fields", "exception_name"]
