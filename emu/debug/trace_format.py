"""Trace dumps: what the guest, the MMU model and the hypervisor do, one event per line.

This module is the trace's vocabulary and format: the kinds and address ranges as the command
line spells them (parse_kinds, parse_range), the Event record, and the text and JSON Lines form
of each kind. The Tracer that collects the events (observer subscriptions, Unicorn hooks,
filtering, ring buffer) is in emu/debug/trace.py, which re-exports every public name here.

A `Tracer` subscribes to the machine's observer lists and, for `insn` and `mem` only, installs
Unicorn hooks. Nothing is subscribed or installed for a kind that was not asked for, and
nothing at all without a tracer: tracing off costs nothing (DESIGN 6).

Kinds (`parse_kinds("insn,mem,...")`, or `all`):

  insn   every executed instruction, capstone disassembly   (Unicorn code hook)
  mem    every guest load/store: VA, IPA, PA, size, value   (Unicorn memory hooks)
  s1     the guest's stage-1 walks on TLB misses: each descriptor read with the stage-2
         walk of its IPA, then the mapping or the guest's fault (emu/debug/trace_s1.py)
  s2     stage-2 walks on TLB misses, each descriptor read; block dissolve/split/collapse,
         table pages freed
  tlb    TLB maintenance (flush_vmid with the hypervisor's reason, flush_all_nsnh)
  dirty  pages becoming dirty (guest store fault or hypervisor write)
  exc    exceptions delivered to the guest's vectors (SVC, UND, injected aborts)
  exit   every exit to the hypervisor with its syndrome and what the hypervisor did
  mmio   emulated device accesses
  hyp    hypercalls: function, arguments, results

Every event carries `insn`, the guest instructions completed when it happened: an `insn` or
`mem` event carries the index of the instruction itself (0 is the first one). With several
vCPUs (`Machine(smp=N)`, N > 1) `insn` counts the machine's steps - those of every vCPU, in
the order the scheduler ran them, so indices grow through the whole trace - and each event
also names the vCPU it happened on (`cpu`): the one whose instruction, walk, exception or
exit it is; machine-wide events (stage-2 changes, TLB maintenance, dirty pages) name the
vCPU running when they happened (whose exit the hypervisor was handling). With one vCPU
there is no `cpu` field and the formats are exactly as below. An instruction
that takes a stage-2 data abort is seen twice with the same index (before the exit and when it
is re-executed); one emulated as MMIO, or an undefined instruction, is seen once and does not
advance the count (the hypervisor skips it / the exception is taken instead). Without icount
(`Machine(icount=False)`) every index is 0.

Text format (`fmt="text"`; stable, golden-tested), `[insn] kind  fields`, or with several
vCPUs `[insn] cpuN kind  fields` (`[     20013] cpu1 exit  hvc pc=0x40000140 ...`); real
lines from tests/emu/golden/ (long ones are wrapped here; in a trace every event is one line):

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

JSON Lines (`fmt="jsonl"`): one object per event, `{"insn": int, "kind": str, ...}` (with
several vCPUs `{"insn": int, "cpu": int, "kind": str, ...}`) plus:

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

from functools import lru_cache
from typing import Callable, NamedTuple

from hyp.arch.descriptors import Prot
from hyp.arch.exception import GuestException
from hyp.arch.fault import Access, FaultType
from hyp.exits import BudgetExhausted, DebugStop, Hypercall, Stage2Abort, WaitForInterrupt

from .trace_s1 import text_s1

KINDS = ("insn", "mem", "s1", "s2", "tlb", "dirty", "exc", "exit", "mmio", "hyp")
FORMATS = ("text", "jsonl")

ACCESS_NAMES = {Access.READ: "R", Access.WRITE: "W", Access.FETCH: "X"}
FAULT_NAMES = {FaultType.ADDRESS_SIZE: "address-size", FaultType.TRANSLATION: "translation",
               FaultType.ACCESS_FLAG: "access-flag", FaultType.PERMISSION: "permission",
               FaultType.EXTERNAL: "external", FaultType.EXTERNAL_WALK: "external-walk"}
_EXC = {GuestException.UNDEFINED: "und", GuestException.SVC: "svc",
        GuestException.PREFETCH_ABORT: "pabt", GuestException.DATA_ABORT: "dabt",
        GuestException.IRQ: "irq", GuestException.FIQ: "fiq"}


class TraceError(ValueError):
    """A bad --trace / --trace-range / --trace-format value (one line for the user)."""


class Event(NamedTuple):
    insn: int           # guest instructions completed (all vCPUs': see the module doc)
    kind: str           # one of KINDS
    data: dict          # the kind's typed fields (the JSON object minus insn/cpu/kind)
    cpu: int | None = None   # the vCPU it happened on; None on a one-vCPU machine


# ---- parsing the command-line values ----------------------------------------------------
def parse_kinds(text: str) -> set[str]:
    """'exit,mmio,hyp' -> {'exit', 'mmio', 'hyp'}; 'all' means every kind."""
    kinds = {k.strip().lower() for k in text.split(",") if k.strip()}
    unknown = sorted(kinds - set(KINDS) - {"all"})
    if unknown:
        raise TraceError(f"unknown trace kind{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(k) for k in unknown)} "
                         f"(choose from {', '.join(KINDS)}, or all)")
    if not kinds:
        raise TraceError(f"no trace kinds given (choose from {', '.join(KINDS)}, or all)")
    return set(KINDS) if "all" in kinds else kinds


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


def prot_text(prot: Prot) -> str:
    return ("r" if prot & Prot.R else "-") + ("w" if prot & Prot.W else "-") + \
        ("x" if prot & Prot.X else "-")


def code_hex(code: bytes, thumb: bool) -> str:
    """objdump's spelling: an A32 word, or one/two T32 halfwords."""
    if not thumb:
        return f"{int.from_bytes(code[:4], 'little'):08x}"
    hws = [int.from_bytes(code[i:i + 2], "little") for i in range(0, len(code) - 1, 2)]
    return " ".join(f"{hw:04x}" for hw in hws)


