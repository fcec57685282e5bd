/*
 * dirtyram <total pages> <pages per round> <sleep ms> [rounds] [spin]
 *
 * The load generator of the ARMv7 dirty page logging cover letter: it owns <total pages>
 * 4 KiB pages starting at the first 2 MiB boundary after its image (dirtyram_region).  Round
 * r (0-based) writes r + 1 to the first word of the next <pages per round> pages, round-robin
 * over the region, stores r + 1 in dirtyram_round, then sleeps <sleep ms> (HV_SLEEP_US; a
 * no-op where unsupported).  rounds = 0 runs forever; otherwise it prints a summary and
 * powers off.  spin > 0 runs a busy loop of that many iterations before each page write:
 * computation between stores, so the dirty rate is bound by the CPU (what auto-converge's
 * throttling slows down) rather than by the sleeps.  Arguments come from HV_GET_ARGS;
 * defaults: 1024 64 10 0 0.
 *
 * The guest cannot know its RAM size: the host must give at least
 * (dirtyram_region - 0x40000000) + total * 4 KiB of RAM (2 MiB + 4 MiB for the defaults).
 */
#include "rt.h"

/* Host-visible state (the non-zero initial values are in the ELF's .data). */
volatile uint32_t dirtyram_region = (uintptr_t)__guest_region_start;
volatile uint32_t dirtyram_round = 0;           /* rounds completed = last value written */
volatile uint32_t dirtyram_total = 1024;
volatile uint32_t dirtyram_per_round = 64;
volatile uint32_t dirtyram_sleep_ms = 10;
volatile uint32_t dirtyram_rounds = 0;
volatile uint32_t dirtyram_spin = 0;

static void fail(const char *what, const char *arg)
{
    uart_puts("dirtyram: ");
    uart_puts(what);
    if (arg) {
        uart_puts(" '");
        uart_puts(arg);
        uart_putc('\'');
    }
    uart_putc('\n');
    uart_puts("dirtyram: usage: dirtyram <total pages> <pages per round> <sleep ms> [rounds] "
              "[spin]\n");
    psci_system_off();
}

int main(void)
{
    char *argv[6] = { NULL, NULL, NULL, NULL, NULL, NULL };
    int argc = get_args(argv, 6);
    uint32_t v[5] = { dirtyram_total, dirtyram_per_round, dirtyram_sleep_ms, dirtyram_rounds,
                      dirtyram_spin };

    if (argc > 5)
        fail("too many arguments", NULL);
    for (int i = 0; i < argc; i++)
        if (parse_u32(argv[i], &v[i]) != 0)
            fail("bad number", argv[i]);

    uint32_t total = v[0], per_round = v[1], sleep_ms = v[2], rounds = v[3], spin = v[4];
    dirtyram_total = total;
    dirtyram_per_round = per_round;
    dirtyram_sleep_ms = sleep_ms;
    dirtyram_rounds = rounds;
    dirtyram_spin = spin;

    uart_puts("dirtyram: start ");
    put_dec(total);
    uart_putc(' ');
    put_dec(per_round);
    uart_putc(' ');
    put_dec(sleep_ms);
    uart_putc('\n');

    if (total == 0)
        fail("total pages must be > 0", argv[0]);
    if (per_round == 0)
        fail("pages per round must be > 0", argv[1]);
    if (sleep_ms > 0xffffffffu / 1000u)
        fail("sleep too long", argv[2]);
    uint32_t region = dirtyram_region;
    if (total > (0u - region) / PAGE_SIZE)
        fail("region does not fit below 4 GiB (give fewer pages)", argv[0]);

    int can_sleep = 1;
    uint32_t idx = 0;
    uintptr_t page = region;
    for (uint32_t round = 0; rounds == 0 || round < rounds; round++) {
        uint32_t value = round + 1;
        for (uint32_t j = 0; j < per_round; j++) {
            for (uint32_t k = 0; k < spin; k++)
                __asm__ volatile("");
            *(volatile uint32_t *)page = value;
            if (++idx == total) {
                idx = 0;
                page = region;
            } else {
                page += PAGE_SIZE;
            }
        }
        dirtyram_round = value;
        if (sleep_ms && can_sleep && hv_sleep_us(sleep_ms * 1000u) != 0)
            can_sleep = 0;      /* not supported (QEMU): sleeping is a no-op from now on */
    }

    uart_puts("dirtyram: ");
    put_dec(rounds);
    uart_puts(" rounds, ");
    put_dec(total);
    uart_puts(" pages\n");
    return 0;
}
