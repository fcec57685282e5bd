"""The GIC test bench shared by the vgic interrupt tests: a GIC programmed the way Linux's
drivers/irqchip/irq-gic.c programs it (gic_dist_init, gic_cpu_init), register offsets, and
helpers that read an interrupt's state back through the registers."""
from hyp.vgic import Gic

GICD_CTLR, GICD_IGROUPR, GICD_ISENABLER, GICD_ICENABLER = 0x000, 0x080, 0x100, 0x180
GICD_ISPENDR, GICD_ICPENDR, GICD_ISACTIVER, GICD_ICACTIVER = 0x200, 0x280, 0x300, 0x380
GICD_IPRIORITYR, GICD_ITARGETSR, GICD_ICFGR, GICD_SGIR = 0x400, 0x800, 0xC00, 0xF00
GICD_SPENDSGIR = 0xF20
GICC_CTLR, GICC_PMR, GICC_BPR, GICC_IAR, GICC_EOIR = 0x00, 0x04, 0x08, 0x0C, 0x10
GICC_RPR, GICC_HPPIR, GICC_ABPR, GICC_AIAR, GICC_AEOIR, GICC_AHPPIR = (
    0x14, 0x18, 0x1C, 0x20, 0x24, 0x28)
GICC_DIR = 0x1000


class Board:
    """A GIC set up as Linux's irq-gic.c does: distributor and CPU interfaces on (Group 0),
    GICC_PMR 0xF0, every interrupt at priority 0xA0, SPIs to CPU 0."""

    def __init__(self, cpus=2, **kw):
        self.gic = Gic(cpus, **kw)
        self.d, self.c = self.gic.distributor, self.gic.cpu_interface
        self.dw(GICD_CTLR, 1)
        for cpu in range(cpus):
            self.cw(GICC_CTLR, 1, cpu)
            self.cw(GICC_PMR, 0xF0, cpu)
            for n in range(8):
                self.dw(GICD_IPRIORITYR + 4 * n, 0xA0A0_A0A0, cpu)
        for n in range(8, self.gic.geometry.nirq // 4):
            self.dw(GICD_IPRIORITYR + 4 * n, 0xA0A0_A0A0)
            self.dw(GICD_ITARGETSR + 4 * n, 0x0101_0101)

    def dr(self, off, cpu=0):
        return self.d.mmio_read(cpu, off, 4)

    def dw(self, off, value, cpu=0, size=4):
        self.d.mmio_write(cpu, off, size, value)

    def cr(self, off, cpu=0):
        return self.c.mmio_read(cpu, off, 4)

    def cw(self, off, value, cpu=0):
        self.c.mmio_write(cpu, off, 4, value)

    def enable(self, irq, cpu=0):
        self.dw(GICD_ISENABLER + 4 * (irq // 32), 1 << (irq % 32), cpu)

    def prio(self, irq, value, cpu=0):
        self.dw(GICD_IPRIORITYR + irq, value, cpu, size=1)

    def edge(self, irq, cpu=0):
        off = GICD_ICFGR + 4 * (irq // 16)
        self.dw(off, self.dr(off, cpu) | 2 << (2 * (irq % 16)), cpu)

    def state(self, irq, cpu=0):
        """'inactive', 'pending', 'active' or 'active+pending' from GICD_IS{PEND,ACTIV}ERn."""
        bit = 1 << (irq % 32)
        p = self.dr(GICD_ISPENDR + 4 * (irq // 32), cpu) & bit
        a = self.dr(GICD_ISACTIVER + 4 * (irq // 32), cpu) & bit
        return {(0, 0): "inactive", (1, 0): "pending", (0, 1): "active",
                (1, 1): "active+pending"}[(bool(p), bool(a))]

    def ack(self, cpu=0):
        return self.cr(GICC_IAR, cpu)

    def eoi(self, value, cpu=0):
        self.cw(GICC_EOIR, value, cpu)

    def lines(self):
        return [self.gic.irq_pending(c) for c in range(self.gic.geometry.num_cpus)]


def test_board_is_programmed_like_linux():
    b = Board(2)
    assert b.dr(GICD_CTLR) == 1 and b.cr(GICC_CTLR, 1) == 1 and b.cr(GICC_PMR, 1) == 0xF0
    assert b.dr(GICD_IPRIORITYR + 28, cpu=1) == 0xA0A0_A0A0
    assert b.dr(GICD_IPRIORITYR + 40) == 0xA0A0_A0A0
    assert b.dr(GICD_ITARGETSR + 40) == 0x0101_0101
    assert not any(b.lines()) and b.state(40) == "inactive"



def test_vgic_is_pure_python():
    """hyp/ never imports Unicorn (DESIGN 1)."""
    import subprocess
    import sys
    code = "import sys, hyp.vgic; assert 'unicorn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
