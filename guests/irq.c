/*
 * irq: interrupts, timers and a second CPU on the QEMU virt board (GICv2, Generic Timer,
 * PSCI, PL011), for `-smp 2`.  CPU0 prints everything; CPU1 only leaves results in memory.
 *
 *   - GICv2: distributor and CPU interface on; an idle GICC_IAR reads 1023 (spurious); an SGI
 *     to itself is held while GICC_PMR masks its priority and taken once it does not.
 *   - Physical timer (CNTP_*): 5 ticks of 1 ms on CPU0 and 3 on CPU1 (its own banked timer
 *     and PPI), WFI between them; the first deadline from CNTP_TVAL, the next ones by CNTP_CVAL.
 *     Then an expired timer's level interrupt is pending at the GIC until CNTP_CTL.IMASK.
 *   - PL011 transmit interrupt: a message sent one character per interrupt.
 *   - PSCI over HVC: VERSION, MIGRATE_INFO_TYPE, FEATURES, AFFINITY_INFO, CPU_ON (an absent
 *     CPU; ALREADY_ON for an on CPU, asked by CPU0 and by CPU1, also for itself), CPU_OFF,
 *     CPU_ON again after CPU_OFF; SYSTEM_OFF at the end (start.S).
 *   - SGIs between the CPUs: CPU0 sends SGI 1 to CPU1, whose handler answers with SGI 2;
 *     three rounds, each side recording the source CPU from GICC_IAR[12:10].
 *
 * Only deterministic facts are printed: counts, return codes, register fields, and yes/no for
 * comparisons (never a counter value or a time).  The CPUs talk through single-writer flags
 * (DMB before publishing, DSB + SEV after, waiters in WFE); no exclusives (with the MMU off
 * memory is Strongly-ordered, where exclusives on shared memory are IMPLEMENTATION DEFINED).
 *
 * QEMU 7.2 facts relied on (`qemu-system-arm -M virt -cpu cortex-a15 -smp 2`, no
 * virtualization= or secure=: the guest runs at Non-secure PL1 and QEMU is the PSCI
 * firmware).  Each was read from the DTB (`-M virt,dumpdtb=virt.dtb`, then dtc) and checked
 * by running this guest or a probe built like it:
 *   - Timer PPIs: the DTB's "arm,armv7-timer" has interrupts <1 13 0x304>, <1 14 0x304>,
 *     <1 11 0x304>, <1 10 0x304>: secure physical, non-secure physical, virtual and hypervisor
 *     timer = IDs 29, 30, 27, 26, level.  Probe: with PPIs 16-31 all enabled, the CNTP timer
 *     arrives as ID 30 and the CNTV timer as ID 27.  GICD_ICFGR1 reads 0 (level).
 *   - PL011: DTB interrupts <0 1 4> = SPI 1 = ID 33, level.  QEMU raises TXRIS after every
 *     UARTDR write (its transmitter is instant) and clears it on UARTICR; UARTLCR_H resets
 *     to 0 (FIFOs off), where the PL011 TRM also raises TXRIS when the one-character
 *     holding register empties, so "one interrupt per character" is the device's behaviour.
 *   - PSCI conduit: DTB psci method = "hvc" (compatible "arm,psci-1.0"); probe: SMC #0 is
 *     UNDEFINED (no EL3), HVC #0 with an unknown function ID returns -1 (NOT_SUPPORTED).
 *   - PSCI results (as printed): VERSION 0x00010001 (1.1); MIGRATE_INFO_TYPE 2 (no Trusted OS);
 *     FEATURES 0 for CPU_ON, CPU_OFF and AFFINITY_INFO, -1 for SYSTEM_SUSPEND; AFFINITY_INFO
 *     0 ON / 1 OFF, -2 (INVALID_PARAMETERS) for an absent MPIDR, as CPU_ON; CPU_ON of an on
 *     CPU -4 (ALREADY_ON).  But QEMU's CPU_ON and CPU_OFF complete asynchronously, and
 *     QEMU marks a CPU ON only when it starts running: right after CPU_ON, AFFINITY_INFO
 *     still says 1 (OFF) and a second CPU_ON succeeds too (a probe: 300 of 300 back-to-back
 *     tries), where PSCI wants ON_PENDING (2 / -5) or ALREADY_ON.  So CPU0 asks only once
 *     CPU1 has said it runs, and polls AFFINITY_INFO after CPU_OFF until it says OFF.
 *   - Secondary boot: with -kernel and an ELF, only CPU0 starts (at the ELF entry); CPU1 is
 *     held off (AFFINITY_INFO 1 before CPU_ON) until CPU_ON starts it at the given entry:
 *     SVC mode, ARM state, A/I/F masked (CPSR[9:0] = 0x1d3, printed), r0 = context id
 *     (printed), MMU off.  QEMU resets the CPU before starting it (its source,
 *     target/arm/arm-powerctl.c), so VBAR is 0 and the entry sets its own.
 *   - MPIDR 0x80000000 / 0x80000001 (DTB cpu reg 0 / 1); PSCI target_cpu = MPIDR[23:0].
 *   - GICD_TYPER.CPUNumber = CPUs - 1; CNTFRQ = 62500000 (QEMU's fixed 62.5 MHz).
 */
