"""GICv2 interrupt delivery (IHI 0048B chapter 3): SGIs with their source CPU, SPI targets
and per-CPU PPIs, priority masking and preemption by group priority."""
import pytest

from test_vgic_board import (Board, GICC_ABPR, GICC_BPR, GICC_CTLR, GICC_HPPIR, GICC_IAR,
                             GICC_PMR, GICC_RPR, GICD_CTLR, GICD_ICACTIVER, GICD_IGROUPR,
                             GICD_ISACTIVER, GICD_ITARGETSR, GICD_SGIR, GICD_SPENDSGIR)


# ---- SGIs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sender, sgir, targets", [
    pytest.param(0, 0x000A_0003, [1, 3], id="list-1-and-3"),
    pytest.param(2, 0x0100_0007, [0, 1, 3], id="all-but-self"),
    pytest.param(1, 0x0200_000F, [1], id="self-only"),
    pytest.param(3, 0x000F_0000, [0, 1, 2, 3], id="list-all"),
    pytest.param(0, 0x00F0_0001, [], id="list-of-absent-CPUs"),
    pytest.param(0, 0x0300_0001, [], id="reserved-filter-ignored"),
    pytest.param(2, 0x0000_0005, [], id="empty-list"),
])
def test_sgir_target_filter_and_source_id(sender, sgir, targets):
    b = Board(4)
    b.dw(GICD_SGIR, sgir, cpu=sender)
    assert [c for c in range(4) if b.gic.irq_pending(c)] == targets
    for c in targets:
        assert b.cr(GICC_HPPIR, c) == (sgir & 0xF) | sender << 10
        assert b.ack(c) == (sgir & 0xF) | sender << 10     # GICC_IAR.CPUID = source
    assert not any(b.lines())


def test_sgi_from_two_sources_is_taken_one_source_at_a_time():
    b = Board(4)
    b.dw(GICD_SGIR, 0x0002_0003, cpu=2)
    b.dw(GICD_SGIR, 0x0002_0003, cpu=0)
    assert b.dr(GICD_SPENDSGIR, cpu=1) == 0b0101 << 24
    assert b.ack(1) == 3 | 0 << 10                         # lowest source first
    assert b.state(3, cpu=1) == "active+pending"
    assert b.ack(1) == 1023                                # active: not forwarded again
    b.eoi(3, cpu=1)
    assert b.ack(1) == 3 | 2 << 10
    b.eoi(3 | 2 << 10, cpu=1)
    assert b.state(3, cpu=1) == "inactive" and not any(b.lines())


def test_spendsgir_and_cpendsgir_drive_sgis():
    b = Board(2)
    b.dw(GICD_SPENDSGIR + 1, 0x02, cpu=0, size=1)          # SGI 1 from CPU 1, on CPU 0
    assert b.lines() == [True, False]
    b.dw(0xF11, 0x02, cpu=0, size=1)                        # GICD_CPENDSGIR: gone
    assert b.lines() == [False, False] and b.ack(0) == 1023
    b.dw(GICD_SPENDSGIR + 1, 0x02, cpu=0, size=1)
    assert b.ack(0) == 1 | 1 << 10


def test_send_sgi_api_matches_sgir():
    b = Board(2)
    b.gic.send_sgi(1, 9, 0b01)
    assert b.ack(0) == 9 | 1 << 10
    for args in [(2, 0, 1), (0, 16, 1), (0, 1, 0b100)]:
        with pytest.raises(ValueError):
            b.gic.send_sgi(*args)


# ---- routing ----------------------------------------------------------------------------------
def test_spi_goes_to_its_targets_and_follows_a_retarget():
    b = Board(2)
    b.enable(40)
    b.dw(GICD_ITARGETSR + 40, 0x02, size=1)
    b.gic.set_line(40, True)
    assert b.lines() == [False, True]
    b.dw(GICD_ITARGETSR + 40, 0x01, size=1)
    assert b.lines() == [True, False]


def test_spi_targeting_two_cpus_is_taken_by_one():
    """The 1-N model (3.1): the first acknowledge makes it active; the other CPU's line drops."""
    b = Board(2)
    b.enable(40)
    b.dw(GICD_ITARGETSR + 40, 0x03, size=1)
    b.edge(40)
    b.gic.set_line(40, True)
    assert b.lines() == [True, True]
    assert b.ack(1) == 40
    assert b.lines() == [False, False] and b.ack(0) == 1023
    b.eoi(40, cpu=1)
    assert b.state(40) == "inactive"


def test_ppi_lines_are_per_cpu():
    b = Board(2)
    b.enable(27, cpu=1)
    b.gic.set_line(27, True, cpu=0)                        # CPU 0's PPI 27 is disabled
    assert b.lines() == [False, False]
    b.gic.set_line(27, True, cpu=1)
    assert b.lines() == [False, True] and b.ack(1) == 27
    assert b.state(27, cpu=0) == "pending" and b.state(27, cpu=1) == "active+pending"


@pytest.mark.parametrize("irq, cpu", [
    pytest.param(3, 0, id="SGI-has-no-line"),
    pytest.param(27, None, id="PPI-needs-a-CPU"),
    pytest.param(27, 2, id="PPI-of-absent-CPU"),
    pytest.param(40, 0, id="SPI-has-no-CPU"),
    pytest.param(288, None, id="beyond-the-last-SPI"),
])
def test_set_line_rejects(irq, cpu):
    with pytest.raises(ValueError):
        Board(2).gic.set_line(irq, True, cpu)


