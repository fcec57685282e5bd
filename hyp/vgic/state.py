"""The GIC's state, declared once: the distributor's and each CPU interface's registers and
input lines as dataclasses, and one rule per field that both saves it (plain JSON-able data:
ints and lists of ints) and validates it on load (IHI 0048B chapter 4 says which bits exist).

Bitmaps (one bit per interrupt ID) are Python ints in memory and lists of 32-bit words when
saved, word n being the value of register n of that kind (GICD_ISENABLER<n>, ...). In the
distributor's bitmaps word 0 is always 0: IDs 0-31 are banked and live in each `CpuState`."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable

from hyp.migration.state import StateError

from .regs import GICC_CTLR_MASK, GICD_CTLR_MASK, MAX_CPUS, MAX_IRQS, NR_PRIVATE, NR_SGIS

STATE_VERSION = 1
_SGI_BITS = (1 << NR_SGIS) - 1
_PPI_BITS = 0xFFFF_0000


class GicStateError(StateError):
    """A saved GIC state this GIC cannot restore (the message names the field)."""


@dataclass(frozen=True)
class Geometry:
    """What a GIC is built with; a saved state only loads into a GIC of the same geometry."""
    num_cpus: int
    num_irqs: int
    priority_bits: int

    def __post_init__(self) -> None:
        if not 1 <= self.num_cpus <= MAX_CPUS:
            raise ValueError(f"a GICv2 has 1 to {MAX_CPUS} CPU interfaces, not {self.num_cpus}")
        if not (NR_PRIVATE <= self.num_irqs <= MAX_IRQS + 4 and self.num_irqs % 32 == 0):
            raise ValueError(f"num_irqs {self.num_irqs}: a multiple of 32 from 32 to 1024")
        if not 4 <= self.priority_bits <= 8:
            raise ValueError(f"priority_bits {self.priority_bits}: 4 to 8 (3.3, 16 to 256 levels)")

    @property
    def nirq(self) -> int:
        """Implemented interrupt IDs: 0 .. nirq-1 (IDs 1020-1023 never are: 3.2)."""
        return min(self.num_irqs, MAX_IRQS)

    @property
    def prio_mask(self) -> int:
        """Implemented priority bits, the most significant ones (3.3); the rest RAZ/WI."""
        return (0xFF << (8 - self.priority_bits)) & 0xFF

    @property
    def cpu_mask(self) -> int:
        return (1 << self.num_cpus) - 1

    @property
    def min_bpr(self) -> int:
        """Smallest GICC_BPR: the group priority field [7:BPR+1] never splits an implemented
        bit off (3.3, "Priority grouping"); GICC_ABPR's minimum is one more."""
        return max(0, 7 - self.priority_bits)

    @property
    def nr_apr(self) -> int:
        """GICC_APRn registers in use: one bit per preemption level (4.4.12's recommended
        layout), 2^(7 - min_bpr) levels."""
        return max(1, (1 << (7 - self.min_bpr)) // 32)

    def apr_mask(self, n: int) -> int:
        """Implemented bits of GICC_APR<n>: one per preemption level."""
        levels = 1 << (7 - self.min_bpr)
        return (1 << max(0, min(32, levels - 32 * n))) - 1

    @property
    def spi_bits(self) -> int:
        """Bitmap of the implemented shared (SPI) interrupt IDs."""
        return ((1 << self.nirq) - 1) & ~((1 << NR_PRIVATE) - 1)


@dataclass
class DistState:
    """Distributor registers for the SPIs (IDs 32..nirq-1) and their input lines."""
    ctlr: int = 0            # GICD_CTLR
    group: int = 0           # GICD_IGROUPRn
    enabled: int = 0         # GICD_ISENABLERn
    pending: int = 0         # pending latch: an edge, or GICD_ISPENDRn (level lines add to it)
    active: int = 0          # GICD_ISACTIVERn
    edge: int = 0            # GICD_ICFGRn Int_config[1]
    level: int = 0           # input line levels
    priority: list[int] = field(default_factory=list)   # GICD_IPRIORITYRn, by ID
    targets: list[int] = field(default_factory=list)    # GICD_ITARGETSRn, by ID


@dataclass
class CpuState:
    """One CPU interface: the banked distributor state of its SGIs and PPIs (IDs 0-31), the
    per-source SGI pending bits and the GICC_* registers."""
    group: int = 0
    enabled: int = _SGI_BITS # SGIs are always enabled (GICD_ISENABLER0[15:0] RAO/WI)
    pending: int = 0         # PPI pending latches (SGI pending state is in sgi_sources)
    active: int = 0
    edge: int = 0            # PPI Int_config[1]
    level: int = 0           # PPI input lines
    priority: list[int] = field(default_factory=lambda: [0] * NR_PRIVATE)
    sgi_sources: list[int] = field(default_factory=lambda: [0] * NR_SGIS)  # GICD_SPENDSGIRn
    ctlr: int = 0            # GICC_CTLR
    pmr: int = 0             # GICC_PMR
    bpr: int = 0             # GICC_BPR
    abpr: int = 0            # GICC_ABPR
    apr: list[int] = field(default_factory=list)        # GICC_APRn


def reset_dist(g: Geometry) -> DistState:
    """Reset values (4.3): everything 0, SPIs level-sensitive, Group 0, disabled."""
    return DistState(priority=[0] * g.nirq, targets=[0] * g.nirq)


def reset_cpu(g: Geometry) -> CpuState:
    """Reset values (4.4): GICC_BPR/ABPR at their minimum, the rest 0."""
    return CpuState(bpr=g.min_bpr, abpr=g.min_bpr + 1, apr=[0] * g.nr_apr)


# ---- rules: how each field is saved and which values are valid ------------------------------
@dataclass(frozen=True)
class _Scalar:
    allowed: Callable[[Geometry], int]
    minimum: Callable[[Geometry], int] = lambda g: 0

    def dump(self, v, g):
        return v

    def parse(self, raw, g: Geometry, where: str) -> int:
        v = _u32(raw, where)
        if v & ~self.allowed(g):
            raise GicStateError(f"{where} = {v:#x} sets bits outside {self.allowed(g):#x}")
        if v < self.minimum(g):
            raise GicStateError(f"{where} = {v} is below the minimum {self.minimum(g)}")
        return v


@dataclass(frozen=True)
class _Bitmap:
    allowed: Callable[[Geometry], int]

    def dump(self, v: int, g: Geometry) -> list[int]:
        return [(v >> (32 * n)) & 0xFFFF_FFFF for n in range(g.num_irqs // 32)]

    def parse(self, raw, g: Geometry, where: str) -> int:
        words = _list(raw, g.num_irqs // 32, where)
        v = sum(_u32(w, f"{where}[{n}]") << (32 * n) for n, w in enumerate(words))
        if v & ~self.allowed(g):
            bad = (v & ~self.allowed(g)).bit_length() - 1
            raise GicStateError(f"{where}: bit for interrupt {bad} cannot be set here")
        return v


@dataclass(frozen=True)
class _Entries:
    length: Callable[[Geometry], int]
    allowed: Callable[[Geometry, int], int]

    def dump(self, v: list[int], g: Geometry) -> list[int]:
        return list(v)

    def parse(self, raw, g: Geometry, where: str) -> list[int]:
        out = []
        for i, e in enumerate(_list(raw, self.length(g), where)):
            e = _u32(e, f"{where}[{i}]")
            if e & ~self.allowed(g, i):
                raise GicStateError(f"{where}[{i}] = {e:#x} sets bits outside "
                                    f"{self.allowed(g, i):#x}")
            out.append(e)
        return out


_DIST_RULES = {
    "ctlr": _Scalar(lambda g: GICD_CTLR_MASK),
    "group": _Bitmap(lambda g: g.spi_bits),
    "enabled": _Bitmap(lambda g: g.spi_bits),
    "pending": _Bitmap(lambda g: g.spi_bits),
    "active": _Bitmap(lambda g: g.spi_bits),
    "edge": _Bitmap(lambda g: g.spi_bits),
    "level": _Bitmap(lambda g: g.spi_bits),
    "priority": _Entries(lambda g: g.nirq, lambda g, i: g.prio_mask if i >= NR_PRIVATE else 0),
    "targets": _Entries(lambda g: g.nirq, lambda g, i: g.cpu_mask if i >= NR_PRIVATE else 0),
}
_CPU_RULES = {
    "group": _Scalar(lambda g: 0xFFFF_FFFF),
    "enabled": _Scalar(lambda g: 0xFFFF_FFFF),
    "pending": _Scalar(lambda g: _PPI_BITS),
    "active": _Scalar(lambda g: 0xFFFF_FFFF),
    "edge": _Scalar(lambda g: _PPI_BITS),
    "level": _Scalar(lambda g: _PPI_BITS),
    "priority": _Entries(lambda g: NR_PRIVATE, lambda g, i: g.prio_mask),
    "sgi_sources": _Entries(lambda g: NR_SGIS, lambda g, i: g.cpu_mask),
    "ctlr": _Scalar(lambda g: GICC_CTLR_MASK),
    "pmr": _Scalar(lambda g: g.prio_mask),
    "bpr": _Scalar(lambda g: 7, lambda g: g.min_bpr),
    "abpr": _Scalar(lambda g: 7, lambda g: g.min_bpr + 1),
    "apr": _Entries(lambda g: g.nr_apr, lambda g, i: g.apr_mask(i)),
}
assert list(_DIST_RULES) == [f.name for f in fields(DistState)]
assert list(_CPU_RULES) == [f.name for f in fields(CpuState)]


def dump(g: Geometry, dist: DistState, cpus: list[CpuState]) -> dict:
    """The whole state as plain data (see the module docstring for the layout)."""
    return {
        "version": STATE_VERSION,
        "num_cpus": g.num_cpus, "num_irqs": g.num_irqs, "priority_bits": g.priority_bits,
        "distributor": {k: r.dump(getattr(dist, k), g) for k, r in _DIST_RULES.items()},
        "cpus": [{k: r.dump(getattr(c, k), g) for k, r in _CPU_RULES.items()} for c in cpus],
    }


def parse(g: Geometry, obj) -> tuple[DistState, list[CpuState]]:
    """Validate `obj` (as `dump` wrote it) for a GIC of geometry `g`; GicStateError names the
    first problem. Builds new objects: nothing of a live GIC is touched."""
    if not isinstance(obj, dict):
        raise GicStateError(f"GIC state is a {type(obj).__name__}, not a dict")
    if obj.get("version") != STATE_VERSION:
        raise GicStateError(f"GIC state version {obj.get('version')!r}; this GIC restores "
                            f"version {STATE_VERSION}")
    _keys(obj, ["version", "num_cpus", "num_irqs", "priority_bits", "distributor", "cpus"],
          "GIC state")
    for k in ("num_cpus", "num_irqs", "priority_bits"):
        if obj[k] != getattr(g, k) or isinstance(obj[k], bool):
            raise GicStateError(f"GIC state for {k}={obj[k]!r}; this GIC has "
                                f"{k}={getattr(g, k)}")
    dist = DistState(**_fields(_DIST_RULES, obj["distributor"], g, "distributor"))
    cpus = [CpuState(**_fields(_CPU_RULES, c, g, f"cpus[{i}]"))
            for i, c in enumerate(_list(obj["cpus"], g.num_cpus, "cpus"))]
    for i, c in enumerate(cpus):
        if c.enabled & _SGI_BITS != _SGI_BITS:
            raise GicStateError(f"cpus[{i}].enabled: SGIs are always enabled (bits 0-15 set)")
    return dist, cpus


def _fields(rules: dict, raw, g: Geometry, where: str) -> dict:
    if not isinstance(raw, dict):
        raise GicStateError(f"{where} is a {type(raw).__name__}, not a dict")
    _keys(raw, list(rules), where)
    return {k: r.parse(raw[k], g, f"{where}.{k}") for k, r in rules.items()}


def _keys(raw: dict, expected: list[str], where: str) -> None:
    missing = [k for k in expected if k not in raw]
    extra = sorted(str(k) for k in raw if k not in expected)
    if missing or extra:
        raise GicStateError(f"{where}: missing {missing}, unknown {extra}")


def _list(raw, length: int, where: str) -> list:
    if not isinstance(raw, list):
        raise GicStateError(f"{where} is a {type(raw).__name__}, not a list")
    if len(raw) != length:
        raise GicStateError(f"{where} has {len(raw)} entries, not {length}")
    return raw


def _u32(v, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFF_FFFF:
        raise GicStateError(f"{where} = {v!r} is not a 32-bit unsigned integer")
    return v
