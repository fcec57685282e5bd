"""The GICv2 (ARM IHI 0048B) that the hypervisor gives its guests, as KVM's vgic
(virt/kvm/arm/vgic): a distributor, one CPU interface per vCPU, and the IRQ and FIQ output of
each CPU interface, which the machine mirrors into HCR.VI (and HCR.VF).

One object holds the state (`hyp.vgic.state`); the two MMIO frames (`distributor`,
`cpu_interface`) decode register accesses into it; every change ends in `_update`, which
recomputes each CPU interface's outputs from the state alone and tells the listeners what
changed (QEMU's gic_update, STYLE "a device is its state").

Interrupt model (3.2): an interrupt is inactive, pending, active, or active and pending.
- Pending state: a latch set by a rising edge (edge-triggered) or by GICD_ISPENDRn, cleared
  by an acknowledge or GICD_ICPENDRn; a level-sensitive interrupt is also pending for as long
  as its input line is asserted (3.2, "General handling of interrupts").
- SGIs are pending per (target, source) pair (GICD_SPENDSGIRn) and active per target; an
  acknowledge takes the lowest-numbered source and leaves the others pending.
- SPIs are pending and active once for all CPUs (1-N): whichever targeted CPU acknowledges
  one first makes it active for all.
- The highest priority pending interrupt (HPPI) of a CPU interface is the enabled, pending,
  not active interrupt that targets it, whose group is enabled in GICD_CTLR and GICC_CTLR,
  with the lowest priority value, then the lowest ID (a tie is IMPLEMENTATION DEFINED).
- It is signalled, and GICC_IAR acknowledges it, when its priority is higher than GICC_PMR and
  its group priority (GICC_BPR/ABPR) is higher than the running priority (3.3).
- Group 0 interrupts are signalled as FIQ when GICC_CTLR.FIQEn is set, otherwise as IRQ;
  Group 1 interrupts always as IRQ (no Security Extensions: 3.4).

Where QEMU's arm_gic (hw/intc/arm_gic.c) differs, this follows the spec: its HPPI may be an
active-and-pending interrupt (here only inactive ones are forwarded); it compares the whole
priority, not the group priority, with the running priority (the same except across groups
with different binary points); it implements 8 priority bits, no GICC_AIAR/AEOIR/AHPPIR, and
answers unknown CPU interface offsets with a bus error (here RAZ/WI)."""
from __future__ import annotations

from typing import Callable

from .cpuif import CpuInterface
from .distributor import Distributor
from .regs import (GICC_CTLR_ACKCTL, GICC_CTLR_CBPR, GICC_CTLR_EOIMODE, GICC_CTLR_FIQEN,
                   IDLE_PRIORITY, NR_PRIVATE, NR_SGIS, SPURIOUS, SPURIOUS_GRP1)
from .state import STATE_VERSION, Geometry, dump, parse, reset_cpu, reset_dist

# listener(cpu, irq, fiq): the IRQ and FIQ outputs of CPU interface `cpu` after a change.
Listener = Callable[[int, bool, bool], None]

QEMU_VIRT_IRQS = 288          # the virt board's GIC: 256 SPIs + 32 private (hw/arm/virt.c)


