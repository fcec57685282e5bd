/*
 * dirtycheck <base hex IPA> <pages> <seed hex>
 *
 * The guest half of KVM's dirty_log_test (tools/testing/selftests/kvm/dirty_log_test.c):
 * forever, pick a pseudo-random page in [0, pages) (xorshift32 from <seed>), store the
 * current 64-bit `iteration` (which the host bumps between dirty-log collections) at offset
 * 0 of that page with one STRD, and count the store in dirtycheck_writes.  It never exits:
 * the host stops it and checks that every page holding the current iteration is in the
 * dirty log.
 *
 * Defaults (no HV_GET_ARGS): base = first 2 MiB boundary after the image, 1024 pages,
 * seed 12345678.  The host must give enough RAM to cover the region.
 */
#include "rt.h"

/*
 * Host-visible state.  `iteration` is in .data, not .bss, so a value the host writes before
 * the guest's first instruction (the selftest starts at iteration 1) survives _start's
 * zeroing of .bss.
 */
__attribute__((section(".data.iteration"), aligned(8))) volatile uint64_t iteration = 0;
volatile uint32_t dirtycheck_writes = 0;
volatile uint32_t dirtycheck_base = (uintptr_t)__guest_region_start;
volatile uint32_t dirtycheck_pages = 1024;
volatile uint32_t dirtycheck_seed = 0x12345678u;

static void fail(const char *what, const char *arg)
{
    uart_puts("dirtycheck: ");
    uart_puts(what);
    if (arg) {
        uart_puts(" '");
        uart_puts(arg);
        uart_putc('\'');
    }
    uart_putc('\n');
    uart_puts("dirtycheck: usage: dirtycheck <base hex IPA> <pages> <seed hex>\n");
    psci_system_off();
}

int main(void)
{
    char *argv[4] = { NULL, NULL, NULL, NULL };
    int argc = get_args(argv, 4);
    uint32_t base = dirtycheck_base, pages = dirtycheck_pages, seed = dirtycheck_seed;

    if (argc > 3)
        fail("too many arguments", NULL);
    if (argc > 0 && parse_hex32(argv[0], &base) != 0)
        fail("bad base address", argv[0]);
    if (argc > 1 && parse_u32(argv[1], &pages) != 0)
        fail("bad page count", argv[1]);
    if (argc > 2 && parse_hex32(argv[2], &seed) != 0)
        fail("bad seed", argv[2]);

    dirtycheck_base = base;
    dirtycheck_pages = pages;
    dirtycheck_seed = seed;
    uart_puts("dirtycheck: base ");
    put_hex(base);
    uart_puts(" pages ");
    put_dec(pages);
    uart_putc('\n');

    if (base & (PAGE_SIZE - 1))
        fail("base is not page aligned", argv[0]);
    if (pages == 0)
        fail("pages must be > 0", argv[1]);
    if (pages > (0u - base) / PAGE_SIZE)
        fail("region does not fit below 4 GiB", argv[1]);
    uint32_t end = base + pages * PAGE_SIZE;    /* exclusive; 0 when it ends at 4 GiB */
    if (base < (uintptr_t)__image_end && (end == 0 || end > (uintptr_t)__image_start))
        fail("region overlaps the guest image", argv[0]);

    uint32_t x = prng_seed(seed);
    for (;;) {
        uint32_t r = xorshift32(&x);
        uint32_t page = (uint32_t)(((uint64_t)r * pages) >> 32);   /* uniform in [0, pages) */
        uint64_t v = iteration;
        *(volatile uint64_t *)(base + page * PAGE_SIZE) = v;
        dirtycheck_writes++;
    }
}
