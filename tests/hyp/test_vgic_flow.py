"""GICv2 interrupt life cycle (IHI 0048B 3.2, 3.3, 4.4): level vs edge and the state machine,
spurious IDs, interrupt groups and FIQ, EOImode, and the output-change listener."""
import pytest

from test_vgic_board import (Board, GICC_AEOIR, GICC_AHPPIR, GICC_AIAR, GICC_CTLR, GICC_DIR,
                             GICC_EOIR, GICC_HPPIR, GICC_PMR, GICC_RPR, GICD_CTLR,
                             GICD_ICENABLER, GICD_ICPENDR, GICD_IGROUPR, GICD_ISACTIVER,
                             GICD_ISPENDR, GICD_ITARGETSR)


# ---- level vs edge and the state machine (3.2) ------------------------------------------------
def test_state_machine_edge():
    """inactive -> pending -> active -> active+pending -> pending -> active -> inactive."""
    b = Board(1)
    b.enable(50)
    b.edge(50)
    seen = [b.state(50)]
    for step in ("pulse", "ack", "pulse", "eoi", "ack", "eoi"):
        if step == "pulse":
            b.gic.set_line(50, True)
            b.gic.set_line(50, False)
        elif step == "ack":
            assert b.ack() == 50
        else:
            b.eoi(50)
        seen.append(b.state(50))
    assert seen == ["inactive", "pending", "active", "active+pending", "pending", "active",
                    "inactive"]


def test_edges_before_the_acknowledge_make_one_interrupt():
    b = Board(1)
    b.enable(50)
    b.edge(50)
    for _ in range(3):
        b.gic.set_line(50, True)
        b.gic.set_line(50, False)
    assert b.ack() == 50 and b.ack() == 1023
    b.eoi(50)
    assert b.ack() == 1023


def test_level_stays_pending_while_asserted():
    b = Board(1)
    b.enable(50)
    b.gic.set_line(50, True)
    assert b.state(50) == "pending"
    assert b.ack() == 50 and b.state(50) == "active+pending"
    b.eoi(50)                                              # still asserted: taken again
    assert b.state(50) == "pending" and b.ack() == 50
    b.gic.set_line(50, False)                              # the device is serviced
    assert b.state(50) == "active"
    b.eoi(50)
    assert b.state(50) == "inactive" and not any(b.lines())


def test_level_line_dropped_before_the_acknowledge_withdraws_it():
    b = Board(1)
    b.enable(50)
    b.gic.set_line(50, True)
    b.gic.set_line(50, False)
    assert b.state(50) == "inactive" and b.ack() == 1023


@pytest.mark.parametrize("edge, line, write, after", [
    pytest.param(False, True, GICD_ICPENDR, "pending", id="level-ICPENDR-line-high"),
    pytest.param(False, False, GICD_ISPENDR, "pending", id="level-ISPENDR-latches"),
    pytest.param(True, False, GICD_ISPENDR, "pending", id="edge-ISPENDR"),
    pytest.param(True, True, GICD_ICPENDR, "inactive", id="edge-ICPENDR-clears"),
])
def test_software_pending(edge, line, write, after):
    b = Board(1)
    b.enable(50)
    if edge:
        b.edge(50)
    b.gic.set_line(50, line)
    b.dw(write + 4, 1 << 18)
    assert b.state(50) == after


def test_level_set_by_ispendr_is_cleared_by_the_acknowledge():
    b = Board(1)
    b.enable(50)
    b.dw(GICD_ISPENDR + 4, 1 << 18)
    assert b.ack() == 50 and b.state(50) == "active"
    b.eoi(50)
    assert b.state(50) == "inactive"


def test_disabled_interrupt_pends_but_is_not_signalled():
    b = Board(1)
    b.gic.set_line(50, True)
    assert b.state(50) == "pending" and b.lines() == [False] and b.ack() == 1023
    b.enable(50)
    assert b.lines() == [True]
    b.dw(GICD_ICENABLER + 4, 1 << 18)
    assert b.lines() == [False]


# ---- spurious ---------------------------------------------------------------------------------
@pytest.mark.parametrize("setup, line", [
    pytest.param(lambda b: None, False, id="nothing-pending"),
    pytest.param(lambda b: b.dw(GICD_CTLR, 0), True, id="distributor-disabled"),
    pytest.param(lambda b: b.cw(GICC_CTLR, 0), True, id="cpu-interface-disabled"),
    pytest.param(lambda b: b.cw(GICC_PMR, 0), True, id="masked"),
    pytest.param(lambda b: b.dw(GICD_ISACTIVER + 4, 1 << 18), True, id="active"),
    pytest.param(lambda b: b.dw(GICD_ICENABLER + 4, 1 << 18), True, id="disabled"),
    pytest.param(lambda b: b.dw(GICD_ITARGETSR + 50, 2, size=1), True, id="targets-other-cpu"),
])
def test_spurious_1023(setup, line):
    b = Board(2)
    b.enable(50)
    setup(b)
    b.gic.set_line(50, line)
    assert b.ack() == 1023 and b.lines()[0] is False


def test_eoi_of_spurious_or_with_nothing_active_is_ignored():
    b = Board(1)
    b.enable(50)
    b.gic.set_line(50, True)
    before = b.gic.save_state()
    b.eoi(1023)
    b.eoi(50)                                              # never acknowledged
    assert b.gic.save_state() == before


