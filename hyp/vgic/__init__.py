"""The hypervisor's virtual GICv2 (ARM IHI 0048B), as KVM's virt/kvm/arm/vgic: `Gic` holds the
state and the IRQ/FIQ output of each CPU interface; `Gic.distributor` and `Gic.cpu_interface`
are the two MMIO frames (QEMU virt: 0x08000000 and 0x08010000). Pure Python."""
from .gic import QEMU_VIRT_IRQS, Gic, Listener
from .regs import GICC_SIZE, GICD_SIZE, VIRT_GICC_BASE, VIRT_GICD_BASE
from .state import STATE_VERSION, GicStateError

__all__ = ["Gic", "GicStateError", "Listener", "QEMU_VIRT_IRQS", "STATE_VERSION",
           "GICD_SIZE", "GICC_SIZE", "VIRT_GICD_BASE", "VIRT_GICC_BASE"]