# ---- priority masking and preemption --------------------------------------------------------
@pytest.mark.parametrize("prio, pmr, signalled", [
    pytest.param(0x78, 0x80, True, id="higher-than-mask"),
    pytest.param(0x80, 0x80, False, id="equal-to-mask"),
    pytest.param(0x88, 0x80, False, id="lower-than-mask"),
    pytest.param(0x00, 0x00, False, id="PMR-0-masks-all"),
    pytest.param(0xF0, 0xF8, True, id="lowest-under-widest-mask"),
    pytest.param(0xF8, 0xF8, False, id="0xF8-never-with-5-bits"),
])
def test_priority_mask(prio, pmr, signalled):
    b = Board(1)
    b.enable(33)
    b.prio(33, prio)
    b.cw(GICC_PMR, pmr)
    b.gic.set_line(33, True)
    assert b.lines() == [signalled]
    assert b.cr(GICC_HPPIR) == 33                          # HPPIR ignores the mask
    assert b.ack() == (33 if signalled else 1023)


@pytest.mark.parametrize("bpr, running, pending, preempts, rpr", [
    pytest.param(2, 0x80, 0x78, True, 0x80, id="BPR2-higher-preempts"),
    pytest.param(2, 0x80, 0x80, False, 0x80, id="BPR2-equal-does-not"),
    pytest.param(3, 0x88, 0x80, False, 0x80, id="BPR3-same-group-does-not"),
    pytest.param(3, 0x88, 0x70, True, 0x80, id="BPR3-higher-group-preempts"),
    pytest.param(4, 0x98, 0x80, False, 0x80, id="BPR4-group-[7:5]"),
    pytest.param(4, 0xA0, 0x98, True, 0xA0, id="BPR4-next-group-preempts"),
    pytest.param(7, 0x80, 0x00, False, 0x00, id="BPR7-no-preemption"),
])
def test_preemption_by_group_priority(bpr, running, pending, preempts, rpr):
    """3.3: only a higher group priority (bits [7:BPR+1]) preempts the running one."""
    b = Board(1)
    b.cw(GICC_BPR, bpr)
    for irq, p in ((33, running), (34, pending)):
        b.enable(irq)
        b.prio(irq, p)
    b.gic.set_line(33, True)
    assert b.ack() == 33
    assert b.cr(GICC_RPR) == rpr                           # the running group priority
    b.gic.set_line(34, True)
    assert b.lines() == [preempts]
    assert b.ack() == (34 if preempts else 1023)


@pytest.mark.parametrize("cbpr, preempts", [
    pytest.param(0, True, id="Group1-by-ABPR-coarser"),
    pytest.param(1, False, id="CBPR-Group1-by-BPR"),
])
def test_group1_preemption_uses_abpr(cbpr, preempts):
    """A Group 1 interrupt's group priority comes from GICC_ABPR unless GICC_CTLR.CBPR
    (3.3): with ABPR 4 (bits [7:4]) priority 0x88 has group priority 0x80 and preempts a
    running 0x88 of Group 0 (QEMU compares the whole priority and would not)."""
    b = Board(1)
    b.dw(GICD_CTLR, 3)
    b.cw(GICC_CTLR, 3 | 1 << 2 | cbpr << 4)                # both groups, AckCtl
    b.cw(GICC_BPR, 2)
    b.cw(GICC_ABPR, 4)
    b.dw(GICD_IGROUPR + 4, 1 << 2)                         # 34 is Group 1
    for irq in (33, 34):
        b.enable(irq)
        b.prio(irq, 0x88)
    b.gic.set_line(33, True)
    assert b.ack() == 33 and b.cr(GICC_RPR) == 0x88
    b.gic.set_line(34, True)
    assert b.ack() == (34 if preempts else 1023)


def test_nested_interrupts_drop_running_priority_in_order():
    b = Board(1)
    for irq, p in ((33, 0xA0), (34, 0x60), (35, 0x20)):
        b.enable(irq)
        b.prio(irq, p)
        b.edge(irq)
    trace = []
    for irq in (33, 34, 35):
        b.gic.set_line(irq, True)
        trace.append((b.ack(), b.cr(GICC_RPR)))
    for irq in (35, 34, 33):
        b.eoi(irq)
        trace.append((irq, b.cr(GICC_RPR)))
    assert trace == [(33, 0xA0), (34, 0x60), (35, 0x20), (35, 0x60), (34, 0xA0), (33, 0xFF)]


def test_highest_priority_wins_then_lowest_id():
    b = Board(1)
    for irq, p in ((40, 0x80), (41, 0x40), (42, 0x40)):
        b.enable(irq)
        b.prio(irq, p)
        b.gic.set_line(irq, True)
    assert [b.ack() for _ in range(4)] == [41, 1023, 1023, 1023]
    b.eoi(41)
    b.gic.set_line(41, False)
    assert b.ack() == 42


def test_isactiver_does_not_change_the_running_priority():
    b = Board(1)
    b.dw(GICD_ISACTIVER + 4, 1 << 1)
    assert b.state(33) == "active" and b.cr(GICC_RPR) == 0xFF
    b.dw(GICD_ICACTIVER + 4, 1 << 1)
    assert b.state(33) == "inactive"
