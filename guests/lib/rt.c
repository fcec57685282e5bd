/* Tiny runtime shared by the guests: console, hypercalls, argument parsing, PRNG, exceptions. */
#include "rt.h"

/* ---- console --------------------------------------------------------------------------- */

void uart_putc(char c)
{
    while (readl(UART_BASE + UART_FR) & UART_FR_TXFF)
        ;
    writeb(UART_BASE + UART_DR, (uint8_t)c);
}

void uart_puts(const char *s)
{
    while (*s)
        uart_putc(*s++);
}

void put_hex(uint32_t v)
{
    for (int shift = 28; shift >= 0; shift -= 4)
        uart_putc("0123456789abcdef"[(v >> shift) & 0xf]);
}

/* Decimal without a division (no libgcc): subtract powers of ten. */
void put_dec(uint32_t v)
{
    static const uint32_t pow10[] = {
        1000000000u, 100000000u, 10000000u, 1000000u, 100000u, 10000u, 1000u, 100u, 10u, 1u,
    };
    int started = 0;
    for (unsigned i = 0; i < sizeof(pow10) / sizeof(pow10[0]); i++) {
        char d = '0';
        while (v >= pow10[i]) {
            v -= pow10[i];
            d++;
        }
        if (d != '0' || started || pow10[i] == 1u) {
            uart_putc(d);
            started = 1;
        }
    }
}

/* ---- hypercalls ------------------------------------------------------------------------ */

void psci_system_off(void)
{
    hvc_call(PSCI_SYSTEM_OFF, 0, 0, 0);
    /* Only reached if PSCI is missing: stop here. */
    uart_puts("psci: SYSTEM_OFF returned, halting\n");
    for (;;)
        __asm__ volatile("wfi");
}

int hv_sleep_us(uint32_t us)
{
    return (uint32_t)hvc_call(HV_SLEEP_US, us, 0, 0) == HV_NOT_SUPPORTED ? -1 : 0;
}

int hv_time_ns(uint64_t *ns)
{
    uint64_t r = hvc_call(HV_TIME_NS, 0, 0, 0);
    /* A low word of exactly 0xffffffff with a zero high word is taken as NOT_SUPPORTED
     * (QEMU leaves r1 = a1 = 0); a running clock passes that value within 4.3 s of boot. */
    if (r == HV_NOT_SUPPORTED)
        return -1;
    *ns = r;
    return 0;
}

static char args_buf[256];

int get_args(char **argv, int max)
{
    uint32_t n = (uint32_t)hvc_call(HV_GET_ARGS, (uintptr_t)args_buf, sizeof(args_buf), 0);
    if (n == HV_NOT_SUPPORTED)
        return -1;
    if (n >= sizeof(args_buf))
        n = sizeof(args_buf) - 1;
    args_buf[n] = '\0';
    int argc = 0;
    char *p = args_buf;
    while (argc < max) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (*p == '\0')
            break;
        argv[argc++] = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n')
            p++;
        if (*p)
            *p++ = '\0';
    }
    return argc;
}

/* ---- parsing --------------------------------------------------------------------------- */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int parse_hex32(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        int d = hex_digit(*s);
        if (d < 0 || (v >> 28) != 0)
            return -1;
        v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return 0;
}

int parse_u32(const char *s, uint32_t *out)
{
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        return parse_hex32(s, out);
    if (*s == '\0')
        return -1;
    uint32_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        uint64_t w = (uint64_t)v * 10u + (uint32_t)(*s - '0');
        if (w > 0xffffffffull)
            return -1;
        v = (uint32_t)w;
    }
    *out = v;
    return 0;
}

/* ---- PRNG ------------------------------------------------------------------------------ */

uint32_t prng_seed(uint32_t seed)
{
    return seed ? seed : 0x2545f491u;
}

uint32_t xorshift32(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

/* ---- exceptions ------------------------------------------------------------------------ */

void exc_unexpected(const char *name, struct exc_frame *f)
{
    uart_puts("unexpected exception ");
    uart_puts(name);
    uart_puts(" lr ");
    put_hex(f->lr);
    uart_puts(" spsr ");
    put_hex(f->spsr);
    uart_putc('\n');
    psci_system_off();
}

__attribute__((weak)) void exc_reset(struct exc_frame *f)
{
    exc_unexpected("reset", f);
}

__attribute__((weak)) void exc_undef(struct exc_frame *f)
{
    exc_unexpected("undef", f);
}

__attribute__((weak)) void exc_svc(struct exc_frame *f)
{
    exc_unexpected("svc", f);
}

__attribute__((weak)) void exc_pabt(struct exc_frame *f)
{
    uart_puts("pabt: ifsr ");
    put_hex(read_ifsr());
    uart_puts(" ifar ");
    put_hex(read_ifar());
    uart_putc('\n');
    exc_unexpected("pabt", f);
}

__attribute__((weak)) void exc_dabt(struct exc_frame *f)
{
    uart_puts("dabt: dfsr ");
    put_hex(read_dfsr());
    uart_puts(" dfar ");
    put_hex(read_dfar());
    uart_putc('\n');
    exc_unexpected("dabt", f);
}

__attribute__((weak)) void exc_unused(struct exc_frame *f)
{
    exc_unexpected("unused", f);
}

__attribute__((weak)) void exc_irq(struct exc_frame *f)
{
    exc_unexpected("irq", f);
}

__attribute__((weak)) void exc_fiq(struct exc_frame *f)
{
    exc_unexpected("fiq", f);
}
