"""A TLB tagged by VMID, with the Hyp-mode maintenance operations (DDI 0406C B3.10, B4.2.2).

Entries combine stage 1 and stage 2 (VA page -> PA page) and stay until invalidated: a
descriptor changed without the maintenance the architecture requires leaves a stale
translation here - and in Unicorn's own TLB, which only ever caches what this TLB granted
and is flushed by `listeners` whenever this one is.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

from .descriptors import Prot


@dataclass(frozen=True)
class TLBEntry:
    vmid: int
    va_page: int
    ipa_page: int
    pa_page: int
    prot: Prot
    level: int


class TLB:
    """The CPU's translation cache shared by every VM; lookups are by (VMID, VA page)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, int], TLBEntry] = {}
        self.listeners: list[Callable[[str, int | None], None]] = []
        self.stats: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, vmid: int, va_page: int) -> TLBEntry | None:
        return self._entries.get((vmid, va_page))

    def insert(self, entry: TLBEntry) -> None:
        self._entries[(entry.vmid, entry.va_page)] = entry
        self.stats["fill"] += 1

    def entries(self, vmid: int | None = None) -> list[TLBEntry]:
        return sorted((e for e in self._entries.values() if vmid is None or e.vmid == vmid),
                      key=lambda e: (e.vmid, e.va_page))

    def _flushed(self, op: str, vmid: int | None) -> None:
        self.stats[op] += 1
        for fn in self.listeners:
            fn(op, vmid)

    def flush_vmid(self, vmid: int) -> None:
        """TLBIALLIS in Hyp mode with VTTBR.VMID = vmid (KVM's __kvm_tlb_flush_vmid)."""
        for key in [k for k in self._entries if k[0] == vmid]:
            del self._entries[key]
        self._flushed("flush_vmid", vmid)

    def flush_vmid_ipa(self, vmid: int, ipa: int) -> None:
        """KVM's __kvm_tlb_flush_vmid_ipa: ARMv7 has no stage-2 invalidate by IPA, so the
        whole VMID goes (B4.2.2: TLBIMVA* operate on stage-1 VAs only)."""
        self.flush_vmid(vmid)
        self.stats["flush_vmid_ipa"] += 1

    def flush_all_nsnh(self) -> None:
        """TLBIALLNSNH(IS): every non-secure non-Hyp entry, all VMIDs (VMID rollover)."""
        self._entries.clear()
        self._flushed("flush_all_nsnh", None)
