"""Several vCPUs (issue 10): PSCI CPU_ON / AFFINITY_INFO / CPU_OFF with the specification's
return codes, a secondary started at its entry with the context ID, LDREX/STREX on a
shared counter from two vCPUs (exclusive monitors across vCPUs: no increment lost), and a
deterministic schedule (the same run gives the same instruction count and virtual time)."""
import struct

import pytest

from emu.machine import RAM_BASE, Machine
from hyp import psci

DATA = RAM_BASE + 0x2000
N = 20000
# primary: CPU_ON(1, 0x40000100, 0x42) -> r9, again -> r10; N locked increments of [DATA];
# wait for [DATA+4] == 1; AFFINITY_INFO(1, 0) -> r11; SYSTEM_OFF
PRIMARY = [0xe3026000, 0xe3446000, 0xe3000003, 0xe3480400, 0xe3a01001, 0xe3002100,
           0xe3442000, 0xe3a03042, 0xe1400070, 0xe1a09000, 0xe3000003, 0xe3480400,
           0xe3a01001, 0xe3002100, 0xe3442000, 0xe1400070, 0xe1a0a000, 0xe3044e20,
           0xe1965f9f, 0xe2855001, 0xe1867f95, 0xe3570000, 0x1afffffa, 0xe2544001,
           0x1afffff8, 0xe5965004, 0xe3550001, 0x1afffffc, 0xe3000004, 0xe3480400,
           0xe3a01001, 0xe3a02000, 0xe1400070, 0xe1a0b000, 0xe3000008, 0xe3480400,
           0xe1400070]
# secondary at +0x100: [DATA+8] = r0 (context); N locked increments; [DATA+4] = 1; CPU_OFF
SECONDARY = [0xe1a08000, 0xe3026000, 0xe3446000, 0xe5868008, 0xe3044e20, 0xe1965f9f,
             0xe2855001, 0xe1867f95, 0xe3570000, 0x1afffffa, 0xe2544001, 0x1afffff8,
             0xe3a05001, 0xe5865004, 0xe3000002, 0xe3480400, 0xe1400070, 0xeafffffe]


def two_cpus(**kw) -> Machine:
    m = Machine(16 << 20, smp=2, **kw)
    for at, words in ((0, PRIMARY), (0x100, SECONDARY)):
        m.vm.write_guest(RAM_BASE + at, struct.pack(f"<{len(words)}I", *words), debugger=True)
    m.cpu.set_pc(RAM_BASE, False)
    return m


def word(m, ipa):
    return struct.unpack("<I", m.vm.read_guest(ipa, 4))[0]


@pytest.mark.parametrize("quantum", [1, 7, 1000, 10_000])
def test_two_vcpus_share_a_counter_through_exclusives(quantum):
    m = two_cpus()
    m.vcpu.quantum = quantum
    r = m.run(max_insns=2_000_000)
    assert r.reason == "off", r
    assert word(m, DATA) == 2 * N                   # no increment lost
    assert word(m, DATA + 8) == 0x42                # the secondary got its context ID
    cpu0 = m.cpus[0]
    assert cpu0.reg(9) == psci.SUCCESS
    assert cpu0.reg(10) in (psci.ON_PENDING & 0xFFFFFFFF, psci.ALREADY_ON & 0xFFFFFFFF)
    assert cpu0.reg(11) == 1                        # AFFINITY_INFO: OFF after its CPU_OFF
    assert m.vm.power.states == ["on", "off"]


def test_the_schedule_is_deterministic():
    runs = []
    for _ in range(2):
        m = two_cpus()
        r = m.run(max_insns=2_000_000)
        runs.append((r.instructions, m.vm.clock.now_ns(), m.cpus[1].instructions))
    assert runs[0] == runs[1]


def test_secondary_starts_in_svc_with_interrupts_masked_and_its_own_mpidr():
    m = two_cpus()
    m.vm.power.cpu_on(1, RAM_BASE + 0x100, 7)
    cpu1 = m.cpus[1]
    assert cpu1.get_cpsr() & 0x3FF == 0x1D3 and cpu1.pc == RAM_BASE + 0x100
    assert cpu1.reg(0) == 7


@pytest.mark.parametrize("target,expect", [
    pytest.param(1, psci.SUCCESS, id="off cpu: success"),
    pytest.param(0, psci.ALREADY_ON, id="itself: already on"),
    pytest.param(2, psci.INVALID_PARAMETERS, id="absent cpu"),
])
def test_cpu_on_return_codes(target, expect):
    power = psci.PowerState(2, lambda i, e, c: None)
    assert power.cpu_on(target, 0x40000000, 0) == expect


def test_cpu_on_race_exactly_one_caller_succeeds():
    power = psci.PowerState(4, lambda i, e, c: None)
    results = [power.cpu_on(3, 0x40000000, 0) for _ in range(3)]
    assert results == [psci.SUCCESS, psci.ON_PENDING, psci.ON_PENDING]
    power.started(3)
    assert power.cpu_on(3, 0x40000000, 0) == psci.ALREADY_ON
    assert power.affinity_info(3, 0) == 0 and power.affinity_info(2, 0) == 1
    assert power.affinity_info(9, 0) == psci.INVALID_PARAMETERS


def test_two_vcpus_migrate_mid_run_and_finish_on_the_destination():
    import io
    from emu.migration import incoming, migrate_out
    from hyp.migration.precopy import Params
    m = two_cpus()
    assert m.run(max_insns=60_000).reason == "budget"        # the secondary is running
    assert m.vm.power.states == ["on", "on"]
    buf = io.BytesIO()
    src = migrate_out(m, buf, Params(bandwidth=1 << 36, tick_ns=10_000))
    assert m.run(max_insns=5_000_000).reason == "migrate"
    assert src.complete().status == "completed"
    buf.seek(0)
    dest, inc = incoming(buf)
    assert len(dest.cpus) == 2 and dest.vm.power.states == ["on", "on"]
    r = dest.run(max_insns=2_000_000)
    assert r.reason == "off", r
    assert word(dest, DATA) == 2 * N and word(dest, DATA + 8) == 0x42


@pytest.mark.parametrize("slice_insns", [37, 4999, 100_000])
def test_the_schedule_does_not_depend_on_how_the_run_is_sliced(slice_insns):
    """A caller's budget (--max-insns, the main loop, a debugger's slices) ending in the
    middle of a vCPU's turn does not change the interleaving: the turn goes on next call."""
    whole = two_cpus()
    r = whole.run(max_insns=2_000_000)
    sliced = two_cpus()
    total = 0
    while True:
        s = sliced.run(max_insns=slice_insns)
        total += s.instructions
        if s.reason != "budget":
            break
    assert (s.reason, total) == (r.reason, r.instructions)
    assert [c.instructions for c in sliced.cpus] == [c.instructions for c in whole.cpus]
    assert sliced.vm.clock.now_ns() == whole.vm.clock.now_ns()
