"""PSCI and the vendor hypercalls, on a fake vCPU register file."""
import numpy as np
import pytest

from hyp import dirty, hypercall as hc
from hyp.host import Host
from hyp.vm import VM

RAM = 0x4000_0000


class Regs:
    def __init__(self, *values):
        self.r = list(values) + [0] * (16 - len(values))

    def reg(self, n):
        return self.r[n]

    def set_reg(self, n, v):
        self.r[n] = v & 0xFFFFFFFF


def vm_with_ram():
    host = Host(Host.size_for([4 << 20]))
    vm = VM(host)
    slot = vm.add_memslot(RAM, 4 << 20)
    return vm, slot


@pytest.mark.parametrize("fid,args,r0,stop", [
    pytest.param(hc.PSCI_VERSION, (), 0x10001, None, id="version-1.1 (as QEMU 7.2)"),
    pytest.param(hc.PSCI_MIGRATE_INFO_TYPE, (), 2, None, id="migrate-info-type: no TOS"),
    pytest.param(hc.PSCI_CPU_OFF, (), None, "off", id="cpu-off: the only vCPU stops the VM"),
    pytest.param(hc.PSCI_CPU_SUSPEND, (0,), 0, "suspend", id="cpu-suspend: standby as WFI"),
    pytest.param(hc.PSCI_FEATURES, (hc.PSCI_CPU_ON,), 0, None, id="features-cpu-on"),
    pytest.param(hc.PSCI_FEATURES, (0x8400000E,), 0xFFFFFFFF, None,
                 id="features-system-suspend: not implemented"),
    pytest.param(hc.PSCI_SYSTEM_OFF, (), None, "off", id="system-off"),
    pytest.param(hc.PSCI_SYSTEM_RESET, (), None, "reset", id="system-reset"),
    pytest.param(hc.PSCI_FEATURES, (hc.PSCI_SYSTEM_OFF,), 0, None, id="features-known"),
    pytest.param(hc.PSCI_FEATURES, (0x84000055,), 0xFFFFFFFF, None, id="features-unknown"),
    pytest.param(hc.PSCI_FEATURES, (hc.S2EMU_TIME_NS,), 0xFFFFFFFF, None,
                 id="features-vendor-id-rejected"),
    pytest.param(0xC4000003, (), 0xFFFFFFFF, None, id="unknown-not-supported"),
])
def test_psci(fid, args, r0, stop):
    vm, _ = vm_with_ram()
    regs = Regs(fid, *args)
    res = hc.handle(vm, regs)
    assert res.stop == stop
    if r0 is not None:
        assert regs.reg(0) == r0


def test_time_and_sleep_are_virtual():
    vm, _ = vm_with_ram()
    vm.clock.instructions = 5_000_000_123
    regs = Regs(hc.S2EMU_SLEEP_US, 2_500)
    hc.handle(vm, regs)
    regs = Regs(hc.S2EMU_TIME_NS)
    hc.handle(vm, regs)
    now = 5_000_000_123 + 2_500_000
    assert (regs.reg(0), regs.reg(1)) == (now & 0xFFFFFFFF, now >> 32)


def test_get_args_writes_guest_memory_and_marks_it_dirty():
    vm, slot = vm_with_ram()
    vm.args = "1024 64 10"
    dirty.enable_logging(vm, slot)
    regs = Regs(hc.S2EMU_GET_ARGS, RAM + 0x1FF8, 64)     # crosses into the next page
    hc.handle(vm, regs)
    assert regs.reg(0) == 10
    assert vm.read_guest(RAM + 0x1FF8, 11) == b"1024 64 10\0"
    assert list(np.flatnonzero(slot.dirty)) == [1, 2]
    short = Regs(hc.S2EMU_GET_ARGS, RAM, 5)
    hc.handle(vm, short)
    assert short.reg(0) == 4 and vm.read_guest(RAM, 5) == b"1024\0"


FLASH = 0x0


@pytest.mark.parametrize("buf,length", [
    pytest.param(0x0900_0000, 16, id="not-ram"),
    pytest.param(FLASH + 0x100, 16, id="read-only-flash"),
    pytest.param(RAM + (4 << 20) - 4, 16, id="straddles-ram-end"),
    pytest.param(RAM, 0, id="zero-length"),
])
def test_get_args_refuses_buffers_outside_writable_ram(buf, length):
    """KVM's kvm_write_guest refuses read-only memslots: INVALID_PARAMETER (-3), nothing
    written, nothing marked dirty."""
    vm, slot = vm_with_ram()
    flash = vm.add_memslot(FLASH, 1 << 20, name="flash0", readonly=True)
    vm.args = "1024 64 10"
    dirty.enable_logging(vm, slot)
    before = {s.name: vm.read_guest(s.ipa, s.size) for s in (slot, flash)}
    regs = Regs(hc.S2EMU_GET_ARGS, buf, length)
    hc.handle(vm, regs)
    assert regs.reg(0) == hc.INVALID_PARAMETER == 0xFFFFFFFD
    assert {s.name: vm.read_guest(s.ipa, s.size) for s in (slot, flash)} == before
    assert not slot.dirty.any()
