"""Debugging with the guest's MMU on (issue 9): the `s1` trace kind, `step` through a guest
page fault, `--dump-s1` / `--walk VA`, `monitor s1 walk|dump`, and gdb memory access by
guest VA through both stages with no side effect.

The `mmu` guest (guests/mmu.c) runs a PL0 task whose code page is VA 0x10000000 -> IPA
0x40002000 (the image's `mmu_task`), and demand-pages VA 0x10010000 on its first load, at
instruction 129433 (short descriptors; the guest is deterministic)."""
import json
import os
import subprocess
import sys

import pytest

from emu.debug.gdb_monitor import FaultStop, monitor
from emu.debug.gdb_memory import read_memory, write_memory
from emu.debug.trace import Tracer
from emu.machine import Machine
from hyp import dirty

from conftest import GUESTS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MMU_ELF = os.path.join(GUESTS, "mmu.elf")
SHORT_ON = 140000            # instructions: stage 1 on (short descriptors), task pages mapped
LONG_ON = 250000             # the same under LPAE
DEMAND_LOAD = 129433         # the task's first load of VA 0x10010000 (unmapped yet)


def s2emu(*args):
    return subprocess.run([sys.executable, "-m", "emu", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)


def machine_at(insns: int) -> Machine:
    m = Machine()
    m.load(MMU_ELF)
    r = m.run(max_insns=insns)
    assert r.reason == "budget", r
    assert m.mmu.s1.enabled
    return m


# ---- the s1 trace kind and step ---------------------------------------------------------
def test_s1_trace_shows_descriptor_reads_and_the_guests_fault():
    out = []

    class Sink:
        def write(self, s):
            out.append(s)

        def flush(self):
            pass

    m = Machine()
    m.load(MMU_ELF)
    with Tracer("s1", out=Sink(), fmt="jsonl", addr_range=(0x10010000, 0x10011000)).attach(m):
        m.run(max_insns=DEMAND_LOAD + 1)
    events = [json.loads(line) for line in "".join(out).splitlines()]
    first = events[0]
    assert first["insn"] == DEMAND_LOAD and first["kind"] == "s1"
    assert first["va"] == 0x10010000 and first["access"] == "R" and first["format"] == "short"
    assert first["result"] == "fault" and first["fault"] == "translation"
    assert first["level"] == 2 and first["fsr"] & 0x40F == 0x007        # page translation
    assert [r["level"] for r in first["reads"]] == [1, 2]
    l1, l2 = first["reads"]
    # Each descriptor read went to the PA stage 2 maps its IPA to (RAM: IPA + host offset).
    slot = m.vm.memslot(l1["ipa"])
    assert l1["pa"] == slot.pa_of(l1["ipa"]) and l2["pa"] == slot.pa_of(l2["ipa"])
    assert l2["desc"] == 0 and l1["desc"] & 3 == 1                      # page table, no page


def test_step_through_a_guest_page_fault():
    p = s2emu("step", "guests/mmu.elf", "--from", "0x10000050", "--count", "3", "-q")
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    i = next(k for k, l in enumerate(lines) if "step 1: 0x10000050" in l)
    assert "ldr r0, [r4]" in lines[i]
    assert "s1    walk R va=0x10010000" in lines[i + 1] and "-> fault translation L2" in \
        lines[i + 1]
    assert "exc   dabt lr=0x10000058 vector=0x400000b0" in lines[i + 2]
    assert "pc=0x400000b0" in lines[i + 3]
    assert "step 2: 0x400000b0" in lines[i + 4]           # the handler's first instruction


def test_s1_trace_shows_stage2_walks_of_descriptors_on_a_cold_walk_cache():
    m = machine_at(SHORT_ON)
    m.host.tlb.flush_vmid(m.vm.vmid)                      # the walk cache goes with it
    walks = []
    m.mmu.s1_observers.append(lambda va, acc, leaf, reads: walks.append(reads))
    m.run(max_insns=200)
    assert walks, "no stage-1 walk after a flush"
    first = walks[0]
    assert first[0].s2steps, "the first descriptor read walked stage 2"
    assert all(s.level in (1, 2, 3) for s in first[0].s2steps)


# ---- dumps and walks --------------------------------------------------------------------
@pytest.mark.parametrize("insns,fmt,task_line", [
    pytest.param(SHORT_ON, "short descriptors",
                 "VA [0x10000000, 0x10001000) -> IPA 0x40002000  PL1 r-x PL0 r-x  nG domain 1",
                 id="short"),
    pytest.param(LONG_ON, "long descriptors",
                 "VA [0x10000000, 0x10001000) -> IPA 0x40002000  PL1 r-x PL0 r-x  nG",
                 id="long"),
])
def test_dump_s1_and_walk_va(insns, fmt, task_line):
    p = s2emu("run", "guests/mmu.elf", "--max-insns", str(insns), "--dump-s1",
              "--walk", "0x10000004", "--walk", "0x10030000", "-q")
    assert p.returncode == 3, p.stderr                      # the budget ran out: as asked
    err = p.stderr
    assert fmt in err and task_line in err
    assert "VA [0x40000000, 0x40200000) -> IPA 0x40000000  PL1 rwx PL0 ---  global" in err
    # --walk VA: stage 1 (descriptors with their IPA and PA), then stage 2 of the output
    assert "-> IPA 0x40002004 (4 KiB page at VA 0x10000000, nG), PL1 r-x PL0 r-x" in err
    assert "IPA 0x040002004: VTTBR.BADDR" in err
    assert "-> stage-1 translation fault" in err and "the guest's abort, DFSR" in err


def test_walk_with_the_mmu_off_is_stage2_only():
    p = s2emu("run", "guests/hello.elf", "--walk", "0x40000000", "-q")
    assert p.returncode == 0, p.stderr
    assert "VA 0x40000000: stage 1: off" in p.stderr and "IPA 0x040000000: VTTBR" in p.stderr


# ---- monitor and gdb memory ---------------------------------------------------------------
def test_monitor_s1_walk_and_dump():
    m = machine_at(SHORT_ON)
    walk = monitor(m, FaultStop(), "s1 walk 0x10010004")
    assert "S1 L1 @ IPA" in walk and "S1 L2 @ IPA" in walk and "(small page)" in walk
    assert "-> IPA 0x40018004" in walk and "-> PA 0x0108018004" in walk
    dump = monitor(m, FaultStop(), "s1 dump 0x10000000 0x10100000")
    assert dump.startswith("stage 1: SCTLR") and dump.count("VA [") == 5
    with pytest.raises(ValueError, match="empty range"):
        monitor(m, FaultStop(), "s1 dump 0x2000 0x1000")


@pytest.mark.parametrize("insns", [pytest.param(SHORT_ON, id="short"),
                                   pytest.param(LONG_ON, id="long")])
def test_gdb_memory_reads_by_va_through_both_stages_without_side_effects(insns):
    m = machine_at(insns)
    tlb_before = len(m.host.tlb)
    walks_before = dict(m.host.tlb.s2_walk)
    va_code = read_memory(m.vm, 0x10000000, 16, m.mmu)
    assert va_code == m.vm.read_guest(0x40002000, 16)      # the task's code page
    # A read spanning two VA pages mapped to unrelated IPAs joins them.
    span = read_memory(m.vm, 0x10000ff8, 16, m.mmu)
    assert span == m.vm.read_guest(0x40002ff8, 8) + read_memory(m.vm, 0x10001000, 8, m.mmu)
    assert read_memory(m.vm, 0x10030000, 4, m.mmu) == b""   # stage 1 faults: unreadable
    assert len(m.host.tlb) == tlb_before and m.host.tlb.s2_walk == walks_before


def test_gdb_memory_writes_by_va_land_at_the_ipa_and_are_dirty_logged():
    m = machine_at(SHORT_ON)
    slot = m.vm.memslot(0x40000000)
    dirty.enable_logging(m.vm, slot)
    data_va = 0x10001000                                   # the task's data page
    ipa = 0x40016000
    assert write_memory(m.vm, m.cpu, data_va + 8, b"\xde\xad\xbe\xef")
    assert m.vm.read_guest(ipa + 8, 4) == b"\xde\xad\xbe\xef"
    log = dirty.get_dirty_log(m.vm, slot)
    assert list(log.nonzero()[0]) == [(ipa - slot.ipa) >> 12]
    assert not write_memory(m.vm, m.cpu, 0x10030000, b"x")  # unmapped VA: nothing written
