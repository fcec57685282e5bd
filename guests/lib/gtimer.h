/*
 * The ARMv7 Generic Timer (DDI 0406C B8) from PL1: CP15 accessors.
 *
 * CNTFRQ c14,c0,0; CNTPCT MRRC opc1 0 and CNTVCT MRRC opc1 1; the physical (PL1) timer
 * CNTP_TVAL c14,c2,0, CNTP_CTL c14,c2,1, CNTP_CVAL MCRR/MRRC opc1 2.  Counter reads are
 * preceded by an ISB so they are not taken early.  Header only.
 */
#ifndef GUEST_GTIMER_H
#define GUEST_GTIMER_H

#include "rt.h"

/* CNTP_CTL / CNTV_CTL */
#define CNT_CTL_ENABLE      (1u << 0)
#define CNT_CTL_IMASK       (1u << 1)
#define CNT_CTL_ISTATUS     (1u << 2)   /* read-only: the timer condition is met */

/* Timer PPIs on QEMU virt (interrupt IDs, the DTB lists them as PPI 13, 14, 11, 10). */
#define TIMER_PPI_SEC_PHYS  29u
#define TIMER_PPI_PHYS      30u         /* non-secure PL1 physical timer */
#define TIMER_PPI_VIRT      27u
#define TIMER_PPI_HYP       26u

static inline uint32_t read_cntfrq(void)
{
    uint32_t v;
    __asm__ volatile("mrc p15, 0, %0, c14, c0, 0" : "=r"(v));
    return v;
}

static inline uint64_t read_cntpct(void)
{
    uint64_t v;
    __asm__ volatile("isb\n\tmrrc p15, 0, %Q0, %R0, c14" : "=r"(v) : : "memory");
    return v;
}

static inline uint64_t read_cntvct(void)
{
    uint64_t v;
    __asm__ volatile("isb\n\tmrrc p15, 1, %Q0, %R0, c14" : "=r"(v) : : "memory");
    return v;
}

static inline uint32_t read_cntp_ctl(void)
{
    uint32_t v;
    __asm__ volatile("mrc p15, 0, %0, c14, c2, 1" : "=r"(v) : : "memory");
    return v;
}

static inline void write_cntp_ctl(uint32_t v)
{
    __asm__ volatile("mcr p15, 0, %0, c14, c2, 1\n\tisb" : : "r"(v) : "memory");
}

static inline void write_cntp_tval(uint32_t v)
{
    __asm__ volatile("mcr p15, 0, %0, c14, c2, 0\n\tisb" : : "r"(v) : "memory");
}

static inline uint64_t read_cntp_cval(void)
{
    uint64_t v;
    __asm__ volatile("mrrc p15, 2, %Q0, %R0, c14" : "=r"(v) : : "memory");
    return v;
}

static inline void write_cntp_cval(uint64_t v)
{
    __asm__ volatile("mcrr p15, 2, %Q0, %R0, c14\n\tisb" : : "r"(v) : "memory");
}

#endif
