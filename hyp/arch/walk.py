"""The stage-2 translation table walk, as the MMU hardware does it (DDI 0406C B3.6, B3.7).

`translate` returns either a `Translation` or a `Fault` value - never raises for a guest
fault. Debug walks (`debug=True`) are identical except that they never touch anything but
the descriptors (the hardware model has no side effects anyway: AF and dirty state are
managed by software on ARMv7), and they record each step for dumps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import descriptors as d
from .descriptors import Prot
from .fault import Access, Fault, FaultType
from .regs import IPA_MAX_BITS, S2Config

DESC_HIGH_MASK = ((1 << 48) - 1) & ~((1 << 40) - 1)    # output address bits [47:40]
_SHIFT = d.LEVEL_SHIFT
_ADDR = d.ADDR_MASK
_AF = d.S2_AF.mask


@dataclass(frozen=True)
class WalkStep:
    level: int
    desc_pa: int
    desc: int


@dataclass
class Translation:
    """A successful stage-2 walk: the leaf that maps the IPA."""
    ipa: int
    pa: int
    level: int
    prot: Prot
    desc: int
    steps: list[WalkStep] = field(default_factory=list)
    desc_pa: int | None = None       # host PA of the leaf descriptor

    @property
    def size(self) -> int:
        return d.LEVEL_SIZE[self.level]

    @property
    def page_pa(self) -> int:
        return self.pa & ~0xFFF


_NEED = {Access.READ: 1, Access.WRITE: 2, Access.FETCH: 5}     # Prot bits an access needs


def allowed(prot: Prot, access: Access) -> bool:
    """Stage-2 permission check; an AArch32 fetch needs read permission and XN clear."""
    need = _NEED[access]
    return (int(prot) & need) == need


def table_index(ipa: int, level: int, cfg: S2Config) -> int:
    """Index into the table at `level`; the start level takes every remaining input bit."""
    shift = d.LEVEL_SHIFT[level]
    top = cfg.input_bits if level == cfg.start_level else shift + 9
    return (ipa >> shift) & ((1 << (top - shift)) - 1)


def translate(mem, cfg: S2Config, ipa: int, access: Access, *,
              record: bool = False, check_perm: bool = True,
              steps: list[WalkStep] | None = None, va: int | None = None) -> Translation | Fault:
    """Walk the stage-2 tables in host memory `mem` for one IPA access (B3.6.6). With
    `record` (or a `steps` list to append to) each descriptor read is kept; a fault carries
    `va`, the access's VA, when given."""
    if steps is None:
        steps = []
    else:
        record = True

    def fault(kind: FaultType, level: int, desc_pa: int | None = None) -> Fault:
        return Fault(type=kind, level=level, access=access, ipa=ipa, va=va, desc_pa=desc_pa)

    if not cfg.valid or ipa >> min(cfg.input_bits, IPA_MAX_BITS):
        return fault(FaultType.TRANSLATION, 1)
    if cfg.bad_vttbr_high:
        return fault(FaultType.ADDRESS_SIZE, 0)
    level = cfg.start_level
    table = cfg.root_pa
    q, base, end = mem.q, mem.base, mem.end
    while True:
        shift = _SHIFT[level]
        top = cfg.input_bits if level == cfg.start_level else shift + 9
        desc_pa = table + 8 * ((ipa >> shift) & ((1 << (top - shift)) - 1))
        if not base <= desc_pa <= end - 8:
            return fault(FaultType.EXTERNAL_WALK, level)
        desc = int(q[(desc_pa - base) >> 3])
        if record:
            steps.append(WalkStep(level, desc_pa, desc))
        if not desc & 1 or (level == 3 and not desc & 2):
            return fault(FaultType.TRANSLATION, level)     # invalid (0b01 at level 3 too)
        if desc & DESC_HIGH_MASK:
            return fault(FaultType.ADDRESS_SIZE, level)
        if desc & 2 and level < 3:
            table = desc & _ADDR
            level += 1
            continue
        if not desc & _AF:
            return fault(FaultType.ACCESS_FLAG, level, desc_pa)
        prot = d.bits_to_prot(desc)
        if check_perm and not allowed(prot, access):
            return fault(FaultType.PERMISSION, level, desc_pa)
        size = 1 << shift
        pa = (desc & _ADDR & ~(size - 1)) | (ipa & (size - 1))
        return Translation(ipa=ipa, pa=pa, level=level, prot=prot, desc=desc, steps=steps,
                           desc_pa=desc_pa)


def lookup(mem, cfg: S2Config, ipa: int) -> Translation | Fault:
    """Side-effect-free debug walk: the leaf for `ipa` whatever its permissions, with steps."""
    return translate(mem, cfg, ipa, Access.READ, record=True, check_perm=False)


def explain(mem, cfg: S2Config, ipa: int) -> list[str]:
    """A per-level account of the walk for `ipa` (debug path: reads descriptors only)."""
    steps: list[WalkStep] = []
    r = translate(mem, cfg, ipa, Access.READ, check_perm=False, steps=steps)
    lines = [f"IPA {ipa:#011x}: VTTBR.BADDR {cfg.root_pa:#x} VMID {cfg.vmid}, "
             f"{cfg.input_bits}-bit IPA, start level {cfg.start_level}"]
    for st in steps:
        lines.append(f"  L{st.level} [{table_index(ipa, st.level, cfg):4d}] "
                     f"@ {st.desc_pa:#012x} = {d.describe(st.desc, st.level)}")
    if isinstance(r, Fault):
        lines.append(f"  -> {r.describe()}")
    else:
        lines.append(f"  -> PA {r.pa:#012x} ({d.LEVEL_SIZE[r.level] >> 10} KiB leaf)")
    return lines
