"""Stage 1 for people: the per-level account of a VA's walk through both stages (`--walk`,
`monitor s1 walk`) and the guest's mappings merged into ranges (`--dump-s1`, `monitor s1
dump`). Debug path only: descriptors are read through stage 2 with no TLB fill and no
walk-cache entry (hyp.arch.mmu.MMU.debug_reader); nothing the guest can observe changes.
"""
from __future__ import annotations

from dataclasses import dataclass

from .descriptors import Prot
from .fault import Access, Fault
from .s1 import S1Fault, S1Leaf, S1Regime
from . import s1long, s1short
from .walk import Translation, explain, translate

_SIZE = {1 << 12: "4 KiB page", 1 << 16: "64 KiB large page", 1 << 20: "1 MiB section",
         1 << 21: "2 MiB block", 1 << 24: "16 MiB supersection", 1 << 30: "1 GiB block"}
# The VA span a fault at (format, level) rules out, for skipping in dumps.
_SKIP = {(False, 1): 1 << 20, (False, 2): 1 << 12,
         (True, 0): 1 << 30, (True, 1): 1 << 30, (True, 2): 1 << 21, (True, 3): 1 << 12}
_DOMAIN = {0: "no access", 1: "client", 2: "reserved", 3: "manager"}


def _prot(p: Prot) -> str:
    return "".join(c if p & b else "-" for c, b in (("r", Prot.R), ("w", Prot.W), ("x", Prot.X)))


def regime_text(r: S1Regime) -> str:
    """One line: the stage-1 controls in force."""
    if not r.enabled:
        return f"stage 1: off (SCTLR {r.sctlr:#010x}): VA = IPA"
    fmt = (f"long descriptors, T0SZ {r.ttbcr & 7} T1SZ {r.ttbcr >> 16 & 7}" if r.lpae
           else f"short descriptors, N {r.ttbcr & 7}")
    return (f"stage 1: SCTLR {r.sctlr:#010x} TTBCR {r.ttbcr:#010x} ({fmt}) "
            f"TTBR0 {r.ttbr0:#x} TTBR1 {r.ttbr1:#x}"
            + ("" if r.lpae else f" DACR {r.dacr:#010x}") + f" ASID {r.asid}")


def _kind(desc: int, level: int, lpae: bool) -> str:
    if lpae:
        if not desc & 1 or (level == 3 and not desc & 2):
            return "invalid"
        return "table" if desc & 2 and level < 3 else ("page" if level == 3 else "block")
    if level == 1:
        return ("fault", "page table", "section", "section")[desc & 3] if not \
            (desc & 2 and desc >> 18 & 1) else "supersection"
    return ("fault", "large page", "small page", "small page")[desc & 3]


def explain_s1(mmu, va: int) -> list[str]:
    """VA through both stages: each stage-1 descriptor (its IPA, where stage 2 put it, its
    value and kind), the stage-1 result, then the stage-2 walk of the output IPA."""
    regime = mmu.s1
    lines = [f"VA {va:#010x}: " + regime_text(regime)]
    if not regime.enabled:
        ipa = va
    else:
        steps: list = []
        walker = s1long if regime.lpae else s1short
        leaf = walker.walk(regime, va, Access.READ, mmu.debug_reader(regime.lpae), steps)
        for level, ipa_, desc in steps:
            where = _where(mmu, ipa_)
            lines.append(f"  S1 L{level} @ IPA {ipa_:#x} ({where}) = {desc:#x} "
                         f"({_kind(desc, level, regime.lpae)})")
        if isinstance(leaf, Fault):
            lines.append(f"  -> stage-2 fault on the walk (S1PTW): {leaf.describe()}")
            return lines
        if isinstance(leaf, S1Fault):
            lines.append(f"  -> {leaf.describe()}: the guest's abort, "
                         f"{'IFSR' if leaf.fetch else 'DFSR'} {leaf.fsr():#x}")
            return lines
        lines.append("  -> " + leaf_text(leaf, regime))
        ipa = leaf.ipa | (va & 0xFFF)
    if mmu.stage2_enabled:
        lines += explain(mmu.mem, mmu.cfg, ipa)
    return lines


