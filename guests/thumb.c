/*
 * thumb: a Thumb-2 guest.  Compiled with -mthumb; _start (lib/, ARM) reaches main with BLX.
 *
 * The workload is hand-written Thumb-2 so the instruction mix is known:
 *   build_table  xorshift32 into a word table with 32-bit STR.W (register offset, LSL #2) and
 *                into a halfword table with 16-bit STRH (register offset)
 *   scan_table   16-bit LDR, 32-bit LDRH.W post-indexed, 16-bit LDRB, IT/ITT/ITE blocks,
 *                results stored with 16-bit STR and 32-bit STR.W
 *   tputc        16-bit LDR of the UART flag register and a 16-bit STRB to its data register
 * The same statistics are recomputed in plain C and compared.  All console output goes
 * through tputc.
 */
#include "rt.h"

#define N 256u
#define SEED 0x2545f491u

struct stats {
    uint32_t sum;       /* sum of the words */
    uint32_t max;       /* largest word */
    uint32_t min;       /* smallest word */
    uint32_t records;   /* how many times a new minimum was seen */
    uint32_t odd;       /* sum of the odd words */
    uint32_t even;      /* xor of the even words */
    uint32_t halves;    /* sum of the halfword table */
    uint32_t bytes;     /* sum of byte 1 of every word */
};

uint32_t thumb_table[N];
uint16_t thumb_halves[N];
struct stats thumb_asm_stats, thumb_c_stats;

/* void build_table(uint32_t *t, uint16_t *h, uint32_t n, uint32_t seed) */
void build_table(uint32_t *t, uint16_t *h, uint32_t n, uint32_t seed);
/* void scan_table(const uint32_t *t, const uint16_t *h, uint32_t n, struct stats *s) */
void scan_table(const uint32_t *t, const uint16_t *h, uint32_t n, struct stats *s);

__asm__(
    "       .syntax unified\n"
    "       .thumb\n"
    "       .section .text.thumb_asm, \"ax\", %progbits\n"
    "       .global build_table\n"
    "       .type   build_table, %function\n"
    "       .thumb_func\n"
    "build_table:\n"                        /* r0 = t, r1 = h, r2 = n, r3 = x (seed) */
    "       push    {r4, r5, r6, lr}\n"
    "       movs    r4, #0\n"               /* r4 = i */
    "1:     lsls    r5, r3, #13\n"          /* x ^= x << 13 */
    "       eors    r3, r5\n"
    "       lsrs    r5, r3, #17\n"          /* x ^= x >> 17 */
    "       eors    r3, r5\n"
    "       lsls    r5, r3, #5\n"           /* x ^= x << 5 */
    "       eors    r3, r5\n"
    "       str.w   r3, [r0, r4, lsl #2]\n" /* t[i] = x        (32-bit encoding) */
    "       lsls    r6, r4, #1\n"
    "       strh.n  r3, [r1, r6]\n"         /* h[i] = x        (16-bit encoding) */
    "       adds    r4, #1\n"
    "       cmp     r4, r2\n"
    "       bne     1b\n"
    "       pop     {r4, r5, r6, pc}\n"
    "       .size   build_table, . - build_table\n"
    "\n"
    "       .global scan_table\n"
    "       .type   scan_table, %function\n"
    "       .thumb_func\n"
    "scan_table:\n"                         /* r0 = t, r1 = h, r2 = n, r3 = s */
    "       push    {r4-r11, lr}\n"
    "       movs    r7, #0\n"               /* r7  = sum */
    "       movs    r5, #0\n"               /* r5  = max */
    "       movs    r6, #0\n"
    "       mvns    r6, r6\n"               /* r6  = min = 0xffffffff */
    "       mov.w   r8, #0\n"               /* r8  = odd */
    "       mov.w   r9, #0\n"               /* r9  = even */
    "       mov.w   r10, #0\n"              /* r10 = records */
    "       mov.w   r11, #0\n"              /* r11 = halves */
    "       mov.w   lr, #0\n"               /* lr  = bytes */
    "1:     ldr.n   r4, [r0, #0]\n"         /* w = *t          (16-bit) */
    "       ldrb.w  r12, [r0, #1]\n"       /* byte 1 of w     (32-bit) */
    "       add     lr, lr, r12\n"
    "       adds    r0, #4\n"
    "       ldrh.w  r12, [r1], #2\n"        /* hw = *h++       (32-bit, post-indexed) */
    "       add     r11, r12\n"
    "       adds    r7, r7, r4\n"
    "       cmp     r4, r5\n"
    "       it      hi\n"
    "       movhi   r5, r4\n"
    "       cmp     r4, r6\n"
    "       itt     lo\n"
    "       movlo   r6, r4\n"
    "       addlo   r10, r10, #1\n"
    "       tst     r4, #1\n"
    "       ite     ne\n"
    "       addne   r8, r8, r4\n"
    "       eoreq   r9, r9, r4\n"
    "       subs    r2, #1\n"
    "       bne     1b\n"
    "       str.n   r7, [r3, #0]\n"         /* sum             (16-bit) */
    "       str.n   r5, [r3, #4]\n"         /* max */
    "       str.n   r6, [r3, #8]\n"         /* min */
    "       str.w   r10, [r3, #12]\n"       /* records         (32-bit) */
    "       str.w   r8, [r3, #16]\n"        /* odd */
    "       str.w   r9, [r3, #20]\n"        /* even */
    "       str.w   r11, [r3, #24]\n"       /* halves */
    "       str.w   lr, [r3, #28]\n"        /* bytes */
    "       pop     {r4-r11, pc}\n"
    "       .size   scan_table, . - scan_table\n"
    "       .text\n");

