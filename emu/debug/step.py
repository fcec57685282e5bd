"""Single-stepping: one guest instruction at a time, with everything the hypervisor does in
between (stage-2 faults, dirty marking, block splits, TLB flushes, MMIO, injections)."""
from __future__ import annotations

import time
from typing import TextIO

from hyp.vcpu import RunResult

from . import vcpus
from .gdb_memory import read_memory
from ..machine import Machine
from .trace_format import code_hex, disassemble

REG_NAMES = [f"r{i}" for i in range(13)] + ["sp", "lr", "pc", "cpsr"]


def step(m: Machine, count: int, out: TextIO, timeout: float | None = None) -> RunResult:
    """Execute `count` steps one at a time - an instruction, or an exception entry - and
    print each with the registers it changed. Events of the hypervisor during a step are
    printed by whatever tracer is attached to `m` (see emu.debug.trace), between the instruction
    line and its result line. `timeout`: seconds of wall clock for all the steps.

    With several vCPUs each step is one vCPU's, in the scheduler's order (emu.debug.vcpus.Turns:
    a quantum of steps on the vCPU that runs, then the next); the line names it (`cpu1 step
    5: ...`) and the count in brackets is the machine's (every vCPU's steps)."""
    result = RunResult("budget", 0)
    deadline = time.monotonic() + timeout if timeout else None
    turns = vcpus.Turns(m) if vcpus.scheduler(m) is not None else None
    for n in range(1, count + 1):
        left = None if deadline is None else max(1e-3, deadline - time.monotonic())
        if turns is None:
            cpu, who, index = m.cpu, "", m.cpu.insn_index()
        else:
            i = turns.next(left)
            if isinstance(i, RunResult):
                result = i
                out.write(f"{'':13}   run ended: {result.reason}"
                          f"{': ' + result.error if result.error else ''}\n")
                break
            cpu, who, index = m.cpus[i], f"cpu{i} ", vcpus.steps(m)
        pc, thumb = cpu.pc, cpu.thumb
        before = cpu.regs()
        code = read_memory(m.vm, pc, 4, cpu.mmu)    # the debugger's side-effect-free path
        out.write(f"[{index:10d}] {who}step {n}: {pc:#010x}{' T' if thumb else '  '} "
                  f"{code_hex(code[:cpu.insn_length(pc, thumb)], thumb):9}  "
                  f"{disassemble(code, pc, thumb)}\n")
        out.flush()
        left = None if deadline is None else max(1e-3, deadline - time.monotonic())
        if turns is None:
            result = m.vcpu.run(max_insns=1, timeout=left)
        else:
            result = vcpus.step_alone(m, i, timeout=left)
            turns.done(i)
        after = cpu.regs()
        changed = [f"{REG_NAMES[i]}={after[i]:#x}" for i in range(17)
                   if after[i] != before[i] and i != 15]
        nxt = f"pc={after[15]:#x}"
        out.write(f"{'':13}-> {' '.join(changed + [nxt])}\n")
        if result.reason != "budget":
            out.write(f"{'':13}   run ended: {result.reason}"
                      f"{': ' + result.error if result.error else ''}\n")
            break
    return result