def _where(mmu, ipa: int) -> str:
    if not mmu.stage2_enabled:
        return f"PA {ipa:#x}"
    t = translate(mmu.mem, mmu.cfg, ipa, Access.READ, check_perm=False)
    return f"PA {t.pa:#x}" if isinstance(t, Translation) else f"stage 2: {t.describe()}"


def leaf_text(leaf: S1Leaf, regime: S1Regime) -> str:
    size = _SIZE.get(leaf.size, f"{leaf.size:#x} bytes")
    dom = ""
    if leaf.domain is not None:
        dom = f", domain {leaf.domain} {_DOMAIN[regime.domain_access(leaf.domain)]}"
    return (f"IPA {leaf.ipa | (leaf.va & 0xFFF):#x} ({size} at VA {leaf.base_va:#x}, "
            f"{'global' if leaf.global_ else 'nG'}{', Device' if leaf.device else ''}), "
            f"PL1 {_prot(leaf.pl1)} PL0 {_prot(leaf.pl0)}{dom}")


@dataclass
class S1Range:
    """VAs [va, va + size) mapped to IPAs [ipa, ipa + size) with one set of attributes."""
    va: int
    ipa: int
    size: int
    pl1: str
    pl0: str
    global_: bool
    domain: int | None
    device: bool
    leaves: int

    def describe(self) -> str:
        dom = "" if self.domain is None else f" domain {self.domain}"
        return (f"VA [{self.va:#010x}, {self.va + self.size:#010x}) -> IPA {self.ipa:#x}  "
                f"PL1 {self.pl1} PL0 {self.pl0}  {'global' if self.global_ else 'nG'}"
                f"{' Device' if self.device else ''}{dom}  ({self.leaves} "
                f"{'mapping' if self.leaves == 1 else 'mappings'})")


def dump_s1(mmu, lo: int = 0, hi: int = 1 << 32, limit: int = 1 << 20) -> list[S1Range]:
    """The guest's stage-1 mappings in VA [lo, hi), merged where VA and IPA are contiguous
    with equal attributes. One debug walk per mapping or per unmapped table entry; `limit`
    bounds the walks (a guest mapping all 4 GiB with 4 KiB pages needs 2^20)."""
    regime = mmu.s1
    if not regime.enabled:
        return []
    walker = s1long if regime.lpae else s1short
    read = mmu.debug_reader(regime.lpae)
    out: list[S1Range] = []
    va, walks = lo & ~0xFFF, 0
    while va < hi and walks < limit:
        steps: list = []
        leaf = walker.walk(regime, va, Access.READ, read, steps)
        walks += 1
        if isinstance(leaf, S1Leaf):
            end = leaf.base_va + leaf.size
            _add(out, leaf, va, min(end, hi))
            va = end
        else:
            level = leaf.level if isinstance(leaf, S1Fault) else len(steps) + 1
            span = _SKIP.get((regime.lpae, level), 1 << 12)
            va = (va & ~(span - 1)) + span
    return out


def _add(out: list[S1Range], leaf: S1Leaf, va: int, end: int) -> None:
    r = S1Range(va=va, ipa=leaf.ipa, size=end - va, pl1=_prot(leaf.pl1), pl0=_prot(leaf.pl0),
                global_=leaf.global_, domain=leaf.domain, device=leaf.device, leaves=1)
    if out:
        p = out[-1]
        if p.va + p.size == r.va and p.ipa + p.size == r.ipa and \
                (p.pl1, p.pl0, p.global_, p.domain, p.device) == \
                (r.pl1, r.pl0, r.global_, r.domain, r.device):
            p.size += r.size
            p.leaves += 1
            return
    out.append(r)


__all__ = ["explain_s1", "dump_s1", "S1Range", "regime_text", "leaf_text"]