#include "rt.h"
#include "gic.h"
#include "gtimer.h"
#include "psci.h"

#define S_(x) #x
#define S(x) S_(x)

#define PRIO            0xa0u           /* every interrupt used here */
#define PMR_HOLD        0xa0u           /* signals only priorities numerically below 0xa0 */
#define PMR_OPEN        0xf0u
#define SGI_PING        1u              /* CPU0 -> CPU1 */
#define SGI_PONG        2u              /* CPU1 -> CPU0 */
#define SGI_SELF        3u              /* CPU0 -> CPU0: the priority-mask test */
#define UART_IRQ        33u             /* PL011: SPI 1 */
#define SGI_ROUNDS      3u
#define TICK_HZ         1000u
#define CPU0_TICKS      5u
#define CPU1_TICKS      3u

#define UART_LCR_H      0x2cu
#define UART_LCR_H_FEN  (1u << 4)
#define UART_IMSC       0x38u
#define UART_ICR        0x44u
#define UART_INT_TX     (1u << 5)

#define CPU1_TARGET     1u              /* PSCI target_cpu: MPIDR affinity fields */
#define CPU2_TARGET     2u              /* absent with -smp 2 */
#define CTX_FIRST       0x1111u         /* CPU_ON context ids (CPU1 gets them in r0) */
#define CTX_SECOND      0x2222u

/* ---- CPU1's entry (PSCI CPU_ON) and stacks ------------------------------------------------ */
void secondary_entry(uint32_t context);
void secondary_main(uint32_t context) __attribute__((noreturn));
void park_entry(void);

__asm__(
    "       .syntax unified\n"
    "       .arm\n"
    "       .arch_extension sec\n"
    "       .arch_extension virt\n"
    "       .section .text.secondary_entry, \"ax\", %progbits\n"
    "       .global secondary_entry, park_entry\n"
    "       .type   secondary_entry, %function\n"
    "secondary_entry:\n"                            /* r0 = context id, kept for main */
    "       mrs     r1, cpsr\n"
    "       ldr     r2, =cpu1_entry_cpsr\n"
    "       str     r1, [r2]\n"
    "       cpsid   aif, #0x13\n"
    "       cps     #0x1b\n"                        /* a stack for every exception mode */
    "       ldr     sp, =cpu1_und_stack_top\n"
    "       cps     #0x17\n"
    "       ldr     sp, =cpu1_abt_stack_top\n"
    "       cps     #0x12\n"
    "       ldr     sp, =cpu1_irq_stack_top\n"
    "       cps     #0x11\n"
    "       ldr     sp, =cpu1_fiq_stack_top\n"
    "       cps     #0x13\n"
    "       ldr     sp, =cpu1_svc_stack_top\n"
    "       ldr     r1, =vectors\n"                 /* start.S's vectors, as on CPU0 */
    "       mcr     p15, 0, r1, c12, c0, 0\n"       /* VBAR (per CPU, reset 0) */
    "       mrc     p15, 0, r1, c1, c0, 0\n"        /* SCTLR: clear V and TE if set */
    "       bic     r2, r1, #(1 << 13)\n"
    "       bic     r2, r2, #(1 << 30)\n"
    "       cmp     r2, r1\n"
    "       mcrne   p15, 0, r2, c1, c0, 0\n"
    "       isb\n"
    "       b       secondary_main\n"
    "       .size   secondary_entry, . - secondary_entry\n"
    "       .type   park_entry, %function\n"
    "park_entry:\n"                                 /* for a CPU that should not be there */
    "       ldr     r0, =" S(PSCI_CPU_OFF) "\n"
    "       hvc     #0\n"
    "       b       .\n"
    "       .ltorg\n"
    "       .size   park_entry, . - park_entry\n"
    "       .section .bss.cpu1_stacks, \"aw\", %nobits\n"
    "       .balign 8\n"
    "       .space  4096\n"
    "cpu1_svc_stack_top:\n"
    "       .space  1024\n"
    "cpu1_irq_stack_top:\n"
    "       .space  1024\n"
    "cpu1_und_stack_top:\n"
    "       .space  1024\n"
    "cpu1_abt_stack_top:\n"
    "       .space  256\n"
    "cpu1_fiq_stack_top:\n"
    "       .text\n");

