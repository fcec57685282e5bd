"""Breakpoints and watchpoints of the GDB stub (emu.debug.gdbstub): the Z/z packets.

- Breakpoints are PC checks (`VCPU.add_breakpoint`: a code hook bounded to one address);
  guest memory is never patched. gdb's kinds 2/3 (Thumb) and 4 (ARM) are all accepted.
  Steps use the same hooks ("traps": where a step must stop).
- Watchpoints (Z2 write, Z3 read, Z4 access) watch guest RAM and flash backing (not MMIO:
  E01): memory hooks bounded to the host backing of the range. The stop is *before* the
  access: PC on the accessing instruction, which has not executed, memory still holding the
  old value.
- With several vCPUs every breakpoint and watchpoint is on every vCPU (each has its own
  Unicorn engine, hence its own hooks); a watched VA is translated through the stage 1 of
  the vCPU gdb selected (Hg) when inserted. When the guest resumes, the instruction each
  vCPU resumes on runs without stopping at a breakpoint there if that vCPU is the one
  resumed (stepped, or the one whose stop gdb continues from) or if it is still where its
  own last reported stop left it; any other vCPU stops on arriving at a breakpoint, even if
  it stood on it already (it has not hit it yet).
"""
from __future__ import annotations

from dataclasses import dataclass

from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE

from .gdb_memory import ram_slot
from .gdb_packets import parse_addr_len, parse_hex

WATCH_KINDS = {2: ("watch", UC_HOOK_MEM_WRITE), 3: ("rwatch", UC_HOOK_MEM_READ),
               4: ("awatch", UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE)}
BREAK_KINDS = (2, 3, 4)        # 16-bit Thumb, 32-bit Thumb-2, ARM
MAX_WATCH = 1 << 20            # longest watched range (gdb splits nothing for a remote)
_MAX_ACCESS = 8                # widest single data access (LDRD/STRD)


def parse_z(text: str) -> tuple[bool, int, int, int]:
    """Z/z TYPE,ADDR,KIND -> (insert, type, addr, kind); ValueError when malformed or out of
    range: ADDR beyond 32 bits, a breakpoint KIND not 2/3/4, a watched length of 0, above
    MAX_WATCH or past 2**32. No condition or command lists: we do not offer them."""
    ztype_s, _, rest = text[1:].partition(",")
    ztype = parse_hex(ztype_s)
    addr, kind = parse_addr_len(rest)
    if ztype in (0, 1) and kind not in BREAK_KINDS:
        raise ValueError(f"breakpoint kind {kind}")
    if ztype in WATCH_KINDS and not 0 < kind <= MAX_WATCH:
        raise ValueError(f"watched length {kind}")
    return text[0] == "Z", ztype, addr, kind


@dataclass
class _Watch:
    kind: int                 # 2 write, 3 read, 4 access
    va: int
    length: int
    pa: int
    handles: list[int]        # one memory hook per vCPU (its engine)
    refs: int = 1


