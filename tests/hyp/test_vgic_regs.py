"""GICv2 register semantics (IHI 0048B chapter 4): reset values, read/write masks, RAZ/WI,
banking per CPU interface, byte accesses and forbidden access sizes, as tables of cases."""
import pytest

from hyp.vgic import Gic

D, C = "gicd", "gicc"


def frame(gic, which):
    return gic.distributor if which == D else gic.cpu_interface


def rd(gic, which, off, size=4, cpu=0):
    return frame(gic, which).mmio_read(cpu, off, size)


def wr(gic, which, off, value, size=4, cpu=0):
    frame(gic, which).mmio_write(cpu, off, size, value)


# ---- reset values -------------------------------------------------------------------------
RESET = [
    pytest.param(D, 0x000, 0, 0x0000_0000, id="GICD_CTLR"),
    pytest.param(D, 0x004, 0, 0x0000_0028, id="GICD_TYPER-288irqs-2cpus"),
    pytest.param(D, 0x008, 0, 0x0000_043B, id="GICD_IIDR"),
    pytest.param(D, 0x00C, 0, 0, id="reserved-0x00C"),
    pytest.param(D, 0x080, 0, 0, id="GICD_IGROUPR0"),
    pytest.param(D, 0x100, 0, 0x0000_FFFF, id="GICD_ISENABLER0-SGIs-always-on"),
    pytest.param(D, 0x180, 1, 0x0000_FFFF, id="GICD_ICENABLER0-cpu1"),
    pytest.param(D, 0x104, 0, 0, id="GICD_ISENABLER1"),
    pytest.param(D, 0x200, 0, 0, id="GICD_ISPENDR0"),
    pytest.param(D, 0x300, 0, 0, id="GICD_ISACTIVER0"),
    pytest.param(D, 0x400, 0, 0, id="GICD_IPRIORITYR0"),
    pytest.param(D, 0x800, 0, 0x0101_0101, id="GICD_ITARGETSR0-cpu0"),
    pytest.param(D, 0x81C, 1, 0x0202_0202, id="GICD_ITARGETSR7-cpu1"),
    pytest.param(D, 0x820, 0, 0, id="GICD_ITARGETSR8"),
    pytest.param(D, 0xC00, 0, 0xAAAA_AAAA, id="GICD_ICFGR0-SGIs-edge"),
    pytest.param(D, 0xC04, 0, 0, id="GICD_ICFGR1-PPIs-level"),
    pytest.param(D, 0xC08, 0, 0, id="GICD_ICFGR2-SPIs-level"),
    pytest.param(D, 0xD00, 0, 0, id="impdef-0xD00"),
    pytest.param(D, 0xE00, 0, 0, id="GICD_NSACR0"),
    pytest.param(D, 0xF00, 0, 0, id="GICD_SGIR-write-only"),
    pytest.param(D, 0xF10, 0, 0, id="GICD_CPENDSGIR0"),
    pytest.param(D, 0xF20, 0, 0, id="GICD_SPENDSGIR0"),
    pytest.param(D, 0xFD0, 0, 0x04, id="ICPIDR4"),
    pytest.param(D, 0xFE0, 0, 0x90, id="ICPIDR0"),
    pytest.param(D, 0xFE4, 0, 0xB4, id="ICPIDR1"),
    pytest.param(D, 0xFE8, 0, 0x2B, id="ICPIDR2-ArchRev-2"),
    pytest.param(D, 0xFEC, 0, 0x00, id="ICPIDR3"),
    pytest.param(D, 0xFF0, 0, 0x0D, id="ICCIDR0"),
    pytest.param(D, 0xFF4, 0, 0xF0, id="ICCIDR1"),
    pytest.param(D, 0xFF8, 0, 0x05, id="ICCIDR2"),
    pytest.param(D, 0xFFC, 0, 0xB1, id="ICCIDR3"),
    pytest.param(C, 0x00, 0, 0, id="GICC_CTLR"),
    pytest.param(C, 0x04, 0, 0, id="GICC_PMR"),
    pytest.param(C, 0x08, 0, 2, id="GICC_BPR-min-for-5-bits"),
    pytest.param(C, 0x0C, 0, 1023, id="GICC_IAR-spurious"),
    pytest.param(C, 0x10, 0, 0, id="GICC_EOIR-write-only"),
    pytest.param(C, 0x14, 0, 0xFF, id="GICC_RPR-idle"),
    pytest.param(C, 0x18, 0, 1023, id="GICC_HPPIR-spurious"),
    pytest.param(C, 0x1C, 0, 3, id="GICC_ABPR-min"),
    pytest.param(C, 0x20, 0, 1023, id="GICC_AIAR-spurious"),
    pytest.param(C, 0x28, 0, 1023, id="GICC_AHPPIR-spurious"),
    pytest.param(C, 0xD0, 0, 0, id="GICC_APR0"),
    pytest.param(C, 0xE0, 0, 0, id="GICC_NSAPR0"),
    pytest.param(C, 0xFC, 0, 0x0002_043B, id="GICC_IIDR"),
    pytest.param(C, 0x1000, 0, 0, id="GICC_DIR-write-only"),
]


