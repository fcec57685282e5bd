/*
 * counter [count] [period ms]
 *
 * Prints "counter <n> at <t> ms" for n = 1..count (0: forever), one line per <period ms> of
 * the machine's time (HV_SLEEP_US between lines; HV_TIME_NS for <t>), then powers off.
 * Migrated while it runs, its output on the source and then on the destination must read as
 * one run: no number missing, none repeated, the time going on smoothly (the cover letter's
 * "date output loop, check date is picked up smoothly").  Defaults: 0 (forever), 10 ms.
 * Where the vendor hypercalls are missing (e.g. under QEMU) the time prints as 0.
 */
#include "rt.h"

volatile uint32_t counter_value = 0;            /* host-visible: the last number printed */

/* n / d without libgcc's __aeabi_uldivmod: restoring long division, one bit at a time. */
static uint64_t div_u64_u32(uint64_t n, uint32_t d)
{
    uint64_t q = 0, r = 0;
    for (int i = 63; i >= 0; i--) {
        r = (r << 1) | ((n >> i) & 1);
        if (r >= d) {
            r -= d;
            q |= (uint64_t)1 << i;
        }
    }
    return q;
}

static void fail(const char *what, const char *arg)
{
    uart_puts("counter: ");
    uart_puts(what);
    if (arg) {
        uart_puts(" '");
        uart_puts(arg);
        uart_putc('\'');
    }
    uart_putc('\n');
    uart_puts("counter: usage: counter [count] [period ms]\n");
    psci_system_off();
}

int main(void)
{
    char *argv[3] = { NULL, NULL, NULL };
    int argc = get_args(argv, 3);
    uint32_t v[2] = { 0, 10 };

    if (argc > 2)
        fail("too many arguments", NULL);
    for (int i = 0; i < argc; i++)
        if (parse_u32(argv[i], &v[i]) != 0)
            fail("bad number", argv[i]);
    uint32_t count = v[0], period_ms = v[1];

    for (uint32_t n = 1; count == 0 || n <= count; n++) {
        uint64_t ns = 0;
        hv_time_ns(&ns);
        uart_puts("counter ");
        put_dec(n);
        uart_puts(" at ");
        put_dec((uint32_t)div_u64_u32(ns, 1000000u));
        uart_puts(" ms\n");
        counter_value = n;
        hv_sleep_us(period_ms * 1000u);
    }
    uart_puts("counter: done\n");
    psci_system_off();
}
