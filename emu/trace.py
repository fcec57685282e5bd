"""Trace dumps: what the guest, the MMU model and the hypervisor do, one event per line.

A `Tracer` subscribes to the machine's observer lists and, for `insn` and `mem` only, installs
Unicorn hooks. Nothing is subscribed or installed for a kind that was not asked for, and
nothing at all without a tracer: tracing off costs nothing (DESIGN 6).

Kinds (`parse_kinds("insn,mem,...")`, or `all`):

  insn   every executed instruction, capstone disassembly   (Unicorn code hook)
  mem    every guest load/store: VA, IPA, PA, size, value   (Unicorn memory hooks)
  s2     stage-2 walks on TLB misses, each descriptor read; block dissolve/split/collapse,
         table pages freed
  tlb    TLB maintenance (flush_vmid with the hypervisor's reason, flush_all_nsnh)
  dirty  pages becoming dirty (guest store fault or hypervisor write)
  exc    exceptions delivered to the guest's vectors (SVC, UND, injected aborts)
  exit   every exit to the hypervisor with its syndrome and what the hypervisor did
  mmio   emulated device accesses
  hyp    hypercalls: function, arguments, results

Every event carries `insn`, the guest instructions completed when it happened: an `insn` or
`mem` event carries the index of the instruction itself (0 is the first one). An instruction
that takes a stage-2 data abort is seen twice with the same index (before the exit and when it
is re-executed); one emulated as MMIO, or an undefined instruction, is seen once and does not
advance the count (the hypervisor skips it / the exception is taken instead). Without icount
(`Machine(icount=False)`) every index is 0.

Text format (`fmt="text"`; stable, golden-tested), `[insn] kind  fields`; real lines from
tests/emu/golden/ (long ones are wrapped here; in a trace every event is one line):

  [     10110] insn  0x400009e8  e52d4008   str r4, [sp, #-8]!
  [     10710] insn  0x40000b00  f84d 4d0c  str r4, [sp, #-0xc]!           (Thumb: halfwords)
  [     10112] mem   W va=0x40004ffc ipa=0x40004ffc pa=0x108004ffc size=4 value=0x40000074
  [         0] s2    walk X va=0x40000000 ipa=0x40000000 L1 @0x100000008=0x0(invalid)
                     -> fault translation L1
  [      3000] s2    walk W va=0x40003000 ipa=0x40003000 L1 @0x100000008=0x100002003(table)
                     L2 @0x100002000=0x10200077d(block) -> fault permission L2
  [      3000] exit  data-abort pc=0x40000018 strdlo W va=0x40003f30 ipa=0x40003f30
                     permission L2 HSR=0x9000004e HPFAR=0x00400030 -> dirty
  [      3000] dirty gfn=0x3 ipa=0x40003000 slot=ram source=guest
  [      3000] tlb   flush_vmid vmid=1 (break-before-make)
  [      3000] s2    dissolve ipa=0x40000000 L2
  [     10122] mmio  W ipa=0x09000000 size=1 value=0x48 dev=pl011
  [     10998] exc   svc lr=0x40000d38 vector=0x400000a8
  [     11345] exc   pabt lr=0x04000004 vector=0x400000ac injected
  [     11142] hyp   hvc S2EMU_SLEEP_US fid=0x86000002 r1=0x3e8 r2=0x0 r3=0x0 -> r0=0x0 r1=0x3e8
  [     10470] exit  hvc pc=0x40000204 imm=0x0 HSR=0x4a000000 -> off
  [     10470] hyp   hvc PSCI_SYSTEM_OFF fid=0x84000008 r1=0x0 r2=0x0 r3=0x0 -> off

A walk shows every descriptor it read (level, host PA, value, kind), then the output PA with
the stage-2 permissions or the fault. A flush skipped by Stage2.skip_flush reads
`tlb   flush_vmid vmid=1 (downgrade) skipped`.

An exit's line comes before the events its handling caused (dirty, s2, tlb, exc injected,
mmio, hyp), all of which carry the same count. Values are hex with 0x; `mem`/`mmio` values
are zero-padded to their size.

JSON Lines (`fmt="jsonl"`): one object per event, `{"insn": int, "kind": str, ...}` plus:

  insn   pc:int thumb:bool bytes:str asm:str
  mem    access:"R"|"W" va:int ipa:int pa:int size:int value:int
  s2     event:"walk" access:"R"|"W"|"X" va:int ipa:int steps:[{level:int desc_pa:int
         desc:int type:"table"|"block"|"page"|"invalid"}] result:"ok"|"fault" level:int
         pa:int|null prot:str|null fault:str|null
         event:"dissolve"|"split"|"collapse" ipa:int level:int
         event:"table_free" pa:int level:int
  tlb    event:"flush_vmid"|"flush_all_nsnh" vmid:int|null reason:str|null skipped:bool
  dirty  slot:str gfn:int ipa:int source:"guest"|"hypervisor"
  exc    exception:"und"|"svc"|"pabt"|"dabt"|"irq"|"fiq" lr:int vector:int injected:bool
  exit   exit:"data-abort"|"prefetch-abort"|"hvc"|"wfi"|"slice"|"debug"|"fatal" pc:int
         outcome:str; aborts add access va:int ipa:int fault:str level:int hsr:int
         hpfar:int far:int mnemonic:str|null; hvc adds imm:int hsr:int; debug adds
         reason:str; outcome "error" adds error:str
  mmio   access:"R"|"W" ipa:int size:int value:int device:str
  hyp    call:"hvc" name:str fid:int args:[r1,r2,r3] result:[r0,r1]|null stop:str|null

Address filter (`addr_range=(lo, hi)`, hi exclusive): insn by PC, mem by VA (the hooks are
bounded to the range, so code outside it runs at full speed), s2 walks/blocks and
stage-2 abort exits by VA or IPA, mmio by IPA, dirty by page IPA. tlb, exc, hyp,
table_free and exits that are not stage-2 aborts are always kept.

Ring mode (`ring=N`): events go into a bounded deque; `dump()` writes the last N (the CLI
calls it when the run ends or fails; `close()` and leaving a `with` block call it too). When
older events were dropped, the text form starts with `# trace ring: last N of M events`.
A fatal end is the last event: the exit the hypervisor could not handle, with outcome
"error" and the message (`dump(error=...)`), or an `exit fatal` event for a stop outside
the hypervisor.
"""
from __future__ import annotations

