"""PSCI power management of a VM's vCPUs (ARM DEN 0022D, PSCI 1.1), as KVM's psci.c decides
it: which vCPUs are on, CPU_ON / CPU_OFF / AFFINITY_INFO and their return codes.

A vCPU is OFF, ON_PENDING or ON. CPU_ON on an OFF vCPU makes it ON_PENDING at once - a
second CPU_ON for it, from any caller, gets ON_PENDING, and ALREADY_ON once it runs: exactly
one caller succeeds - and ON when it first runs; the machine resets it to the entry point
(`power_on` callback). QEMU 7.2
marks a CPU on only once it runs, so two racing CPU_ONs can both succeed there; this follows
the specification (5.6.1: "ON_PENDING"/"ALREADY_ON"). Targets are named by MPIDR affinity
(Aff0 = the vCPU index, one cluster of up to 8, as QEMU's virt).
"""
from __future__ import annotations

from typing import Callable

SUCCESS, NOT_SUPPORTED, INVALID_PARAMETERS, DENIED, ALREADY_ON, ON_PENDING = 0, -1, -2, -3, -4, -5
OFF, ON, PENDING = "off", "on", "on-pending"
AFFINITY = {ON: 0, OFF: 1, PENDING: 2}            # AFFINITY_INFO results (5.7)
MIGRATE_INFO_TYPE_NONE = 2                        # no Trusted OS: migration not required


class PowerState:
    """The power state of a VM's `n` vCPUs; vCPU 0 starts ON, the others OFF."""

    def __init__(self, n: int, power_on: Callable[[int, int, int], None] | None = None) -> None:
        self.states = [ON] + [OFF] * (n - 1)
        self.power_on = power_on                  # (index, entry, context_id): reset it there

    def index_of(self, mpidr: int) -> int | None:
        """The vCPU with affinity `mpidr` (Aff3..Aff0 bits; Aff0 = index), if there is one."""
        aff = mpidr & 0xFF_00FF_FFFF
        return aff if aff < len(self.states) else None

    def cpu_on(self, target_mpidr: int, entry: int, context: int) -> int:
        i = self.index_of(target_mpidr)
        if i is None:
            return INVALID_PARAMETERS
        if self.states[i] == ON:
            return ALREADY_ON
        if self.states[i] == PENDING:
            return ON_PENDING
        self.states[i] = PENDING
        if self.power_on is not None:
            self.power_on(i, entry, context)
        return SUCCESS

    def started(self, i: int) -> None:
        """vCPU i ran its first instruction after CPU_ON."""
        if self.states[i] == PENDING:
            self.states[i] = ON

    def cpu_off(self, i: int) -> None:
        self.states[i] = OFF

    def affinity_info(self, target_mpidr: int, level: int) -> int:
        if level != 0:
            return INVALID_PARAMETERS             # only level 0 (one cluster) is tracked
        i = self.index_of(target_mpidr)
        if i is None:
            return INVALID_PARAMETERS
        return AFFINITY[self.states[i]]

    # ---- migration ------------------------------------------------------------------------
    def save(self) -> list[str]:
        return list(self.states)

    def load(self, states) -> None:
        if not isinstance(states, list) or len(states) != len(self.states) or \
                any(s not in AFFINITY for s in states):
            raise ValueError(f"vCPU power states {states!r:.80} for {len(self.states)} vCPUs")
        self.states = list(states)
