"""Hypercalls by HVC #0: PSCI 1.1 (ARM DEN 0022D; the power decisions are hyp.psci's) and our
SMCCC vendor-specific services."""
from __future__ import annotations

from dataclasses import dataclass

from . import psci
from .vm import GuestMemoryError

PSCI_VERSION = 0x84000000
PSCI_CPU_SUSPEND = 0x84000001
PSCI_CPU_OFF = 0x84000002
PSCI_CPU_ON = 0x84000003
PSCI_AFFINITY_INFO = 0x84000004
PSCI_MIGRATE_INFO_TYPE = 0x84000006
PSCI_SYSTEM_OFF = 0x84000008
PSCI_SYSTEM_RESET = 0x84000009
PSCI_FEATURES = 0x8400000A
PSCI_VERSION_1_1 = 0x00010001          # what QEMU 7.2's virt answers
NOT_SUPPORTED = 0xFFFFFFFF          # -1 (SMCCC_RET_NOT_SUPPORTED, PSCI NOT_SUPPORTED)
INVALID_PARAMETER = 0xFFFFFFFD      # -3 (SMCCC_RET_INVALID_PARAMETER)

# SMCCC fast call, SMC32, owning entity 6 = vendor-specific hypervisor service.
S2EMU_TIME_NS = 0x86000001         # -> r0 = low, r1 = high 32 bits of virtual time (ns)
S2EMU_SLEEP_US = 0x86000002        # r1 = microseconds of virtual time to sleep
S2EMU_GET_ARGS = 0x86000010        # r1 = buffer IPA, r2 = length -> r0 = string length

PSCI_IMPLEMENTED = {PSCI_VERSION, PSCI_CPU_SUSPEND, PSCI_CPU_OFF, PSCI_CPU_ON,
                    PSCI_AFFINITY_INFO, PSCI_MIGRATE_INFO_TYPE, PSCI_SYSTEM_OFF,
                    PSCI_SYSTEM_RESET, PSCI_FEATURES}
NAMES = {PSCI_VERSION: "PSCI_VERSION", PSCI_CPU_OFF: "PSCI_CPU_OFF",
         PSCI_CPU_SUSPEND: "PSCI_CPU_SUSPEND", PSCI_CPU_ON: "PSCI_CPU_ON",
         PSCI_AFFINITY_INFO: "PSCI_AFFINITY_INFO", PSCI_MIGRATE_INFO_TYPE: "PSCI_MIGRATE_INFO_TYPE",
         PSCI_SYSTEM_OFF: "PSCI_SYSTEM_OFF", PSCI_SYSTEM_RESET: "PSCI_SYSTEM_RESET",
         PSCI_FEATURES: "PSCI_FEATURES", S2EMU_TIME_NS: "S2EMU_TIME_NS",
         S2EMU_SLEEP_US: "S2EMU_SLEEP_US", S2EMU_GET_ARGS: "S2EMU_GET_ARGS"}


@dataclass(frozen=True)
class HypercallResult:
    name: str
    stop: str | None = None          # "off" / "reset": the VM stops; "cpu-off": this vCPU;
                                     # "suspend": this vCPU waits for an interrupt (as WFI)


def handle(vm, vcpu) -> HypercallResult:
    """Dispatch on r0 like KVM's kvm_psci_call / kvm_hvc_call_handler; result in r0 (r1)."""
    fid = vcpu.reg(0)
    name = NAMES.get(fid, f"unknown {fid:#010x}")
    vm.stats[f"hvc {name}"] += 1
    power = getattr(vm, "power", None)
    if fid == PSCI_VERSION:
        vcpu.set_reg(0, PSCI_VERSION_1_1)
    elif fid == PSCI_SYSTEM_OFF:
        return HypercallResult(name, stop="off")
    elif fid == PSCI_SYSTEM_RESET:
        return HypercallResult(name, stop="reset")
    elif fid == PSCI_CPU_OFF:
        if power is None or len(power.states) == 1:
            return HypercallResult(name, stop="off")       # the only vCPU: the VM stops
        power.cpu_off(getattr(vcpu, "index", 0))
        return HypercallResult(name, stop="cpu-off")
    elif fid == PSCI_CPU_SUSPEND:
        vcpu.set_reg(0, psci.SUCCESS)      # standby: returns when an interrupt is pending
        return HypercallResult(name, stop="suspend")
    elif fid == PSCI_CPU_ON:
        rc = power.cpu_on(vcpu.reg(1), vcpu.reg(2), vcpu.reg(3)) if power is not None \
            else psci.INVALID_PARAMETERS
        vcpu.set_reg(0, rc & 0xFFFFFFFF)
    elif fid == PSCI_AFFINITY_INFO:
        rc = power.affinity_info(vcpu.reg(1), vcpu.reg(2)) if power is not None else \
            (psci.AFFINITY[psci.ON] if vcpu.reg(1) & 0xFF_00FF_FFFF == 0 else
             psci.INVALID_PARAMETERS)
        vcpu.set_reg(0, rc & 0xFFFFFFFF)
    elif fid == PSCI_MIGRATE_INFO_TYPE:
        vcpu.set_reg(0, psci.MIGRATE_INFO_TYPE_NONE)
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