import json
import sys
from collections import deque
from typing import Callable, NamedTuple, TextIO

import capstone
from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE
from unicorn import arm_const as A

from hyp import hypercall
from hyp.arch import descriptors as d
from hyp.arch.descriptors import Prot
from hyp.arch.exception import GuestException
from hyp.arch.fault import Access, Fault, FaultType
from hyp.arch.walk import translate
from hyp.exits import BudgetExhausted, DebugStop, Hypercall, Stage2Abort, WaitForInterrupt

KINDS = ("insn", "mem", "s2", "tlb", "dirty", "exc", "exit", "mmio", "hyp")
FORMATS = ("text", "jsonl")

_ACCESS = {Access.READ: "R", Access.WRITE: "W", Access.FETCH: "X"}
_FAULT = {FaultType.ADDRESS_SIZE: "address-size", FaultType.TRANSLATION: "translation",
          FaultType.ACCESS_FLAG: "access-flag", FaultType.PERMISSION: "permission",
          FaultType.EXTERNAL_WALK: "external-walk"}
_EXC = {GuestException.UNDEFINED: "und", GuestException.SVC: "svc",
        GuestException.PREFETCH_ABORT: "pabt", GuestException.DATA_ABORT: "dabt",
        GuestException.IRQ: "irq", GuestException.FIQ: "fiq"}
_CS = {False: capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_ARM),
       True: capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB)}
_CPSR_T = 1 << 5
_CPSR_IT = (0x3F << 10) | (0x3 << 25)      # IT[7:2], IT[1:0]


class TraceError(ValueError):
    """A bad --trace / --trace-range / --trace-format value (one line for the user)."""


class Event(NamedTuple):
    insn: int           # guest instructions completed
    kind: str           # one of KINDS
    data: dict          # the kind's typed fields (the JSON object minus insn/kind)


# ---- parsing the command-line values ----------------------------------------------------
def parse_kinds(text: str) -> set[str]:
    """'exit,mmio,hyp' -> {'exit', 'mmio', 'hyp'}; 'all' means every kind."""
    kinds = {k.strip().lower() for k in text.split(",") if k.strip()}
    if "all" in kinds:
        return set(KINDS)
    unknown = sorted(kinds - set(KINDS))
    if unknown:
        raise TraceError(f"unknown trace kind{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(k) for k in unknown)} "
                         f"(choose from {', '.join(KINDS)}, or all)")
    if not kinds:
        raise TraceError(f"no trace kinds given (choose from {', '.join(KINDS)}, or all)")
    return kinds


def _number(text: str) -> int:
    t = text.strip().replace("_", "")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:].upper(), 1)
    if mult > 1:
        t = t[:-1]
    try:
        return int(t, 0) * mult
    except ValueError:
        raise TraceError(f"bad address {text.strip()!r}") from None


