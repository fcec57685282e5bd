"""The `monitor` commands of the GDB stub (emu.debug.gdbstub): stage-1 and stage-2 walk and
dump, dirty log, TLB, statistics, and the fault-stop setting. Everything here only reads the machine, except
`fault-stop`, which changes the stub's `FaultStop` setting.

`s1 walk` and `s1 dump` use the stage 1 of the vCPU gdb selected (its thread: each vCPU has
its own translation registers); with several vCPUs `stats` lists each one's counts.
"""
from __future__ import annotations

import shlex
from typing import Callable

import numpy as np

from hyp.arch import descriptors as d
from hyp.arch.s1debug import dump_s1, explain_s1, regime_text
from hyp.arch.walk import explain

DIRTY_SHOW = 16                # page indexes listed per memslot by `monitor dirty`
LIST_LIMIT = 256               # lines listed by `monitor s2 dump` / `monitor tlb`

HELP = """\
s2emu monitor commands:
  help                    this text
  s1 walk VA              VA through both stages: the guest's stage-1 descriptors (each
                          one's IPA and PA), its result, then the stage-2 walk
  s1 dump [LO HI]         the guest's stage-1 mappings merged into ranges (VA [LO, HI))
  s2 walk IPA             stage-2 walk of IPA: each level's descriptor address and value
  s2 dump [LO HI]         stage-2 mappings merged into ranges (all, or IPA [LO, HI))
  dirty [SLOT]            dirty-log summary per memslot (index or name): count, first pages
  tlb                     TLB entries of this VM's VMID, fills and flushes
  stats                   hypervisor exit statistics, instructions, virtual time
  fault-stop on [LO HI]   stop before the hypervisor handles each stage-2 abort (whose IPA
                          is in [LO, HI)); continue/step lets it handle that abort
  fault-stop off          stop no more on stage-2 aborts
  fault-stop              show the setting and the last abort reported
Addresses are 0x-prefixed hex or decimal.
"""


def _num(text: str) -> int:
    """A monitor-command address: 0x40000000 (hex needs the prefix) or decimal."""
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"bad number {text!r} (write hex as 0x...)") from None
    if value < 0:
        raise ValueError(f"negative address {text!r}")
    return value


def _range(lo_text: str, hi_text: str) -> tuple[int, int]:
    """An IPA range [LO, HI): LO below HI (an empty range is a mistake, not a no-op)."""
    lo, hi = _num(lo_text), _num(hi_text)
    if lo >= hi:
        raise ValueError(f"empty range [{lo:#x}, {hi:#x}): LO must be below HI")
    return lo, hi


class FaultStop:
    """The `monitor fault-stop` setting: stop before the hypervisor handles each stage-2
    abort (whose IPA is in `range`, when set), and the last abort reported."""

    def __init__(self) -> None:
        self.on = False
        self.range: tuple[int, int] | None = None
        self.last = ""

    def off(self) -> None:
        self.on = False
        self.range = None

    def covers(self, ipa: int) -> bool:
        return not self.range or self.range[0] <= ipa < self.range[1]

    def report(self, ex) -> str:
        """The console text for an abort stopped on (a `Stage2Abort`). Decoded now: the
        syndrome must be read before the vCPU runs again."""
        text = (f"stage-2 abort at PC {ex.pc:#x}{' (Thumb)' if ex.thumb else ''}: "
                f"{ex.fault.describe()}\n  {ex.syndrome.describe()}\n")
        self.last = text
        return "s2emu: " + text + "  (continue or step: the hypervisor handles it)\n"

    def command(self, args: list[str]) -> str:
        if args[:1] == ["on"] and len(args) in (1, 3):
            rng = _range(args[1], args[2]) if len(args) == 3 else None
            self.on = True
            self.range = rng
        elif args == ["off"]:
            self.off()
        elif args:
            raise ValueError("usage: fault-stop on [LO HI] | off")
        where = (f" for IPA [{self.range[0]:#x}, {self.range[1]:#x})" if self.range else "")
        text = f"fault-stop {'on' + where if self.on else 'off'}\n"
        if not args and self.last:
            text += "last reported: " + self.last
        return text


def monitor(machine, faults: FaultStop, line: str, cpu=None) -> str:
    """Run one monitor command (as `monitor LINE` in gdb); returns its output. `cpu`: the
    vCPU whose stage 1 `s1` commands show (default: vCPU 0)."""
    mmu = (cpu or machine.cpu).mmu
    words = shlex.split(line)
    if not words or words[0] == "help":
        return HELP
    cmd, args = words[0], words[1:]
    if cmd == "s1" and args[:1] == ["walk"] and len(args) == 2:
        return "\n".join(explain_s1(mmu, _num(args[1]))) + "\n"
    if cmd == "s1" and args[:1] == ["dump"] and len(args) in (1, 3):
        lo, hi = _range(args[1], args[2]) if len(args) == 3 else (0, 1 << 32)
        return _dump_s1(mmu, lo, hi)
    if cmd == "s2" and args[:1] == ["walk"] and len(args) == 2:
        return _walk(machine, _num(args[1]))
    if cmd == "s2" and args[:1] == ["dump"] and len(args) in (1, 3):
        lo, hi = _range(args[1], args[2]) if len(args) == 3 else (0, 1 << 40)
        return _dump(machine.vm, lo, hi)
    if cmd == "dirty" and len(args) <= 1:
        return _dirty(machine.vm, args[0] if args else None)
    if cmd == "tlb" and not args:
        return _tlb(machine)
    if cmd == "stats" and not args:
        return _stats(getattr(machine, "cpus", [machine.cpu]), machine.vm)
    if cmd == "fault-stop":
        return faults.command(args)
    raise ValueError(f"unknown monitor command {line.strip()!r}")


