"""Stage 1: the guest's own translation regime (DDI 0406C B3.3-B3.7), common to both formats.

`S1Regime` is the guest's CP15 state that drives stage 1 (SCTLR, TTBCR, TTBR0/1, DACR,
CONTEXTIDR, PRRR/NMRR or MAIR0/1). A walk (hyp.arch.s1short / s1long) yields an `S1Leaf`
- where VA goes (an IPA), how big the mapping is, the access permissions for PL1 and PL0 in a
client domain, the domain, whether it is global - or an `S1Fault` (the guest's own abort:
translation, access flag, address size; domain and permission faults come from `check`,
against the DACR in force at the access, as a TLB does). Stage-1 descriptors are read through
a callback that translates their address through stage 2 and may return that stage's Fault
(an S1PTW abort for the hypervisor).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import fsr
from .descriptors import Prot
from .fault import Access

SCTLR_M = 1 << 0
SCTLR_A = 1 << 1
SCTLR_WXN = 1 << 19
SCTLR_UWXN = 1 << 20
SCTLR_TRE = 1 << 28
SCTLR_AFE = 1 << 29
TTBCR_EAE = 1 << 31
PL0, PL1 = 0, 1
DOMAIN_NOACCESS, DOMAIN_CLIENT, DOMAIN_RESERVED, DOMAIN_MANAGER = 0, 1, 2, 3


@dataclass(frozen=True)
class S1Regime:
    """The guest's stage-1 controls, as last written (trapped by HCR.TVM)."""
    sctlr: int = 0
    ttbcr: int = 0
    ttbr0: int = 0               # 64-bit under LPAE (ASID in [55:48]), else the 32-bit TTBR0
    ttbr1: int = 0
    dacr: int = 0
    contextidr: int = 0
    mair0: int = 0               # PRRR without LPAE
    mair1: int = 0               # NMRR without LPAE

    @property
    def enabled(self) -> bool:
        return bool(self.sctlr & SCTLR_M)

    @property
    def lpae(self) -> bool:
        return bool(self.ttbcr & TTBCR_EAE)

    @property
    def asid(self) -> int:
        """The current ASID: CONTEXTIDR[7:0] (short descriptors), else TTBR0/1.ASID as
        TTBCR.A1 selects (B3.6.4 / B4.1.153)."""
        if not self.lpae:
            return self.contextidr & 0xFF
        ttbr = self.ttbr1 if self.ttbcr >> 22 & 1 else self.ttbr0
        return ttbr >> 48 & 0xFF

    def domain_access(self, domain: int) -> int:
        return self.dacr >> (2 * domain) & 3


@dataclass(frozen=True)
class S1Leaf:
    """A stage-1 mapping of `va`: output IPA of the page, the mapping's extent, permissions
    in a client domain for PL1 and PL0, the domain (short descriptors only), nG."""
    va: int
    ipa: int                     # IPA of va's 4 KiB page
    base_va: int                 # the block/section/page's first VA
    size: int
    pl1: Prot
    pl0: Prot
    domain: int | None           # None: LPAE (no domains)
    global_: bool
    level: int                   # 1/2 (short: section/page), 1-3 (LPAE)
    device: bool = False

    def perms(self, regime: S1Regime, priv: int) -> Prot | None:
        """Permissions for privilege `priv` under the DACR in force now; None: domain
        fault (no access / reserved)."""
        if self.domain is not None:
            acc = regime.domain_access(self.domain)
            if acc in (DOMAIN_NOACCESS, DOMAIN_RESERVED):
                return None
            if acc == DOMAIN_MANAGER:
                return Prot.RWX
        return self.pl1 if priv == PL1 else self.pl0


@dataclass(frozen=True)
class S1Fault:
    """The guest's own abort from stage 1, with what DFSR/IFSR and DFAR/IFAR must say."""
    status: fsr.Status
    level: int                   # short: 1 section / 2 page; LPAE: 0-3
    lpae: bool
    va: int
    access: Access
    domain: int = 0

    @property
    def fetch(self) -> bool:
        return self.access == Access.FETCH

    @property
    def write(self) -> bool:
        return self.access == Access.WRITE

    def fsr(self) -> int:
        """DFSR (data) / IFSR (fetch) value (B4.1.52 / B4.1.96)."""
        return fsr.fsr(self.status, lpae=self.lpae, level=self.level,
                       write=self.write and not self.fetch, domain=self.domain)

    def describe(self) -> str:
        kind = "fetch" if self.fetch else ("write" if self.write else "read")
        lvl = {1: "section", 2: "page"}.get(self.level, "") if not self.lpae else \
            f"level {self.level}"
        return (f"stage-1 {self.status.name.lower().replace('_', ' ')} fault ({lvl}), "
                f"{kind} VA {self.va:#010x}")


_NEED = {Access.READ: Prot.R, Access.WRITE: Prot.W, Access.FETCH: Prot.X}


def check(leaf: S1Leaf, regime: S1Regime, access: Access, priv: int) -> S1Fault | None:
    """Domain, then permission check of an access through `leaf` (B3.7, B3.12.3)."""
    perms = leaf.perms(regime, priv)
    if perms is None:
        return S1Fault(fsr.Status.DOMAIN, leaf.level, False, leaf.va, access, leaf.domain or 0)
    need = _NEED[access]
    if access == Access.FETCH:
        need |= Prot.R
    if perms & need != need:
        return S1Fault(fsr.Status.PERMISSION, leaf.level, leaf.domain is None, leaf.va, access,
                       leaf.domain or 0)
    return None


def apply_wxn(regime: S1Regime, pl1: Prot, pl0: Prot) -> tuple[Prot, Prot]:
    """SCTLR.WXN: writable regions are execute-never; SCTLR.UWXN: regions writable at PL0
    are execute-never at PL1 (B3.7.3)."""
    if regime.sctlr & SCTLR_WXN:
        if pl1 & Prot.W:
            pl1 &= ~Prot.X
        if pl0 & Prot.W:
            pl0 &= ~Prot.X
    if regime.sctlr & SCTLR_UWXN and pl0 & Prot.W:
        pl1 &= ~Prot.X
    return Prot(pl1), Prot(pl0)
