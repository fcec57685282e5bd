"""Exception entry to the guest's PL1 vectors (DDI 0406C B1.8.3-B1.9, Table B1-3/B1-7).

Used by the machine for exceptions the hardware delivers straight to the guest (SVC,
undefined instruction) and by the hypervisor to inject aborts (KVM's kvm_inject_pabt/dabt).
"""
from __future__ import annotations

import enum
from typing import Protocol

from .fields import Field

CPSR_M = Field(4, 0)
CPSR_T = 1 << 5
CPSR_F = 1 << 6
CPSR_I = 1 << 7
CPSR_A = 1 << 8
CPSR_E = 1 << 9
CPSR_IT_MASK = (0x3F << 10) | (0x3 << 25)
CPSR_J = 1 << 24
SCTLR_V = 1 << 13
SCTLR_EE = 1 << 25
SCTLR_TE = 1 << 30

MODE_USR, MODE_FIQ, MODE_IRQ, MODE_SVC, MODE_ABT, MODE_HYP, MODE_UND, MODE_SYS = \
    0x10, 0x11, 0x12, 0x13, 0x17, 0x1A, 0x1B, 0x1F


class GuestException(enum.Enum):
    """(vector offset, target mode, mask A, mask F)"""
    UNDEFINED = (0x04, MODE_UND, False, False)
    SVC = (0x08, MODE_SVC, False, False)
    PREFETCH_ABORT = (0x0C, MODE_ABT, True, False)
    DATA_ABORT = (0x10, MODE_ABT, True, False)
    IRQ = (0x18, MODE_IRQ, True, False)
    FIQ = (0x1C, MODE_FIQ, True, True)


class RegisterFile(Protocol):
    def get_cpsr(self) -> int: ...
    def set_cpsr(self, value: int) -> None: ...
    def set_spsr(self, value: int) -> None: ...
    def set_lr(self, value: int) -> None: ...
    def set_pc(self, value: int, thumb: bool) -> None: ...
    def cp15_read(self, name: str) -> int: ...
    def cp15_write(self, name: str, value: int) -> None: ...


def lr_offset(exc: GuestException, thumb: bool) -> int:
    """Preferred return + offset, relative to the address of the excepting instruction."""
    if exc is GuestException.UNDEFINED:
        return 2 if thumb else 4
    if exc is GuestException.PREFETCH_ABORT:
        return 4
    if exc is GuestException.DATA_ABORT:
        return 8
    raise ValueError("SVC/IRQ/FIQ return addresses are given by the caller")


def enter(regs: RegisterFile, exc: GuestException, return_lr: int) -> int:
    """Take `exc` to PL1: bank switch, SPSR, LR, CPSR.I/A/F/T/E, PC = vector. Returns the vector."""
    offset, mode, mask_a, mask_f = exc.value
    old = regs.get_cpsr()
    sctlr = regs.cp15_read("SCTLR")
    new = CPSR_M.set(old, mode) & ~(CPSR_IT_MASK | CPSR_J | CPSR_T | CPSR_E)
    new |= CPSR_I
    if mask_a:
        new |= CPSR_A
    if mask_f:
        new |= CPSR_F
    thumb = bool(sctlr & SCTLR_TE)
    if thumb:
        new |= CPSR_T
    if sctlr & SCTLR_EE:
        new |= CPSR_E
    regs.set_cpsr(new)          # switches the register bank first
    regs.set_spsr(old)
    regs.set_lr(return_lr)
    base = 0xFFFF0000 if sctlr & SCTLR_V else regs.cp15_read("VBAR") & ~0x1F
    vector = base + offset
    regs.set_pc(vector, thumb)
    return vector
