"""Traces and the Perfetto export of a machine with several vCPUs: every event names its vCPU
(text `cpuN`, JSON `"cpu"`), hooks and observers are on every vCPU, indices count the machine's
steps, Perfetto has one track per vCPU. The program is tests/emu/test_smp.py's (two vCPUs
incrementing a shared counter with LDREX/STREX), with shorter loops."""
from __future__ import annotations

import io
import json
import re
import struct
from decimal import Decimal

import pytest

from emu.debug.perfetto import PerfettoExporter
from emu.debug.trace import Tracer
from emu.machine import RAM_BASE, Machine

from test_smp import PRIMARY, SECONDARY
from test_trace import check_chrome_trace, check_event, jsonl_events

LOOPS = 40
SECONDARY_AT = RAM_BASE + 0x100


def movw_r4(n: int) -> int:
    """movw r4, #n (A1): imm4 in bits 19:16, imm12 in 11:0."""
    return 0xE3004000 | (n >> 12) << 16 | (n & 0xFFF)


def smp_machine(quantum: int = 25, loops: int = LOOPS, smp: int = 2) -> Machine:
    """The two-vCPU program with `loops` increments each; vCPU 0 at RAM_BASE, the
    secondary (started by CPU_ON) at RAM_BASE + 0x100."""
    m = Machine(16 << 20, smp=smp, console=lambda b: None)
    for at, words in ((0, PRIMARY), (0x100, SECONDARY)):
        words = [movw_r4(loops) if w == movw_r4(20000) else w for w in words]
        m.vm.write_guest(RAM_BASE + at, struct.pack(f"<{len(words)}I", *words), debugger=True)
    m.cpu.set_pc(RAM_BASE, False)
    m.vcpu.quantum = quantum
    return m


def traced(kinds, fmt="text", **kw):
    m = smp_machine(**kw)
    out = io.StringIO()
    with Tracer(kinds, out=out, fmt=fmt) as t:
        t.attach(m)
        r = m.run(max_insns=100_000)
    assert r.reason == "off", r
    return out.getvalue(), m


def test_the_counter_program_is_the_smp_test_s():
    assert movw_r4(20000) in PRIMARY and movw_r4(20000) in SECONDARY


def test_text_lines_name_their_vcpu_and_count_the_machines_steps():
    text, m = traced("all")
    lines = text.splitlines()
    pat = re.compile(r"\[ *(\d+)\] cpu([01]) (insn |mem  |s2   |tlb  |exit |hyp  |exc  ) ")
    parsed = [pat.match(line) for line in lines]
    assert all(parsed), next(l for l, p in zip(lines, parsed) if not p)
    index = [int(p.group(1)) for p in parsed]
    assert index == sorted(index)                       # one count for the whole machine
    insns = [(int(p.group(2)), line) for p, line in zip(parsed, lines)
             if p.group(3) == "insn "]
    # each vCPU's instructions are its own code's (vCPU 1 runs the secondary at +0x100)
    for cpu, line in insns:
        pc = int(re.search(r"insn  (0x[0-9a-f]+)", line).group(1), 16)
        assert (pc >= SECONDARY_AT) == (cpu == 1), line
    for i, cpu in enumerate(m.cpus):                   # no data abort here: seen once each
        assert sum(1 for c, _ in insns if c == i) == cpu.instructions
    # the vCPUs alternate every quantum (25 steps) once both run
    turns = [c for k, (c, _) in enumerate(insns) if k == 0 or insns[k - 1][0] != c]
    assert turns[:4] == [0, 1, 0, 1]
    # the hypercall results are read from the vCPU that made the call
    assert re.search(r"cpu1 hyp   hvc PSCI_CPU_OFF fid=0x84000002 .* -> r0=0x84000002", text)
    assert re.search(r"cpu0 hyp   hvc PSCI_SYSTEM_OFF", text)
    assert int(parsed[-1].group(1)) == sum(c.progress for c in m.cpus)   # after SYSTEM_OFF


def test_jsonl_carries_cpu_on_every_event_and_matches_the_schema():
    text, m = traced("all", fmt="jsonl")
    objs = jsonl_events(text)
    assert all(type(o.get("cpu")) is int and o["cpu"] in (0, 1) for o in objs)
    assert list(objs[0])[:3] == ["insn", "cpu", "kind"]
    for o in objs:
        check_event({k: v for k, v in o.items() if k != "cpu"})
    plain, _ = traced("all")
    assert [(o["insn"], o["cpu"], o["kind"]) for o in objs] == \
        [(int(line[1:11]), int(line[16]), line[18:23].strip()) for line in plain.splitlines()]


def test_one_vcpu_has_no_cpu_field():
    m = Machine(16 << 20, console=lambda b: None)
    m.vm.write_guest(RAM_BASE, struct.pack("<3I", 0xE3000008, 0xE3480400, 0xE1400070),
                     debugger=True)                  # PSCI SYSTEM_OFF
    m.cpu.set_pc(RAM_BASE, False)
    out = io.StringIO()
    with Tracer("all", out=out, fmt="jsonl") as t:
        t.attach(m)
        assert m.run(max_insns=100).reason == "off"
    assert all("cpu" not in o for o in jsonl_events(out.getvalue()))


def test_tracer_hooks_every_engine_and_leaves_none():
    m = smp_machine()
    before = [len(c.uc._callbacks) for c in m.cpus]
    t = Tracer("insn,mem", out=io.StringIO()).attach(m)
    assert all(len(c.uc._callbacks) > b for c, b in zip(m.cpus, before))
    t.close()
    assert [len(c.uc._callbacks) for c in m.cpus] == before


@pytest.mark.parametrize("quantum", [7, 25])
def test_tracing_changes_nothing_with_several_vcpus(quantum):
    _, traced_m = traced("all", quantum=quantum)
    free = smp_machine(quantum=quantum)
    assert free.run(max_insns=100_000).reason == "off"
    assert [c.regs() for c in free.cpus] == [c.regs() for c in traced_m.cpus]
    assert free.vm.clock.now_ns() == traced_m.vm.clock.now_ns()


def test_perfetto_has_a_track_per_vcpu_and_one_runs_at_a_time():
    m = smp_machine()
    px = PerfettoExporter(m)
    assert m.run(max_insns=100_000).reason == "off"
    px.detach()
    buf = io.StringIO()
    px.write(buf)
    data = json.loads(buf.getvalue(), parse_float=Decimal)
    events = check_chrome_trace(data)
    names = {e["tid"]: e["args"]["name"] for e in data["traceEvents"]
             if e["name"] == "thread_name"}
    assert names == {1: "vCPU 0", 2: "stage-2 faults", 3: "dirty log", 4: "TLB", 5: "vCPU 1"}
    order = {e["tid"]: e["args"]["sort_index"] for e in data["traceEvents"]
             if e["name"] == "thread_sort_index"}
    assert sorted(order, key=order.get) == [1, 5, 2, 3, 4]
    slices = [e for e in events if e["ph"] == "X"]
    assert {e["tid"] for e in slices} == {1, 5}
    # the vCPU tracks together tile the time line: only one vCPU runs at a time
    assert all(a["ts"] + a["dur"] == b["ts"] for a, b in zip(slices, slices[1:]))
    guest = {tid: sum(e["args"]["instructions"] for e in slices
                      if e["tid"] == tid and e["name"] == "guest") for tid in (1, 5)}
    assert guest == {1: m.cpus[0].progress, 5: m.cpus[1].progress}
    assert any(e["name"] == "hvc PSCI_CPU_OFF: cpu-off" and e["tid"] == 5 for e in slices)
