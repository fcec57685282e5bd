"""Why the vCPU stopped running guest code: the values the machine hands the hypervisor."""
from __future__ import annotations

from dataclasses import dataclass

from .arch.fault import Fault
from .arch.syndrome import AccessInfo, Syndrome


@dataclass(frozen=True)
class Stage2Abort:
    """A stage-2 data or prefetch abort taken to Hyp mode (HSR EC 0x24 / 0x20)."""
    fault: Fault
    syndrome: Syndrome
    info: AccessInfo | None      # decoded instruction (data aborts); None for prefetch aborts
    pc: int
    thumb: bool


@dataclass(frozen=True)
class Hypercall:
    """HVC from the guest (HSR EC 0x12); PC is already past the HVC."""
    imm: int
    hsr: int
    pc: int


@dataclass(frozen=True)
class WaitForInterrupt:
    pc: int


@dataclass(frozen=True)
class BudgetExhausted:
    """The instruction budget given to this run ran out (time slice / --max-insns)."""
    pc: int


@dataclass(frozen=True)
class DebugStop:
    """A debugger breakpoint, watchpoint or single step completed."""
    pc: int
    reason: str


Exit = Stage2Abort | Hypercall | WaitForInterrupt | BudgetExhausted | DebugStop