/* ---- helpers -------------------------------------------------------------------------------- */
static inline void dmb(void) { __asm__ volatile("dmb" : : : "memory"); }
static inline void dsb(void) { __asm__ volatile("dsb" : : : "memory"); }
static inline void wfe(void) { __asm__ volatile("wfe" : : : "memory"); }
static inline void wfi(void) { __asm__ volatile("wfi" : : : "memory"); }
static inline void sev(void) { __asm__ volatile("sev" : : : "memory"); }
static inline void irq_off(void) { __asm__ volatile("cpsid i" : : : "memory"); }
/* Unmask IRQs; the ISB has a pending IRQ taken before the next instruction. */
static inline void irq_on(void) { __asm__ volatile("cpsie i\n\tisb" : : : "memory"); }

static inline uint32_t read_mpidr(void)
{
    uint32_t v;
    __asm__ volatile("mrc p15, 0, %0, c0, c0, 5" : "=r"(v));
    return v;
}

/*
 * A tiny printf: %d signed and %u unsigned decimal, %x 8 hex digits, %s a string, %y "yes" or
 * "no", %c a set of CPUs as a mask ("cpu0", "cpu0+cpu1", "nobody").
 */
static void say(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            uart_putc(*fmt);
            continue;
        }
        uint32_t v = *++fmt == 's' ? 0 : __builtin_va_arg(ap, uint32_t);
        if (*fmt == 's') {
            uart_puts(__builtin_va_arg(ap, const char *));
        } else if (*fmt == 'd' && (int32_t)v < 0) {
            uart_putc('-');
            put_dec(-v);
        } else if (*fmt == 'd' || *fmt == 'u') {
            put_dec(v);
        } else if (*fmt == 'x') {
            put_hex(v);
        } else if (*fmt == 'y') {
            uart_puts(v ? "yes" : "no");
        } else if (*fmt == 'c') {
            if (!v)
                uart_puts("nobody");
            for (uint32_t cpu = 0; v; cpu++, v >>= 1)
                if (v & 1u)
                    say(v > 1u ? "cpu%u+" : "cpu%u", cpu);
        }
    }
    __builtin_va_end(ap);
}

/* Sleep in WFI with IRQs masked (a pending IRQ still wakes it), then take the IRQs. */
static void wait_count(volatile uint32_t *count, uint32_t n)
{
    for (;;) {
        irq_off();
        if (*count >= n)
            break;
        wfi();
        irq_on();
    }
}

/* ---- state: each CPU writes only its own (mostly from its IRQ handler) --------------------- */
struct cpu_state {
    uint64_t period, cval, last_pct, last_vct;
    uint32_t ticks, ticks_wanted;
    uint32_t cval_from_tval, early, pct_back, vct_back;
    uint32_t sgis, sgi_sources, self_sgis;
    uint32_t spurious, quiet, stray, stray_iar;     /* not printed unless stray */
};
static volatile struct cpu_state cpus[2];

enum { STAGE_NONE, STAGE_UP, STAGE_DONE, STAGE_OFF };
volatile uint32_t cpu1_entry_cpsr;      /* CPU1 -> CPU0 */
static volatile uint32_t cpu1_stage, cpu1_mpidr, cpu1_context, cpu1_on_self, cpu1_on_cpu0;
static volatile uint32_t cpu1_may_stop; /* CPU0 -> CPU1 */

static void publish(volatile uint32_t *flag, uint32_t v)
{
    dmb();                              /* what was written before is seen before the flag */
    *flag = v;
    dsb();
    sev();
}

static void wait_flag(volatile uint32_t *flag, uint32_t v)
{
    while (*flag != v)
        wfe();
    dmb();
}

/* ---- interrupt handlers --------------------------------------------------------------------- */
static const char tx_msg[] = "hello";
static volatile uint32_t tx_next, tx_irqs;

