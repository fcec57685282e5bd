"""GICv2 register map and fields, named as the GIC Architecture Specification v2 (ARM IHI 0048B)
writes them: distributor (4.3, Table 4-1) and CPU interface (4.4, Table 4-2).

Access sizes (IHI 0048B 4.1, "GIC register access"): every register is reachable by an
aligned 32-bit access; GICD_IPRIORITYRn, GICD_ITARGETSRn, GICD_CPENDSGIRn and GICD_SPENDSGIRn
also by single bytes. Halfword access is IMPLEMENTATION DEFINED: this GIC does not permit it.
Any access the GIC does not permit (a halfword, a misaligned word, a byte elsewhere) reads as
zero and ignores writes, as KVM's vgic does (vgic_mmio_read_raz / write_wi)."""
from __future__ import annotations

from hyp.arch.fields import Field

# ---- The QEMU virt board (DESIGN 2a) --------------------------------------------------------
VIRT_GICD_BASE = 0x0800_0000
VIRT_GICC_BASE = 0x0801_0000
GICD_SIZE = 0x1000                 # 4 KiB distributor frame (Table 4-1)
GICC_SIZE = 0x2000                 # 8 KiB CPU interface frame: GICC_DIR is at 0x1000 (Table 4-2)

# ---- Interrupt IDs (2.2.1) ------------------------------------------------------------------
NR_SGIS = 16                       # ID0-ID15: software generated
NR_PRIVATE = 32                    # ID0-ID31: banked per CPU interface (SGIs and PPIs)
MAX_IRQS = 1020                    # ID1020-ID1023 are special (3.2)
SPURIOUS = 1023                    # no pending interrupt of sufficient priority
SPURIOUS_GRP1 = 1022               # highest pending is Group 1 and GICC_CTLR.AckCtl == 0
MAX_CPUS = 8                       # 3-bit CPU IDs, 8-bit target lists

# ---- Distributor (4.3, Table 4-1) -----------------------------------------------------------
GICD_CTLR = 0x000
GICD_TYPER = 0x004
GICD_IIDR = 0x008
GICD_IGROUPR = 0x080               # ..0x0FC, bit per interrupt
GICD_ISENABLER = 0x100
GICD_ICENABLER = 0x180
GICD_ISPENDR = 0x200
GICD_ICPENDR = 0x280
GICD_ISACTIVER = 0x300
GICD_ICACTIVER = 0x380
GICD_IPRIORITYR = 0x400            # ..0x7FB, byte per interrupt
GICD_ITARGETSR = 0x800             # ..0xBFB, byte per interrupt
GICD_ICFGR = 0xC00                 # ..0xCFC, two bits per interrupt
GICD_NSACR = 0xE00                 # ..0xEFC, Security Extensions only: RAZ/WI here
GICD_SGIR = 0xF00
GICD_CPENDSGIR = 0xF10             # ..0xF1C, byte per SGI: a bit per source CPU
GICD_SPENDSGIR = 0xF20             # ..0xF2C
GICD_ID = 0xFD0                    # ..0xFFC identification registers (4.3.18)

# Bit-per-interrupt register blocks: 32 interrupts a word, 0x80 bytes (1024 interrupts) each.
BIT_BLOCK = 0x80

GICD_CTLR_ENABLEGRP0 = 1 << 0      # 4.3.1, GICv2 without Security Extensions
GICD_CTLR_ENABLEGRP1 = 1 << 1
GICD_CTLR_MASK = GICD_CTLR_ENABLEGRP0 | GICD_CTLR_ENABLEGRP1

GICD_TYPER_ITLINESNUMBER = Field(4, 0)   # 4.3.2: 32 * (N + 1) interrupt IDs
GICD_TYPER_CPUNUMBER = Field(7, 5)       # number of CPU interfaces - 1
GICD_TYPER_SECURITYEXTN = Field(10, 10)  # 0: no Security Extensions
GICD_TYPER_LSPI = Field(15, 11)          # 0 without Security Extensions