/* Console in Thumb: 16-bit LDR polls the flag register, 16-bit STRB writes the data register. */
static void tputc(char c)
{
    uint32_t base = UART_BASE, fr;
    do {
        __asm__ volatile("ldr.n %0, [%1, #0x18]" : "=l"(fr) : "l"(base) : "memory");
    } while (fr & UART_FR_TXFF);
    __asm__ volatile("strb.n %0, [%1, #0]" : : "l"((uint32_t)(uint8_t)c), "l"(base) : "memory");
}

static void tputs(const char *s)
{
    while (*s)
        tputc(*s++);
}

static void thex(uint32_t v)
{
    for (int shift = 28; shift >= 0; shift -= 4)
        tputc("0123456789abcdef"[(v >> shift) & 0xf]);
}

static void tfield(const char *name, uint32_t v)
{
    tputc(' ');
    tputs(name);
    tputc(' ');
    thex(v);
}

/* The same computation in C, from the lib's (ARM) xorshift32. */
static void reference(struct stats *s)
{
    uint32_t x = SEED;
    *s = (struct stats){ .min = 0xffffffffu };
    for (uint32_t i = 0; i < N; i++) {
        uint32_t w = xorshift32(&x);
        s->sum += w;
        if (w > s->max)
            s->max = w;
        if (w < s->min) {
            s->min = w;
            s->records++;
        }
        if (w & 1)
            s->odd += w;
        else
            s->even ^= w;
        s->halves += w & 0xffffu;
        s->bytes += (w >> 8) & 0xffu;
    }
}

int main(void)
{
    tputs("thumb: start, 256-entry table, seed ");
    thex(SEED);
    tputc('\n');

    build_table(thumb_table, thumb_halves, N, SEED);
    scan_table(thumb_table, thumb_halves, N, &thumb_asm_stats);
    reference(&thumb_c_stats);

    const struct stats *s = &thumb_asm_stats;
    tputs("thumb:");
    tfield("sum", s->sum);
    tfield("max", s->max);
    tfield("min", s->min);
    tputc('\n');
    tputs("thumb:");
    tfield("records", s->records);
    tfield("odd", s->odd);
    tfield("even", s->even);
    tputc('\n');
    tputs("thumb:");
    tfield("halves", s->halves);
    tfield("bytes", s->bytes);
    tputc('\n');

    const uint32_t *a = (const uint32_t *)&thumb_asm_stats, *c = (const uint32_t *)&thumb_c_stats;
    int bad = 0;
    for (uint32_t i = 0; i < sizeof(struct stats) / 4; i++)
        bad |= a[i] != c[i];
    tputs(bad ? "thumb: MISMATCH between asm and C\n" : "thumb: asm and C agree\n");
    tputs("thumb: done\n");
    return 0;
}
