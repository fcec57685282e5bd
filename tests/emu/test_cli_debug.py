"""CLI debugging: step (into a dirty-log fault), --trace to a file, ring mode, --perfetto."""
import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT


def s2emu(*args):
    return subprocess.run([sys.executable, "-m", "emu", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)


def test_step_into_a_dirty_log_fault():
    # 0x40000bfc is dirtyram's `str r7, [r6]` (the store that dirties a page each round)
    p = s2emu("step", "guests/dirtyram.elf", "--args", "64 4 1 2", "--log-dirty",
              "--from", "0x40000bfc", "--count", "2", "-q")
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    i = next(k for k, l in enumerate(lines) if "step 1: 0x40000bfc" in l and "str r7, [r6]" in l)
    after = "\n".join(lines[i:])
    # the fault with its syndrome, the hypervisor's handling, then the store re-executed
    assert "exit  data-abort pc=0x40000bfc str W va=0x40200000" in after
    assert "HSR=0x93870046 HPFAR=0x00402000 -> dirty" in after
    assert "dirty gfn=0x200 ipa=0x40200000 slot=ram source=guest" in after
    assert "step 2: 0x40000c00" in after
    assert after.index("-> dirty") < after.index("dirty gfn") < after.index("step 2")


def test_step_without_from_and_bad_symbol():
    p = s2emu("step", "guests/hello.elf", "--count", "3", "-q")
    assert p.returncode == 0 and p.stderr.count("] step ") == 3
    p = s2emu("step", "guests/hello.elf", "--from", "no_such_symbol")
    assert p.returncode == 1 and "no symbol 'no_such_symbol'" in p.stderr
    assert "Traceback" not in p.stderr


def test_trace_jsonl_to_file_and_perfetto(tmp_path):
    trace, perf = tmp_path / "t.jsonl", tmp_path / "p.json"
    p = s2emu("run", "guests/dirtyram.elf", "--args", "64 8 5 4", "--log-dirty", "--harvest-ms",
              "5", "--trace", "exit,dirty,tlb,hyp", "--trace-format", "jsonl", "--trace-file",
              str(trace), "--perfetto", str(perf), "-q")
    assert p.returncode == 0, p.stderr
    events = [json.loads(l) for l in trace.read_text().splitlines()]
    kinds = {e["kind"] for e in events}
    assert {"exit", "dirty", "tlb", "hyp"} <= kinds
    assert all(isinstance(e["insn"], int) for e in events)
    doc = json.loads(perf.read_text())
    names = {e.get("name") for e in doc["traceEvents"]}
    assert any(n and n.startswith("harvest") for n in names)


def test_trace_ring_dumps_last_events_and_usage_errors():
    p = s2emu("run", "guests/hello.elf", "--trace", "exit,mmio", "--trace-ring", "5", "-q")
    assert p.returncode == 0
    body = [l for l in p.stderr.splitlines() if l.startswith("[")]
    assert len(body) == 5 and body[-1].endswith("-> off")
    p = s2emu("run", "guests/hello.elf", "--trace", "bogus")
    assert p.returncode == 2 and "unknown trace kind 'bogus'" in p.stderr
    p = s2emu("run", "guests/hello.elf", "--trace-ring", "5")
    assert p.returncode == 2 and "need --trace" in p.stderr


def test_step_into_a_lazy_block_dissolve():
    p = s2emu("step", "guests/dirtyram.elf", "--args", "64 4 1 2", "--log-dirty", "--prefault",
              "--from", "0x40000bfc", "--count", "1", "-q")
    assert p.returncode == 0, p.stderr
    after = p.stderr[p.stderr.index("step 1: 0x40000bfc"):]
    order = ["L2 @0x100002008=0x10820077d(block) -> fault permission L2",
             "permission L2 HSR=0x9387004e HPFAR=0x00402000 -> dirty",   # DFSC 0b001110
             "dirty gfn=0x200",
             "tlb   flush_vmid vmid=1 (break-before-make)",
             "s2    dissolve ipa=0x40200000 L2",
             "L3 @0x100004000=0x1082007ff(page) -> pa=0x108200000 rwx",
             "-> pc=0x40000c00"]
    pos = [after.index(s) for s in order]
    assert pos == sorted(pos)


@pytest.mark.parametrize("args,last", [
    pytest.param(["guests/hello.elf", "--from", "0x40000240"], "-> r3=0x90 pc=0x40000244",
                 id="an emulated MMIO load is one step"),
    pytest.param(["guests/faults.elf", "--from", "faults_udf_insn"],
                 "-> sp=0x40007000 lr=0x40000d40 cpsr=0x600001db pc=0x400000a4",
                 id="a UDF's exception entry is one step, ending on the vector"),
])
def test_one_step_is_one_instruction_or_exception_entry(args, last):
    p = s2emu("step", *args, "--count", "1", "-q")
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert sum("] step " in l for l in lines) == 1
    assert lines[-1].strip() == last


def test_step_with_several_vcpus_names_the_vcpu_of_each_step():
    p = s2emu("step", "guests/irq.elf", "--smp", "2", "--from", "main", "--count", "2", "-q")
    assert p.returncode == 0, p.stderr
    steps = [l for l in p.stderr.splitlines() if "] cpu" in l and " step " in l]
    assert len(steps) == 2
    assert all(re.match(r"\[ *\d+\] cpu0 step [12]: 0x", l) for l in steps), steps
    p = s2emu("step", "guests/irq.elf", "--count", "1", "-q")          # one vCPU: no marker
    assert re.match(r"\[ +0\] step 1: 0x40000000 ", p.stderr), p.stderr
