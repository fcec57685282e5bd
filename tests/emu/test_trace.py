"""Trace dumps (emu/trace.py) and the Perfetto export (emu/perfetto.py).

The text traces of a few small runs are compared with golden files in tests/emu/golden/. After
an intended change of the format (or of what the guests do), regenerate them and review the
diff:

    S2EMU_REGEN_GOLDEN=1 python -m pytest tests/emu/test_trace.py
    git diff tests/emu/golden/

The JSON forms are checked against a schema written out below (keys and types per kind).
"""
from __future__ import annotations

import difflib
import io
import json
from decimal import Decimal
import os

import pytest

from emu import native
from emu.machine import Machine
from emu.debug.perfetto import PerfettoExporter
from emu.debug.trace import KINDS, TraceError, Tracer, parse_kinds, parse_range
from hyp import dirty
from hyp.exits import Stage2Abort

from conftest import GUESTS
from snippet import it_skipped

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
REGEN = os.environ.get("S2EMU_REGEN_GOLDEN") == "1"
EVENT_KINDS = "s2,tlb,dirty,exc,exit,mmio,hyp"          # everything but insn/mem


# ---- running guests with a tracer ------------------------------------------------------
def machine(guest: str, args: str = "", **kw) -> Machine:
    m = Machine(console=lambda b: None, **kw)
    m.load(os.path.join(GUESTS, f"{guest}.elf"), args)
    return m


def traced(guest: str, kinds, *, fmt: str = "text", addr_range=None, ring=None,
           args: str = "") -> tuple[str, Machine]:
    m = machine(guest, args)
    out = io.StringIO()
    with Tracer(kinds, out=out, fmt=fmt, addr_range=addr_range, ring=ring) as t:
        t.attach(m)
        result = m.run(max_insns=5_000_000)
    assert result.reason == "off", result
    return out.getvalue(), m


