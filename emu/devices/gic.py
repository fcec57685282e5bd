"""The GICv2 (hyp.vgic) on the board's MMIO bus: the distributor at 0x08000000 and the CPU
interface at 0x08010000, as on QEMU's virt (hw/arm/virt.c). An access is made by the vCPU
the machine is running (`current()`), which selects the banked registers; the GIC's IRQ/FIQ
outputs go to that vCPU's HCR.VI/VF through `connect`."""
from __future__ import annotations

from typing import Callable

from hyp.vgic.gic import Gic

GICD_BASE = 0x0800_0000
GICC_BASE = 0x0801_0000
TIMER_PPI = 30                # the EL1 non-secure physical timer (virt's PPI 14)
UART_SPI = 33                 # the PL011 (virt's SPI 1)


class GicFrame:
    """One frame of the GIC as a bus device (hyp.mmio.Device)."""

    def __init__(self, frame, current: Callable[[], int]) -> None:
        self.frame = frame
        self.name = frame.name
        self.size = frame.size
        self.current = current

    def read(self, offset: int, size: int) -> int:
        return self.frame.mmio_read(self.current(), offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.frame.mmio_write(self.current(), offset, size, value)


class GicState:
    """The GIC's whole state for migration (hyp.migration.state devices)."""

    def __init__(self, gic: Gic) -> None:
        self.gic = gic
        self.name = gic.name
        self.state_version = gic.state_version

    def save(self) -> dict:
        return self.gic.save_state()

    def load(self, state) -> None:
        self.gic.load_state(state)


def attach(vm, num_cpus: int, current: Callable[[], int], cpus) -> Gic:
    """A GIC for `num_cpus` vCPUs on `vm`'s bus, its outputs wired to `cpus[i].set_virq`."""
    gic = Gic(num_cpus)
    vm.attach(GICD_BASE, GicFrame(gic.distributor, current))
    vm.attach(GICC_BASE, GicFrame(gic.cpu_interface, current))
    vm.bus.internal.append(GicState(gic))
    gic.add_listener(lambda cpu, irq, fiq: cpus[cpu].set_virq(irq, fiq))
    return gic