class Gic:
    """A GICv2 without Security Extensions for `num_cpus` CPU interfaces and interrupt IDs
    0..num_irqs-1 (a multiple of 32), with `priority_bits` implemented priority bits.

    Five priority bits (32 levels) by default, as the GIC-400 of a Cortex-A15 cluster and
    KVM's vgic-v2 (VGIC_PRI_BITS) implement; 8 is the most (3.3). The unimplemented low
    bits of GICD_IPRIORITYRn and GICC_PMR read as zero and ignore writes."""

    name = "gic"
    state_version = STATE_VERSION

    def __init__(self, num_cpus: int, num_irqs: int = QEMU_VIRT_IRQS,
                 priority_bits: int = 5) -> None:
        self.geometry = Geometry(num_cpus, num_irqs, priority_bits)
        self.distributor = Distributor(self)
        self.cpu_interface = CpuInterface(self)
        self.bad_accesses = 0           # accesses of a size or alignment the GIC forbids
        self._listeners: list[Listener] = []
        self._out = [(False, False)] * num_cpus
        self._told = list(self._out)      # the outputs the listeners last heard
        self.reset()

    # ---- the machine's side ---------------------------------------------------------------
    def reset(self) -> None:
        """Every register at its reset value, every input line low (4.3, 4.4)."""
        g = self.geometry
        self.dist = reset_dist(g)
        self.cpus = [reset_cpu(g) for _ in range(g.num_cpus)]
        self._routes()
        self._update()

    def set_line(self, irq: int, level: bool, cpu: int | None = None) -> None:
        """Drive the input line of SPI `irq` (32..), or of PPI `irq` (16-31) of CPU `cpu`."""
        g = self.geometry
        if not NR_SGIS <= irq < g.nirq:
            raise ValueError(f"interrupt {irq} has no input line (PPIs 16-31, SPIs 32-"
                             f"{g.nirq - 1}; SGIs are sent with send_sgi)")
        if irq < NR_PRIVATE:
            self._check_cpu(cpu, f"PPI {irq}")
            st = self.cpus[cpu]
        elif cpu is not None:
            raise ValueError(f"SPI {irq} is shared: its line has no CPU")
        else:
            st = self.dist
        bit = 1 << irq
        if bool(st.level & bit) == bool(level):
            return
        if level:
            st.level |= bit
            if st.edge & bit:                 # a rising edge latches an edge-triggered one
                st.pending |= bit
        else:
            st.level &= ~bit
        self._update(cpu)

    def send_sgi(self, source: int, sgi: int, targets: int) -> None:
        """Make SGI `sgi` pending from CPU `source` on every CPU in the bitmask `targets`
        (what a GICD_SGIR write by `source` with a target list does)."""
        self._check_cpu(source, "source")
        if not 0 <= sgi < NR_SGIS:
            raise ValueError(f"SGI {sgi}: SGIs are 0-15")
        if targets & ~self.geometry.cpu_mask or targets < 0:
            raise ValueError(f"SGI targets {targets:#x} name CPUs this GIC lacks")
        self._raise_sgi(source, sgi, targets)

    def irq_pending(self, cpu: int) -> bool:
        """The IRQ output of CPU interface `cpu` (the machine's HCR.VI)."""
        return self._out[cpu][0]

    def fiq_pending(self, cpu: int) -> bool:
        """The FIQ output of CPU interface `cpu` (HCR.VF; only Group 0 with FIQEn)."""
        return self._out[cpu][1]

    def add_listener(self, fn: Listener) -> None:
        """Call fn(cpu, irq, fiq) whenever the outputs of a CPU interface change. It runs
        synchronously inside the call that made the change (set_line, send_sgi, an MMIO
        access, reset, load_state), once per changed CPU in CPU order, after the GIC's state
        is final: it may read the GIC and may call back into it."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        self._listeners.remove(fn)

    # ---- migration --------------------------------------------------------------------------
    def save_state(self) -> dict:
        """Everything (hyp.vgic.state.dump): registers, pending/active bits, line levels."""
        return dump(self.geometry, self.dist, self.cpus)

    def load_state(self, state) -> None:
        """Restore `save_state`'s data; GicStateError (a ValueError) names the first
        problem and leaves this GIC unchanged. On success every listener is told every CPU's
        outputs, changed or not, so a destination re-asserts its lines."""
        self.dist, self.cpus = parse(self.geometry, state)
        self._routes()
        self._update(notify_all=True)

    save = save_state                 # the device protocol of hyp.migration.state
    load = load_state

    # ---- CPU interface operations (4.4) -------------------------------------------------------
    def acknowledge(self, cpu: int, alias: bool = False) -> int:
        """A read of GICC_IAR (GICC_AIAR with `alias`: Group 1 only), 4.4.4 / 4.4.9."""
        c = self.cpus[cpu]
        irq = self._hppi(cpu)
        if irq is None or not self._preempts(cpu, irq):
            return SPURIOUS
        group1 = self._group1(cpu, irq)
        if alias and not group1:
            return SPURIOUS
        if not alias and group1 and not c.ctlr & GICC_CTLR_ACKCTL:
            return SPURIOUS_GRP1
        bit = 1 << irq
        value = irq
        if irq < NR_SGIS:
            src = _lowest(c.sgi_sources[irq])
            c.sgi_sources[irq] &= ~(1 << src)
            value |= src << 10
        if irq < NR_PRIVATE:
            c.pending &= ~bit
            c.active |= bit
        else:
            self.dist.pending &= ~bit
            self.dist.active |= bit
        level = self._group_priority(cpu, irq) >> (self.geometry.min_bpr + 1)
        c.apr[level // 32] |= 1 << (level % 32)
        self._update(cpu if irq < NR_PRIVATE else None)
        return value

    def highest_pending(self, cpu: int, alias: bool = False) -> int:
        """A read of GICC_HPPIR (GICC_AHPPIR with `alias`), 4.4.7 / 4.4.11: the HPPI without
        regard to GICC_PMR or the running priority."""
        irq = self._hppi(cpu)
        if irq is None:
            return SPURIOUS
        group1 = self._group1(cpu, irq)
        if alias and not group1:
            return SPURIOUS
        if not alias and group1 and not self.cpus[cpu].ctlr & GICC_CTLR_ACKCTL:
            return SPURIOUS_GRP1
        if irq < NR_SGIS:
            return irq | _lowest(self.cpus[cpu].sgi_sources[irq]) << 10
        return irq

    def end_of_interrupt(self, cpu: int, value: int, alias: bool = False) -> None:
        """A write of GICC_EOIR (GICC_AEOIR with `alias`), 4.4.5 / 4.4.10: drop the running
        priority (clear the highest active priority bit: writes must nest with the IAR
        reads, 3.3 "Preemption") and, unless GICC_CTLR.EOImode, deactivate the interrupt.
        Ignored: spurious or unimplemented IDs, an EOI with nothing acknowledged, a Group 0
        ID on GICC_AEOIR. A Group 1 ID on GICC_EOIR with AckCtl clear (UNPREDICTABLE) is
        completed, as QEMU does."""
        c = self.cpus[cpu]
        irq = value & 0x3FF
        if irq >= self.geometry.nirq or not any(c.apr):
            return
        if alias and not self._group1(cpu, irq):
            return
        for n, a in enumerate(c.apr):
            if a:
                c.apr[n] = a & (a - 1)
                break
        if not c.ctlr & GICC_CTLR_EOIMODE:
            self._deactivate(cpu, irq)
            self._update(cpu if irq < NR_PRIVATE else None)
        else:
            self._update(cpu)

    def deactivate(self, cpu: int, value: int) -> None:
        """A write of GICC_DIR (4.4.15): deactivate when GICC_CTLR.EOImode is set; with it
        clear the write is UNPREDICTABLE and ignored here (as QEMU)."""
        irq = value & 0x3FF
        if self.cpus[cpu].ctlr & GICC_CTLR_EOIMODE and irq < self.geometry.nirq:
            self._deactivate(cpu, irq)
            self._update(cpu if irq < NR_PRIVATE else None)

    def running_priority(self, cpu: int) -> int:
        """GICC_RPR (4.4.6): the group priority of the highest active priority bit, or the
        idle priority 0xFF."""
        for n, a in enumerate(self.cpus[cpu].apr):
            if a:
                return (32 * n + _lowest(a)) << (self.geometry.min_bpr + 1)
        return IDLE_PRIORITY

    # ---- internals ------------------------------------------------------------------------
    def priority(self, cpu: int, irq: int) -> int:
        return self.cpus[cpu].priority[irq] if irq < NR_PRIVATE else self.dist.priority[irq]

    def pending_bits(self, cpu: int) -> int:
        """Bitmap of the interrupts pending for CPU `cpu` (SPIs: whoever they target)."""
        c, d = self.cpus[cpu], self.dist
        sgis = 0
        for n, s in enumerate(c.sgi_sources):
            if s:
                sgis |= 1 << n
        return (d.pending | (d.level & ~d.edge)) | c.pending | (c.level & ~c.edge) | sgis

    def _group1(self, cpu: int, irq: int) -> bool:
        return bool((self.cpus[cpu].group | self.dist.group) >> irq & 1)

    def _group_priority(self, cpu: int, irq: int) -> int:
        """The priority's group field (3.3, "Priority grouping"): bits [7:BPR+1] by
        GICC_BPR, or bits [7:ABPR] by GICC_ABPR for Group 1 when GICC_CTLR.CBPR is clear."""
        c = self.cpus[cpu]
        if self._group1(cpu, irq) and not c.ctlr & GICC_CTLR_CBPR:
            bpr = c.abpr - 1
        else:
            bpr = c.bpr
        return self.priority(cpu, irq) & (0xFF << (bpr + 1)) & 0xFF

    def _preempts(self, cpu: int, irq: int) -> bool:
        return (self.priority(cpu, irq) < self.cpus[cpu].pmr
                and self._group_priority(cpu, irq) < self.running_priority(cpu))

    def _hppi(self, cpu: int) -> int | None:
        c, d = self.cpus[cpu], self.dist
        groups = d.ctlr & c.ctlr & 3
        if not groups:
            return None
        route = self._route[cpu]
        cand = (self.pending_bits(cpu) & ((d.enabled & route) | c.enabled)
                & ~(d.active | c.active))
        if groups != 3:
            grp = d.group | c.group
            cand &= grp if groups == 2 else ~grp
        best, best_prio = None, 0x100
        while cand:
            low = cand & -cand
            irq = low.bit_length() - 1
            cand ^= low
            prio = c.priority[irq] if irq < NR_PRIVATE else d.priority[irq]
            if prio < best_prio:
                best, best_prio = irq, prio
        return best

    def _deactivate(self, cpu: int, irq: int) -> None:
        if irq < NR_PRIVATE:
            self.cpus[cpu].active &= ~(1 << irq)
        else:
            self.dist.active &= ~(1 << irq)

    def _raise_sgi(self, source: int, sgi: int, targets: int) -> None:
        for t in range(self.geometry.num_cpus):
            if targets >> t & 1:
                self.cpus[t].sgi_sources[sgi] |= 1 << source
        self._update()

    def _routes(self) -> None:
        """Per CPU, the SPIs whose GICD_ITARGETSRn name it (a uniprocessor GIC routes all)."""
        g = self.geometry
        if g.num_cpus == 1:
            self._route = [g.spi_bits]
            return
        self._route = [0] * g.num_cpus
        for irq in range(NR_PRIVATE, g.nirq):
            self._retarget(irq, 0, self.dist.targets[irq])

    def _retarget(self, irq: int, old: int, new: int) -> None:
        for cpu in range(self.geometry.num_cpus):
            if (old ^ new) >> cpu & 1:
                self._route[cpu] ^= 1 << irq

    def _update(self, only: int | None = None, notify_all: bool = False) -> None:
        """Recompute the CPU interfaces' outputs (only CPU `only`'s when nothing shared
        changed); tell the listeners what changed since they were last told (a listener
        that re-enters the GIC is told first)."""
        for cpu in range(len(self.cpus)) if only is None else (only,):
            self._out[cpu] = self._output(cpu)
        for cpu in range(len(self.cpus)):
            lines = self._out[cpu]            # a listener may have changed it meanwhile
            if notify_all or lines != self._told[cpu]:
                self._told[cpu] = lines
                for fn in list(self._listeners):
                    fn(cpu, *lines)

    def _output(self, cpu: int) -> tuple[bool, bool]:
        """(IRQ, FIQ) of CPU interface `cpu`."""
        irq = self._hppi(cpu)
        if irq is None or not self._preempts(cpu, irq):
            return False, False
        if not self._group1(cpu, irq) and self.cpus[cpu].ctlr & GICC_CTLR_FIQEN:
            return False, True
        return True, False

    def _check_cpu(self, cpu, what: str) -> None:
        if not isinstance(cpu, int) or not 0 <= cpu < self.geometry.num_cpus:
            raise ValueError(f"{what}: CPU {cpu!r} is not one of this GIC's "
                             f"{self.geometry.num_cpus} CPU interfaces")


def _lowest(mask: int) -> int:
    return (mask & -mask).bit_length() - 1
