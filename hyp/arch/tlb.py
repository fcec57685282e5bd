"""A TLB tagged by VMID and ASID, with the maintenance operations (DDI 0406C B3.10, B4.2.2).

Entries combine stage 1 and stage 2 (VA page -> PA page) and stay until invalidated: a
descriptor changed without the maintenance the architecture requires leaves a stale
translation here - and in Unicorn's own TLB, which only ever caches what this TLB granted
and is flushed by `listeners` whenever this one is.

Each entry has a tag: FLAT for a translation made with the guest's MMU off (VA = IPA),
GLOBAL for a global stage-1 mapping (nG = 0, any ASID), or the ASID of a non-global one.
Stage-1 invalidations by VA remove every entry of a mapping that contains the VA - a section
or a 2 MiB block is one TLB entry on hardware, so TLBIMVA of any address in it drops all of
its pages here.

The hypervisor's operations: flush_vmid (TLBIALLIS with VTTBR.VMID set, KVM's
__kvm_tlb_flush_vmid), flush_vmid_ipa (= flush_vmid on ARMv7: no stage-2 invalidate by IPA),
flush_all_nsnh (TLBIALLNSNH, VMID rollover). The guest's (trapped by HCR.TTLB, scoped to its
VMID): invalidate_all (TLBIALL), invalidate_asid (TLBIASID), invalidate_va (TLBIMVA: that
ASID's or global entries), invalidate_va_all_asids (TLBIMVAA).

Stage-2 translations of stage-1 table addresses (a hardware walk cache) live in `s2_walk`
and obey the hypervisor's operations only, as stage-2 entries do.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, NamedTuple

from .descriptors import Prot

FLAT = -2            # the guest's MMU was off: VA = IPA
GLOBAL = -1          # a global stage-1 mapping
_SIZES = (1 << 12, 1 << 16, 1 << 20, 1 << 21, 1 << 24, 1 << 30)


class TLBEntry(NamedTuple):
    """One translation (immutable, hashable). A NamedTuple: made on every fill, and a frozen
    dataclass costs twice as much to build."""
    vmid: int
    va_page: int
    ipa_page: int
    pa_page: int
    prot: Prot                   # stage 2
    level: int                   # stage-2 leaf level
    s1: object | None = None     # hyp.arch.s1.S1Leaf, None with the MMU off
    tag: int = FLAT

    @property
    def s1_base(self) -> int:
        return self.s1.base_va if self.s1 is not None else self.va_page

    @property
    def s1_size(self) -> int:
        return self.s1.size if self.s1 is not None else 1 << 12


class TLB:
    """The CPU's translation cache shared by every VM."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, int, int], TLBEntry] = {}
        self._by_block: dict[tuple[int, int, int], set] = {}      # (vmid, size, base) -> keys
        self.s2_walk: dict[tuple[int, int], tuple[int, int]] = {}   # (vmid, ipa page) -> (pa, desc)
        self.listeners: list[Callable[[str, int | None], None]] = []
        # caches of this TLB (emu.native's fill mirror): told exactly what goes, before the
        # listeners - a list of entries, or (None, vmid) for all of a VMID's (vmid None: all)
        self.removal_listeners: list[Callable[[list[TLBEntry] | None, int | None], None]] = []
        self.stats: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    # ---- lookups ------------------------------------------------------------------------
    def lookup(self, vmid: int, va_page: int, asid: int | None = None) -> TLBEntry | None:
        """The entry for `va_page`: with `asid` None, a flat (MMU off) one; else one tagged
        with that ASID, or a global one."""
        if asid is None:
            return self._entries.get((vmid, FLAT, va_page))
        e = self._entries.get((vmid, asid, va_page))
        return e if e is not None else self._entries.get((vmid, GLOBAL, va_page))

    def block_leaf(self, vmid: int, va: int, asid: int):
        """The stage-1 leaf (hyp.arch.s1.S1Leaf) of a cached mapping larger than a page -
        section, supersection, large page, 2 MiB or 1 GiB block - that contains `va` for this
        ASID (or global): on hardware such a mapping is one TLB entry, so a miss on another
        of its pages needs no stage-1 walk. None if there is none."""
        for size in _SIZES[1:]:
            keys = self._by_block.get((vmid, size, va & ~(size - 1) & 0xFFFFFFFF))
            if keys:
                for key in keys:
                    if key[1] == GLOBAL or key[1] == asid:
                        return self._entries[key].s1
        return None

    def insert(self, entry: TLBEntry) -> None:
        key = (entry.vmid, entry.tag, entry.va_page)
        old = self._entries.get(key)
        if old is not None:          # the page re-filled, maybe through a mapping of another size
            self._unindex(key, old)
            if old != entry:
                for fn in self.removal_listeners:    # another CPU's copy must not outlive it
                    fn([old], None)
        self._entries[key] = entry
        self._by_block.setdefault((entry.vmid, entry.s1_size, entry.s1_base), set()).add(key)
        self.stats["fill"] += 1

    def entries(self, vmid: int | None = None) -> list[TLBEntry]:
        return sorted((e for e in self._entries.values() if vmid is None or e.vmid == vmid),
                      key=lambda e: (e.vmid, e.tag, e.va_page))

    # ---- removal --------------------------------------------------------------------------
    def _remove(self, keys, notify: bool = True) -> int:
        gone = []
        for key in list(keys):
            e = self._entries.pop(key, None)
            if e is None:
                continue
            gone.append(e)
            self._unindex(key, e)
        if gone and notify:
            for fn in self.removal_listeners:
                fn(gone, None)
        return len(gone)

    def _unindex(self, key, e: TLBEntry) -> None:
        block = self._by_block.get((e.vmid, e.s1_size, e.s1_base))
        if block is not None:
            block.discard(key)
            if not block:
                del self._by_block[(e.vmid, e.s1_size, e.s1_base)]

    def _flushed(self, op: str, vmid: int | None) -> None:
        self.stats[op] += 1
        for fn in self.listeners:
            fn(op, vmid)

    # ---- the hypervisor's maintenance -----------------------------------------------------
    def flush_vmid(self, vmid: int) -> None:
        """TLBIALLIS in Hyp mode with VTTBR.VMID = vmid (KVM's __kvm_tlb_flush_vmid)."""
        self._remove([k for k in self._entries if k[0] == vmid], notify=False)
        for fn in self.removal_listeners:
            fn(None, vmid)
        for k in [k for k in self.s2_walk if k[0] == vmid]:
            del self.s2_walk[k]
        self._flushed("flush_vmid", vmid)

    def flush_vmid_ipa(self, vmid: int, ipa: int) -> None:
        """KVM's __kvm_tlb_flush_vmid_ipa: ARMv7 has no stage-2 invalidate by IPA, so the
        whole VMID goes (B4.2.2: TLBIMVA* operate on stage-1 VAs only)."""
        self.flush_vmid(vmid)
        self.stats["flush_vmid_ipa"] += 1

    def flush_all_nsnh(self) -> None:
        """TLBIALLNSNH(IS): every non-secure non-Hyp entry, all VMIDs (VMID rollover)."""
        self._entries.clear()
        self._by_block.clear()
        self.s2_walk.clear()
        for fn in self.removal_listeners:
            fn(None, None)
        self._flushed("flush_all_nsnh", None)

    # ---- the guest's maintenance (stage 1, its own VMID) ------------------------------------
    def invalidate_all(self, vmid: int) -> int:
        """TLBIALL(IS) from Non-secure PL1: every stage-1 (and combined) entry of the VMID."""
        n = self._remove([k for k in self._entries if k[0] == vmid])
        self._flushed("tlbiall", vmid)
        return n

    def invalidate_asid(self, vmid: int, asid: int) -> int:
        """TLBIASID(IS): the non-global entries of that ASID."""
        n = self._remove([k for k in self._entries if k[0] == vmid and k[1] == asid])
        self._flushed("tlbiasid", vmid)
        return n

    def invalidate_va(self, vmid: int, va: int, asid: int | None) -> int:
        """TLBIMVA(IS) (asid given: that ASID's entries and global ones) or TLBIMVAA(IS)
        (asid None: any ASID) - every page of a stage-1 mapping that contains `va`."""
        keys = []
        for size in _SIZES:
            block = self._by_block.get((vmid, size, va & ~(size - 1) & 0xFFFFFFFF))
            if block:
                keys += [k for k in block if k[1] != FLAT and
                         (asid is None or k[1] in (asid, GLOBAL))]
        n = self._remove(keys)
        self._flushed("tlbimva" if asid is not None else "tlbimvaa", vmid)
        return n