# 4.3.3 GICD_IIDR: ProductID [31:24], Variant [19:16], Revision [15:12], Implementer [11:0].
# Implementer 0x43B (ARM's JEP106 code, as QEMU and KVM report), product/variant/revision 0.
GICD_IIDR_VALUE = 0x0000_043B

GICD_SGIR_TARGETLISTFILTER = Field(25, 24)   # 4.3.15
GICD_SGIR_CPUTARGETLIST = Field(23, 16)
GICD_SGIR_NSATT = Field(15, 15)              # Security Extensions only: ignored
GICD_SGIR_SGIINTID = Field(3, 0)
SGIR_FILTER_LIST = 0                         # forward to CPUTargetList
SGIR_FILTER_OTHERS = 1                       # all but the requesting CPU
SGIR_FILTER_SELF = 2                         # only the requesting CPU
                                             # 3: reserved (the write is ignored)

# GICD_ICFGRn (4.3.13): Int_config[1] (bit 2F+1) 1 = edge-triggered, 0 = level-sensitive;
# Int_config[0] (bit 2F) is reserved in GICv2 (RAZ/WI). SGIs are read-only and edge.
ICFGR_SGI_VALUE = 0xAAAA_AAAA

# Identification registers, 0xFD0..0xFFC in word steps: ICPIDR4-7, ICPIDR0-3, ICCIDR0-3.
# The CoreLink GIC-400 values (the GICv2 an A15 cluster carries): ICPIDR2 = 0x2B, its
# ArchRev field [7:4] = 2 for GICv2 (4.3.18), bit 3 = JEDEC-assigned ID.
GICD_ID_VALUES = (0x04, 0x00, 0x00, 0x00, 0x90, 0xB4, 0x2B, 0x00, 0x0D, 0xF0, 0x05, 0xB1)
ICPIDR2 = 0xFE8
ICPIDR2_ARCHREV = Field(7, 4)

# ---- CPU interface (4.4, Table 4-2) ---------------------------------------------------------
GICC_CTLR = 0x0000
GICC_PMR = 0x0004
GICC_BPR = 0x0008
GICC_IAR = 0x000C
GICC_EOIR = 0x0010
GICC_RPR = 0x0014
GICC_HPPIR = 0x0018
GICC_ABPR = 0x001C
GICC_AIAR = 0x0020
GICC_AEOIR = 0x0024
GICC_AHPPIR = 0x0028
GICC_APR = 0x00D0                  # ..0x0DC
GICC_NSAPR = 0x00E0                # ..0x0EC, Security Extensions only: RAZ/WI here
GICC_IIDR = 0x00FC
GICC_DIR = 0x1000

# 4.4.1 GICC_CTLR, GICv2 without Security Extensions.
GICC_CTLR_ENABLEGRP0 = 1 << 0
GICC_CTLR_ENABLEGRP1 = 1 << 1
GICC_CTLR_ACKCTL = 1 << 2
GICC_CTLR_FIQEN = 1 << 3
GICC_CTLR_CBPR = 1 << 4
GICC_CTLR_FIQBYPDISGRP0 = 1 << 5   # bypass disables: stored, no bypass signal is modelled
GICC_CTLR_IRQBYPDISGRP0 = 1 << 6
GICC_CTLR_FIQBYPDISGRP1 = 1 << 7
GICC_CTLR_IRQBYPDISGRP1 = 1 << 8
GICC_CTLR_EOIMODE = 1 << 9
GICC_CTLR_MASK = (1 << 10) - 1

GICC_IAR_INTERRUPTID = Field(9, 0)  # 4.4.4
GICC_IAR_CPUID = Field(12, 10)      # source CPU of an SGI
GICC_BPR_BINARYPOINT = Field(2, 0)  # 4.4.3

# 4.4.14 GICC_IIDR: ProductID [31:20], ArchitectureVersion [19:16] = 2, Revision [15:12],
# Implementer [11:0] = 0x43B (ARM), as QEMU's GICv2.
GICC_IIDR_VALUE = 0x0002_043B

IDLE_PRIORITY = 0xFF                # GICC_RPR with no active interrupt (4.4.6)
