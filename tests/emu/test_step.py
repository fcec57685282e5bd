"""Single stepping must not change the guest: same console, registers and memory as a free run."""
import hashlib
import io
import os
import re

import pytest

from emu.machine import Machine
from emu.debug.step import step

from conftest import GUESTS


def ram_digest(m):
    s = m.ram
    return hashlib.sha256(m.host.mem.read(s.pa, s.size)).hexdigest()


@pytest.mark.parametrize("name", ["hello", "faults", "thumb"])
def test_stepped_run_equals_free_run(name):
    free = Machine()
    free.load(os.path.join(GUESTS, f"{name}.elf"))
    r1 = free.run()
    stepped = Machine()
    stepped.load(os.path.join(GUESTS, f"{name}.elf"))
    out = io.StringIO()
    r2 = step(stepped, 100_000, out)
    assert (r1.reason, r2.reason) == ("off", "off")
    assert stepped.uart.text == free.uart.text
    assert stepped.cpu.regs() == free.cpu.regs()
    assert ram_digest(stepped) == ram_digest(free)
    if name != "thumb":                         # Thumb IT blocks step as a unit (README)
        assert stepped.cpu.instructions == free.cpu.instructions
        # one step per instruction (MMIO ones the hypervisor completes included) or
        # exception entry (UDF, an injected prefetch abort)
        assert out.getvalue().count(" step ") == free.cpu.progress


def test_step_output_shows_instruction_and_changes():
    m = Machine()
    img = m.load(os.path.join(GUESTS, "hello.elf"))
    out = io.StringIO()
    step(m, 2, out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[         0] step 1: 0x40000000   ")
    assert lines[1].strip().startswith("->") and "pc=0x40000004" in lines[1]
    assert img.entry == 0x40000000


# ---- several vCPUs ------------------------------------------------------------------------
@pytest.mark.parametrize("quantum", [3, 25])
def test_smp_stepped_run_equals_a_free_run_with_the_same_quantum(quantum):
    """`step` follows the scheduler (a quantum of steps per vCPU): the same interleaving, so
    the same end state, as a free run; each line names the vCPU that ran."""
    from test_trace_smp import SECONDARY_AT, smp_machine
    free = smp_machine(quantum=quantum)
    stepped = smp_machine(quantum=quantum)
    r1 = free.run(max_insns=100_000)
    out = io.StringIO()
    r2 = step(stepped, 100_000, out)
    assert (r1.reason, r2.reason) == ("off", "off")
    assert [c.regs() for c in stepped.cpus] == [c.regs() for c in free.cpus]
    assert [c.progress for c in stepped.cpus] == [c.progress for c in free.cpus]
    assert stepped.vm.clock.now_ns() == free.vm.clock.now_ns()
    assert ram_digest(stepped) == ram_digest(free)
    lines = [l for l in out.getvalue().splitlines() if " step " in l]
    assert len(lines) == sum(c.progress for c in free.cpus)
    for n, line in enumerate(lines):
        index, cpu, k, pc = re.match(r"\[ *(\d+)\] cpu(\d) step (\d+): (0x[0-9a-f]+) ",
                                     line).groups()
        assert (int(index), int(k)) == (n, n + 1)          # the machine's step count
        assert (int(pc, 16) >= SECONDARY_AT) == (cpu == "1")
    who = [re.search(r"\] (cpu\d) step", l).group(1) for l in lines]
    assert who[:quantum] == ["cpu0"] * quantum             # vCPU 1 is off until CPU_ON
    assert who.count("cpu1") == free.cpus[1].progress


def test_smp_stepping_sleeps_when_every_vcpu_waits():
    """The irq guest (vCPU 0 ticks its timer in WFI; vCPU 1 stays off here) stepped with two
    vCPUs ends as its free run does: virtual time advanced through the WFI sleeps."""
    def irq():
        m = Machine(smp=2, console=lambda b: None)
        m.load(os.path.join(GUESTS, "irq.elf"))
        return m
    free, stepped = irq(), irq()
    r1 = free.run(max_insns=2_000_000)
    r2 = step(stepped, 2_000_000, io.StringIO())
    assert r2.reason == r1.reason
    assert stepped.uart.text == free.uart.text and free.vm.stats["wfi sleeps"] > 0
    assert [c.regs() for c in stepped.cpus] == [c.regs() for c in free.cpus]
    assert stepped.vm.clock.now_ns() == free.vm.clock.now_ns()