def dirtyram_logging(*observers, split: str = "lazy", args: str = "8 4 1 4") -> list[int]:
    """dirtyram with dirty logging on RAM, harvesting every 0.5 ms of virtual time (as
    `s2emu run --log-dirty` does). `observers` are Tracers (attached here) or a callable
    taking the Machine and returning an object with harvest(n) (a PerfettoExporter).
    Returns the pages of each harvest."""
    m = Machine(8 << 20, split=split, console=lambda b: None)
    m.load(os.path.join(GUESTS, "dirtyram.elf"), args)
    live = [o.attach(m) if isinstance(o, Tracer) else o(m) for o in observers]
    m.vcpu.run(max_insns=3000)                    # RAM is mapped by a 2 MiB block by now
    dirty.enable_logging(m.vm, m.ram)
    step, harvests = 500_000, []
    while True:
        result = m.vcpu.run(until_ns=(m.vm.clock.now_ns() // step + 1) * step)
        pages = int(dirty.get_dirty_log(m.vm, m.ram).sum())
        harvests.append(pages)
        for o in live:
            if hasattr(o, "harvest"):
                o.harvest(pages)
        if result.reason != "time":
            break
    assert result.reason == "off", result
    dirty.disable_logging(m.vm, m.ram)
    dirty.rebuild_huge(m.vm, m.ram)               # frees the level-3 tables: table_free
    for o in live:
        if isinstance(o, Tracer):
            o.close()
    return harvests


# ---- parsing --------------------------------------------------------------------------
def test_parse_kinds():
    assert parse_kinds("exit,mmio, hyp") == {"exit", "mmio", "hyp"}
    assert parse_kinds("all") == set(KINDS)
    with pytest.raises(TraceError, match=r"unknown trace kind 'bogus' \(choose from insn, mem"):
        parse_kinds("exit,bogus")
    with pytest.raises(TraceError, match="unknown trace kinds 'a', 'b'"):
        parse_kinds("a,b")
    with pytest.raises(TraceError, match="no trace kinds"):
        parse_kinds(" , ")
    with pytest.raises(TraceError, match="unknown trace kind"):
        Tracer({"exit", "nope"}, out=io.StringIO())
    with pytest.raises(TraceError, match="unknown trace format 'xml'"):
        Tracer("exit", out=io.StringIO(), fmt="xml")


def test_parse_range():
    assert parse_range("0x40000000-0x40001000") == (0x4000_0000, 0x4000_1000)
    assert parse_range("0x40000000+4K") == (0x4000_0000, 0x4000_1000)
    assert parse_range("4096-8192") == (4096, 8192)
    for bad in ("0x40000000", "0x2000-0x1000", "x-y", "0x1000+0"):
        with pytest.raises(TraceError):
            parse_range(bad)


# ---- golden text traces -----------------------------------------------------------------
GOLDEN = {
    # every hypervisor-side event of a whole run of hello
    "hello_events": lambda: traced("hello", EVENT_KINDS)[0],
    # instructions of main() only (the hook is bounded to it), and the power-off
    "hello_main_insn": lambda: traced("hello", "insn,mem,exit,hyp",
                                      addr_range=(0x400009E4, 0x40000A14))[0],
    # loads and stores to the top of the SVC stack (bss zeroing, then main's frame)
    "hello_stack_mem": lambda: traced("hello", "mem", addr_range=(0x40004FC0, 0x40005000))[0],
    # Thumb-2: 16- and 32-bit encodings
    "thumb_main_insn": lambda: traced("thumb", "insn", addr_range=(0x40000AFC, 0x40000B20))[0],
    # flash: permission fault emulated as MMIO, XN prefetch abort injected, SVC and UND
    "faults_flash": lambda: traced("faults", "exc,exit,mmio", addr_range=(0, 0x0800_0000))[0],
    # dirty logging: block dissolved, pages dirtied, write-protect flushes, re-dirtied
    "dirtyram_logging": lambda: _dirtyram_text(),
    # the guest's own stage 1, both formats: demand paging (translation faults the guest
    # handles by mapping), copy-on-write (a permission fault), each walk's descriptors
    "mmu_s1_paging": lambda: traced("mmu", "s1,exc", addr_range=(0x10010000, 0x10022000))[0],
}


def _dirtyram_text() -> str:
    out = io.StringIO()
    dirtyram_logging(Tracer("s2,tlb,dirty,exit,hyp", out=out,
                            addr_range=(0x4000_0000, 0x4021_0000)))
    return out.getvalue()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_text_trace(name):
    text = GOLDEN[name]()
    path = os.path.join(GOLDEN_DIR, f"{name}.txt")
    if REGEN:
        os.makedirs(GOLDEN_DIR, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        want = f.read()
    if text != want:
        diff = "\n".join(list(difflib.unified_diff(want.splitlines(), text.splitlines(),
                                                   "golden", "now", lineterm=""))[:40])
        pytest.fail(f"{name}: trace differs from {path} (S2EMU_REGEN_GOLDEN=1 to accept):\n"
                    f"{diff}")


def test_golden_traces_cover_every_kind():
    seen = set()
    for name in GOLDEN:
        with open(os.path.join(GOLDEN_DIR, f"{name}.txt")) as f:
            seen |= {line[13:18].strip() for line in f if line.startswith("[")}
    assert seen == set(KINDS)


def test_text_lines_are_stable_in_shape():
    text, m = traced("faults", "all")
    for line in text.splitlines():
        assert line[0] == "[" and line[11:13] == "] " and line[13:18].strip() in KINDS, line
        assert line[1:11].strip().isdigit()
    counts = [int(line[1:11]) for line in text.splitlines()]
    assert counts == sorted(counts)                   # the instruction count never goes back
    assert counts[-1] == m.cpu.progress                # instructions + exception entries


def test_a_faulting_walk_and_its_exit_carry_the_same_count():
    # fetch walks happen when Unicorn translates the next block: after the branch completed
    text, _ = traced("faults", "s2,exit", fmt="jsonl")
    objs = jsonl_events(text)
    pairs = [(a, b) for a, b in zip(objs, objs[1:]) if a["kind"] == "s2" and a["fault"]]
    assert {a["access"] for a, _ in pairs} == {"R", "W", "X"}
    for walk, ex in pairs:
        assert ex["kind"] == "exit" and ex["insn"] == walk["insn"], (walk, ex)
        assert ex["ipa"] & ~0xFFF == walk["ipa"] and ex["level"] == walk["level"]


def test_two_runs_give_identical_traces():
    assert traced("thumb", "all")[0] == traced("thumb", "all")[0]
    a, b = io.StringIO(), io.StringIO()
    dirtyram_logging(Tracer("all", out=a, fmt="jsonl"))
    dirtyram_logging(Tracer("all", out=b, fmt="jsonl"))
    assert a.getvalue() == b.getvalue()


# ---- JSON Lines schema --------------------------------------------------------------------
class Null:
    """A field that may be null."""
    def __init__(self, spec) -> None:
        self.spec = spec


def conforms(value, spec) -> bool:
    if spec in (int, str, bool):
        return type(value) is spec                  # no bool for int
    if isinstance(spec, Null):
        return value is None or conforms(value, spec.spec)
    if isinstance(spec, set):
        return value in spec
    if isinstance(spec, list):
        return isinstance(value, list) and all(conforms(v, spec[0]) for v in value) and \
            (len(spec) == 1 or len(value) == spec[1])
    if isinstance(spec, dict):
        return isinstance(value, dict) and set(value) == set(spec) and \
            all(conforms(value[k], s) for k, s in spec.items())
    raise AssertionError(f"bad spec {spec!r}")


ACCESS = {"R", "W"}
LEVEL = {1, 2, 3}
FAULTS = {"address-size", "translation", "access-flag", "permission", "external-walk"}
STEP = {"level": {0, 1, 2, 3}, "desc_pa": int, "desc": int,
        "type": {"table", "block", "page", "invalid"}}
SCHEMA = {
    "insn": {"pc": int, "thumb": bool, "bytes": str, "asm": str},
    "mem": {"access": ACCESS, "va": int, "ipa": int, "pa": int, "size": {1, 2, 4, 8},
            "value": int},
    "s2 walk": {"event": {"walk"}, "access": {"R", "W", "X"}, "va": int, "ipa": int,
                "steps": [STEP], "result": {"ok", "fault"}, "level": {0, 1, 2, 3},
                "pa": Null(int), "prot": Null(str), "fault": Null(FAULTS)},
    "s2 dissolve": {"event": {"dissolve"}, "ipa": int, "level": LEVEL},
    "s2 split": {"event": {"split"}, "ipa": int, "level": LEVEL},
    "s2 collapse": {"event": {"collapse"}, "ipa": int, "level": LEVEL},
    "s2 table_free": {"event": {"table_free"}, "pa": int, "level": LEVEL},
    "tlb": {"event": {"flush_vmid", "flush_all_nsnh"}, "vmid": Null(int),
            "reason": Null(str), "skipped": bool},
    "dirty": {"slot": str, "gfn": int, "ipa": int, "source": {"guest", "hypervisor"}},
    "exc": {"exception": {"und", "svc", "pabt", "dabt", "irq", "fiq"}, "lr": int,
            "vector": int, "injected": bool},
    "mmio": {"access": ACCESS, "ipa": int, "size": {1, 2, 4}, "value": int, "device": str},
    "hyp": {"call": {"hvc"}, "name": str, "fid": int, "args": [int, 3],
            "result": Null([int, 2]), "stop": Null({"off", "reset"})},
}
EXIT_BASE = {"exit": str, "pc": int, "outcome": str}
EXIT_EXTRA = {
    "data-abort": {"access": {"R", "W"}, "va": int, "ipa": int, "fault": FAULTS,
                   "level": {0, 1, 2, 3}, "hsr": int, "hpfar": int, "far": int,
                   "mnemonic": Null(str)},
    "prefetch-abort": {"access": {"X"}, "va": int, "ipa": int, "fault": FAULTS,
                       "level": {0, 1, 2, 3}, "hsr": int, "hpfar": int, "far": int,
                       "mnemonic": Null(str)},
    "hvc": {"imm": int, "hsr": int},
    "wfi": {}, "slice": {}, "debug": {"reason": str}, "fatal": {},
}


def check_event(obj: dict) -> str:
    """Assert `obj` is a valid trace event; returns its schema key."""
    assert type(obj.get("insn")) is int and obj["insn"] >= 0, obj
    assert obj.get("kind") in KINDS, obj
    fields = {k: v for k, v in obj.items() if k not in ("insn", "kind")}
    kind = obj["kind"]
    if kind == "s2":
        key = f"s2 {fields.get('event')}"
        spec = SCHEMA[key]
    elif kind == "exit":
        key = f"exit {fields.get('exit')}"
        spec = {**EXIT_BASE, **EXIT_EXTRA[fields["exit"]]}
        if fields.get("outcome") == "error":
            spec["error"] = str
    else:
        key, spec = kind, SCHEMA[kind]
    assert conforms(fields, spec), f"{key}: {obj}"
    if key == "s2 walk":
        ok = fields["result"] == "ok"
        assert (fields["pa"] is not None) == ok and (fields["fault"] is None) == ok, obj
    return key


def jsonl_events(text: str) -> list[dict]:
    lines = text.splitlines()
    assert lines and all(line.startswith("{") for line in lines)
    return [json.loads(line) for line in lines]


def test_jsonl_every_line_matches_the_schema():
    seen = set()
    runs = [traced("hello", "all", fmt="jsonl")[0], traced("faults", "all", fmt="jsonl")[0],
            traced("thumb", "all", fmt="jsonl", addr_range=(0x40000A6C, 0x40000A90))[0]]
    for split in ("lazy", "eager"):
        out = io.StringIO()
        dirtyram_logging(Tracer("all", out=out, fmt="jsonl"), split=split)
        runs.append(out.getvalue())
    for text in runs:
        for obj in jsonl_events(text):
            seen.add(check_event(obj))
    assert seen >= {"insn", "mem", "s2 walk", "s2 dissolve", "s2 split", "s2 table_free",
                    "tlb", "dirty", "exc", "mmio", "hyp", "exit data-abort",
                    "exit prefetch-abort", "exit hvc", "exit slice"}


def test_jsonl_and_text_describe_the_same_events():
    text, _ = traced("faults", "all")
    jsonl, _ = traced("faults", "all", fmt="jsonl")
    objs = jsonl_events(jsonl)
    lines = text.splitlines()
    assert len(objs) == len(lines)
    assert [(o["insn"], o["kind"]) for o in objs] == \
        [(int(line[1:11]), line[13:18].strip()) for line in lines]
    insn = next(o for o in objs if o["kind"] == "insn" and o["thumb"] is False)
    line = next(l for l in lines if f"insn  {insn['pc']:#010x}" in l)
    assert insn["bytes"] in line and line.endswith(insn["asm"])


# ---- ring mode, fatal exits ------------------------------------------------------------
def test_ring_keeps_the_last_n_events_ending_with_the_final_exit():
    full, _ = traced("hello", "s2,exit,mmio,hyp")
    ring, _ = traced("hello", "s2,exit,mmio,hyp", ring=25)
    head, *lines = ring.splitlines()
    total = len(full.splitlines())
    assert head == f"# trace ring: last 25 of {total} events"
    assert lines == full.splitlines()[-25:]
    exits = [l for l in lines if "] exit " in l]
    assert exits[-1].endswith("hvc pc=0x40000204 imm=0x0 HSR=0x4a000000 -> off")
    assert lines[-1].endswith("PSCI_SYSTEM_OFF fid=0x84000008 r1=0x0 r2=0x0 r3=0x0 -> off")
    jl, _ = traced("hello", "s2,exit,mmio,hyp", ring=25, fmt="jsonl")
    objs = jsonl_events(jl)                        # no header line in JSON Lines
    assert len(objs) == 25 and objs[-2]["exit"] == "hvc" and objs[-2]["outcome"] == "off"


def test_ring_dump_on_a_fatal_exit_shows_the_error():
    m = machine("hello")
    m.vm.bus.regions.clear()                      # no UART: its first access is fatal
    out = io.StringIO()
    t = Tracer("s2,exit,mmio", out=out, ring=3).attach(m)
    result = m.run(max_insns=1_000_000)
    assert result.reason == "error"
    assert out.getvalue() == ""                   # nothing written before the dump
    t.dump(error=result.error)
    t.detach()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 + 1 and lines[0].startswith("# trace ring: last 3 of ")
    assert lines[-2].endswith("walk R va=0x09000000 ipa=0x09000000 "
                              "L1 @0x100000000=0x0(invalid) -> fault translation L1")
    assert " exit  data-abort pc=" in lines[-1] and "ipa=0x09000018" in lines[-1]
    assert lines[-1].endswith(f"-> error: {result.error}")


def test_fatal_stop_outside_the_hypervisor():
    m = machine("hello")
    out = io.StringIO()
    t = Tracer("exit", out=out, fmt="jsonl").attach(m)
    t.close(error="unicorn stopped at PC 0x40000000: boom")
    obj = check_event(json.loads(out.getvalue()))
    assert obj == "exit fatal"
    assert json.loads(out.getvalue())["error"].endswith("boom")


# ---- tracing off costs nothing; tracing changes nothing ---------------------------------------
def hook_state(m: Machine) -> tuple:
    return (len(m.cpu.uc._callbacks), len(m.mmu.observers), len(m.host.tlb.listeners),
            len(m.vm.stage2.observers), len(m.vcpu.observers), len(m.cpu.exception_observers),
            len(m.vm.dirty_observers))


def test_no_hooks_unless_asked_and_none_left_after_detach():
    m = machine("hello")
    base = hook_state(m)
    assert base[1:] == (0, 1, 0, 0, 0, 0)         # only the CPU's own Unicorn-TLB listener
    t = Tracer("s2,tlb,dirty,exc,exit,mmio,hyp", out=io.StringIO()).attach(m)
    assert hook_state(m)[0] == base[0]             # no Unicorn hook for these kinds
    t.detach()
    assert hook_state(m) == base
    t = Tracer("insn,mem", out=io.StringIO()).attach(m)
    assert hook_state(m)[0] == base[0] + 2
    m.run(max_insns=2000)
    t.detach()
    assert hook_state(m) == base
    t = Tracer("insn,mem", out=io.StringIO(), addr_range=(0x40000000, 0x40001000)).attach(m)
    assert hook_state(m)[0] == base[0] + 2         # one code hook, one memory hook (one slot)
    t.close()
    assert hook_state(m) == base


@pytest.mark.parametrize("guest", ["hello", "thumb", "faults"])
def test_tracing_changes_nothing_the_guest_sees(guest):
    plain = machine(guest)
    r0 = plain.run(max_insns=5_000_000)
    text, m = traced(guest, "all")
    assert m.uart.text == plain.uart.text
    assert m.cpu.instructions == plain.cpu.instructions
    assert m.cpu.progress == plain.cpu.progress == r0.instructions     # steps
    assert m.vm.stats == plain.vm.stats
    # the instruction lines: every instruction once, plus one for each attempt that did not
    # complete: a stage-2 data abort re-executed after the hypervisor's fix (one emulated as
    # MMIO retires: the hypervisor completes it) or an undefined instruction (the exception
    # is taken instead)
    lines = text.splitlines()
    insns = sum(1 for l in lines if "] insn  " in l)
    dabts = sum(1 for l in lines if "] exit  data-abort " in l and not l.endswith("-> mmio"))
    unds = sum(1 for l in lines if "] exc   und " in l)
    # Thumb IT-block instructions whose condition fails call no code hook but are counted
    # (with the native block counter; Unicorn's own counter misses them too)
    pcs = [int(l.split()[3], 16) for l in lines if "] insn  " in l]
    skipped = it_skipped(pcs, m.cpu.read_code) if native.AVAILABLE and guest == "thumb" else 0
    assert insns + skipped == m.cpu.instructions + dabts + unds
    if guest == "thumb":      # memory hooks in IT blocks (see Tracer._on_mem)
        assert "thumb: asm and C agree" in m.uart.text


def test_attach_and_detach_mid_run():
    m = machine("hello")
    m.run(max_insns=5000)
    out = io.StringIO()
    t = Tracer("insn", out=out, fmt="jsonl").attach(m)    # blocks already translated
    m.run(max_insns=100)
    t.detach()
    m.run(max_insns=1000)
    objs = jsonl_events(out.getvalue())
    assert [o["insn"] for o in objs] == list(range(5000, 5100))
    assert m.cpu.instructions == 6100


# ---- address filter ----------------------------------------------------------------------
def test_address_filter():
    lo, hi = 0x40000D00, 0x40000E00               # the faults guest's code around its tests
    text, m = traced("faults", "all", fmt="jsonl", addr_range=(lo, hi))
    objs = jsonl_events(text)
    kinds = {o["kind"] for o in objs}
    assert {"insn", "exc", "exit", "hyp"} <= kinds
    for o in objs:
        if o["kind"] == "insn":
            assert lo <= o["pc"] < hi
        elif o["kind"] in ("mem", "mmio"):
            assert lo <= o.get("va", o["ipa"]) < hi
        elif o["kind"] == "s2" and o["event"] == "walk":
            assert o["va"] < hi and o["va"] + 0x1000 > lo
        elif o["kind"] == "exit" and "ipa" in o:
            assert lo <= o["ipa"] < hi or lo <= o["va"] < hi
    stack = (0x40004F00, 0x40005000)
    text, _ = traced("hello", "mem,insn", fmt="jsonl", addr_range=stack)
    objs = jsonl_events(text)
    assert objs and all(o["kind"] == "mem" and stack[0] <= o["va"] < stack[1] for o in objs)
    assert all(o["pa"] - o["va"] == objs[0]["pa"] - objs[0]["va"] for o in objs)


def test_mem_events_carry_va_ipa_pa_and_values():
    text, m = traced("hello", "mem", fmt="jsonl", addr_range=(0x40004FC0, 0x40005000))
    objs = jsonl_events(text)
    slot = m.ram
    for o in objs:
        assert o["va"] == o["ipa"] and o["pa"] == slot.pa_of(o["ipa"])
    # main pushes lr (0x40000074, its return into _start), and pops it back into pc
    w = [o for o in objs if o["access"] == "W" and o["va"] == 0x40004FFC]
    r = [o for o in objs if o["access"] == "R" and o["va"] == 0x40004FFC]
    assert w[1]["value"] == 0x40000074 and r[0]["value"] == 0x40000074


# ---- Perfetto / Chrome trace-event JSON ------------------------------------------------------
def check_chrome_trace(data: dict) -> list[dict]:
    assert set(data) >= {"traceEvents", "displayTimeUnit"} and data["displayTimeUnit"] == "ns"
    events = data["traceEvents"]
    meta = [e for e in events if e["ph"] == "M"]
    timed = [e for e in events if e["ph"] != "M"]
    assert events[:len(meta)] == meta                    # metadata first
    for e in events:
        assert type(e["name"]) is str and e["name"]
        assert e["ph"] in ("M", "X", "i", "C"), e
        assert type(e["pid"]) is int and type(e["tid"]) is int, e
        assert isinstance(e["ts"], (int, float, Decimal)) and e["ts"] >= 0, e
        assert isinstance(e.get("args", {}), dict), e
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float, Decimal)) and e["dur"] >= 0, e
        if e["ph"] == "i":
            assert e["s"] in ("t", "p", "g"), e
        if e["ph"] == "C":
            assert e["args"] and all(isinstance(v, (int, float)) for v in e["args"].values())
    ts = [e["ts"] for e in timed]
    assert ts == sorted(ts)                               # monotonic
    slices = [e for e in timed if e["ph"] == "X"]
    for tid in {e["tid"] for e in slices}:                # slices on a track do not overlap
        on = [e for e in slices if e["tid"] == tid]
        for a, b in zip(on, on[1:]):
            assert b["ts"] >= a["ts"] + a["dur"], (a, b)     # exact decimals
    return timed


def test_perfetto_export_of_a_dirty_logging_run(tmp_path):
    exits = []

    def make(m):
        m.vcpu.observers.append(lambda k, ex, o: k == "exit" and exits.append(ex))
        make.m = m
        make.flushes = m.host.tlb.stats["flush_vmid"]
        make.px = PerfettoExporter(m)
        return make.px

    harvests = dirtyram_logging(make)
    m, px = make.m, make.px
    path = tmp_path / "run.json"
    px.write(str(path))
    data = json.loads(path.read_text(), parse_float=Decimal)       # times are exact decimals
    events = check_chrome_trace(data)
    names = {e["args"]["name"] for e in data["traceEvents"] if e["name"] == "thread_name"}
    assert names == {"vCPU 0", "stage-2 faults", "dirty log", "TLB"}

    # harvests: one instant each, pages as returned by GET_DIRTY_LOG, counter back to 0
    hv = [e for e in events if e["name"] == "harvest"]
    assert [e["args"]["pages"] for e in hv] == harvests and sum(harvests) > 0
    counters = [e for e in events if e["ph"] == "C"]
    assert max(e["args"]["pages"] for e in counters) == max(harvests)
    for h in hv:
        after = [c for c in counters if c["ts"] == h["ts"]]
        assert after[-1]["args"]["pages"] == 0
    # one fault instant per stage-2 abort, with its HSR and what the hypervisor did
    aborts = [ex for ex in exits if isinstance(ex, Stage2Abort)]
    faults = [e for e in events if e["tid"] == 2]
    assert len(faults) == len(aborts) > 0
    assert [int(e["args"]["hsr"], 16) for e in faults] == [ex.syndrome.hsr for ex in aborts]
    assert {e["args"]["outcome"] for e in faults} >= {"map", "dirty", "mmio"}
    # TLB flushes, each with the reason the hypervisor gave
    flushes = [e for e in events if e["tid"] == 4]
    assert len(flushes) == m.host.tlb.stats["flush_vmid"] - make.flushes
    assert {e["args"]["reason"] for e in flushes} >= {"wrprotect", "break-before-make"}
    # vCPU: one slice per exit; the slices tile the time line exactly (each starts where the
    # previous ended: no float rounding); guest slices plus the MMIO instructions the
    # hypervisor completed add up to the steps run; sleeps last 1 ms
    vcpu = [e for e in events if e["tid"] == 1 and e["ph"] == "X"]
    exit_slices = [e for e in vcpu if e["name"] != "guest"]
    assert len(exit_slices) == len(exits)
    assert all(a["ts"] + a["dur"] == b["ts"] for a, b in zip(vcpu, vcpu[1:]))
    guest_ns = sum(e["dur"] for e in vcpu if e["name"] == "guest") * 1000
    mmio = sum(1 for e in exit_slices if e["name"].endswith(": mmio"))
    assert guest_ns + mmio == m.vm.clock.instructions * m.vm.clock.ns_per_insn
    sleeps = [e for e in exit_slices if e["name"] == "hvc S2EMU_SLEEP_US: hvc"]
    assert len(sleeps) == 4 and all(e["dur"] == 1000 for e in sleeps)
    assert exit_slices[-1]["name"] == "hvc PSCI_SYSTEM_OFF: off"
    end = exit_slices[-1]["ts"] + exit_slices[-1]["dur"]
    assert end * 1000 == m.vm.clock.now_ns()


def test_perfetto_is_deterministic_and_agrees_with_the_trace():
    docs = []
    for _ in range(2):
        m = machine("faults")
        px = PerfettoExporter(m)
        out = io.StringIO()
        t = Tracer("exc", out=out, fmt="jsonl").attach(m)
        m.run()
        t.close()
        px.detach()
        buf = io.StringIO()
        px.write(buf)
        docs.append(buf.getvalue())
    assert docs[0] == docs[1]
    events = check_chrome_trace(json.loads(docs[0], parse_float=Decimal))
    exc = [e for e in events if e["name"].startswith("exc ")]
    traced_exc = jsonl_events(out.getvalue())
    # exceptions the CPU delivers mid-run are placed at their instruction (1 ns each)
    assert [(e["name"], round(e["ts"] * 1000)) for e in exc] == \
        [(f"exc {o['exception']}", o["insn"]) for o in traced_exc]
    assert [e["args"]["injected"] for e in exc] == [False, False, True]
