/*
 * GICv2 (ARM IHI 0048B) at the QEMU virt addresses: register offsets and a few helpers.
 *
 * Distributor at 0x08000000, CPU interface at 0x08010000 (DESIGN.md 2a).  Interrupt IDs:
 * 0-15 SGIs, 16-31 PPIs (both banked per CPU: GICD_ISENABLER0, GICD_IPRIORITYR0-7 and the
 * whole CPU interface are per CPU), 32 and up SPIs, 1020-1023 special (1023: spurious).
 * Header only, so guests that do not include it are unaffected.
 */
#ifndef GUEST_GIC_H
#define GUEST_GIC_H

#include "rt.h"

#define GICD_BASE           0x08000000u
#define GICC_BASE           0x08010000u

/* Distributor (4.3) */
#define GICD_CTLR           0x000u      /* bit 0: forward Group 0 interrupts */
#define GICD_TYPER          0x004u      /* [7:5] CPUNumber (CPUs - 1), [4:0] ITLinesNumber */
#define GICD_ISENABLER(n)   (0x100u + 4u * (n))
#define GICD_ICENABLER(n)   (0x180u + 4u * (n))
#define GICD_ISPENDR(n)     (0x200u + 4u * (n))
#define GICD_ICPENDR(n)     (0x280u + 4u * (n))
#define GICD_IPRIORITYR     0x400u      /* one byte per interrupt, byte-accessible */
#define GICD_ITARGETSR      0x800u      /* one byte per interrupt (a CPU mask), byte-accessible */
#define GICD_ICFGR(n)       (0xc00u + 4u * (n)) /* 2 bits per interrupt: [1] = 1 edge */
#define GICD_SGIR           0xf00u

#define GICD_CTLR_ENABLE    1u
#define GICD_TYPER_CPUS(t)  ((((t) >> 5) & 7u) + 1u)
#define GICD_TYPER_LINES(t) ((((t) & 0x1fu) + 1u) * 32u)
#define GICD_SGIR_TARGETS(mask) ((uint32_t)(mask) << 16)    /* TargetListFilter 0 */
#define GICD_SGIR_SELF      (2u << 24)                      /* TargetListFilter 2 */

/* CPU interface (4.4) */
#define GICC_CTLR           0x00u       /* bit 0: signal Group 0 interrupts (FIQEn = 0: as IRQ) */
#define GICC_PMR            0x04u       /* priorities numerically lower than this are signalled */
#define GICC_IAR            0x0cu       /* [9:0] interrupt ID, [12:10] source CPU of an SGI */
#define GICC_EOIR           0x10u       /* write back the value read from GICC_IAR */

#define GICC_CTLR_ENABLE    1u
#define GIC_IAR_ID(iar)     ((iar) & 0x3ffu)
#define GIC_IAR_CPU(iar)    (((iar) >> 10) & 7u)
#define GIC_SPURIOUS        1023u
#define GIC_FIRST_SPI       32u

static inline uint32_t gicd_read(uint32_t off) { return readl(GICD_BASE + off); }
static inline void gicd_write(uint32_t off, uint32_t v) { writel(GICD_BASE + off, v); }
static inline uint32_t gicc_read(uint32_t off) { return readl(GICC_BASE + off); }
static inline void gicc_write(uint32_t off, uint32_t v) { writel(GICC_BASE + off, v); }

/* For SGIs and PPIs these reach the calling CPU's banked copy. */
static inline void gic_enable(uint32_t id)
{
    gicd_write(GICD_ISENABLER(id / 32u), 1u << (id % 32u));
}

static inline void gic_set_priority(uint32_t id, uint32_t prio)
{
    writeb(GICD_BASE + GICD_IPRIORITYR + id, prio);
}

/* SPIs only (the SGI/PPI target bytes are read-only). */
static inline void gic_set_targets(uint32_t id, uint32_t cpu_mask)
{
    writeb(GICD_BASE + GICD_ITARGETSR + id, cpu_mask);
}

/* SPIs only: level-sensitive (edge = 0) or edge-triggered (edge = 1). */
static inline void gic_set_edge(uint32_t id, int edge)
{
    uint32_t off = GICD_ICFGR(id / 16u), bit = 2u << (2u * (id % 16u));
    uint32_t v = gicd_read(off);
    gicd_write(off, edge ? v | bit : v & ~bit);
}

static inline void gic_send_sgi(uint32_t id, uint32_t cpu_mask)
{
    gicd_write(GICD_SGIR, GICD_SGIR_TARGETS(cpu_mask) | id);
}

static inline void gic_send_sgi_self(uint32_t id)
{
    gicd_write(GICD_SGIR, GICD_SGIR_SELF | id);
}

/* Enable the calling CPU's interface, signalling priorities below pmr. */
static inline void gic_cpu_enable(uint32_t pmr)
{
    gicc_write(GICC_PMR, pmr);
    gicc_write(GICC_CTLR, GICC_CTLR_ENABLE);
}

#endif