_ASM_CACHE: dict[tuple[bytes, int, bool], str] = {}


@lru_cache(maxsize=None)
def _cs(thumb: bool):
    """Capstone's ARM or Thumb decoder, made on the first disassembly (capstone is imported
    only when an instruction is shown)."""
    import capstone
    return capstone.Cs(capstone.CS_ARCH_ARM,
                       capstone.CS_MODE_THUMB if thumb else capstone.CS_MODE_ARM)


def disassemble(code: bytes, pc: int, thumb: bool) -> str:
    """Capstone's text for one instruction ('(undefined)' if it cannot decode it). In Thumb,
    instructions inside an IT block are shown without the block's condition."""
    key = (code, pc, thumb)
    text = _ASM_CACHE.get(key)
    if text is None:
        insn = next(_cs(thumb).disasm(code, pc, count=1), None)
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
                  "bytes": code_hex(data["code"], data["thumb"]),
                  "asm": disassemble(data["code"], data["pc"], data["thumb"])}
    else:
        fields = ev.data
    if ev.cpu is not None:
        return {"insn": ev.insn, "cpu": ev.cpu, "kind": ev.kind, **fields}
    return {"insn": ev.insn, "kind": ev.kind, **fields}


def _text_insn(f: dict) -> str:
    return (f"{f['pc']:#010x}  {code_hex(f['code'], f['thumb']):<9}  "
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
    "insn": _text_insn, "mem": _text_mem, "s1": text_s1, "s2": _text_s2, "tlb": _text_tlb,
    "dirty": _text_dirty, "exc": _text_exc, "exit": _text_exit, "mmio": _text_mmio,
    "hyp": _text_hyp}


def format_text(ev: Event) -> str:
    """One text line (no newline): `[      insn] kind  fields` (`[      insn] cpuN kind
    fields` for an event of vCPU N on a machine with several)."""
    cpu = "" if ev.cpu is None else f"cpu{ev.cpu} "
    return f"[{ev.insn:10d}] {cpu}{ev.kind:<5} {_TEXT[ev.kind](ev.data)}"


def format_json(ev: Event) -> str:
    import json             # here: the command line imports this module for every run
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
        f.update(access=ACCESS_NAMES[fault.access], va=fault.va, ipa=fault.ipa,
                 fault=FAULT_NAMES[fault.type], level=fault.level, hsr=syn.hsr, hpfar=syn.hpfar,
                 far=syn.far, mnemonic=ex.info.mnemonic if ex.info is not None else None)
    elif isinstance(ex, Hypercall):
        f.update(imm=ex.imm, hsr=ex.hsr)
    elif isinstance(ex, DebugStop):
        f.update(reason=ex.reason)
    return f


__all__ = ["KINDS", "FORMATS", "Event", "TraceError", "parse_kinds", "parse_range",
           "format_text", "format_json", "json_fields", "disassemble", "exit_name",
           "exit_fields", "exception_name", "ACCESS_NAMES", "FAULT_NAMES", "prot_text"]
