/*
 * compute: the guest of the bench rows "compute guest ..." (bench/native_rows.py): a fixed
 * amount of plain computation - ALU work and memory sweeps - that runs unchanged on s2emu and
 * on qemu-system-arm -M virt, so the two can be timed per guest instruction.
 *
 * Per round: an ALU loop (xorshift32, multiply-accumulate, rotate: ALU_ITERS iterations), then
 * sweeps over a REGION_BYTES region at __guest_region_start (0x40200000): a store sweep that
 * fills it, a load sweep that folds every word into the checksum, a read-modify-write sweep,
 * and an LDM/STM copy of its first half over its second half.  ROUNDS rounds in all.  The
 * sizes are compile-time constants: compute.elf runs ~10^9 instructions, compute_quick.elf
 * (compute_quick.c) the same code with small ones.  No timer, no hypercall but SYSTEM_OFF: the
 * instruction stream does not depend on the machine, so its count is the same everywhere.
 *
 * Output: `compute: <rounds> rounds, <alu iters> alu iterations, <region> KiB`, then
 * `compute: checksum <8 hex digits>` and `compute: done`.  Needs 2 MiB + REGION_BYTES of RAM.
 */
#include "rt.h"

#ifndef ROUNDS
#define ROUNDS          8u
#endif
#ifndef ALU_ITERS
#define ALU_ITERS       15000000u       /* ~7 instructions each */
#endif
#ifndef REGION_BYTES
#define REGION_BYTES    (4u << 20)
#endif

#define WORDS           (REGION_BYTES / 4u)

static inline uint32_t rotl(uint32_t x, uint32_t n)
{
    return (x << n) | (x >> (32u - n));
}

/* ALU: a data-dependent chain the compiler cannot fold away. */
static uint32_t __attribute__((noinline)) alu(uint32_t n, uint32_t x, uint32_t acc)
{
    for (uint32_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        acc = rotl(acc * 0x01000193u + x, 5);
    }
    return acc ^ x;
}

static void __attribute__((noinline)) fill(volatile uint32_t *p, uint32_t seed)
{
    for (uint32_t i = 0; i < WORDS; i++)
        p[i] = seed + i * 0x9e3779b9u;
}

static uint32_t __attribute__((noinline)) fold(volatile const uint32_t *p, uint32_t acc)
{
    for (uint32_t i = 0; i < WORDS; i++)
        acc = rotl(acc, 1) + p[i];
    return acc;
}

static void __attribute__((noinline)) rmw(volatile uint32_t *p, uint32_t k)
{
    for (uint32_t i = 0; i < WORDS; i++)
        p[i] = p[i] * 3u + k;
}

/* Copy `bytes` (a multiple of 32) from src to dst, eight registers per LDM/STM. */
static void __attribute__((noinline)) copy32(uint32_t *dst, const uint32_t *src, uint32_t bytes)
{
    __asm__ volatile(
        "1:     ldmia   %1!, {r3-r10}\n"
        "       stmia   %0!, {r3-r10}\n"
        "       subs    %2, %2, #32\n"
        "       bne     1b\n"
        : "+r"(dst), "+r"(src), "+r"(bytes)
        :
        : "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "cc", "memory");
}

int main(void)
{
    uint32_t *region = (uint32_t *)__guest_region_start;
    uint32_t x = 0x2545f491u, sum = 0x12345678u;

    uart_puts("compute: ");
    put_dec(ROUNDS);
    uart_puts(" rounds, ");
    put_dec(ALU_ITERS);
    uart_puts(" alu iterations, ");
    put_dec(REGION_BYTES >> 10);
    uart_puts(" KiB\n");
    for (uint32_t r = 0; r < ROUNDS; r++) {
        sum = alu(ALU_ITERS, x + r, sum);
        fill(region, sum);
        sum = fold(region, sum);
        rmw(region, sum);
        copy32(region + WORDS / 2, region, REGION_BYTES / 2);
        sum = fold(region, sum);
    }
    uart_puts("compute: checksum ");
    put_hex(sum);
    uart_puts("\ncompute: done\n");
    return 0;
}