def parse_range(text: str) -> tuple[int, int]:
    """'0x40000000-0x40001000' (end exclusive) or '0x40000000+4K' -> (lo, hi)."""
    if "+" in text:
        lo_s, size_s = text.split("+", 1)
        lo = _number(lo_s)
        hi = lo + _number(size_s)
    elif "-" in text:
        lo_s, hi_s = text.split("-", 1)
        lo, hi = _number(lo_s), _number(hi_s)
    else:
        raise TraceError(f"bad address range {text!r} (use LO-HI or LO+SIZE, e.g. "
                         f"0x40000000-0x40001000)")
    if not 0 <= lo < hi <= 1 << 40:
        raise TraceError(f"empty or invalid address range {text!r} (LO < HI <= 2^40)")
    return lo, hi


# ---- formatting ----------------------------------------------------------------------
def _hexv(value: int, size: int) -> str:
    return f"{value:#0{2 + 2 * size}x}"


def _prot(prot: Prot) -> str:
    return ("r" if prot & Prot.R else "-") + ("w" if prot & Prot.W else "-") + \
        ("x" if prot & Prot.X else "-")


def _code_hex(code: bytes, thumb: bool) -> str:
    """objdump's spelling: an A32 word, or one/two T32 halfwords."""
    if not thumb:
        return f"{int.from_bytes(code[:4], 'little'):08x}"
    hws = [int.from_bytes(code[i:i + 2], "little") for i in range(0, len(code) - 1, 2)]
    return " ".join(f"{hw:04x}" for hw in hws)


_ASM_CACHE: dict[tuple[bytes, int, bool], str] = {}


def disassemble(code: bytes, pc: int, thumb: bool) -> str:
    """Capstone's text for one instruction ('(undefined)' if it cannot decode it). In Thumb,
    instructions inside an IT block are shown without the block's condition."""
    key = (code, pc, thumb)
    text = _ASM_CACHE.get(key)
    if text is None:
        insn = next(_CS[thumb].disasm(code, pc, count=1), None)
        text = "(undefined)" if insn is None else f"{insn.mnemonic} {insn.op_str}".rstrip()
        if len(_ASM_CACHE) > 65536:
            _ASM_CACHE.clear()
        _ASM_CACHE[key] = text
    return text


def json_fields(ev: Event) -> dict:
    """The event as its JSON Lines object."""
    if ev.kind == "insn":
        data = ev.data
        fields = {"pc": data["pc"], "thumb": data["thumb"],
                  "bytes": _code_hex(data["code"], data["thumb"]),
                  "asm": disassemble(data["code"], data["pc"], data["thumb"])}
    else:
        fields = ev.data
    return {"insn": ev.insn, "kind": ev.kind, **fields}


def _text_insn(f: dict) -> str:
    return (f"{f['pc']:#010x}  {_code_hex(f['code'], f['thumb']):<9}  "
            f"{disassemble(f['code'], f['pc'], f['thumb'])}")


def _text_mem(f: dict) -> str:
    return (f"{f['access']} va={f['va']:#010x} ipa={f['ipa']:#010x} pa={f['pa']:#x} "
            f"size={f['size']} value={_hexv(f['value'], f['size'])}")


def _text_s2(f: dict) -> str:
    ev = f["event"]
    if ev == "walk":
        steps = " ".join(f"L{s['level']} @{s['desc_pa']:#x}={s['desc']:#x}({s['type']})"
                         for s in f["steps"])
        head = f"walk {f['access']} va={f['va']:#010x} ipa={f['ipa']:#010x}"
        if f["result"] == "ok":
            tail = f"-> pa={f['pa']:#x} {f['prot']}"
        else:
            tail = f"-> fault {f['fault']} L{f['level']}"
        return " ".join(p for p in (head, steps, tail) if p)
    if ev == "table_free":
        return f"table_free pa={f['pa']:#x} L{f['level']}"
    return f"{ev} ipa={f['ipa']:#010x} L{f['level']}"


def _text_tlb(f: dict) -> str:
    s = f["event"]
    if f["vmid"] is not None:
        s += f" vmid={f['vmid']}"
    if f["reason"]:
        s += f" ({f['reason']})"
    if f["skipped"]:
        s += " skipped"
    return s


def _text_dirty(f: dict) -> str:
    return f"gfn={f['gfn']:#x} ipa={f['ipa']:#010x} slot={f['slot']} source={f['source']}"


def _text_exc(f: dict) -> str:
    return (f"{f['exception']} lr={f['lr']:#010x} vector={f['vector']:#010x}"
            f"{' injected' if f['injected'] else ''}")