class DebugPoints:
    """The breakpoints, step traps and watchpoints a debugger session installed on one
    machine (its `cpu`, `vm`, `host`)."""

    def __init__(self, machine) -> None:
        self.machine = machine
        self.cpu = machine.cpu
        self.cpus = list(getattr(machine, "cpus", [machine.cpu]))
        self.vm = machine.vm
        # Breakpoints: address -> Z type (0 software, 1 hardware: both are PC checks).
        # gdb removes and re-inserts every breakpoint around each stop: the hooks stay
        # installed meanwhile (`_stale`) and only those not re-inserted go when the guest
        # resumes, so Unicorn's code cache is not invalidated at every stop.
        self._bps: dict[int, int] = {}
        self._stale: set[int] = set()
        self._resume_skip: dict[int, tuple[int, int]] = {}  # vCPU -> (PC, instruction index)
        self._reported: dict[int, tuple[int, int]] = {}     # vCPU -> where its stop was
        self._hooked: set[int] = set()         # addresses we installed vCPU breakpoints for
        self._watches: dict[tuple[int, int, int], _Watch] = {}
        self._watch_hit: tuple | None = None   # (watch, pa, size, old bytes or None, vCPU)
        self._watch_skip: tuple[int, int] | None = None   # (vCPU, index): accesses pass

    def clear(self) -> None:
        """Drop everything installed (on detach, disconnect or the end)."""
        for addr in list(self._hooked):
            for cpu in self.cpus:
                cpu.remove_breakpoint(addr)
        self._hooked.clear()
        self._bps.clear()
        self._stale.clear()
        for w in self._watches.values():
            for cpu, h in zip(self.cpus, w.handles):
                cpu.uc.hook_del(h)
        if self._watches:
            self._flush_all()
        self._watches.clear()
        self._watch_hit = self._watch_skip = None
        self._resume_skip.clear()
        self._reported.clear()

    def _flush_all(self) -> None:
        for cpu in self.cpus:
            cpu.flush_translations()

    # ---- Z / z packets -------------------------------------------------------------------
    def packet(self, text: str, mmu=None) -> str:
        """Answer Z/z: OK, E01 (malformed, out of range, not RAM/flash for a watchpoint) or
        empty for a type we do not support. `mmu`: whose stage 1 translates a watched VA
        (default: vCPU 0's)."""
        try:
            insert, ztype, addr, kind = parse_z(text)
        except ValueError:
            return "E01"
        if ztype in (0, 1):
            addr &= ~1
            if insert:
                self._bps[addr] = ztype
                self._stale.discard(addr)
                self._hook_bp(addr)
            elif self._bps.pop(addr, None) is not None and addr in self._hooked:
                self._stale.add(addr)           # unhooked when the guest resumes
            return "OK"
        if ztype in WATCH_KINDS:
            return self._insert_watch(ztype, addr, kind, mmu or self.cpu.mmu) if insert else \
                self._remove_watch(ztype, addr, kind)
        return ""                               # unsupported type

    # ---- breakpoints and step traps ----------------------------------------------------
    def breakpoint_type(self, pc: int) -> int | None:
        """The Z type of gdb's breakpoint at `pc` (0 software, 1 hardware), or None."""
        return self._bps.get(pc & ~1)

    def _hook_bp(self, addr: int) -> None:
        if addr not in self._hooked and addr not in self.cpu.breakpoints:
            for i, cpu in enumerate(self.cpus):
                cpu.add_breakpoint(addr, self._bp_check(i, cpu))
            self._hooked.add(addr)

    def _bp_check(self, i: int, cpu):
        def wanted(addr: int) -> bool:
            # The instruction a vCPU resumes on runs even with a breakpoint on it (gdb steps
            # over its own). Keyed by the instruction index, so re-executing it after a
            # stage-2 abort still skips, and coming back to it later stops.
            if self._resume_skip.get(i) == (addr, cpu.insn_index()):
                return False
            return addr in self._bps
        return wanted

    def _unhook_bp(self, addr: int) -> None:
        if addr in self._hooked and addr not in self._bps:
            for cpu in self.cpus:
                cpu.remove_breakpoint(addr)
            self._hooked.discard(addr)

    def _purge_bps(self) -> None:
        """Unhook the breakpoints gdb removed and did not re-insert before resuming."""
        for addr in self._stale:
            self._unhook_bp(addr)
        self._stale.clear()

    def stopped(self, i: int) -> None:
        """A stop of vCPU i was reported to gdb, where it stands now."""
        cpu = self.cpus[i]
        self._reported[i] = (cpu.pc & ~1, cpu.instructions)

    def prepare_resume(self, after_watch: bool, resumed: int = 0, watched: int = 0) -> None:
        """Before the guest resumes: the instruction vCPU `resumed` resumes on runs (and,
        after a watchpoint stop of vCPU `watched`, that one makes its accesses) without
        stopping again; so does that of every vCPU still where its last stop left it."""
        self._purge_bps()
        self._resume_skip.clear()
        for i, cpu in enumerate(self.cpus):
            here = (cpu.pc & ~1, cpu.instructions)
            if i != resumed and self._reported.get(i) != here:
                continue
            self._resume_skip[i] = here
            if here[0] in cpu.breakpoints and here[0] not in self._hooked:
                cpu.resume_from_breakpoint()    # someone else's breakpoint
        cpu = self.cpus[watched]
        self._watch_skip = (watched, cpu.instructions) if after_watch else None

    # ---- watchpoints -----------------------------------------------------------------------
    def _insert_watch(self, ztype: int, va: int, length: int, mmu) -> str:
        key = (ztype, va, length)
        if key in self._watches:
            self._watches[key].refs += 1
            return "OK"
        found = ram_slot(self.vm, va, length, mmu)
        if found is None:
            return "E01"                        # only RAM/flash backing can be watched
        slot, ipa = found
        # The watch is on the host PA backing va now (README, Debugging): a later change of
        # the guest's mapping of va does not move it.
        pa = slot.pa_of(ipa)
        w = _Watch(ztype, va, length, pa, [])
        # Memory hooks see the host physical address of each access (UC_TLB_VIRTUAL).
        # Start early enough to catch a wider access that starts below the range.
        for i, cpu in enumerate(self.cpus):
            w.handles.append(cpu.uc.hook_add(WATCH_KINDS[ztype][1], self._watch_hook(w, i),
                                             begin=max(0, pa - _MAX_ACCESS + 1),
                                             end=pa + length - 1))
        self._watches[key] = w
        # Code translated before the hook existed accesses memory without calling hooks.
        self._flush_all()
        return "OK"

    def _remove_watch(self, ztype: int, va: int, length: int) -> str:
        w = self._watches.get((ztype, va, length))
        if w is None:
            return "OK"
        w.refs -= 1
        if w.refs <= 0:
            for cpu, h in zip(self.cpus, w.handles):
                cpu.uc.hook_del(h)
            del self._watches[(ztype, va, length)]
            self._flush_all()                   # back to the fast path
        return "OK"

    def _watch_hook(self, w: _Watch, i: int):
        mem = self.machine.host.mem
        cpu = self.cpus[i]

        def hook(uc, access, pa, size, value, _ud):
            if pa + size <= w.pa or pa >= w.pa + w.length:
                return
            if self._watch_hit is not None or (i, cpu.insn_index()) == self._watch_skip:
                return
            # Unicorn calls write hooks just before storing and then stops the instruction
            # (PC stays on it, it is re-executed on resume): keep the old bytes to put back.
            old = mem.read(pa, size) if access == UC_MEM_WRITE else None
            self._watch_hit = (w, pa, size, old, i)
            cpu.debug_stop = "watchpoint"
            uc.emu_stop()
        return hook

    def forget_watch_hit(self) -> None:
        """Before each run: no watchpoint has been hit yet."""
        self._watch_hit = None

    def take_watch_hit(self) -> str | None:
        """After a debug stop: the stop-reply reason ("watch:ADDR", ...) if a watchpoint
        stopped the guest, with memory put back as it was before the access; else None."""
        hit = self._watch_hit
        if hit is None:
            return None
        self._watch_hit = None
        w, pa, size, old, _i = hit
        if old is not None:
            self.machine.host.mem.write(pa, old)    # back to "before the access"
            self._flush_all()
        addr = w.va + max(0, pa - w.pa)
        return f"{WATCH_KINDS[w.kind][0]}:{addr:x}"