@pytest.mark.parametrize("which, off, cpu, expected", RESET)
def test_reset_value(which, off, cpu, expected):
    assert rd(Gic(2), which, off, cpu=cpu) == expected


@pytest.mark.parametrize("cpus, irqs, expected", [
    pytest.param(1, 32, 0x00, id="1cpu-32irqs"),
    pytest.param(1, 288, 0x08, id="1cpu-288irqs"),
    pytest.param(4, 64, 0x61, id="4cpus-64irqs"),
    pytest.param(8, 1024, 0xFF, id="8cpus-1020irqs"),
])
def test_gicd_typer(cpus, irqs, expected):
    """ITLinesNumber = irqs/32 - 1, CPUNumber = CPUs - 1, SecurityExtn = 0 (4.3.2)."""
    assert rd(Gic(cpus, irqs), D, 0x004) == expected


@pytest.mark.parametrize("bits, pmr, ipriority, bpr, abpr", [
    pytest.param(4, 0xF0, 0xF0, 3, 4, id="4-bits"),
    pytest.param(5, 0xF8, 0xF8, 2, 3, id="5-bits"),
    pytest.param(8, 0xFF, 0xFF, 0, 1, id="8-bits"),
])
def test_priority_bits(bits, pmr, ipriority, bpr, abpr):
    """Unimplemented low priority bits RAZ/WI; GICC_BPR/ABPR clamp at their minimum."""
    gic = Gic(1, priority_bits=bits)
    wr(gic, C, 0x04, 0xFF)
    wr(gic, D, 0x420, 0xFF, size=1)
    wr(gic, C, 0x08, 0)
    wr(gic, C, 0x1C, 0)
    assert (rd(gic, C, 0x04), rd(gic, D, 0x420, 1), rd(gic, C, 0x08), rd(gic, C, 0x1C)) \
        == (pmr, ipriority, bpr, abpr)


