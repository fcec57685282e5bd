/*
 * mmubench <alu|load|store|touch> <size> <passes> <reps> <off|short|long> [section|page]
 *
 * The guest half of the benchmark rows "... MMU on vs off" and "TLB miss ..." (bench/
 * mmu_rows.py): the same hand-written loop with the guest's own stage-1 MMU off, or on with
 * an identity map in the short-descriptor or the long-descriptor (LPAE) format.
 *
 *   alu    <size> iterations of adds/eor/subs/bne (4 instructions), <passes> times per rep
 *   load   sweep <size> bytes of the region with ldr/add/cmp/bne, <passes> sweeps per rep
 *   store  sweep <size> bytes of the region with str/add/cmp/bne, <passes> sweeps per rep
 *   touch  one load from each of <size> pages of the region (ldr/add/subs/bne): per rep a
 *          TLBIALL, one cold sweep (every page a TLB miss), then <passes> warm sweeps
 *
 * Every rep is bracketed by marks, HV_TIME_NS hypercalls the host timestamps (a touch rep has
 * three: before the cold sweep, between cold and warm, after the warm sweeps).  Rep 0 is a
 * warm-up; <reps> more follow.  The region is <size> bytes (touch: pages) at the first 2 MiB
 * boundary after the image (__guest_region_start, 0x40200000): the host must give at least
 * 2 MiB + the region of RAM.
 *
 * With the MMU on, the image, the region and the UART are identity mapped: TTBCR.N=0 (short:
 * TTBR0 translates everything, domain 0 client, ASID 0) or T0SZ=0 (LPAE: TTBR0 walks from
 * level 1).  RAM is Normal write-back, PL1 read-write, global; the UART is Device and
 * execute-never.  The image is one 1 MiB section pair (short) / one 2 MiB block (LPAE); the
 * region is mapped with sections / blocks ("section", the default) or with 4 KiB small pages
 * / level-3 pages ("page": every page of the region its own stage-1 walk).  The tables are in
 * a pool in .bss.  The MMU stays on until power-off.
 *
 * Output: a start line echoing the arguments, `mmubench: result <hex>` (alu: the accumulator;
 * load: the sum of every word loaded; store: the sum of the region's words after the last
 * sweep; touch: acc = rotl(acc, 1) + word over every word loaded, in order, each page's first
 * word being 0x9e3779b9 * its index) and `mmubench: done`.  See guests/README.md.
 */
#include "rt.h"

#define S_(x) #x
#define S(x) S_(x)

#define MAX_REGION  (128u << 20)        /* bytes; the table pool is sized for it */
#define MARK()      ((void)hvc_call(HV_TIME_NS, 0, 0, 0))
#define TOUCH_MUL   0x9e3779b9u
#define LOAD_MUL    2654435761u         /* word i of a load region: i * LOAD_MUL + LOAD_ADD */
#define LOAD_ADD    12345u
#define ALU_SEED    0x12345678u
#define STORE_SEED  0x9abcdef0u

/* ---- the loops (the same A32 code as bench/programs.py) ------------------------------------ */
uint32_t mb_alu(uint32_t n, uint32_t passes, uint32_t acc);
uint32_t mb_load(uint32_t base, uint32_t end, uint32_t passes, uint32_t acc);
uint32_t mb_store(uint32_t base, uint32_t end, uint32_t passes, uint32_t first);
uint32_t mb_touch(uint32_t base, uint32_t pages, uint32_t acc);

