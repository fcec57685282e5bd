"""Several VMs on one host (KVM with several guests on one physical CPU).

One host memory, one stage-2 table pool, one VMID allocator, one VMID-tagged TLB and one
physical CPU's MMU are shared; each VM is a `Machine` whose vCPU has its own full register
context (its own Unicorn engine: switching VMs never shows one guest another's registers).
VMs run in turns, a fixed number of steps each: deterministic. Each entry loads the VM's
VTTBR into the MMU; a VMID generation rollover flushes the TLB of every VMID
(TLBIALLNSNH), so no translation crosses VMs even when VMIDs are reused.
"""
from __future__ import annotations

from typing import Callable

from hyp.arch.mmu import MMU
from hyp.host import Host
from hyp.vcpu import RunResult

from .machine import Machine, board_slots, check_ram_size
from .stop import StopControl

FINAL = ("off", "reset", "error", "interrupt", "timeout")


class HostMachine:
    """`rams`: one RAM size per VM. `vmid_bits` below 8 forces VMID rollovers (a test knob:
    with bits=1 every switch between two VMs starts a new generation)."""

    def __init__(self, rams: list[int], *, vmid_bits: int = 8, icount: bool = True,
                 split: str = "lazy", max_level: int = 1,
                 consoles: list[Callable[[bytes], None] | None] | None = None) -> None:
        if not rams:
            raise ValueError("a host needs at least one VM")
        total = sum(rams)
        check_ram_size(total, f"{total >> 20}M in all")
        sizes = [s for ram in rams for s in board_slots(ram)]
        self.host = Host(Host.size_for(sizes), vmid_bits=vmid_bits)
        self.mmu = MMU(self.host.mem, self.host.tlb)
        consoles = consoles or [None] * len(rams)
        self.stop = StopControl()                # Ctrl-C / timeouts stop whichever VM runs
        self.machines = [Machine(ram, host=self.host, mmu=self.mmu, name=f"vm{i}",
                                 icount=icount, split=split, max_level=max_level,
                                 console=consoles[i], stop=self.stop)
                         for i, ram in enumerate(rams)]
        self.results: list[RunResult | None] = [None] * len(rams)

    def run(self, quantum: int = 100_000, max_rounds: int | None = None) -> list[RunResult | None]:
        """Round-robin: each VM still running gets `quantum` steps per round, until every
        VM has ended (powered off, or an error) or `max_rounds` rounds ran. Returns each
        VM's final RunResult (None for one still running)."""
        rounds = 0
        while any(r is None for r in self.results):
            if max_rounds is not None and rounds >= max_rounds:
                break
            for i, m in enumerate(self.machines):
                if self.results[i] is not None:
                    continue
                r = m.run(max_insns=quantum)
                if r.reason in FINAL or r.reason == "wfi":
                    self.results[i] = r
            rounds += 1
        return self.results
