"""MMIO: devices on the guest-physical bus and emulation of the trapped access from its syndrome
alone, as KVM does (io_mem_abort / kvm_handle_mmio_return, arch/arm/kvm/mmio.c)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .arch.syndrome import decode_hsr


class Device(Protocol):
    name: str
    size: int

    def read(self, offset: int, size: int) -> int: ...
    def write(self, offset: int, size: int, value: int) -> None: ...


class MmioError(Exception):
    """An MMIO access the hypervisor cannot emulate (reported to the user, not the guest)."""


@dataclass
class Region:
    base: int
    device: Device

    @property
    def end(self) -> int:
        return self.base + self.device.size


class Bus:
    """Guest-physical MMIO regions (KVM's kvm_io_bus + QEMU's memory map for exits)."""

    def __init__(self) -> None:
        self.regions: list[Region] = []
        # Stateful devices reached through system registers, not MMIO (per-vCPU timers and
        # PMUs, the GIC's state): saved and restored with the others.
        self.internal: list = []

    def attach(self, base: int, device: Device) -> None:
        for r in self.regions:
            if base < r.end and r.base < base + device.size:
                raise ValueError(f"{device.name} at {base:#x} overlaps {r.device.name}")
        self.regions.append(Region(base, device))

    def find(self, ipa: int) -> Region | None:
        for r in self.regions:
            if r.base <= ipa < r.end:
                return r
        return None


@dataclass(frozen=True)
class MmioAccess:
    """One emulated access, for statistics and traces."""
    ipa: int
    size: int
    write: bool
    value: int
    device: str


def emulate(bus: Bus, hsr: int, ipa: int, vcpu) -> MmioAccess:
    """Perform the load/store the syndrome describes; writes Rt for loads and skips the
    instruction (PC += 2 or 4 by HSR.IL, ITSTATE advanced: it retires). Needs ISV=1, as KVM
    does."""
    f = decode_hsr(hsr)
    if not f["ISV"]:
        raise MmioError(f"MMIO access at IPA {ipa:#x} by an instruction without a valid "
                        f"syndrome (ISV=0, e.g. LDM/STRD/LDREX/writeback): cannot emulate")
    region = bus.find(ipa)
    if region is None:
        raise MmioError(f"guest access to IPA {ipa:#x} is outside RAM and devices")
    size = 1 << f["SAS"]
    rt = f["SRT"]
    offset = ipa - region.base
    if f["WnR"]:
        value = vcpu.reg(rt) & ((1 << (8 * size)) - 1)
        region.device.write(offset, size, value)
    else:
        value = region.device.read(offset, size) & ((1 << (8 * size)) - 1)
        if f["SSE"] and value & (1 << (8 * size - 1)):
            value -= 1 << (8 * size)
        vcpu.set_reg(rt, value & 0xFFFFFFFF)
    vcpu.skip_instruction(4 if f["IL"] else 2)
    return MmioAccess(ipa, size, bool(f["WnR"]), value & 0xFFFFFFFF, region.device.name)