__asm__(
    "       .syntax unified\n"
    "       .arm\n"
    "       .section .text.mb_loops, \"ax\", %progbits\n"
    "       .balign 64\n"
    /* uint32_t mb_alu(n, passes, acc): passes x n iterations; returns acc + passes*n(n+1)/2 */
    "       .global mb_alu\n"
    "       .type   mb_alu, %function\n"
    "mb_alu:\n"
    "       push    {r4, lr}\n"
    "       mov     r3, r1\n"
    "       mov     r1, r2\n"
    "       mov     r4, r0\n"
    "1:     mov     r0, r4\n"
    "2:     adds    r1, r1, r0\n"
    "       eor     r2, r2, r1, ror #7\n"
    "       subs    r0, r0, #1\n"
    "       bne     2b\n"
    "       subs    r3, r3, #1\n"
    "       bne     1b\n"
    "       mov     r0, r1\n"
    "       pop     {r4, pc}\n"
    "       .size   mb_alu, . - mb_alu\n"
    /* uint32_t mb_load(base, end, passes, acc): acc + every word of [base, end), passes times */
    "       .balign 64\n"
    "       .global mb_load\n"
    "       .type   mb_load, %function\n"
    "mb_load:\n"
    "       push    {r4-r6, lr}\n"
    "       mov     r4, r0\n"
    "       mov     r5, r1\n"
    "       mov     r6, r3\n"
    "       mov     r0, r2\n"
    "1:     mov     r1, r4\n"
    "2:     ldr     r2, [r1], #4\n"
    "       add     r6, r6, r2\n"
    "       cmp     r1, r5\n"
    "       bne     2b\n"
    "       subs    r0, r0, #1\n"
    "       bne     1b\n"
    "       mov     r0, r6\n"
    "       pop     {r4-r6, pc}\n"
    "       .size   mb_load, . - mb_load\n"
    /* uint32_t mb_store(base, end, passes, first): word i of sweep p gets first + p*W + i;
     * returns first + passes*W (W = words in [base, end)) */
    "       .balign 64\n"
    "       .global mb_store\n"
    "       .type   mb_store, %function\n"
    "mb_store:\n"
    "       push    {r4, r5, lr}\n"
    "       mov     r4, r0\n"
    "       mov     r5, r1\n"
    "       mov     r0, r2\n"
    "       mov     r2, r3\n"
    "1:     mov     r1, r4\n"
    "2:     str     r2, [r1], #4\n"
    "       add     r2, r2, #1\n"
    "       cmp     r1, r5\n"
    "       bne     2b\n"
    "       subs    r0, r0, #1\n"
    "       bne     1b\n"
    "       mov     r0, r2\n"
    "       pop     {r4, r5, pc}\n"
    "       .size   mb_store, . - mb_store\n"
    /* uint32_t mb_touch(base, pages, acc): for each of `pages` pages in order,
     * acc = rotl(acc, 1) + its first word (order-sensitive: a permuted map shows) */
    "       .balign 64\n"
    "       .global mb_touch\n"
    "       .type   mb_touch, %function\n"
    "mb_touch:\n"
    "       mov     r12, #4096\n"
    "1:     ldr     r3, [r0], r12\n"
    "       add     r2, r3, r2, ror #31\n"
    "       subs    r1, r1, #1\n"
    "       bne     1b\n"
    "       mov     r0, r2\n"
    "       bx      lr\n"
    "       .size   mb_touch, . - mb_touch\n"
    "       .text\n");

