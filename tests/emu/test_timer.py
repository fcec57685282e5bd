"""The Generic Timer, the PMU cycle counter and WFI on virtual time, end to end (issue 10):
a guest arms the physical timer through the trapped CP15 registers, waits in WFI, and takes
the timer's PPI through the GIC and HCR.VI at exactly the virtual time the compare value
says; counters are deterministic and monotonic."""
import pytest

from snippet import OFF, Snippet, arm

IRQ = 0x18
GIC_SETUP = (
    0xE3004000, 0xE3404800,          # movw r4, #0; movt r4, #0x0800      GICD
    0xE3A00001, 0xE5840000,          # GICD_CTLR = 1
    0xE3A00101, 0xE5840100,          # GICD_ISENABLER0 = 1 << 30 (the timer's PPI)
    0xE3005000, 0xE3405801,          # movw r5, #0; movt r5, #0x0801      GICC
    0xE3A000F0, 0xE5850004,          # GICC_PMR = 0xf0
    0xE3A00001, 0xE5850000,          # GICC_CTLR = 1
)


def timer_guest(ticks: int, *, enable_irqs: bool = True, ctl: int = 1) -> bytes:
    return arm(*GIC_SETUP,
               0xE3000000 | (ticks & 0xF000) << 4 | (ticks & 0xFFF),   # movw r0, #ticks
               0xEE0E0F12,                                             # CNTP_TVAL = r0
               0xE3A00000 | ctl, 0xEE0E0F32,                           # CNTP_CTL = ctl
               0xF1080080 if enable_irqs else 0xE320F000,              # cpsie i / nop
               0xE320F003,                                             # wfi
               0xEC532F0E,                                             # mrrc CNTPCT r2,r3
               *OFF)


@pytest.mark.parametrize("ticks", [100, 1000, 50000])
def test_timer_interrupt_wakes_wfi_at_the_compare_value(ticks):
    s = Snippet(timer_guest(ticks))
    r = s.run()
    assert r.reason == "off", r
    assert s.vector() == IRQ                                  # taken through HCR.VI
    clock = s.m.vm.clock
    assert clock.now_ns() >= ticks * 16
    assert s.m.vm.stats["wfi sleeps"] >= 1
    # The IRQ came at the deadline: the guest was asleep from the WFI until then.
    assert clock.slept_ns == pytest.approx(ticks * 16 - clock.instructions, abs=40)
    assert s.m.gic.irq_pending(0)


def test_masked_irqs_wake_wfi_without_taking_the_interrupt():
    """WFI wakes on an asserted interrupt even with CPSR.I set (B1.8.14); the guest goes on
    after it and reads the counter."""
    s = Snippet(timer_guest(500, enable_irqs=False))
    r = s.run()
    assert r.reason == "off" and s.vector() == 0xFF
    cntpct = s.cpu.reg(3) << 32 | s.cpu.reg(2)
    assert cntpct == s.m.vm.clock.now_ns() // 16 - 0 or cntpct >= 500


def test_wfi_with_no_interrupt_source_ends_the_run():
    s = Snippet(timer_guest(500, ctl=0))                     # timer not enabled
    r = s.run()
    assert r.reason == "wfi"


def test_wfi_with_a_masked_timer_ends_the_run():
    s = Snippet(timer_guest(500, ctl=3))                     # ENABLE | IMASK
    r = s.run()
    assert r.reason == "wfi"


def test_counters_are_deterministic_and_monotonic():
    code = arm(0xEC532F0E,                      # mrrc p15, 0, r2, r3, c14   CNTPCT
               0xE3A00001, 0xEE090F1C,          # PMCR = E
               0xE3A00102, 0xEE090F3C,          # PMCNTENSET = C
               0xEE196F1D,                      # mrc PMCCNTR -> r6
               *([0xE320F000] * 200),           # 200 nops
               0xEE198F1D,                      # mrc PMCCNTR -> r8
               0xEC554F0E,                      # mrrc CNTPCT -> r4, r5
               *OFF)
    runs = []
    for _ in range(2):
        s = Snippet(code)
        assert s.run().reason == "off"
        regs = [s.cpu.reg(n) for n in (2, 3, 4, 5, 6, 8)]
        runs.append(regs)
        c0, c1 = regs[1] << 32 | regs[0], regs[3] << 32 | regs[2]
        assert c1 > c0                          # 200+ ns later: 12+ ticks
        assert regs[5] - regs[4] == 201         # PMCCNTR: one cycle per step
    assert runs[0] == runs[1]