static void uart_tx_irq(void)
{
    writel(UART_BASE + UART_ICR, UART_INT_TX);
    tx_irqs++;
    if (tx_msg[tx_next])
        uart_putc(tx_msg[tx_next++]);
}

static void timer_tick(volatile struct cpu_state *me)
{
    uint32_t ctl = read_cntp_ctl();
    uint64_t pct = read_cntpct(), vct = read_cntvct();
    if (!(ctl & CNT_CTL_ISTATUS)) {     /* a late echo of a level already withdrawn */
        me->quiet++;
        return;
    }
    me->early += pct < me->cval;
    me->pct_back += pct < me->last_pct;
    me->vct_back += vct < me->last_vct;
    me->last_pct = pct;
    me->last_vct = vct;
    if (++me->ticks >= me->ticks_wanted) {
        write_cntp_ctl(0);
        return;
    }
    me->cval += me->period;             /* the next deadline (if already past: at once) */
    write_cntp_cval(me->cval);
}

void exc_irq(struct exc_frame *f)
{
    uint32_t cpu = read_mpidr() & 1u;
    volatile struct cpu_state *me = &cpus[cpu];
    uint32_t iar = gicc_read(GICC_IAR), id = GIC_IAR_ID(iar);
    f->lr -= 4;                         /* LR_irq is the interrupted instruction + 4 */
    if (id >= 1020) {                   /* spurious: nothing to acknowledge */
        me->spurious++;
        return;
    }
    if (id == TIMER_PPI_PHYS) {
        timer_tick(me);
    } else if ((id == SGI_PING && cpu == 1) || (id == SGI_PONG && cpu == 0)) {
        me->sgis++;
        me->sgi_sources |= 1u << GIC_IAR_CPU(iar);
        if (cpu == 1)
            gic_send_sgi(SGI_PONG, 1u << 0);
    } else if (id == SGI_SELF && cpu == 0) {
        me->self_sgis++;
        me->sgi_sources |= 1u << GIC_IAR_CPU(iar);
    } else if (id == UART_IRQ && cpu == 0) {
        uart_tx_irq();
    } else {
        me->stray++;
        me->stray_iar = iar;
    }
    gicc_write(GICC_EOIR, iar);
}

/* ---- the tests --------------------------------------------------------------------------- */
/* n ticks of 1 ms on the calling CPU's physical timer, counted by the handler. */
static void run_timer(volatile struct cpu_state *me, uint32_t n)
{
    me->period = read_cntfrq() / TICK_HZ;
    me->ticks = 0;
    me->ticks_wanted = n;
    gic_set_priority(TIMER_PPI_PHYS, PRIO);     /* banked: this CPU's PPI */
    gic_enable(TIMER_PPI_PHYS);
    me->last_vct = read_cntvct();
    uint64_t before = read_cntpct();
    write_cntp_tval((uint32_t)me->period);      /* CVAL = CNTPCT + TVAL at the write */
    uint64_t after = read_cntpct(), cval = read_cntp_cval();
    me->cval_from_tval = cval >= before + me->period && cval <= after + me->period;
    me->cval = cval;
    me->last_pct = before;
    write_cntp_ctl(CNT_CTL_ENABLE);
    wait_count(&me->ticks, n);
}

static void print_timer(uint32_t cpu)
{
    volatile struct cpu_state *s = &cpus[cpu];
    say("timer: cpu%u %u ticks of 1 ms, cval from tval %y, none early %y, "
        "cntpct monotonic %y, cntvct monotonic %y\n", cpu, s->ticks, s->cval_from_tval,
        !s->early, !s->pct_back, !s->vct_back);
}