def _text_exit(f: dict) -> str:
    s = f"{f['exit']} pc={f['pc']:#010x}"
    if "hpfar" in f:
        if f["mnemonic"]:
            s += f" {f['mnemonic']}"
        s += (f" {f['access']} va={f['va']:#010x} ipa={f['ipa']:#010x} {f['fault']} "
              f"L{f['level']} HSR={f['hsr']:#010x} HPFAR={f['hpfar']:#010x}")
    elif "imm" in f:
        s += f" imm={f['imm']:#x} HSR={f['hsr']:#010x}"
    elif "reason" in f:
        s += f" reason={f['reason']}"
    s += f" -> {f['outcome']}"
    if "error" in f:
        s += f": {f['error']}"
    return s


def _text_mmio(f: dict) -> str:
    return (f"{f['access']} ipa={f['ipa']:#010x} size={f['size']} "
            f"value={_hexv(f['value'], f['size'])} dev={f['device']}")


def _text_hyp(f: dict) -> str:
    r1, r2, r3 = f["args"]
    s = f"{f['call']} {f['name']} fid={f['fid']:#010x} r1={r1:#x} r2={r2:#x} r3={r3:#x} -> "
    if f["stop"]:
        return s + f["stop"]
    return s + f"r0={f['result'][0]:#x} r1={f['result'][1]:#x}"


_TEXT: dict[str, Callable[[dict], str]] = {
    "insn": _text_insn, "mem": _text_mem, "s2": _text_s2, "tlb": _text_tlb,
    "dirty": _text_dirty, "exc": _text_exc, "exit": _text_exit, "mmio": _text_mmio,
    "hyp": _text_hyp}


def format_text(ev: Event) -> str:
    """One text line (no newline): `[      insn] kind  fields`."""
    return f"[{ev.insn:10d}] {ev.kind:<5} {_TEXT[ev.kind](ev.data)}"


def format_json(ev: Event) -> str:
    return json.dumps(json_fields(ev), separators=(",", ":"))


def exit_name(ex) -> str:
    """data-abort, prefetch-abort, hvc, wfi, slice, debug."""
    if isinstance(ex, Stage2Abort):
        return "prefetch-abort" if ex.fault.fetch else "data-abort"
    if isinstance(ex, Hypercall):
        return "hvc"
    if isinstance(ex, WaitForInterrupt):
        return "wfi"
    if isinstance(ex, BudgetExhausted):
        return "slice"
    if isinstance(ex, DebugStop):
        return "debug"
    return type(ex).__name__.lower()


def exception_name(exc: GuestException) -> str:
    """und, svc, pabt, dabt, irq, fiq."""
    return _EXC[exc]


def exit_fields(ex) -> dict:
    """The typed fields of an exit (without its outcome)."""
    f: dict = {"exit": exit_name(ex), "pc": ex.pc}
    if isinstance(ex, Stage2Abort):
        fault, syn = ex.fault, ex.syndrome
        f.update(access=_ACCESS[fault.access], va=fault.va, ipa=fault.ipa,
                 fault=_FAULT[fault.type], level=fault.level, hsr=syn.hsr, hpfar=syn.hpfar,
                 far=syn.far, mnemonic=ex.info.mnemonic if ex.info is not None else None)
    elif isinstance(ex, Hypercall):
        f.update(imm=ex.imm, hsr=ex.hsr)
    elif isinstance(ex, DebugStop):
        f.update(reason=ex.reason)
    return f


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
                 addr_range: tuple[int, int] | None = None, ring: int | None = None) -> None:
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
        self._buf = None

    # ---- life cycle -----------------------------------------------------------------
    def attach(self, machine) -> Tracer:
        """Subscribe to `machine` (an emu.machine.Machine) for the requested kinds."""
        if self._m is not None:
            raise RuntimeError("tracer already attached")
        self._m = machine
        k = self.kinds
        cpu, vm = machine.cpu, machine.vm
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
        va = ipa                              # guest stage 1 is off: VA = IPA
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
        data = {"event": "walk", "access": _ACCESS[access], "va": va, "ipa": ipa,
                "steps": [{"level": s.level, "desc_pa": s.desc_pa, "desc": s.desc,
                           "type": d.kind(s.desc, s.level).value} for s in steps]}
        if isinstance(result, Fault):
            data.update(result="fault", level=result.level, pa=None, prot=None,
                        fault=_FAULT[result.type])
        else:
            data.update(result="ok", level=result.level, pa=result.pa, prot=_prot(result.prot),
                        fault=None)
        self._record(Event(_walk_index(self._m.cpu, access), "s2", data))

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
        if "exit" in self.kinds and self._exit_in_range(ex):
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
