"""What the CPU's MMU does on a TLB miss: the full ARMv7 two-stage regime (DDI 0406C B3.3,
B3.6-B3.9, B3.12).

TLB lookup by (VMID, ASID or global, VA page); on a miss - or a hit lacking the permission,
which on this model re-walks so that permission upgrades need no maintenance - stage 1 (the
guest's tables, short or long descriptors, when SCTLR.M is set; VA = IPA otherwise) and then
stage 2. Every stage-1 descriptor read is itself an access that stage 2 translates: a stage-2
fault on it is reported with S1PTW set and the descriptor's IPA (HPFAR), at the stage-2 level.
With HCR.PTW set, a stage-1 walk into memory stage 2 maps as Device faults (permission).

`fill` returns a TLBEntry, a stage-2 `Fault` (for the hypervisor) or an `S1Fault` (the guest's
own abort). `debug_walk` is the side-effect-free path for debuggers and decoders.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .descriptors import Prot
from .fault import Access, Fault, FaultType
from .regs import HCR_VM, S2Config
from .s1 import PL1, S1Fault, S1Leaf, S1Regime, check
from . import s1long, s1short
from .tlb import FLAT, GLOBAL, TLB, TLBEntry
from .walk import Translation, allowed, translate

PAGE_MASK = ~0xFFF


@dataclass(frozen=True)
class DescriptorRead:
    """One stage-1 descriptor read, for tracing: its level (None: the read faulted), IPA,
    value, where stage 2 put it (PA), the stage-2 walk it took (None: served by the walk
    cache) and the stage-2 fault it raised, if any."""
    level: int | None
    ipa: int
    desc: int | None
    pa: int | None
    s2steps: list | None
    fault: Fault | None = None


def _descriptor_reads(steps: list, reads: list) -> list[DescriptorRead]:
    """Pair the walker's steps (level, IPA, value) with the reader's records (IPA, PA,
    stage-2 steps, fault); a last record without a step is the read that faulted."""
    out = [DescriptorRead(level, ipa, desc, r[1], r[2], r[3])
           for (level, ipa, desc), r in zip(steps, reads)]
    out += [DescriptorRead(None, r[0], None, r[1], r[2], r[3]) for r in reads[len(steps):]]
    return out
HCR_PTW = 1 << 2
_NEED = {Access.READ: Prot.R, Access.WRITE: Prot.W, Access.FETCH: Prot.X | Prot.R}


class MMU:
    """The translation hardware of one CPU: Hyp registers, the guest's stage-1 registers,
    the walkers and the shared TLB."""

    def __init__(self, mem, tlb: TLB) -> None:
        self.mem = mem
        self.tlb = tlb
        self.hcr = 0
        self._vtcr = 0
        self._vttbr = 0
        self.cfg = S2Config.decode(0, 0)
        self.s1 = S1Regime()
        self.walks = 0
        self.s1_walks = 0
        self.s1_block_hits = 0         # misses served by a cached section/block (no walk)
        self.observers: list = []      # (va, access, result) on each stage-2 walk
        self.s1_observers: list = []   # (va, access, result, steps) on each stage-1 walk

    def set_stage2(self, hcr: int, vtcr: int, vttbr: int) -> None:
        """Write HCR, VTCR and VTTBR as Hyp mode does before entering a guest."""
        if (vtcr, vttbr) != (self._vtcr, self._vttbr):
            self.cfg = S2Config.decode(vtcr, vttbr)
        self.hcr, self._vtcr, self._vttbr = hcr, vtcr, vttbr

    def loaded(self, hcr: int, vtcr: int, vttbr: int) -> bool:
        """Are these HCR/VTCR/VTTBR the ones in force (re-entry with nothing changed)?"""
        return hcr == self.hcr and vttbr == self._vttbr and vtcr == self._vtcr

    def set_stage1(self, regime: S1Regime) -> None:
        """The guest's translation registers, as it last wrote them (trapped by HCR.TVM)."""
        self.s1 = regime

    @property
    def vmid(self) -> int:
        return self.cfg.vmid

    @property
    def stage2_enabled(self) -> bool:
        return bool(HCR_VM.get(self.hcr))

    # ---- the fill path ----------------------------------------------------------------------
    def fill(self, va: int, access: Access, priv: int = PL1) -> TLBEntry | Fault | S1Fault:
        """Translate the page of `va` for `access` at privilege `priv`, filling the TLB."""
        va_page = va & PAGE_MASK
        vmid, regime = self.vmid, self.s1
        asid = regime.asid if regime.enabled else None
        entry = self.tlb.lookup(vmid, va_page, asid)
        if entry is not None and self.permits(entry, access, priv):
            return entry
        leaf = None
        if regime.enabled:
            cached = self.tlb.block_leaf(vmid, va_page, asid)
            if cached is not None:
                hit = self._from_block(cached, va, access, priv, vmid, asid)
                if hit is not None:
                    return hit
            self.s1_walks += 1
            steps: list | None = [] if self.s1_observers else None
            reads: list | None = [] if self.s1_observers else None
            walker = s1long if regime.lpae else s1short
            leaf = walker.walk(regime, va, access,
                               self._descriptor_reader(va, access, regime.lpae, reads=reads),
                               steps)
            f = check(leaf, regime, access, priv) if isinstance(leaf, S1Leaf) else None
            if self.s1_observers:
                trail = _descriptor_reads(steps, reads)
                for fn in self.s1_observers:
                    fn(va, access, f or leaf, trail)
            if isinstance(leaf, (Fault, S1Fault)):
                return leaf
            if f is not None:
                return f
        return self._finish(va, access, leaf, vmid, asid)

    def _finish(self, va: int, access: Access, leaf: S1Leaf | None, vmid: int,
                asid: int | None) -> TLBEntry | Fault:
        """Stage 2 of the page's IPA, then the combined entry into the TLB."""
        va_page = va & PAGE_MASK
        ipa = leaf.ipa if leaf is not None else va_page
        result = self._stage2(ipa, access, va)
        for fn in self.observers:
            fn(va, access, result)
        if isinstance(result, Fault):
            return result
        if not self.mem.contains(result.page_pa, 0x1000):
            # The leaf maps a PA where there is no memory: the access itself aborts (a
            # synchronous external abort), whoever wrote the descriptor.
            return Fault(type=FaultType.EXTERNAL, level=result.level, access=access,
                         ipa=result.ipa, va=va, desc_pa=result.desc_pa)
        tag = FLAT if leaf is None else (GLOBAL if leaf.global_ else asid)
        entry = TLBEntry(vmid=vmid, va_page=va_page, ipa_page=ipa, pa_page=result.page_pa,
                         prot=result.prot, level=result.level, s1=leaf, tag=tag)
        self.tlb.insert(entry)
        return entry

    def _from_block(self, cached: S1Leaf, va: int, access: Access, priv: int, vmid: int,
                    asid: int) -> TLBEntry | Fault | None:
        """Another page of a section/block the TLB holds: its stage-1 result with this page's
        output address (no walk, as a hardware TLB hit on the block entry), then stage 2.
        None when the cached permissions do not allow the access: the caller walks (as for
        any hit lacking the permission, so upgrades need no maintenance)."""
        offset = (va & PAGE_MASK & 0xFFFFFFFF) - cached.base_va
        leaf = replace(cached, va=va & 0xFFFFFFFF,
                       ipa=cached.ipa - ((cached.va & PAGE_MASK) - cached.base_va) + offset)
        if check(leaf, self.s1, access, priv) is not None:
            return None
        self.s1_block_hits += 1
        return self._finish(va, access, leaf, vmid, asid)

    def permits(self, entry: TLBEntry, access: Access, priv: int) -> bool:
        """Does a cached entry allow the access (stage 2, and stage 1 under today's DACR)?"""
        return bool(self.effective(entry, priv) & _NEED[access] == _NEED[access]) and \
            allowed(entry.prot, access)

    def effective(self, entry: TLBEntry, priv: int) -> Prot:
        """Stage 1 and stage 2 permissions of an entry combined, for one privilege."""
        if entry.s1 is None:
            return entry.prot
        s1 = entry.s1.perms(self.s1, priv)
        return Prot.NONE if s1 is None else Prot(s1 & entry.prot)

    def _stage2(self, ipa: int, access: Access, va: int | None = None) -> Translation | Fault:
        if not self.stage2_enabled:
            return Translation(ipa=ipa, pa=ipa, level=3, prot=Prot.RWX, desc=0)
        self.walks += 1
        return translate(self.mem, self.cfg, ipa, access, record=bool(self.observers), va=va)

    def _descriptor_reader(self, va: int, access: Access, lpae: bool, *, debug: bool = False,
                           reads: list | None = None):
        """read(ipa, level) for a stage-1 walk: the descriptor's IPA through stage 2 (a
        walk cache of its own), the value, or a stage-2 Fault with S1PTW set. `reads`
        collects (ipa, pa or None, stage-2 walk steps - None when the walk cache served
        it - or the stage-2 Fault) per read, for tracing."""
        mem, vmid = self.mem, self.vmid
        width = 8 if lpae else 4

        def read(ipa: int, level: int) -> int | Fault:
            r = _read(ipa, level)
            if reads is not None:
                reads.append(r[1])
            return r[0]

        def _read(ipa: int, level: int):
            page = ipa & PAGE_MASK
            s2steps = None
            if not self.stage2_enabled:
                pa = ipa
            else:
                hit = None if debug else self.tlb.s2_walk.get((vmid, page))
                if hit is None:
                    s2steps = [] if reads is not None else None
                    t = translate(mem, self.cfg, page, Access.READ, steps=s2steps)
                    if isinstance(t, Fault):
                        f = Fault(type=t.type, level=t.level, access=access, ipa=ipa,
                                  s1ptw=True, va=va, desc_pa=t.desc_pa)
                        return f, (ipa, None, s2steps, f)
                    if self.hcr & HCR_PTW and (t.desc >> 2 & 0b1100) == 0:
                        f = Fault(type=FaultType.PERMISSION, level=t.level, access=access,
                                  ipa=ipa, s1ptw=True, va=va, desc_pa=t.desc_pa)
                        return f, (ipa, None, s2steps, f)
                    hit = (t.page_pa, t.desc)
                    if not debug:
                        self.tlb.s2_walk[(vmid, page)] = hit
                pa = hit[0] | (ipa & 0xFFF)
            if not mem.contains(pa, width):
                f = Fault(type=FaultType.EXTERNAL_WALK, level=level, access=access,
                          ipa=ipa, s1ptw=True, va=va)
                return f, (ipa, pa, s2steps, f)
            return (mem.read64(pa) if lpae else mem.read32(pa)), (ipa, pa, s2steps, None)
        return read

    def debug_reader(self, lpae: bool):
        """read(ipa, level) of stage-1 descriptors for debuggers: through stage 2, no walk
        cache entry, no TLB fill."""
        return self._descriptor_reader(0, Access.READ, lpae, debug=True)

    def at(self, va: int, access: Access, priv: int) -> S1Leaf | S1Fault | Fault | None:
        """ATS1C*: the stage-1 translation of `va` for an access at `priv`, without a TLB
        fill (None: the MMU is off, VA = IPA). A stage-2 fault on the walk is the
        hypervisor's (S1PTW), as for any access."""
        regime = self.s1
        if not regime.enabled:
            return None
        walker = s1long if regime.lpae else s1short
        leaf = walker.walk(regime, va, access, self._descriptor_reader(va, access, regime.lpae))
        if isinstance(leaf, S1Leaf):
            return check(leaf, regime, access, priv) or leaf
        return leaf

    # ---- the debug path -----------------------------------------------------------------------
    def debug_walk(self, va: int, steps: list | None = None) -> tuple[int | None, object]:
        """VA -> (PA or None, what stage 1 found) with no side effect: no TLB fill, no walk
        cache entry. What stage 1 found: None (MMU off), an S1Leaf, an S1Fault or a Fault."""
        regime, leaf = self.s1, None
        if regime.enabled:
            walker = s1long if regime.lpae else s1short
            leaf = walker.walk(regime, va, Access.READ,
                               self._descriptor_reader(va, Access.READ, regime.lpae,
                                                       debug=True), steps)
            if not isinstance(leaf, S1Leaf):
                return None, leaf
            ipa = leaf.ipa | (va & 0xFFF)
        else:
            ipa = va
        if not self.stage2_enabled:
            return ipa, leaf
        t = translate(self.mem, self.cfg, ipa, Access.READ, check_perm=False)
        return (t.pa if isinstance(t, Translation) else None), leaf


__all__ = ["MMU", "Access", "Fault", "FaultType", "TLBEntry", "S1Fault"]