static void gic_test(void)
{
    uint32_t typer = gicd_read(GICD_TYPER);
    gicd_write(GICD_CTLR, 0);
    for (uint32_t n = 0; n < GICD_TYPER_LINES(typer) / 32u; n++) {
        gicd_write(GICD_ICENABLER(n), ~0u);
        gicd_write(GICD_ICPENDR(n), ~0u);
    }
    gicd_write(GICD_CTLR, GICD_CTLR_ENABLE);
    gic_cpu_enable(PMR_OPEN);
    uint32_t idle = gicc_read(GICC_IAR);

    gic_set_priority(SGI_SELF, PRIO);
    gic_enable(SGI_SELF);
    gicc_write(GICC_PMR, PMR_HOLD);
    gic_send_sgi_self(SGI_SELF);
    irq_on();                           /* a window in which nothing may be taken */
    irq_off();
    uint32_t held = gicc_read(GICC_IAR), taken_held = cpus[0].self_sgis;
    if (GIC_IAR_ID(held) < 1020)
        gicc_write(GICC_EOIR, held);
    gicc_write(GICC_PMR, PMR_OPEN);
    wait_count(&cpus[0].self_sgis, 1);
    say("gic: %u cpus, idle iar %u; sgi 3 to self at pmr a0: taken %u, iar %u; "
        "at pmr f0: taken %u, from %c\n", GICD_TYPER_CPUS(typer), idle, taken_held, held,
        cpus[0].self_sgis, cpus[0].sgi_sources);
    cpus[0].sgi_sources = 0;
}

static void timer_test(void)
{
    say("timer: cntfrq %u Hz, physical timer ppi %u\n", read_cntfrq(), TIMER_PPI_PHYS);
    run_timer(&cpus[0], CPU0_TICKS);
    print_timer(0);

    /* Expired, IRQs masked: the timer's level is pending at the GIC until IMASK. */
    uint32_t bit = 1u << TIMER_PPI_PHYS, pending = 0, still = bit;
    write_cntp_cval(read_cntpct());
    write_cntp_ctl(CNT_CTL_ENABLE);
    for (int i = 0; i < 1000 && !pending; i++)
        pending = gicd_read(GICD_ISPENDR(0)) & bit;
    write_cntp_ctl(CNT_CTL_ENABLE | CNT_CTL_IMASK);
    uint32_t ctl = read_cntp_ctl();
    for (int i = 0; i < 1000 && still; i++)
        still = gicd_read(GICD_ISPENDR(0)) & bit;
    write_cntp_ctl(0);
    say("timer: expired: ppi 30 pending %y; with imask: istatus %u, pending %y\n",
        pending != 0, (ctl & CNT_CTL_ISTATUS) != 0, still != 0);
}

static void uart_test(void)
{
    say("uart: tx by interrupt: ");
    gic_set_priority(UART_IRQ, PRIO);
    gic_set_targets(UART_IRQ, 1u << 0);
    gic_set_edge(UART_IRQ, 0);
    gic_enable(UART_IRQ);
    uint32_t lcr = readl(UART_BASE + UART_LCR_H);
    if (lcr & UART_LCR_H_FEN)           /* FIFOs off: TXRIS when the holding register empties */
        writel(UART_BASE + UART_LCR_H, lcr & ~UART_LCR_H_FEN);
    writel(UART_BASE + UART_ICR, UART_INT_TX);
    writel(UART_BASE + UART_IMSC, UART_INT_TX);
    tx_next = 1;
    uart_putc(tx_msg[0]);               /* the handler sends the rest, one per interrupt */
    wait_count(&tx_irqs, sizeof(tx_msg) - 1);
    writel(UART_BASE + UART_IMSC, 0);
    say(", %u interrupts on id %u\n", tx_irqs, UART_IRQ);
}

static void psci_info(void)
{
    say("psci: version %x, migrate_info_type %d, features cpu_on %d cpu_off %d "
        "affinity_info %d system_suspend %d\n",
        psci_call(PSCI_VERSION, 0, 0, 0), psci_call(PSCI_MIGRATE_INFO_TYPE, 0, 0, 0),
        psci_call(PSCI_FEATURES, PSCI_CPU_ON, 0, 0), psci_call(PSCI_FEATURES, PSCI_CPU_OFF, 0, 0),
        psci_call(PSCI_FEATURES, PSCI_AFFINITY_INFO, 0, 0),
        psci_call(PSCI_FEATURES, PSCI_SYSTEM_SUSPEND, 0, 0));
}

/* AFFINITY_INFO for CPU1 until it says OFF (QEMU completes CPU_OFF asynchronously). */
static int32_t wait_cpu1_off(void)
{
    int32_t a = PSCI_AFF_ON;
    for (int i = 0; i < 100000 && a != PSCI_AFF_OFF; i++)
        a = psci_call(PSCI_AFFINITY_INFO, CPU1_TARGET, 0, 0);
    return a;
}

