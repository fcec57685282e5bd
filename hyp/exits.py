"""Why the vCPU stopped running guest code: the values the machine hands the hypervisor."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .arch.fault import Fault
from .arch.syndrome import AccessInfo, Syndrome


class Stage2Abort:
    """A stage-2 data or prefetch abort taken to Hyp mode (HSR EC 0x24 / 0x20).

    `page_fault` is what the walk found (the faulting page, level, kind, leaf address) and is
    all the fault path of dirty logging needs. `fault` (exact VA/IPA), `syndrome` (HSR, HPFAR,
    HDFAR) and `info` (the decoded instruction) need the instruction decoded, which is done on
    first use - it must happen before the vCPU runs again, and raises if it comes too late.
    """
    __slots__ = ("page_fault", "pc", "thumb", "_resolve", "_resolved", "_pin")

    def __init__(self, page_fault: Fault, pc: int, thumb: bool,
                 resolve: Callable[[], tuple[Fault, Syndrome, AccessInfo | None]],
                 pin: Callable[[], None] | None = None) -> None:
        self.page_fault, self.pc, self.thumb = page_fault, pc, thumb
        self._resolve = resolve
        self._resolved: tuple[Fault, Syndrome, AccessInfo | None] | None = None
        self._pin = pin

    def pin(self) -> None:
        """Keep what decoding needs (the instruction's bytes) now, before the hypervisor
        acts: an observer that decodes after it (a tracer printing the outcome) must see
        the instruction even if handling unmapped its page (a dissolved block)."""
        if self._pin is not None and self._resolved is None:
            self._pin()

    def _get(self) -> tuple[Fault, Syndrome, AccessInfo | None]:
        if self._resolved is None:
            self._resolved = self._resolve()
        return self._resolved

    @property
    def fault(self) -> Fault:
        return self._get()[0]

    @property
    def syndrome(self) -> Syndrome:
        return self._get()[1]

    @property
    def info(self) -> AccessInfo | None:
        """The decoded instruction (data aborts); None for prefetch aborts."""
        return self._get()[2]

    def __repr__(self) -> str:
        return (f"Stage2Abort(pc={self.pc:#x}, thumb={self.thumb}, "
                f"{self.page_fault.describe()})")


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
class WaitForEvent:
    """WFE trapped by HCR.TWE (HSR EC 0x01, TI=1); PC is already past it. With several vCPUs
    the hypervisor yields the CPU to the others (KVM's kvm_vcpu_on_spin, QEMU TCG's
    EXCP_YIELD): a spinning vCPU waits for another's store and SEV."""
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


@dataclass(frozen=True)
class StopRequested:
    """A stop was requested (emu.stop): Ctrl-C ("interrupt") or a wall-clock "timeout".
    The guest stopped at an instruction boundary; nothing is half-done."""
    pc: int
    reason: str


@dataclass(frozen=True)
class NoProgress:
    """The guest took `entries` exception entries in a row without retiring one instruction
    (e.g. its vector is itself undefined, or unexecutable): it can never make progress."""
    pc: int
    entries: int


Exit = (Stage2Abort | Hypercall | WaitForInterrupt | WaitForEvent | BudgetExhausted | DebugStop | StopRequested
        | NoProgress)
