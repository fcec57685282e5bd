"""Program status: the CPSR's IT state (DDI 0406C A2.5.2, B1.3.3).

An instruction that the hypervisor completes on the guest's behalf (an emulated MMIO access,
a trapped CP15 write) must leave CPSR as executing it would: PC past it and, inside a Thumb IT
block, ITSTATE advanced (KVM's kvm_adjust_itstate).
"""
from __future__ import annotations

from .fields import Field

CPSR_IT_LO = Field(26, 25)       # IT[1:0]
CPSR_IT_HI = Field(15, 10)       # IT[7:2]


def itstate(cpsr: int) -> int:
    return CPSR_IT_HI.get(cpsr) << 2 | CPSR_IT_LO.get(cpsr)


def with_itstate(cpsr: int, it: int) -> int:
    return CPSR_IT_LO.set(CPSR_IT_HI.set(cpsr, it >> 2), it & 3)


def it_advance(cpsr: int) -> int:
    """ITAdvance(): the CPSR after one instruction of an IT block completed (A2.5.2)."""
    it = itstate(cpsr)
    if it == 0:
        return cpsr
    it = 0 if it & 0b111 == 0 else (it & 0b11100000) | ((it << 1) & 0b11111)
    return with_itstate(cpsr, it)


def condition_passed(cond: int, cpsr: int) -> bool:
    """ConditionPassed() for condition code `cond` under CPSR's N, Z, C, V (A8.3, Table
    A8-1); 0b1110 and 0b1111 always pass."""
    n, z, c, v = (cpsr >> 31 & 1, cpsr >> 30 & 1, cpsr >> 29 & 1, cpsr >> 28 & 1)
    base = (z, c, n, v, c and not z, n == v, not z and n == v, True)[cond >> 1 & 7]
    return bool(base) if cond & 1 == 0 or cond == 0b1111 else not base


def thumb32(hw: int) -> bool:
    """Is halfword `hw` the first of a 32-bit Thumb instruction (A6.1: bits [15:11] are
    0b11101, 0b11110 or 0b11111)?"""
    return hw >> 11 >= 0b11101


def current_condition(code: bytes, thumb: bool, cpsr: int) -> int:
    """The condition the instruction in `code` executes under: its cond field (A32), the IT
    block's (T32 inside one), else AL."""
    if thumb:
        it = itstate(cpsr)
        return it >> 4 if it & 0xF else 0b1110
    return int.from_bytes(code[:4], "little") >> 28
