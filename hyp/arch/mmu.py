"""What the CPU's MMU does on a TLB miss (DDI 0406C B3.6-B3.9).

TLB lookup by (VMID, VA page); on a miss - or a hit lacking the permission, which on this
model re-walks so that permission upgrades need no maintenance - stage 1 (the guest MMU is
off: VA = IPA) and then the stage-2 walk of the tables in host memory.
"""
from __future__ import annotations

from .descriptors import Prot
from .fault import Access, Fault, FaultType
from .regs import HCR_VM, S2Config
from .tlb import TLB, TLBEntry
from .walk import Translation, allowed, translate

PAGE_MASK = ~0xFFF


class MMU:
    """The translation hardware of one CPU: Hyp registers, the walker and the shared TLB."""

    def __init__(self, mem, tlb: TLB) -> None:
        self.mem = mem
        self.tlb = tlb
        self.hcr = 0
        self._vtcr = 0
        self._vttbr = 0
        self.cfg = S2Config.decode(0, 0)
        self.walks = 0
        self.observers: list = []      # called with (va, access, result, steps) on each walk

    def set_stage2(self, hcr: int, vtcr: int, vttbr: int) -> None:
        """Write HCR, VTCR and VTTBR as Hyp mode does before entering a guest."""
        if (vtcr, vttbr) != (self._vtcr, self._vttbr):
            self.cfg = S2Config.decode(vtcr, vttbr)
        self.hcr, self._vtcr, self._vttbr = hcr, vtcr, vttbr

    @property
    def vmid(self) -> int:
        return self.cfg.vmid

    @property
    def stage2_enabled(self) -> bool:
        return bool(HCR_VM.get(self.hcr))

    def fill(self, va: int, access: Access) -> TLBEntry | Fault:
        """Translate the page of `va` for `access`, filling the TLB on success."""
        va_page = va & PAGE_MASK
        vmid = self.vmid
        entry = self.tlb.lookup(vmid, va_page)
        if entry is not None and allowed(entry.prot, access):
            return entry
        ipa = va_page                       # stage 1 off (SCTLR.M = 0)
        if not self.stage2_enabled:
            result: Translation | Fault = Translation(ipa=ipa, pa=ipa, level=3, prot=Prot.RWX, desc=0)
        else:
            self.walks += 1
            result = translate(self.mem, self.cfg, ipa, access, record=bool(self.observers))
        for fn in self.observers:
            fn(va, access, result)
        if isinstance(result, Fault):
            return Fault(type=result.type, level=result.level, access=access, ipa=result.ipa,
                         va=va, desc_pa=result.desc_pa)
        if not self.mem.contains(result.page_pa, 0x1000):
            # The leaf maps a PA where there is no memory: the access itself aborts (a
            # synchronous external abort), whoever wrote the descriptor.
            return Fault(type=FaultType.EXTERNAL, level=result.level, access=access,
                         ipa=result.ipa, va=va, desc_pa=result.desc_pa)
        entry = TLBEntry(vmid=vmid, va_page=va_page, ipa_page=ipa, pa_page=result.page_pa,
                         prot=result.prot, level=result.level)
        self.tlb.insert(entry)
        return entry


__all__ = ["MMU", "Access", "Fault", "FaultType", "TLBEntry"]
