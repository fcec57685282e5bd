/*
 * dirtyram <total pages> <pages per round> <sleep ms> [rounds] [report every]
 *
 * The cover letter's load generator as a Linux program (the bare-metal one is
 * guests/dirtyram.c): it owns <total pages> 4 KiB pages of anonymous memory.  Round r
 * (0-based) writes r + 1 to the first word of the next <pages per round> pages, round-robin,
 * then sleeps <sleep ms>.  Every <report every> rounds (default 100) and at the end it prints
 *
 *     dirtyram: round <r> sum <hex>
 *
 * where sum is the 32-bit sum over pages i of (i + 1) * first word: equal on both ends of
 * a migration that lost no write.  rounds = 0 runs forever.  Static, no libc beyond
 * printf/mmap/nanosleep, so it runs from a busybox initramfs.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096u

static unsigned long arg(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 0);
    if (errno || *s == '\0' || *end != '\0' || v > 0xffffffffUL) {
        fprintf(stderr, "dirtyram: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

static uint32_t checksum(volatile uint32_t *mem, uint32_t total)
{
    uint32_t sum = 0;
    for (uint32_t i = 0; i < total; i++)
        sum += (i + 1) * mem[i * (PAGE / 4)];
    return sum;
}

int main(int argc, char **argv)
{
    static const char *names[] = { "total pages", "pages per round", "sleep ms", "rounds",
                                   "report every" };
    unsigned long v[5] = { 1024, 64, 10, 0, 100 };

    if (argc > 6) {
        fprintf(stderr, "usage: dirtyram <total pages> <pages per round> <sleep ms> "
                        "[rounds] [report every]\n");
        return 2;
    }
    for (int i = 1; i < argc; i++)
        v[i - 1] = arg(argv[i], names[i - 1]);
    uint32_t total = v[0], per_round = v[1], sleep_ms = v[2], rounds = v[3], report = v[4];
    if (total == 0 || per_round == 0 || report == 0) {
        fprintf(stderr, "dirtyram: total pages, pages per round and report every must be > 0\n");
        return 2;
    }
    volatile uint32_t *mem = mmap(NULL, (size_t)total * PAGE, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("dirtyram: mmap");
        return 1;
    }
    printf("dirtyram: start %u %u %u\n", total, per_round, sleep_ms);
    fflush(stdout);

    struct timespec pause = { sleep_ms / 1000, (sleep_ms % 1000) * 1000000L };
    uint32_t page = 0;
    for (uint32_t r = 0; rounds == 0 || r < rounds; r++) {
        for (uint32_t n = 0; n < per_round; n++) {
            mem[page * (PAGE / 4)] = r + 1;
            page = page + 1 == total ? 0 : page + 1;
        }
        if ((r + 1) % report == 0 || r + 1 == rounds) {
            printf("dirtyram: round %u sum %08x\n", r + 1, checksum(mem, total));
            fflush(stdout);
        }
        if (sleep_ms)
            nanosleep(&pause, NULL);
    }
    return 0;
}