# ---- write then read back -----------------------------------------------------------------
WRITE = [
    pytest.param(D, 0x000, 4, 0xFFFF_FFFF, 0x000, 0x3, id="GICD_CTLR-EnableGrp0/1-only"),
    pytest.param(D, 0x004, 4, 0, 0x004, 0x28, id="GICD_TYPER-read-only"),
    pytest.param(D, 0x008, 4, 0, 0x008, 0x43B, id="GICD_IIDR-read-only"),
    pytest.param(D, 0x084, 4, 0xFFFF_FFFF, 0x084, 0xFFFF_FFFF, id="GICD_IGROUPR1"),
    pytest.param(D, 0x0A4, 4, 0xFFFF_FFFF, 0x0A4, 0, id="GICD_IGROUPR9-unimplemented"),
    pytest.param(D, 0x104, 4, 0x5, 0x184, 0x5, id="GICD_ISENABLER1-reads-via-ICENABLER1"),
    pytest.param(D, 0x180, 4, 0xFFFF_FFFF, 0x100, 0xFFFF, id="GICD_ICENABLER0-SGIs-WI"),
    pytest.param(D, 0x200, 4, 0xFFFF_FFFF, 0x200, 0xFFFF_0000, id="GICD_ISPENDR0-SGIs-WI"),
    pytest.param(D, 0x204, 4, 0x8000_0001, 0x284, 0x8000_0001, id="GICD_ISPENDR1"),
    pytest.param(D, 0x300, 4, 0xFFFF_FFFF, 0x380, 0xFFFF_FFFF, id="GICD_ISACTIVER0"),
    pytest.param(D, 0x420, 4, 0x1122_3344, 0x420, 0x1020_3040, id="GICD_IPRIORITYR8-5bits"),
    pytest.param(D, 0x7FC, 4, 0xFFFF_FFFF, 0x7FC, 0, id="GICD_IPRIORITYR-IDs-1020-1023"),
    pytest.param(D, 0x800, 4, 0, 0x800, 0x0101_0101, id="GICD_ITARGETSR0-read-only"),
    pytest.param(D, 0x820, 4, 0xFFFF_FFFF, 0x820, 0x0303_0303, id="GICD_ITARGETSR8-2cpus"),
    pytest.param(D, 0x920, 4, 0x0102_0301, 0x920, 0, id="GICD_ITARGETSR-unimplemented"),
    pytest.param(D, 0xC00, 4, 0, 0xC00, 0xAAAA_AAAA, id="GICD_ICFGR0-read-only"),
    pytest.param(D, 0xC04, 4, 0xFFFF_FFFF, 0xC04, 0xAAAA_AAAA, id="GICD_ICFGR1-Int_config0-RAZ"),
    pytest.param(D, 0xC08, 4, 0x8000_0002, 0xC08, 0x8000_0002, id="GICD_ICFGR2"),
    pytest.param(D, 0xC08, 4, 0x5555_5555, 0xC08, 0, id="GICD_ICFGR2-reserved-bits"),
    pytest.param(D, 0xE04, 4, 0xFFFF_FFFF, 0xE04, 0, id="GICD_NSACR1-RAZ/WI"),
    pytest.param(D, 0xFE8, 4, 0, 0xFE8, 0x2B, id="ICPIDR2-read-only"),
    pytest.param(D, 0x010, 4, 0xFFFF_FFFF, 0x010, 0, id="reserved-RAZ/WI"),
    pytest.param(C, 0x00, 4, 0xFFFF_FFFF, 0x00, 0x3FF, id="GICC_CTLR-10-bits"),
    pytest.param(C, 0x04, 4, 0xFFFF_FFFF, 0x04, 0xF8, id="GICC_PMR"),
    pytest.param(C, 0x08, 4, 0xD, 0x08, 5, id="GICC_BPR"),
    pytest.param(C, 0x08, 4, 1, 0x08, 2, id="GICC_BPR-below-min"),
    pytest.param(C, 0x1C, 4, 7, 0x1C, 7, id="GICC_ABPR"),
    pytest.param(C, 0x1C, 4, 2, 0x1C, 3, id="GICC_ABPR-below-min"),
    pytest.param(C, 0x14, 4, 0x10, 0x14, 0xFF, id="GICC_RPR-read-only"),
    pytest.param(C, 0xD0, 4, 0xFFFF_FFFF, 0xD0, 0xFFFF_FFFF, id="GICC_APR0"),
    pytest.param(C, 0xD4, 4, 0xFFFF_FFFF, 0xD4, 0, id="GICC_APR1-unimplemented"),
    pytest.param(C, 0xE0, 4, 0xFFFF_FFFF, 0xE0, 0, id="GICC_NSAPR0-RAZ/WI"),
    pytest.param(C, 0xFC, 4, 0, 0xFC, 0x0002_043B, id="GICC_IIDR-read-only"),
    pytest.param(C, 0x40, 4, 0xFFFF_FFFF, 0x40, 0, id="impdef-0x40-RAZ/WI"),
]


@pytest.mark.parametrize("which, off, size, value, read_off, expected", WRITE)
def test_write_then_read(which, off, size, value, read_off, expected):
    gic = Gic(2)
    wr(gic, which, off, value, size)
    assert rd(gic, which, read_off) == expected
    assert gic.bad_accesses == 0


def test_gicd_igroupr_top_word_stops_at_1019():
    gic = Gic(1, 1024)
    wr(gic, D, 0x0FC, 0xFFFF_FFFF)
    assert rd(gic, D, 0x0FC) == 0x0FFF_FFFF


@pytest.mark.parametrize("bits, expected", [
    pytest.param(4, 0xFFFF, id="4-bits-16-levels"),
    pytest.param(5, 0xFFFF_FFFF, id="5-bits-32-levels"),
    pytest.param(8, 0xFFFF_FFFF, id="8-bits-APR3"),
])
def test_gicc_apr_implemented_levels(bits, expected):
    gic = Gic(1, priority_bits=bits)
    last = 0xD0 + 4 * (3 if bits == 8 else 0)
    wr(gic, C, last, 0xFFFF_FFFF)
    assert rd(gic, C, last) == expected


