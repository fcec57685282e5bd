"""Single stepping must not change the guest: same console, registers and memory as a free run."""
import hashlib
import io
import os

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
