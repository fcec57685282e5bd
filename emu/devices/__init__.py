"""Devices the guest reaches by MMIO (QEMU virt addresses)."""
