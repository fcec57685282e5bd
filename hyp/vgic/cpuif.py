"""The CPU interface frame (GICC_*, IHI 0048B 4.4): one per vCPU, all at the same address
(each CPU reaches its own), word access only.

Without the Security Extensions but with interrupt grouping (every GICv2 has it, 3.4):
GICC_ABPR is the Group 1 binary point (used while GICC_CTLR.CBPR is clear), GICC_AIAR,
GICC_AEOIR and GICC_AHPPIR are the Group 1 versions of GICC_IAR, GICC_EOIR and GICC_HPPIR
(a Group 0 interrupt reads 1023 there; an AEOIR write for one is ignored), and GICC_NSAPRn
(Security Extensions only) is RAZ/WI. GICC_APRn use the recommended layout (4.4.12): bit k
of the register set stands for group priority k << (min BPR + 1); registers past the
implemented levels are RAZ/WI. Write-only registers (GICC_EOIR, GICC_AEOIR, GICC_DIR) read
as zero; read-only ones ignore writes; reserved offsets are RAZ/WI."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .regs import (GICC_ABPR, GICC_AEOIR, GICC_AHPPIR, GICC_AIAR, GICC_APR, GICC_BPR,
                   GICC_BPR_BINARYPOINT, GICC_CTLR, GICC_CTLR_MASK, GICC_DIR, GICC_EOIR,
                   GICC_HPPIR, GICC_IAR, GICC_IIDR, GICC_IIDR_VALUE, GICC_PMR, GICC_RPR,
                   GICC_SIZE)

if TYPE_CHECKING:
    from .gic import Gic


class CpuInterface:
    """GICC: `mmio_read(cpu, offset, size)` / `mmio_write(...)` on CPU `cpu`'s interface."""

    name = "gicc"
    size = GICC_SIZE

    def __init__(self, gic: Gic) -> None:
        self.gic = gic

    def mmio_read(self, cpu: int, offset: int, size: int) -> int:
        if not self._permitted(cpu, offset, size):
            return 0
        gic = self.gic
        c = gic.cpus[cpu]
        if offset == GICC_CTLR:
            return c.ctlr
        if offset == GICC_PMR:
            return c.pmr
        if offset == GICC_BPR:
            return c.bpr
        if offset == GICC_IAR:
            return gic.acknowledge(cpu)
        if offset == GICC_RPR:
            return gic.running_priority(cpu)
        if offset == GICC_HPPIR:
            return gic.highest_pending(cpu)
        if offset == GICC_ABPR:
            return c.abpr
        if offset == GICC_AIAR:
            return gic.acknowledge(cpu, alias=True)
        if offset == GICC_AHPPIR:
            return gic.highest_pending(cpu, alias=True)
        if GICC_APR <= offset < GICC_APR + 4 * len(c.apr):
            return c.apr[(offset - GICC_APR) // 4]
        if offset == GICC_IIDR:
            return GICC_IIDR_VALUE
        return 0

    def mmio_write(self, cpu: int, offset: int, size: int, value: int) -> None:
        if not self._permitted(cpu, offset, size):
            return
        gic = self.gic
        g = gic.geometry
        c = gic.cpus[cpu]
        value &= 0xFFFF_FFFF
        if offset == GICC_CTLR:
            c.ctlr = value & GICC_CTLR_MASK
        elif offset == GICC_PMR:
            c.pmr = value & g.prio_mask
        elif offset == GICC_BPR:       # below the minimum sets the minimum (4.4.3)
            c.bpr = max(GICC_BPR_BINARYPOINT.get(value), g.min_bpr)
        elif offset == GICC_ABPR:
            c.abpr = max(GICC_BPR_BINARYPOINT.get(value), g.min_bpr + 1)
        elif offset == GICC_EOIR:
            gic.end_of_interrupt(cpu, value)
            return
        elif offset == GICC_AEOIR:
            gic.end_of_interrupt(cpu, value, alias=True)
            return
        elif offset == GICC_DIR:
            gic.deactivate(cpu, value)
            return
        elif GICC_APR <= offset < GICC_APR + 4 * len(c.apr):
            n = (offset - GICC_APR) // 4
            c.apr[n] = value & g.apr_mask(n)
        else:
            return
        gic._update(cpu)

    def _permitted(self, cpu: int, offset: int, size: int) -> bool:
        if not 0 <= cpu < self.gic.geometry.num_cpus:
            raise ValueError(f"GICC access by CPU {cpu}: the GIC has "
                             f"{self.gic.geometry.num_cpus} CPU interfaces")
        ok = size == 4 and offset % 4 == 0 and 0 <= offset < self.size
        if not ok:
            self.gic.bad_accesses += 1
        return ok
