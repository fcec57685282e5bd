"""Two VMs on one host and one physical CPU: neither reaches the other's memory, through VMID
generation rollovers too, and each keeps its own registers across switches. The same test with
the rollover's TLB flush removed shows what it protects against."""
import os

import numpy as np
import pytest

from emu.host_machine import HostMachine

from conftest import GUESTS

REGION, PAGES = 0x4020_0000, 256
TAGS = (0xAAAA_AAAA_0000_0001, 0xBBBB_BBBB_0000_0002)


def two_dirtychecks(vmid_bits: int) -> HostMachine:
    hm = HostMachine([16 << 20, 16 << 20], vmid_bits=vmid_bits)
    for m, tag, seed in zip(hm.machines, TAGS, ("1111", "2222")):
        img = m.load(os.path.join(GUESTS, "dirtycheck.elf"), f"{REGION:x} {PAGES} {seed}")
        m.vm.write_guest(img.symbol("iteration"), tag.to_bytes(8, "little"))
    return hm


def region_words(m) -> np.ndarray:
    data = m.vm.read_guest(REGION, PAGES * 4096)
    return np.frombuffer(data, dtype="<u8")[::512]           # offset 0 of every page


def run_in_turns(hm: HostMachine, rounds: int) -> None:
    """Alternate 5000-step slices; check each VM's registers survive the other's slice."""
    regs = [None, None]
    for _ in range(rounds):
        for i, m in enumerate(hm.machines):
            if regs[i] is not None:
                assert m.cpu.regs() == regs[i], f"vm{i} sees other registers after a switch"
            r = m.run(max_insns=5000)
            assert r.reason == "budget", r
            regs[i] = m.cpu.regs()


@pytest.mark.parametrize("vmid_bits", [pytest.param(8, id="plenty of VMIDs"),
                                       pytest.param(1, id="rollover at every switch")])
def test_two_vms_never_reach_each_others_memory(vmid_bits):
    hm = two_dirtychecks(vmid_bits)
    run_in_turns(hm, 40)
    a, b = hm.machines
    assert a.vm.vmid != 0 and b.vm.vmid != 0
    if vmid_bits == 1:
        assert hm.host.vmids.rollovers >= 79 and a.vm.vmid == b.vm.vmid == 1
    for m, tag in zip(hm.machines, TAGS):
        words = region_words(m)
        assert set(np.unique(words)) <= {0, tag}, f"{m.vm.name} holds another VM's value"
        assert (words == tag).sum() > 50
        assert "MISMATCH" not in m.uart.text


def test_without_the_rollover_flush_translations_cross_vms(monkeypatch):
    """Negative control: the same run with TLBIALLNSNH skipped at VMID rollover lets the VM
    that inherits VMID 1 use the other's cached translations - and write its memory."""
    hm = two_dirtychecks(1)
    monkeypatch.setattr(hm.host.tlb, "flush_all_nsnh", lambda: None)
    run_in_turns(hm, 40)
    a, b = hm.machines
    crossed = [set(np.unique(region_words(m))) - {0, tag} for m, tag in zip(hm.machines, TAGS)]
    assert any(crossed)