/* ---- CP15 ------------------------------------------------------------------------------ */
#define MCR(op1, crn, crm, op2, v) \
    __asm__ volatile("mcr p15, " #op1 ", %0, " #crn ", " #crm ", " #op2 : : "r"(v) : "memory")
#define MRC(op1, crn, crm, op2, v) \
    __asm__ volatile("mrc p15, " #op1 ", %0, " #crn ", " #crm ", " #op2 : "=r"(v) : : "memory")
#define MCRR(op1, crm, v64) \
    __asm__ volatile("mcrr p15, " #op1 ", %Q0, %R0, " #crm : : "r"(v64) : "memory")

static inline void dsb(void) { __asm__ volatile("dsb" : : : "memory"); }
static inline void isb(void) { __asm__ volatile("isb" : : : "memory"); }

#define SCTLR_M     (1u << 0)
#define SCTLR_A     (1u << 1)
#define SCTLR_C     (1u << 2)
#define SCTLR_Z     (1u << 11)
#define SCTLR_I     (1u << 12)
#define SCTLR_WXN   (1u << 19)
#define SCTLR_UWXN  (1u << 20)
#define SCTLR_TRE   (1u << 28)
#define SCTLR_AFE   (1u << 29)

/* Short-descriptor (DDI 0406C B3.5.1): sections, a level-2 table, small pages. */
#define SD_SECTION      0x2u
#define SD_B            (1u << 2)
#define SD_C            (1u << 3)
#define SD_SEC_XN       (1u << 4)
#define SD_SEC_AP01     (1u << 10)      /* AP[2:0] = 001: PL1 read-write */
#define SD_SEC_TEX1     (1u << 12)      /* TEX = 001, C = B = 1: Normal write-back */
#define SD_SEC_S        (1u << 16)
#define SD_TABLE        0x1u            /* domain 0 */
#define SD_PAGE         0x2u
#define SD_PAGE_AP01    (1u << 4)
#define SD_PAGE_TEX1    (1u << 6)
#define SD_PAGE_S       (1u << 10)
#define SD_TTBR_WALK    0x6au           /* walks: write-back write-allocate, inner shareable */
#define SD_RAM_SECTION  (SD_SECTION | SD_SEC_TEX1 | SD_C | SD_B | SD_SEC_S | SD_SEC_AP01)
#define SD_RAM_PAGE     (SD_PAGE | SD_PAGE_TEX1 | SD_C | SD_B | SD_PAGE_S | SD_PAGE_AP01)
#define SD_UART_SECTION (SD_SECTION | SD_B | SD_SEC_XN | SD_SEC_AP01)

/* Long-descriptor (B3.6.1): level-1 tables, level-2 blocks and tables, level-3 pages. */
#define LD_BLOCK        0x1u
#define LD_TABLE        0x3u            /* also a level-3 page */
#define LD_ATTR(i)      ((uint32_t)(i) << 2)
#define LD_SH_INNER     (3u << 8)
#define LD_AF           (1u << 10)
#define LD_HI_PXN       (1u << 21)      /* bit 53 */
#define LD_HI_XN        (1u << 22)      /* bit 54 */
#define LD_RAM          (LD_ATTR(0) | LD_SH_INNER | LD_AF)     /* AP[2:1] = 00: PL1 RW */
#define LD_UART         (LD_ATTR(4) | LD_AF)
#define MAIR0_VALUE     0x000044ffu     /* Attr0 Normal write-back, Attr1 Normal NC */
#define MAIR1_VALUE     0x00000004u     /* Attr4 Device-nGnRE */
/* EAE, T0SZ=0 (TTBR0: all 4 GiB from level 1), IRGN0/ORGN0 write-back WA, SH0 inner */
#define LD_TTBCR        0x80003500u

/* ---- the table pool --------------------------------------------------------------------- */
/* Short: L1 (16 KiB) + one 1 KiB L2 per MiB.  LPAE: L1 + two L2 + one L3 per 2 MiB. */
#define POOL_PAGES  72u
static uint8_t pool[POOL_PAGES * PAGE_SIZE] __attribute__((aligned(16384)));
static uint32_t pool_used;              /* bytes */

static uint32_t alloc_table(uint32_t bytes, uint32_t align)
{
    uint32_t off = (pool_used + align - 1) & ~(align - 1);
    pool_used = off + bytes;            /* the pool is sized for MAX_REGION: cannot overflow */
    return (uintptr_t)pool + off;       /* zero: .bss (invalid entries everywhere) */
}

static inline void write64(uint32_t addr, uint32_t lo, uint32_t hi)
{
    uint64_t v = ((uint64_t)hi << 32) | lo;
    __asm__ volatile("strd %Q0, %R0, [%1]" : : "r"(v), "r"(addr) : "memory");
}

static void build_short(uint32_t region, uint32_t size, int pages)
{
    uint32_t l1 = alloc_table(16384, 16384);
    writel(l1 + 4 * (UART_BASE >> 20), UART_BASE | SD_UART_SECTION);
    for (uint32_t va = RAM_BASE; va < region; va += 1u << 20)           /* the image */
        writel(l1 + 4 * (va >> 20), va | SD_RAM_SECTION);
    for (uint32_t mb = 0; mb < size; mb += 1u << 20) {
        uint32_t va = region + mb;
        if (!pages) {
            writel(l1 + 4 * (va >> 20), va | SD_RAM_SECTION);
            continue;
        }
        uint32_t l2 = alloc_table(1024, 1024);
        for (uint32_t off = 0; off < (1u << 20) && mb + off < size; off += PAGE_SIZE)
            writel(l2 + 4 * (off >> 12), (va + off) | SD_RAM_PAGE);
        writel(l1 + 4 * (va >> 20), l2 | SD_TABLE);
    }
    MCR(0, c3, c0, 0, 1u);              /* DACR: domain 0 client */
    MCR(0, c13, c0, 1, 0u);             /* CONTEXTIDR: ASID 0 */
    MCR(0, c2, c0, 2, 0u);              /* TTBCR: EAE=0, N=0 */
    MCR(0, c2, c0, 0, l1 | SD_TTBR_WALK);
}

static void build_long(uint32_t region, uint32_t size, int pages)
{
    uint32_t l1 = alloc_table(PAGE_SIZE, PAGE_SIZE);
    uint32_t low = alloc_table(PAGE_SIZE, PAGE_SIZE);     /* level 2 for 0x00000000-1 GiB */
    uint32_t ram = alloc_table(PAGE_SIZE, PAGE_SIZE);     /* level 2 for 0x40000000-2 GiB */
    write64(l1 + 8 * 0, low | LD_TABLE, 0);
    write64(l1 + 8 * 1, ram | LD_TABLE, 0);
    write64(low + 8 * (UART_BASE >> 21), UART_BASE | LD_BLOCK | LD_UART, LD_HI_XN | LD_HI_PXN);
    for (uint32_t va = RAM_BASE; va < region; va += 1u << 21)           /* the image */
        write64(ram + 8 * ((va >> 21) & 511), va | LD_BLOCK | LD_RAM, 0);
    for (uint32_t blk = 0; blk < size; blk += 1u << 21) {
        uint32_t va = region + blk;
        if (!pages) {
            write64(ram + 8 * ((va >> 21) & 511), va | LD_BLOCK | LD_RAM, 0);
            continue;
        }
        uint32_t l3 = alloc_table(PAGE_SIZE, PAGE_SIZE);
        for (uint32_t off = 0; off < (1u << 21) && blk + off < size; off += PAGE_SIZE)
            write64(l3 + 8 * (off >> 12), (va + off) | LD_TABLE | LD_RAM, 0);
        write64(ram + 8 * ((va >> 21) & 511), l3 | LD_TABLE, 0);
    }
    MCR(0, c10, c2, 0, MAIR0_VALUE);
    MCR(0, c10, c2, 1, MAIR1_VALUE);
    MCR(0, c2, c0, 2, LD_TTBCR);
    MCRR(0, c2, (uint64_t)l1);          /* TTBR0, ASID 0 */
}

/* With the MMU off: drop stale TLB entries, instructions and D-cache lines of the tables
 * (written with the caches off), then M, C, I on (as guests/mmu.c does). */
static void mmu_on(void)
{
    uint32_t ctr, sctlr;
    isb();
    MCR(0, c8, c7, 0, 0u);              /* TLBIALL */
    MCR(0, c7, c5, 0, 0u);              /* ICIALLU */
    MCR(0, c7, c5, 6, 0u);              /* BPIALL */
    MRC(0, c0, c0, 1, ctr);
    uint32_t line = 4u << ((ctr >> 16) & 0xf);
    for (uint32_t a = (uintptr_t)pool; a < (uintptr_t)pool + pool_used; a += line)
        MCR(0, c7, c6, 1, a);           /* DCIMVAC */
    dsb();
    isb();
    MRC(0, c1, c0, 0, sctlr);
    sctlr |= SCTLR_M | SCTLR_C | SCTLR_I | SCTLR_Z;
    sctlr &= ~(SCTLR_A | SCTLR_TRE | SCTLR_AFE | SCTLR_WXN | SCTLR_UWXN);
    MCR(0, c1, c0, 0, sctlr);
    isb();
}

/* ---- arguments --------------------------------------------------------------------------- */
static int streq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

static void usage(const char *what, const char *arg) __attribute__((noreturn));

static void usage(const char *what, const char *arg)
{
    uart_puts("mmubench: ");
    uart_puts(what);
    if (arg) {
        uart_puts(" '");
        uart_puts(arg);
        uart_putc('\'');
    }
    uart_putc('\n');
    uart_puts("mmubench: usage: mmubench <alu|load|store|touch> <size> <passes> <reps> "
              "<off|short|long> [section|page]\n");
    psci_system_off();
}

static const char *const WORKLOADS[] = { "alu", "load", "store", "touch" };
static const char *const MMUS[] = { "off", "short", "long" };
static const char *const MAPS[] = { "section", "page" };
enum { ALU, LOAD, STORE, TOUCH };
enum { MMU_OFF, MMU_SHORT, MMU_LONG };

static int pick(const char *arg, const char *const *names, int n, const char *what)
{
    for (int i = 0; i < n; i++)
        if (streq(arg, names[i]))
            return i;
    usage(what, arg);
}

int main(void)
{
    char *argv[7] = { NULL, NULL, NULL, NULL, NULL, NULL, NULL };
    int argc = get_args(argv, 7);
    if (argc <= 0) {                    /* no arguments (or no HV_GET_ARGS: QEMU) */
        static char *const defaults[] = { "touch", "256", "1", "1", "long", "page" };
        for (argc = 0; argc < 6; argc++)
            argv[argc] = defaults[argc];
    }
    if (argc < 5 || argc > 6)
        usage("wrong number of arguments", NULL);
    int work = pick(argv[0], WORKLOADS, 4, "unknown workload");
    uint32_t size, passes, reps;
    if (parse_u32(argv[1], &size) != 0 || size == 0)
        usage("bad size", argv[1]);
    if (parse_u32(argv[2], &passes) != 0 || passes == 0)
        usage("bad passes", argv[2]);
    if (parse_u32(argv[3], &reps) != 0 || reps >= 1000)
        usage("bad reps", argv[3]);
    int mmu = pick(argv[4], MMUS, 3, "unknown MMU mode");
    int pages = argc > 5 ? pick(argv[5], MAPS, 2, "unknown mapping") : 0;

    uint32_t region = (uintptr_t)__guest_region_start;
    uint32_t bytes = work == TOUCH ? size * PAGE_SIZE : work == ALU ? 0 : size;
    if ((work == TOUCH && size > MAX_REGION / PAGE_SIZE) || bytes > MAX_REGION ||
        bytes % PAGE_SIZE)
        usage("bad size (the region must be whole pages, at most 128 MiB)", argv[1]);

    uart_puts("mmubench: ");
    for (int i = 0; i < argc; i++) {
        uart_puts(argv[i]);
        uart_putc(i + 1 < argc ? ' ' : '\n');
    }

    /* The data, with the MMU still off. */
    if (work == LOAD)
        for (uint32_t i = 0; i < bytes / 4; i++)
            writel(region + 4 * i, i * LOAD_MUL + LOAD_ADD);
    if (work == TOUCH)
        for (uint32_t i = 0; i < size; i++)
            writel(region + i * PAGE_SIZE, i * TOUCH_MUL);

    if (mmu == MMU_SHORT)
        build_short(region, bytes, pages);
    else if (mmu == MMU_LONG)
        build_long(region, bytes, pages);
    if (mmu != MMU_OFF)
        mmu_on();

    uint32_t acc = work == STORE ? STORE_SEED : ALU_SEED;
    for (uint32_t rep = 0; rep <= reps; rep++) {
        if (work == TOUCH) {
            MCR(0, c8, c7, 0, 0u);      /* TLBIALL: every page misses in the cold sweep */
            dsb();
            isb();
        }
        MARK();
        switch (work) {
        case ALU:
            acc = mb_alu(size, passes, acc);
            break;
        case LOAD:
            acc = mb_load(region, region + bytes, passes, acc);
            break;
        case STORE:
            acc = mb_store(region, region + bytes, passes, acc);
            break;
        case TOUCH:
            acc = mb_touch(region, size, acc);
            MARK();
            for (uint32_t p = 0; p < passes; p++)
                acc = mb_touch(region, size, acc);
            break;
        }
        MARK();
    }
    if (work == STORE) {                /* what the last sweep left in the region */
        acc = 0;
        for (uint32_t i = 0; i < bytes / 4; i++)
            acc += readl(region + 4 * i);
    }
    uart_puts("mmubench: result ");
    put_hex(acc);
    uart_puts("\nmmubench: done\n");
    return 0;
}
