"""Hypercalls by HVC #0: PSCI 0.2 (ARM DEN 0022) and our SMCCC vendor-specific services."""
from __future__ import annotations

from dataclasses import dataclass

from .vm import GuestMemoryError

PSCI_VERSION = 0x84000000
PSCI_CPU_OFF = 0x84000002
PSCI_SYSTEM_OFF = 0x84000008
PSCI_SYSTEM_RESET = 0x84000009
PSCI_FEATURES = 0x8400000A
PSCI_VERSION_0_2 = 0x00000002
NOT_SUPPORTED = 0xFFFFFFFF          # -1 (SMCCC_RET_NOT_SUPPORTED, PSCI NOT_SUPPORTED)
INVALID_PARAMETER = 0xFFFFFFFD      # -3 (SMCCC_RET_INVALID_PARAMETER)

# SMCCC fast call, SMC32, owning entity 6 = vendor-specific hypervisor service.
S2EMU_TIME_NS = 0x86000001         # -> r0 = low, r1 = high 32 bits of virtual time (ns)
S2EMU_SLEEP_US = 0x86000002        # r1 = microseconds of virtual time to sleep
S2EMU_GET_ARGS = 0x86000010        # r1 = buffer IPA, r2 = length -> r0 = string length

PSCI_IMPLEMENTED = {PSCI_VERSION, PSCI_CPU_OFF, PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET,
                    PSCI_FEATURES}
NAMES = {PSCI_VERSION: "PSCI_VERSION", PSCI_CPU_OFF: "PSCI_CPU_OFF",
         PSCI_SYSTEM_OFF: "PSCI_SYSTEM_OFF", PSCI_SYSTEM_RESET: "PSCI_SYSTEM_RESET",
         PSCI_FEATURES: "PSCI_FEATURES", S2EMU_TIME_NS: "S2EMU_TIME_NS",
         S2EMU_SLEEP_US: "S2EMU_SLEEP_US", S2EMU_GET_ARGS: "S2EMU_GET_ARGS"}


@dataclass(frozen=True)
class HypercallResult:
    name: str
    stop: str | None = None          # "off" / "reset": the VM stops


def handle(vm, vcpu) -> HypercallResult:
    """Dispatch on r0 like KVM's kvm_psci_call / kvm_hvc_call_handler; result in r0 (r1)."""
    fid = vcpu.reg(0)
    name = NAMES.get(fid, f"unknown {fid:#010x}")
    vm.stats[f"hvc {name}"] += 1
    if fid == PSCI_VERSION:
        vcpu.set_reg(0, PSCI_VERSION_0_2)
    elif fid == PSCI_SYSTEM_OFF:
        return HypercallResult(name, stop="off")
    elif fid == PSCI_SYSTEM_RESET:
        return HypercallResult(name, stop="reset")
    elif fid == PSCI_CPU_OFF:
        return HypercallResult(name, stop="off")
    elif fid == PSCI_FEATURES:
        # Only PSCI functions this hypervisor implements (QEMU's psci.c rejects the rest,
        # vendor-specific IDs included).
        vcpu.set_reg(0, 0 if vcpu.reg(1) in PSCI_IMPLEMENTED else NOT_SUPPORTED)
    elif fid == S2EMU_TIME_NS:
        now = vm.clock.now_ns()
        vcpu.set_reg(0, now & 0xFFFFFFFF)
        vcpu.set_reg(1, now >> 32)
    elif fid == S2EMU_SLEEP_US:
        vm.clock.sleep(vcpu.reg(1) * 1000)
        vcpu.set_reg(0, 0)
    elif fid == S2EMU_GET_ARGS:
        # r0 = string length, or INVALID_PARAMETER (nothing written) when r2 is 0 or
        # [r1, r1 + bytes written) is not all writable RAM (KVM's kvm_write_guest refuses
        # read-only memslots).
        buf, length = vcpu.reg(1), vcpu.reg(2)
        data = vm.args.encode()[:max(0, length - 1)] + b"\0"
        if length == 0:
            vcpu.set_reg(0, INVALID_PARAMETER)
        else:
            try:
                vm.write_guest(buf, data)       # marked dirty like any hypervisor write
                vcpu.set_reg(0, len(data) - 1)
            except GuestMemoryError:
                vcpu.set_reg(0, INVALID_PARAMETER)
    else:
        vcpu.set_reg(0, NOT_SUPPORTED)
    return HypercallResult(name)