static void smp_test(void)
{
    uint32_t entry = (uintptr_t)secondary_entry;
    int32_t before = psci_call(PSCI_AFFINITY_INFO, CPU1_TARGET, 0, 0);
    int32_t absent = psci_call(PSCI_CPU_ON, CPU2_TARGET, (uintptr_t)park_entry, 0);
    int32_t r = psci_call(PSCI_CPU_ON, CPU1_TARGET, entry, CTX_FIRST);
    say("psci: affinity_info cpu1 %d, cpu_on cpu2 (absent) %d, cpu_on cpu1 %d\n",
        before, absent, r);
    if (r != PSCI_RET_SUCCESS)
        return;
    wait_flag(&cpu1_stage, STAGE_UP);
    say("cpu1: mpidr %x, entry cpsr[9:0] %x, context %x, cpu_on itself %d, cpu_on cpu0 %d\n",
        cpu1_mpidr, cpu1_entry_cpsr & 0x3ffu, cpu1_context, cpu1_on_self, cpu1_on_cpu0);
    r = psci_call(PSCI_CPU_ON, CPU1_TARGET, entry, CTX_FIRST);
    say("psci: cpu_on cpu1 again %d, affinity_info cpu1 %d cpu0 %d\n", r,
        psci_call(PSCI_AFFINITY_INFO, CPU1_TARGET, 0, 0),
        psci_call(PSCI_AFFINITY_INFO, read_mpidr() & 0xffffffu, 0, 0));

    gic_set_priority(SGI_PONG, PRIO);
    gic_enable(SGI_PONG);
    for (uint32_t i = 0; i < SGI_ROUNDS; i++) {
        gic_send_sgi(SGI_PING, 1u << 1);
        wait_count(&cpus[0].sgis, i + 1);
    }
    wait_flag(&cpu1_stage, STAGE_DONE);
    say("sgi: %u rounds: cpu1 took sgi 1 %u times from %c, cpu0 took sgi 2 %u times from %c\n",
        SGI_ROUNDS, cpus[1].sgis, cpus[1].sgi_sources, cpus[0].sgis, cpus[0].sgi_sources);
    print_timer(1);

    publish(&cpu1_may_stop, 1);
    wait_flag(&cpu1_stage, STAGE_OFF);
    say("psci: cpu1 called cpu_off, affinity_info cpu1 %d\n", wait_cpu1_off());

    publish(&cpu1_stage, STAGE_NONE);   /* CPU1 is off: CPU0 may write its flag */
    r = psci_call(PSCI_CPU_ON, CPU1_TARGET, entry, CTX_SECOND);
    if (r == PSCI_RET_SUCCESS)
        wait_flag(&cpu1_stage, STAGE_OFF);
    say("psci: cpu_on cpu1 after cpu_off %d, context %x, cpu_off again, affinity_info cpu1 %d\n",
        r, cpu1_context, wait_cpu1_off());
}

/* CPU1, from secondary_entry.  The first time: the tests; the second time: straight off. */
void secondary_main(uint32_t context)
{
    cpu1_mpidr = read_mpidr();
    cpu1_context = context;
    if (context == CTX_FIRST) {
        uint32_t entry = (uintptr_t)secondary_entry;
        cpu1_on_self = (uint32_t)psci_call(PSCI_CPU_ON, CPU1_TARGET, entry, 0);
        cpu1_on_cpu0 = (uint32_t)psci_call(PSCI_CPU_ON, 0, entry, 0);
        gic_set_priority(SGI_PING, PRIO);   /* this CPU's banked SGI registers */
        gic_enable(SGI_PING);
        gic_cpu_enable(PMR_OPEN);
        publish(&cpu1_stage, STAGE_UP);
        wait_count(&cpus[1].sgis, SGI_ROUNDS);
        run_timer(&cpus[1], CPU1_TICKS);
        publish(&cpu1_stage, STAGE_DONE);
        wait_flag(&cpu1_may_stop, 1);
    }
    publish(&cpu1_stage, STAGE_OFF);
    psci_call(PSCI_CPU_OFF, 0, 0, 0);
    for (;;)                            /* CPU_OFF failed: CPU0 sees AFFINITY_INFO stay ON */
        wfi();
}

int main(void)
{
    say("irq: start\ncpu0: mpidr %x\n", read_mpidr());
    gic_test();
    timer_test();
    uart_test();
    psci_info();
    smp_test();
    for (uint32_t cpu = 0; cpu < 2; cpu++)
        if (cpus[cpu].stray)
            say("irq: CHECK FAILED: unexpected interrupt, iar %x on cpu%u\n",
                cpus[cpu].stray_iar, cpu);
    say("irq: done\n");
    return 0;
}