# ---- groups, FIQ, EOImode ---------------------------------------------------------------------
def test_group1_needs_ackctl_or_the_aliased_registers():
    b = Board(1)
    b.dw(GICD_CTLR, 3)
    b.cw(GICC_CTLR, 3)
    b.dw(GICD_IGROUPR + 4, 1 << 18)
    b.enable(50)
    b.gic.set_line(50, True)
    assert b.lines() == [True]
    assert b.cr(GICC_HPPIR) == 1022 and b.ack() == 1022     # AckCtl = 0
    assert b.cr(GICC_AHPPIR) == 50 and b.cr(GICC_AIAR) == 50
    b.cw(GICC_AEOIR, 50)
    assert b.state(50) == "pending"                        # level: asserted again
    b.cw(GICC_CTLR, 3 | 1 << 2)                            # AckCtl = 1
    assert b.ack() == 50
    b.cw(GICC_EOIR, 50)
    b.gic.set_line(50, False)
    assert b.state(50) == "inactive"


def test_aliased_registers_ignore_group0():
    b = Board(1)
    b.enable(50)
    b.gic.set_line(50, True)
    assert b.cr(GICC_AHPPIR) == 1023 and b.cr(GICC_AIAR) == 1023
    assert b.ack() == 50
    b.cw(GICC_AEOIR, 50)
    assert b.cr(GICC_RPR) == 0xA0                          # not completed


def test_group0_is_fiq_with_fiqen_group1_stays_irq():
    b = Board(1)
    b.dw(GICD_CTLR, 3)
    b.cw(GICC_CTLR, 3 | 1 << 3)                            # FIQEn
    b.dw(GICD_IGROUPR + 4, 1 << 19)                        # 51 is Group 1
    for irq in (50, 51):
        b.enable(irq)
    b.prio(51, 0x40)
    b.gic.set_line(50, True)
    assert (b.gic.irq_pending(0), b.gic.fiq_pending(0)) == (False, True)
    b.gic.set_line(51, True)
    assert (b.gic.irq_pending(0), b.gic.fiq_pending(0)) == (True, False)


@pytest.mark.parametrize("grp0, grp1, expected", [
    pytest.param(True, False, 50, id="only-Group0-enabled"),
    pytest.param(False, True, 1022, id="only-Group1-enabled"),
])
def test_disabled_group_is_invisible(grp0, grp1, expected):
    b = Board(1)
    b.dw(GICD_CTLR, 3)
    b.cw(GICC_CTLR, grp0 | grp1 << 1)
    b.dw(GICD_IGROUPR + 4, 1 << 19)
    for irq in (50, 51):
        b.enable(irq)
    b.prio(51, 0x40)                                       # Group 1 is the higher
    b.gic.set_line(50, True)
    b.gic.set_line(51, True)
    assert b.ack() == expected


def test_eoimode_splits_priority_drop_and_deactivation():
    b = Board(1)
    b.cw(GICC_CTLR, 1 | 1 << 9)
    b.enable(50)
    b.edge(50)
    b.gic.set_line(50, True)
    assert b.ack() == 50
    b.eoi(50)
    assert b.cr(GICC_RPR) == 0xFF and b.state(50) == "active"
    b.cw(GICC_DIR, 50)
    assert b.state(50) == "inactive"


def test_dir_without_eoimode_is_ignored():
    b = Board(1)
    b.enable(50)
    b.edge(50)
    b.gic.set_line(50, True)
    b.ack()
    b.cw(GICC_DIR, 50)
    assert b.state(50) == "active" and b.cr(GICC_RPR) == 0xA0


# ---- the output listener ----------------------------------------------------------------------
def test_listener_hears_each_change_once_per_cpu():
    b = Board(2)
    heard = []
    b.gic.add_listener(lambda cpu, irq, fiq: heard.append((cpu, irq, fiq)))
    b.enable(50)
    b.dw(GICD_ITARGETSR + 50, 3, size=1)
    b.gic.set_line(50, True)
    b.gic.set_line(50, True)                               # no change: no call
    assert heard == [(0, True, False), (1, True, False)]
    heard.clear()
    b.ack(1)
    assert heard == [(0, False, False), (1, False, False)]
    heard.clear()
    b.cw(GICC_PMR, 0x80, cpu=0)                            # nothing changes
    assert heard == []


def test_listener_sees_final_state_and_may_reenter():
    b = Board(1)
    seen = []

    def listener(cpu, irq, fiq):
        seen.append((irq, b.gic.irq_pending(cpu)))
        if irq:
            assert b.ack(cpu) == 50                        # take it from inside
    b.gic.add_listener(listener)
    b.enable(50)
    b.edge(50)
    b.gic.set_line(50, True)
    assert seen == [(True, True), (False, False)] and b.state(50) == "active"
    b.gic.remove_listener(listener)


def test_listener_never_hears_a_stale_output_when_another_reenters():
    """CPU 0's listener takes a 1-N SPI that was offered to both: CPU 1 hears nothing, as its
    line was never settled high."""
    b = Board(2)
    b.enable(40)
    b.dw(GICD_ITARGETSR + 40, 3, size=1)
    heard = []

    def listener(cpu, irq, fiq):
        heard.append((cpu, irq))
        if cpu == 0 and irq:
            assert b.ack(0) == 40
    b.gic.add_listener(listener)
    b.gic.set_line(40, True)
    assert heard == [(0, True), (0, False)] and b.lines() == [False, False]


@pytest.mark.parametrize("frame", ["distributor", "cpu_interface"])
def test_access_by_an_absent_cpu_is_a_bug(frame):
    with pytest.raises(ValueError, match="CPU 2"):
        getattr(Board(2).gic, frame).mmio_read(2, 0, 4)