# ---- banking --------------------------------------------------------------------------------
BANKED = [
    pytest.param(0x080, 0x0800_0001, True, id="GICD_IGROUPR0"),
    pytest.param(0x084, 0x0000_0001, False, id="GICD_IGROUPR1-shared"),
    pytest.param(0x100, 0x0800_0000, True, id="GICD_ISENABLER0"),
    pytest.param(0x104, 0x0000_0001, False, id="GICD_ISENABLER1-shared"),
    pytest.param(0x200, 0x0800_0000, True, id="GICD_ISPENDR0"),
    pytest.param(0x300, 0x0800_0001, True, id="GICD_ISACTIVER0"),
    pytest.param(0x41C, 0x0000_0080, True, id="GICD_IPRIORITYR7"),
    pytest.param(0x420, 0x0000_0080, False, id="GICD_IPRIORITYR8-shared"),
    pytest.param(0xC04, 0x0080_0000, True, id="GICD_ICFGR1"),
    pytest.param(0xC08, 0x0000_0002, False, id="GICD_ICFGR2-shared"),
    pytest.param(0xF20, 0x0000_0002, True, id="GICD_SPENDSGIR0"),
]


@pytest.mark.parametrize("off, value, banked", BANKED)
def test_banked_per_cpu(off, value, banked):
    """IHI 0048B 4.3: the SGI/PPI registers are banked per CPU interface."""
    gic = Gic(2)
    before = rd(gic, D, off, cpu=1)
    wr(gic, D, off, value, cpu=0)
    mine, theirs = rd(gic, D, off, cpu=0), rd(gic, D, off, cpu=1)
    assert mine != before
    assert (theirs == before) if banked else (theirs == mine)


def test_itargetsr_sgi_ppi_read_the_reading_cpu():
    gic = Gic(8)
    for cpu in range(8):
        assert [rd(gic, D, 0x800 + i, 1, cpu) for i in range(32)] == [1 << cpu] * 32


def test_uniprocessor_itargetsr_raz_wi_and_spis_still_reach_cpu0():
    gic = Gic(1)
    assert rd(gic, D, 0x800) == 0
    wr(gic, D, 0x820, 0x01010101)
    assert rd(gic, D, 0x820) == 0
    wr(gic, D, 0x000, 1)
    wr(gic, C, 0x000, 1)
    wr(gic, C, 0x004, 0xF0)
    wr(gic, D, 0x104, 1)
    gic.set_line(32, True)
    assert gic.irq_pending(0) and rd(gic, C, 0x0C) == 32


# ---- byte access and forbidden sizes ----------------------------------------------------------
def test_byte_access_to_priority_and_targets():
    gic = Gic(4)
    wr(gic, D, 0x420, 0x11223344)
    assert [rd(gic, D, 0x420 + i, 1) for i in range(4)] == [0x40, 0x30, 0x20, 0x10]
    wr(gic, D, 0x422, 0xFF, size=1)
    assert rd(gic, D, 0x420) == 0x10F8_3040
    wr(gic, D, 0x823, 0xFF, size=1)
    wr(gic, D, 0x821, 0x04, size=1)
    assert rd(gic, D, 0x820) == 0x0F00_0400


def test_byte_access_to_sgi_pending_registers():
    gic = Gic(4)
    wr(gic, D, 0xF25, 0xFF, size=1, cpu=2)          # SGI 5 pending from CPUs 0-3
    assert rd(gic, D, 0xF24, cpu=2) == 0x0000_0F00
    wr(gic, D, 0xF15, 0x05, size=1, cpu=2)          # clear sources 0 and 2
    assert rd(gic, D, 0xF25, 1, cpu=2) == 0x0A and rd(gic, D, 0xF15, 1, cpu=2) == 0x0A
    assert rd(gic, D, 0x200, cpu=2) == 1 << 5 and rd(gic, D, 0x200, cpu=1) == 0


FORBIDDEN = [
    pytest.param(D, 0x000, 1, id="GICD_CTLR-byte"),
    pytest.param(D, 0x104, 1, id="GICD_ISENABLER1-byte"),
    pytest.param(D, 0x420, 2, id="GICD_IPRIORITYR-halfword"),
    pytest.param(D, 0x422, 4, id="GICD_IPRIORITYR-misaligned-word"),
    pytest.param(D, 0xF00, 1, id="GICD_SGIR-byte"),
    pytest.param(D, 0x1000, 4, id="beyond-GICD"),
    pytest.param(C, 0x004, 1, id="GICC_PMR-byte"),
    pytest.param(C, 0x006, 2, id="GICC_PMR-halfword"),
    pytest.param(C, 0x2000, 4, id="beyond-GICC"),
]


@pytest.mark.parametrize("which, off, size", FORBIDDEN)
def test_forbidden_access_is_raz_wi(which, off, size):
    gic = Gic(2)
    before = gic.save_state()
    wr(gic, which, off, 0xFFFF_FFFF >> (32 - 8 * size), size)
    assert rd(gic, which, off, size) == 0
    assert gic.save_state() == before
    assert gic.bad_accesses == 2