def test_pl0_access_to_the_timer_needs_cntkctl():
    # mrs r0, cpsr; bic r0, r0, #0x1f; orr r0, r0, #0x10; msr cpsr_c, r0 (User mode); CNTPCT
    code = arm(0xE10F0000, 0xE3C0001F, 0xE3800010, 0xE121F000, 0xEC532F0E, 0xEAFFFFFE)
    s = Snippet(code)
    s.run()
    assert s.vector() == 0x04                   # CNTKCTL.PL0PCTEN = 0: Undefined


def test_an_armed_timer_and_gic_state_migrate():
    """The destination takes the interrupt the source armed, at the compare value's virtual
    time (the downtime is added to virtual time, so it may come at once)."""
    import io
    from emu.migration import incoming, migrate_out
    from hyp.migration.precopy import Params
    s = Snippet(timer_guest(50_000))
    assert s.run(max_insns=len(GIC_SETUP) + 5).reason == "budget"   # armed, at the WFI
    buf = io.BytesIO()
    src = migrate_out(s.m, buf, Params(bandwidth=1 << 42, tick_ns=10_000))
    assert s.m.run(max_insns=1_000_000).reason == "migrate"
    assert src.complete().status == "completed"
    buf.seek(0)
    dest, _ = incoming(buf)
    assert dest.cpu.timer.read_cval() == s.cpu.timer.read_cval()
    assert dest.gic.save_state() == s.m.gic.save_state()
    r = dest.run(max_insns=10_000)
    assert r.reason == "off" and dest.cpu.reg(7) == IRQ
    assert dest.vm.clock.now_ns() >= 50_000 * 16


class _FakeRaw:
    """The vCPU's emu.raw_regs.RawRegs, as far as VirtualCounter uses it."""
    def __init__(self):
        self.off = None

    def cp_write(self, reg, value):
        self.off = value & ((1 << 64) - 1)


@pytest.mark.parametrize("state", [
    pytest.param(None, id="not-a-mapping"),
    pytest.param({"seen": 5}, id="int-not-hex"),
    pytest.param({"seen": "5"}, id="short"),
    pytest.param({"seen": "zz" * 8}, id="not-hex"),
    pytest.param({"seen": "0" * 16, "x": 1}, id="extra-key"),
])
def test_virtual_counter_state_is_validated(state):
    from emu.timer_traps import VirtualCounter
    vc = VirtualCounter(_FakeRaw(), lambda: 1000)
    with pytest.raises(ValueError, match="virtual counter state"):
        vc.load(state)


def test_a_restored_virtual_counter_goes_on_from_what_the_guest_may_have_read():
    """Source: CNTVCT ran ahead of virtual time on the host clock during a burst; the
    destination's first entry must not show a smaller value (KVM_REG_ARM_TIMER_CNT)."""
    from emu.timer_traps import VirtualCounter
    host = [10_000]
    src = VirtualCounter(_FakeRaw(), lambda: host[0])
    src.enter(virtual=100)                      # CNTVCT = 100 at host 10,000
    host[0] += 5_000                            # the burst lasts 5,000 host ticks
    src.exit()
    state = src.save()
    assert int(state["seen"], 16) == 5_100
    dst_uc = _FakeRaw()
    dst = VirtualCounter(dst_uc, lambda: 777)
    dst.load(state)
    dst.enter(virtual=200)                      # virtual time is behind what was read
    assert (777 - dst_uc.off) % (1 << 64) == 5_100   # CNTVCT = host - CNTVOFF goes on
