"""The distributor frame (GICD_*, IHI 0048B 4.3): register decode onto the GIC's state.

Banked per CPU interface (4.3, "banking"): the SGI/PPI words of GICD_IGROUPR0,
GICD_I[SC]ENABLER0, GICD_I[SC]PENDR0, GICD_I[SC]ACTIVER0, GICD_IPRIORITYR0-7,
GICD_ITARGETSR0-7, GICD_ICFGR1 and GICD_[CS]PENDSGIRn. Choices where the spec leaves room:
- SGIs are always enabled: GICD_ISENABLER0[15:0] RAO/WI (IMPLEMENTATION DEFINED; as QEMU);
- GICD_ISPENDR0/ICPENDR0 bits of SGIs ignore writes (4.3.7: use GICD_[CS]PENDSGIRn);
- GICD_ICFGR0 (SGIs) reads 0xAAAAAAAA and ignores writes; the PPIs' Int_config[1] is
  programmable (IMPLEMENTATION DEFINED, 4.3.13), level-sensitive at reset, as QEMU (KVM
  keeps PPIs level and read-only);
- GICD_ITARGETSRn are RAZ/WI with one CPU interface (4.3.12); with several, SGI/PPI targets
  read the accessing CPU's bit and ignore writes, and bits of absent CPUs are RAZ/WI;
- GICD_SGIR with TargetListFilter 0b11 (reserved) is ignored; target-list bits of absent
  CPUs are ignored;
- GICD_ISACTIVERn/ICACTIVERn set and clear the active state without touching the running
  priority (4.3.9, 4.3.10; older QEMU arm_gic ignored these writes);
- unimplemented interrupts, reserved and IMPLEMENTATION DEFINED ranges, GICD_NSACRn (Security
  Extensions only) read as zero and ignore writes; GICD_SGIR reads as zero."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .regs import (BIT_BLOCK, GICD_CPENDSGIR, GICD_CTLR, GICD_CTLR_MASK, GICD_ICFGR, GICD_ID,
                   GICD_ID_VALUES, GICD_IGROUPR, GICD_IIDR, GICD_IIDR_VALUE, GICD_IPRIORITYR,
                   GICD_ISACTIVER, GICD_ISENABLER, GICD_ISPENDR, GICD_ITARGETSR, GICD_SGIR,
                   GICD_SGIR_CPUTARGETLIST, GICD_SGIR_SGIINTID, GICD_SGIR_TARGETLISTFILTER,
                   GICD_SIZE, GICD_SPENDSGIR, GICD_TYPER, GICD_TYPER_CPUNUMBER,
                   GICD_TYPER_ITLINESNUMBER, ICFGR_SGI_VALUE, NR_PRIVATE, NR_SGIS,
                   SGIR_FILTER_LIST, SGIR_FILTER_OTHERS, SGIR_FILTER_SELF)

if TYPE_CHECKING:
    from .gic import Gic

_SGI_BITS = (1 << NR_SGIS) - 1
# Registers that also take single bytes (4.1, "GIC register access"): a byte per interrupt or
# per SGI.
_BYTE_RANGES = ((GICD_IPRIORITYR, GICD_ITARGETSR), (GICD_ITARGETSR, GICD_ICFGR),
                (GICD_CPENDSGIR, GICD_SPENDSGIR + NR_SGIS))


class Distributor:
    """GICD: `mmio_read(cpu, offset, size)` / `mmio_write(...)` by CPU interface `cpu`."""

    name = "gicd"
    size = GICD_SIZE

    def __init__(self, gic: Gic) -> None:
        self.gic = gic

    def mmio_read(self, cpu: int, offset: int, size: int) -> int:
        if not self._permitted(cpu, offset, size):
            return 0
        if size == 1:
            return self._read_byte(cpu, offset)
        if any(lo <= offset < hi for lo, hi in _BYTE_RANGES):
            return sum(self._read_byte(cpu, offset + i) << (8 * i) for i in range(4))
        return self._read_word(cpu, offset)

    def mmio_write(self, cpu: int, offset: int, size: int, value: int) -> None:
        if not self._permitted(cpu, offset, size):
            return
        value &= (1 << (8 * size)) - 1
        if size == 1:
            self._write_byte(cpu, offset, value)
        elif any(lo <= offset < hi for lo, hi in _BYTE_RANGES):
            for i in range(4):
                self._write_byte(cpu, offset + i, (value >> (8 * i)) & 0xFF)
        else:
            self._write_word(cpu, offset, value)
        self.gic._update()

    def _permitted(self, cpu: int, offset: int, size: int) -> bool:
        if not 0 <= cpu < self.gic.geometry.num_cpus:
            raise ValueError(f"GICD access by CPU {cpu}: the GIC has "
                             f"{self.gic.geometry.num_cpus} CPU interfaces")
        ok = 0 <= offset < self.size and (
            (size == 4 and offset % 4 == 0)
            or (size == 1 and any(lo <= offset < hi for lo, hi in _BYTE_RANGES)))
        if not ok:
            self.gic.bad_accesses += 1
        return ok

    # ---- bit-per-interrupt registers (4.3.4-4.3.10) -------------------------------------------
    def _implemented(self, n: int) -> int:
        """Mask of the implemented interrupts of word n (IDs 32n..32n+31)."""
        return (self.gic.geometry.spi_bits >> (32 * n)) & 0xFFFF_FFFF if n else 0xFFFF_FFFF

    def _bits(self, cpu: int, name: str, n: int) -> int:
        if n == 0:
            return getattr(self.gic.cpus[cpu], name)
        return (getattr(self.gic.dist, name) >> (32 * n)) & self._implemented(n)

    def _change_bits(self, cpu: int, name: str, n: int, set_: int, clear: int) -> None:
        st = self.gic.cpus[cpu] if n == 0 else self.gic.dist
        set_ &= self._implemented(n)
        clear &= self._implemented(n)
        setattr(st, name, (getattr(st, name) | set_ << (32 * n)) & ~(clear << (32 * n)))

    def _pending_word(self, cpu: int, n: int) -> int:
        return (self.gic.pending_bits(cpu) >> (32 * n)) & self._implemented(n)

    # ---- word registers -----------------------------------------------------------------------
    def _read_word(self, cpu: int, offset: int) -> int:
        g = self.gic.geometry
        block, n = (offset - GICD_IGROUPR) // BIT_BLOCK, (offset % BIT_BLOCK) // 4
        if offset == GICD_CTLR:
            return self.gic.dist.ctlr
        if offset == GICD_TYPER:
            return (GICD_TYPER_ITLINESNUMBER.put(g.num_irqs // 32 - 1)
                    | GICD_TYPER_CPUNUMBER.put(g.num_cpus - 1))
        if offset == GICD_IIDR:
            return GICD_IIDR_VALUE
        if GICD_IGROUPR <= offset < GICD_IPRIORITYR:
            if offset >= GICD_ISPENDR and offset < GICD_ISACTIVER:
                return self._pending_word(cpu, n)
            name = {0: "group", 1: "enabled", 2: "enabled", 5: "active", 6: "active"}[block]
            return self._bits(cpu, name, n)
        if GICD_ICFGR <= offset < GICD_ICFGR + 0x100:
            return self._read_icfgr(cpu, (offset - GICD_ICFGR) // 4)
        if GICD_ID <= offset < GICD_SIZE:
            return GICD_ID_VALUES[(offset - GICD_ID) // 4]
        return 0

    def _write_word(self, cpu: int, offset: int, value: int) -> None:
        block, n = (offset - GICD_IGROUPR) // BIT_BLOCK, (offset % BIT_BLOCK) // 4
        if offset == GICD_CTLR:
            self.gic.dist.ctlr = value & GICD_CTLR_MASK
        elif GICD_IGROUPR <= offset < GICD_ISENABLER:
            self._change_bits(cpu, "group", n, value, ~value)
        elif GICD_ISENABLER <= offset < GICD_IPRIORITYR:
            name = ("enabled", "pending", "active")[(block - 1) // 2]
            if n == 0 and name != "active":
                value &= ~_SGI_BITS          # SGI enables are RAO/WI, SGI pending bits WI
            if block % 2:                    # GICD_IS*: set
                self._change_bits(cpu, name, n, value, 0)
            else:                            # GICD_IC*: clear
                self._change_bits(cpu, name, n, 0, value)
        elif GICD_ICFGR <= offset < GICD_ICFGR + 0x100:
            self._write_icfgr(cpu, (offset - GICD_ICFGR) // 4, value)
        elif offset == GICD_SGIR:
            self._write_sgir(cpu, value)

    def _read_icfgr(self, cpu: int, n: int) -> int:
        """GICD_ICFGR<n>: Int_config[1] of interrupt 16n+i at bit 2i+1 (4.3.13)."""
        if n == 0:
            return ICFGR_SGI_VALUE
        edge = self._bits(cpu, "edge", n // 2) >> (16 * (n % 2))
        return sum(2 << (2 * i) for i in range(16) if edge >> i & 1)

    def _write_icfgr(self, cpu: int, n: int, value: int) -> None:
        if n == 0:
            return
        edge = sum(1 << i for i in range(16) if value >> (2 * i + 1) & 1) << (16 * (n % 2))
        field = 0xFFFF << (16 * (n % 2))
        self._change_bits(cpu, "edge", n // 2, edge, field & ~edge)

    def _write_sgir(self, cpu: int, value: int) -> None:
        """GICD_SGIR (4.3.15): TargetListFilter picks the list, the self bit, or the others."""
        g = self.gic.geometry
        filt = GICD_SGIR_TARGETLISTFILTER.get(value)
        if filt == SGIR_FILTER_LIST:
            targets = GICD_SGIR_CPUTARGETLIST.get(value) & g.cpu_mask
        elif filt == SGIR_FILTER_OTHERS:
            targets = g.cpu_mask & ~(1 << cpu)
        elif filt == SGIR_FILTER_SELF:
            targets = 1 << cpu
        else:
            return
        self.gic._raise_sgi(cpu, GICD_SGIR_SGIINTID.get(value), targets)

    # ---- byte registers (4.3.11, 4.3.12, 4.3.16, 4.3.17) ---------------------------------------
    def _read_byte(self, cpu: int, offset: int) -> int:
        g = self.gic.geometry
        if GICD_IPRIORITYR <= offset < GICD_ITARGETSR:
            irq = offset - GICD_IPRIORITYR
            return self.gic.priority(cpu, irq) if irq < g.nirq else 0
        if GICD_ITARGETSR <= offset < GICD_ICFGR:
            irq = offset - GICD_ITARGETSR
            if g.num_cpus == 1 or irq >= g.nirq:
                return 0
            return 1 << cpu if irq < NR_PRIVATE else self.gic.dist.targets[irq]
        sgi = (offset - GICD_CPENDSGIR) % NR_SGIS
        return self.gic.cpus[cpu].sgi_sources[sgi]

    def _write_byte(self, cpu: int, offset: int, value: int) -> None:
        g = self.gic.geometry
        if GICD_IPRIORITYR <= offset < GICD_ITARGETSR:
            irq = offset - GICD_IPRIORITYR
            if irq < NR_PRIVATE:
                self.gic.cpus[cpu].priority[irq] = value & g.prio_mask
            elif irq < g.nirq:
                self.gic.dist.priority[irq] = value & g.prio_mask
        elif GICD_ITARGETSR <= offset < GICD_ICFGR:
            irq = offset - GICD_ITARGETSR
            if g.num_cpus > 1 and NR_PRIVATE <= irq < g.nirq:
                old = self.gic.dist.targets[irq]
                self.gic.dist.targets[irq] = value & g.cpu_mask
                self.gic._retarget(irq, old, value & g.cpu_mask)
        else:
            sgi = (offset - GICD_CPENDSGIR) % NR_SGIS
            sources = self.gic.cpus[cpu].sgi_sources
            if offset < GICD_SPENDSGIR:
                sources[sgi] &= ~value
            else:
                sources[sgi] |= value & g.cpu_mask