def monitor_packet(conn, hexcmd: str, run: Callable[[str], str]) -> None:
    """Answer qRcmd,HEXCMD: `run` the command, its output as console text, then OK."""
    try:
        line = bytes.fromhex(hexcmd).decode("utf-8", "replace")
    except ValueError:
        conn.send("E01")
        return
    try:
        text = run(line)
    except (ValueError, IndexError) as e:
        text = f"error: {e}\n(monitor help lists the commands)\n"
    if text:
        conn.send_console(text if text.endswith("\n") else text + "\n")
    conn.send("OK")


def _walk(machine, ipa: int) -> str:
    vm = machine.vm
    s2 = vm.stage2
    out = [f"VTTBR {s2.vttbr:#018x} VTCR {s2.vtcr:#010x}"]
    out += explain(machine.host.mem, s2.cfg, ipa)     # reads descriptors only
    slot = vm.memslot(ipa)
    if slot is None:
        out.append("  no memslot: MMIO or unbacked IPA")
    else:
        flags = [f for f, on in (("logging", slot.log_dirty), ("read-only", slot.readonly),
                                 ("no-exec", slot.noexec)) if on]
        out.append(f"  memslot {slot.slot} {slot.name} [{slot.ipa:#x}, {slot.end:#x}): "
                   f"backing at host PA {slot.pa_of(ipa):#x}"
                   + (f" ({', '.join(flags)})" if flags else ""))
    return "\n".join(out) + "\n"


def _dump_s1(mmu, lo: int, hi: int) -> str:
    runs = dump_s1(mmu, lo, hi)
    out = [regime_text(mmu.s1)] + [f"  {r.describe()}" for r in runs[:LIST_LIMIT]]
    if len(runs) > LIST_LIMIT:
        out.append(f"  ... {len(runs) - LIST_LIMIT} more (narrow it: s1 dump LO HI)")
    return "\n".join(out) + "\n"


def _prot(prot) -> str:
    return ("r" if prot & d.Prot.R else "-") + ("w" if prot & d.Prot.W else "-") + \
        ("x" if prot & d.Prot.X else "-")


def _dump(vm, lo: int, hi: int) -> str:
    runs = vm.stage2.dump(lo, hi)
    out = [f"stage-2 mappings in IPA [{lo:#x}, {hi:#x}): {len(runs)} ranges, "
           f"{vm.stage2.table_pages()} table pages"]
    out += [f"  {m.describe()}" for m in runs[:LIST_LIMIT]]
    if len(runs) > LIST_LIMIT:
        out.append(f"  ... {len(runs) - LIST_LIMIT} more (narrow it: s2 dump LO HI)")
    return "\n".join(out) + "\n"


def _dirty(vm, which: str | None) -> str:
    slots = vm.memslots
    if which is not None:
        slots = [s for s in slots if s.name == which or str(s.slot) == which]
        if not slots:
            raise ValueError(f"no memslot {which!r}")
    out = []
    for s in slots:
        head = f"memslot {s.slot} {s.name} (IPA {s.ipa:#x}, {s.npages} pages)"
        if not s.log_dirty:
            out.append(f"{head}: not logging")
            continue
        pages = np.flatnonzero(s.dirty)
        mode = ", manual protect" if s.manual_protect else ""
        out.append(f"{head}: logging{mode}, {len(pages)} dirty")
        shown = [f"{int(g)}@{s.ipa + (int(g) << 12):#x}" for g in pages[:DIRTY_SHOW]]
        for i in range(0, len(shown), 8):                  # page index @ IPA
            out.append("  " + " ".join(shown[i:i + 8]))
        if len(pages) > DIRTY_SHOW:
            out.append(f"  ... and {len(pages) - DIRTY_SHOW} more")
    ring = vm.dirty_ring
    if ring is not None:
        out.append(f"dirty ring: {len(ring.entries)}/{ring.size} entries, "
                   f"{len(ring.harvested)} harvested, not yet reset")
    return "\n".join(out) + "\n"


def _tlb(machine) -> str:
    vm = machine.vm
    tlb = machine.host.tlb
    vmid = vm.vmid
    entries = tlb.entries(vmid)
    st = tlb.stats
    out = [f"TLB: {len(entries)} entries for VMID {vmid} ({len(tlb)} in all)"]
    for e in entries[:LIST_LIMIT]:
        out.append(f"  VA {e.va_page:#010x} -> IPA {e.ipa_page:#011x} -> PA {e.pa_page:#012x} "
                   f"{_prot(e.prot)} level {e.level}")
    if len(entries) > LIST_LIMIT:
        out.append(f"  ... {len(entries) - LIST_LIMIT} more")
    skipping = " (skip_flush on!)" if vm.stage2.skip_flush else ""
    out.append(f"fills {st['fill']}, flush_vmid {st['flush_vmid']} "
               f"(by IPA {st['flush_vmid_ipa']}), flush_all_nsnh {st['flush_all_nsnh']}; "
               f"this VM's stage-2 flushes {vm.stage2.flushes}{skipping}")
    return "\n".join(out) + "\n"


def _stats(cpus, vm) -> str:
    total = sum(c.instructions for c in cpus)
    out = [f"instructions {total}, virtual time {vm.clock.now_ns() / 1e6:.3f} ms, "
           f"VMID {vm.vmid} (generation {vm.vmid_gen})"]
    out += [f"  {k}: {v}" for k, v in sorted(vm.stats.items())]
    for i, cpu in enumerate(cpus):
        name = "cpu" if len(cpus) == 1 else f"cpu{i}"
        head = "" if len(cpus) == 1 else f"instructions {cpu.instructions}, "
        out.append(f"  {name}: " + head + ", ".join(f"{k} {v}" for k, v in cpu.stats.items()))
    return "\n".join(out) + "\n"
