/*
 * mmu: a tiny kernel that runs the guest's own stage-1 MMU (ARMv7-A VMSA, DDI 0406C B3)
 * twice, first with the short-descriptor format (TTBCR.EAE=0), then with the long-descriptor
 * format (LPAE, TTBCR.EAE=1), with the MMU off in between.  In each format:
 *
 *   - TTBR1 maps the image (identity, 2 MiB: sections / a block, Normal, PL1 only, global);
 *     TTBR0 maps the UART (identity, Device, PL1 only, execute-never) and, through one
 *     second-level (short) / third-level (LPAE) table, a region of 4 KiB pages at U_BASE.
 *     Short: TTBCR.N=2, DACR domains 0 and 1 client, the U_BASE region in domain 1, ASID in
 *     CONTEXTIDR.  LPAE: T0SZ=2 (TTBR0 walks start at level 2), T1SZ=0 (TTBR1: level 1),
 *     MAIR0 attr 0 Normal write-back, MAIR1 attr 4 Device-nGnRE, ASID in TTBR0[55:48].
 *   - A PL0 task (one page of code, mapped read-only for PL0) makes SVCs, executes a
 *     privileged instruction, reads kernel memory, branches into an execute-never page, takes
 *     two demand-paging translation faults and one copy-on-write permission fault, then exits
 *     by SVC.  The kernel prints one line per exception.
 *   - The kernel alone: a domain fault (short) / an Access flag fault (LPAE), a remap made
 *     visible with break-before-make and TLBIMVAA, and code written through one alias and run
 *     through another after D-cache clean / I-cache invalidate.
 *
 * Everything printed is architectural (no timing, no IMPLEMENTATION DEFINED TLB contents): a
 * change of mapping is only observed after the TLB maintenance the architecture requires.
 * Fault status registers are printed with only their defined bits (the short-descriptor DFSR
 * domain field, bits [7:4], is UNKNOWN for some faults: it is printed apart where valid).
 */
#include "rt.h"

#define S_(x) #x
#define S(x) S_(x)

/* ---- virtual layout ------------------------------------------------------------------------ */
#define KERNEL_VA   0x40000000      /* the image, identity mapped (TTBR1), 2 MiB */
#define KERNEL_SIZE 0x00200000u
#define U_BASE      0x10000000u     /* 4 KiB pages through one L2 (short) / L3 (LPAE) table */
#define U_CODE      0x10000000      /* the task's code: PL0 read-only, executable */
#define U_DATA      0x10001000      /* its stack and results: PL0 read-write, execute-never */
#define U_DEMAND    0x10010000      /* two pages, mapped on first touch */
#define U_DEMAND_PAGES 2u
#define U_COW_A     0x10020000      /* A and B: one frame, read-only at PL1 and PL0 */
#define U_COW_B     0x10021000
#define K_AF        0x10030000u     /* LPAE: PL1 read-write page with AF=0 */
#define K_TLB       0x10040000u     /* PL1 page remapped from frame X to frame Y */
#define K_JIT_W     0x10050000u     /* a code frame, PL1 read-write, execute-never */
#define K_JIT_X     0x10051000u     /* the same frame, PL1 read-only, executable */

/* The task's results, at U_DATA + R_*. */
#define R_UNDEF     0               /* r0 after the undefined MRC: still 0 */
#define R_KREAD     4               /* r1 after the load of kernel memory: still ~0 */
#define R_XN        8               /* 0: the kernel resumed the task after the branch */
#define R_DEMAND    12              /* page 0 word 0, page 1 word 2 (written), page 0 word 1 */
#define R_COW       24              /* A before, A after the write, B after the write */

/* SVC numbers (imm24) */
#define SYS_EXIT    0               /* r0 = exit code */
#define SYS_PUTS    1               /* r0 = string on the task's code page */
#define SYS_HEX     2               /* r0 = number, printed as 8 hex digits */
#define SYS_PUTC    3               /* r0 = character */

#define USER_EXIT_CODE 5
#define DEMAND_VALUE 0x1234abcd
#define COW_OLD     0x11112222u
#define COW_NEW     0x5555aaaa
#define AF_VALUE    0x0000af00u
#define SHORT_ASID  5u
#define LONG_ASID   6u

#define PSR_MODE_USR 0x10
#define PSR_AIF     0x1c0           /* A, I, F masked */

/* ---- the assembly half ------------------------------------------------------------------- */
uint32_t mmu_run_user(uint32_t entry, uint32_t sp);
void mmu_off(uintptr_t start, uintptr_t end);
extern const char mmu_run_user_return[];
extern const char mmu_task[], mmu_task_undef[], mmu_task_kread[], mmu_task_xn_call[];
extern const char mmu_task_xn_resume[];
extern const char mmu_task_demand_rd[], mmu_task_demand_wr[], mmu_task_cow_wr[];
/* The user VA of a label on the task's page. */
#define UVA(label) (U_CODE + (uint32_t)((uintptr_t)(label) - (uintptr_t)mmu_task))

__asm__(
    "       .syntax unified\n"
    "       .arm\n"
    /*
     * uint32_t mmu_run_user(uint32_t entry, uint32_t sp)
     * Enter User mode at `entry` with SP_usr = sp, A/I/F still masked and every other
     * register zero; return the task's exit code.  The exit SVC makes its exception return
     * to mmu_run_user_return in SVC mode, where SP_svc is what it was at the `movs`.
     */
    "       .section .text.mmu_run_user, \"ax\", %progbits\n"
    "       .global mmu_run_user, mmu_run_user_return\n"
    "       .type   mmu_run_user, %function\n"
    "mmu_run_user:\n"
    "       push    {r4-r11, lr}\n"
    "       cps     #0x1f\n"                        /* System mode: the User SP and LR */
    "       mov     sp, r1\n"
    "       mov     lr, #0\n"
    "       cps     #0x13\n"
    "       mov     lr, r0\n"
    "       mov     r0, #" S(PSR_AIF | PSR_MODE_USR) "\n"
    "       msr     spsr_cxsf, r0\n"
    "       mov     r0, #0\n"
    "       mov     r1, #0\n"
    "       mov     r2, #0\n"
    "       mov     r3, #0\n"
    "       mov     r4, #0\n"
    "       mov     r5, #0\n"
    "       mov     r6, #0\n"
    "       mov     r7, #0\n"
    "       mov     r8, #0\n"
    "       mov     r9, #0\n"
    "       mov     r10, #0\n"
    "       mov     r11, #0\n"
    "       mov     r12, #0\n"
    "       movs    pc, lr\n"                       /* exception return: CPSR = SPSR (User) */
    "mmu_run_user_return:\n"                        /* SVC mode, r0 = exit code */
    "       pop     {r4-r11, pc}\n"
    "       .size   mmu_run_user, . - mmu_run_user\n"
    "\n"
    /*
     * void mmu_off(uintptr_t start, uintptr_t end)
     * Turn the MMU and the caches off without losing data: SCTLR.C=0 (no new allocations),
     * clean and invalidate [start, end) to the point of coherency by VA (DCCIMVAC, the
     * smallest line from CTR.DminLine), DSB, SCTLR.M=0 and I=0, ISB, then TLBIALL, ICIALLU,
     * BPIALL, DSB, ISB.  A leaf with no load or store between SCTLR.C=0 and the clean; it
     * runs from the identity mapping.
     */
    "       .section .text.mmu_off, \"ax\", %progbits\n"
    "       .global mmu_off\n"
    "       .type   mmu_off, %function\n"
    "mmu_off:\n"
    "       mrc     p15, 0, r2, c1, c0, 0\n"        /* SCTLR */
    "       bic     r2, r2, #(1 << 2)\n"            /* C */
    "       mcr     p15, 0, r2, c1, c0, 0\n"
    "       isb\n"
    "       mrc     p15, 0, r3, c0, c0, 1\n"        /* CTR */
    "       ubfx    r3, r3, #16, #4\n"              /* DminLine = log2(words) */
    "       mov     r12, #4\n"
    "       lsl     r3, r12, r3\n"
    "       sub     r12, r3, #1\n"
    "       bic     r0, r0, r12\n"
    "1:     mcr     p15, 0, r0, c7, c14, 1\n"       /* DCCIMVAC */
    "       add     r0, r0, r3\n"
    "       cmp     r0, r1\n"
    "       blo     1b\n"
    "       dsb\n"
    "       bic     r2, r2, #(1 << 0)\n"            /* M */
    "       bic     r2, r2, #(1 << 12)\n"           /* I */
    "       mcr     p15, 0, r2, c1, c0, 0\n"
    "       isb\n"
    "       mov     r0, #0\n"
    "       mcr     p15, 0, r0, c8, c7, 0\n"        /* TLBIALL */
    "       mcr     p15, 0, r0, c7, c5, 0\n"        /* ICIALLU */
    "       mcr     p15, 0, r0, c7, c5, 6\n"        /* BPIALL */
    "       dsb\n"
    "       isb\n"
    "       bx      lr\n"
    "       .size   mmu_off, . - mmu_off\n"
    "\n"
    /*
     * The PL0 task: one page of position-independent code, nothing else on that page, mapped
     * at U_CODE.  It talks to the kernel only with SVCs and leaves its results on its data
     * page.
     */
    "       .section .text.mmu_user, \"ax\", %progbits\n"
    "       .balign 4096\n"
    "       .global mmu_task, mmu_task_undef, mmu_task_kread, mmu_task_xn_call\n"
    "       .global mmu_task_xn_resume\n"
    "       .global mmu_task_demand_rd, mmu_task_demand_wr, mmu_task_cow_wr\n"
    "       .type   mmu_task, %function\n"
    "mmu_task:\n"
    "       adr     r0, mmu_task_hello\n"           /* SVCs: a string, a number, a char */
    "       svc     #" S(SYS_PUTS) "\n"
    "       mov     r0, sp\n"
    "       svc     #" S(SYS_HEX) "\n"
    "       mov     r0, #10\n"
    "       svc     #" S(SYS_PUTC) "\n"
    "       ldr     r6, =" S(U_DATA) "\n"
    "       mov     r0, #0\n"
    "mmu_task_undef:\n"
    "       mrc     p15, 0, r0, c1, c0, 0\n"        /* SCTLR at PL0: Undefined, stepped over */
    "       str     r0, [r6, #" S(R_UNDEF) "]\n"
    "       mov     r0, #" S(KERNEL_VA) "\n"
    "       mvn     r1, #0\n"
    "mmu_task_kread:\n"
    "       ldr     r1, [r0]\n"                     /* kernel memory: Permission fault, skipped */
    "       str     r1, [r6, #" S(R_KREAD) "]\n"
    "       adr     r4, mmu_task_xn_resume\n"       /* where the Prefetch Abort handler resumes */
    "       mov     r5, r6\n"
    "       mov     r0, #1\n"
    "mmu_task_xn_call:\n"
    "       blx     r5\n"                           /* into the execute-never data page */
    "mmu_task_xn_resume:\n"
    "       str     r0, [r6, #" S(R_XN) "]\n"       /* the handler set r0 = 0 */
    "       ldr     r4, =" S(U_DEMAND) "\n"
    "mmu_task_demand_rd:\n"
    "       ldr     r0, [r4]\n"                     /* page 0, read: Translation fault */
    "       ldr     r1, =" S(DEMAND_VALUE) "\n"
    "       add     r5, r4, #0x1000\n"
    "mmu_task_demand_wr:\n"
    "       str     r1, [r5, #8]\n"                 /* page 1, write: Translation fault */
    "       ldr     r2, [r5, #8]\n"
    "       ldr     r3, [r4, #4]\n"                 /* page 0 again: no fault */
    "       add     r7, r6, #" S(R_DEMAND) "\n"
    "       stm     r7, {r0, r2, r3}\n"
    "       ldr     r4, =" S(U_COW_A) "\n"
    "       ldr     r0, [r4, #4]\n"                 /* A, before */
    "       ldr     r1, =" S(COW_NEW) "\n"
    "mmu_task_cow_wr:\n"
    "       str     r1, [r4, #4]\n"                 /* Permission fault: copy-on-write */
    "       ldr     r2, [r4, #4]\n"                 /* A, after: the new value */
    "       ldr     r5, =" S(U_COW_B) "\n"
    "       ldr     r3, [r5, #4]\n"                 /* B: still the old value */
    "       add     r7, r6, #" S(R_COW) "\n"
    "       stm     r7, {r0, r2, r3}\n"
    "       mov     r0, #" S(USER_EXIT_CODE) "\n"
    "       svc     #" S(SYS_EXIT) "\n"
    "       b       .\n"
    "       .ltorg\n"
    "mmu_task_hello:\n"
    "       .asciz  \"pl0: hello, sp \"\n"
    "       .size   mmu_task, . - mmu_task\n"
    "       .balign 4096\n"
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

static inline uint32_t read_sctlr(void) { uint32_t v; MRC(0, c1, c0, 0, v); return v; }
static inline void write_sctlr(uint32_t v) { MCR(0, c1, c0, 0, v); }
static inline void write_ttbcr(uint32_t v) { MCR(0, c2, c0, 2, v); }
static inline void write_ttbr0(uint32_t v) { MCR(0, c2, c0, 0, v); }
static inline void write_ttbr1(uint32_t v) { MCR(0, c2, c0, 1, v); }
static inline void write_ttbr0_64(uint64_t v) { MCRR(0, c2, v); }
static inline void write_ttbr1_64(uint64_t v) { MCRR(1, c2, v); }
static inline void write_dacr(uint32_t v) { MCR(0, c3, c0, 0, v); }
static inline void write_mair0(uint32_t v) { MCR(0, c10, c2, 0, v); }
static inline void write_mair1(uint32_t v) { MCR(0, c10, c2, 1, v); }
static inline void write_contextidr(uint32_t v) { MCR(0, c13, c0, 1, v); }
static inline uint32_t read_ctr(void) { uint32_t v; MRC(0, c0, c0, 1, v); return v; }

static inline void tlbiall(void) { MCR(0, c8, c7, 0, 0u); }
static inline void tlbimva(uint32_t va_asid) { MCR(0, c8, c7, 1, va_asid); }
static inline void tlbimvaa(uint32_t va) { MCR(0, c8, c7, 3, va); }
static inline void iciallu(void) { MCR(0, c7, c5, 0, 0u); }
static inline void icimvau(uint32_t va) { MCR(0, c7, c5, 1, va); }
static inline void bpiall(void) { MCR(0, c7, c5, 6, 0u); }
static inline void dcimvac(uint32_t va) { MCR(0, c7, c6, 1, va); }
static inline void dccmvau(uint32_t va) { MCR(0, c7, c11, 1, va); }

#define SCTLR_M     (1u << 0)
#define SCTLR_A     (1u << 1)
#define SCTLR_C     (1u << 2)
#define SCTLR_Z     (1u << 11)
#define SCTLR_I     (1u << 12)
#define SCTLR_WXN   (1u << 19)
#define SCTLR_UWXN  (1u << 20)
#define SCTLR_TRE   (1u << 28)
#define SCTLR_AFE   (1u << 29)

/* ---- descriptors ------------------------------------------------------------------------- */
enum perm { K_RW, K_RO, U_RW, U_RO };  /* K: PL1 only; U: PL1 and PL0 */

/* Short-descriptor (B3.5.1) */
#define SD_SECTION      0x2u
#define SD_B            (1u << 2)
#define SD_C            (1u << 3)
#define SD_SEC_XN       (1u << 4)
#define SD_SEC_DOMAIN(d) ((uint32_t)(d) << 5)
#define SD_SEC_AP01     (1u << 10)      /* AP[2:0] = 001: PL1 read-write, PL0 no access */
#define SD_SEC_TEX1     (1u << 12)      /* TEX = 001 with C = B = 1: Normal write-back */
#define SD_SEC_S        (1u << 16)
#define SD_TABLE        0x1u
#define SD_TABLE_DOMAIN(d) ((uint32_t)(d) << 5)
#define SD_PAGE         0x2u            /* small page; bit 0 is XN */
#define SD_PAGE_XN      (1u << 0)
#define SD_PAGE_TEX1    (1u << 6)
#define SD_PAGE_AP(ap2, ap10) (((uint32_t)(ap2) << 9) | ((uint32_t)(ap10) << 4))
#define SD_PAGE_S       (1u << 10)
#define SD_PAGE_NG      (1u << 11)
#define SD_TTBR_WALK    0x6au           /* IRGN/RGN write-back write-allocate, inner shareable */
#define SD_DOMAIN_USER  1u
#define DACR_CLIENT(d)  (1u << (2 * (d)))

/* Long-descriptor (B3.6.1) */
#define LD_BLOCK        0x1u
#define LD_TABLE        0x3u            /* also a level-3 page */
#define LD_ATTR(i)      ((uint32_t)(i) << 2)
#define LD_AP(ap)       ((uint32_t)(ap) << 6)
#define LD_SH_INNER     (3u << 8)
#define LD_AF           (1u << 10)
#define LD_NG           (1u << 11)
#define LD_HI_PXN       (1u << 21)      /* bit 53 */
#define LD_HI_XN        (1u << 22)      /* bit 54 */
#define LD_ATTR_NORMAL  0               /* MAIR0 Attr0 */
#define LD_ATTR_DEVICE  4               /* MAIR1 Attr4 */
#define MAIR0_VALUE     0x000044ffu     /* Attr0 Normal WB RW-allocate, Attr1 Normal NC */
#define MAIR1_VALUE     0x00000004u     /* Attr4 Device-nGnRE */
/* EAE, T0SZ=2, IRGN0/ORGN0 WB-WA, SH0 inner; T1SZ=0, IRGN1/ORGN1 WB-WA, SH1 inner; A1=0 */
#define LD_TTBCR        0xb5003502u

/* Fault status: short-descriptor FS (5 bits), long-descriptor STATUS (6 bits). */
#define SFS_TRANS_PAGE  0x07u
#define SFS_DOMAIN_PAGE 0x0bu
#define SFS_PERM_SECT   0x0du
#define SFS_PERM_PAGE   0x0fu
#define LFS_TRANS(l)    (0x04u | (l))
#define LFS_AF(l)       (0x08u | (l))
#define LFS_PERM(l)     (0x0cu | (l))
#define FSR_WNR         (1u << 11)

/* ---- state ------------------------------------------------------------------------------- */
static int lpae;                    /* the format in use */
static uint32_t *utab;              /* the U_BASE table: 256 x 32-bit (short) / 512 x 64-bit */
static uint32_t asid;
static uint32_t cow_frame;          /* the shared frame behind U_COW_A and U_COW_B */
static volatile uint32_t demand_faults, cow_faults, kernel_faults;
static volatile uint32_t last_fsr, last_far;    /* the last kernel-side data abort */

/* Frames: a bump allocator over a pool in .bss (inside the identity map, VA == PA). */
#define POOL_PAGES 32u              /* 28 used */
static uint8_t pool[POOL_PAGES * PAGE_SIZE] __attribute__((aligned(16384)));
static uint32_t pool_next;

static void fail(const char *what, uint32_t got, uint32_t want)
{
    uart_puts("mmu: CHECK FAILED: ");
    uart_puts(what);
    uart_puts(" got ");
    put_hex(got);
    uart_puts(" want ");
    put_hex(want);
    uart_putc('\n');
}

static void check(const char *what, uint32_t got, uint32_t want)
{
    if (got != want)
        fail(what, got, want);
}

static uint32_t alloc_pages(uint32_t n, uint32_t align)
{
    uint32_t i = (pool_next + align - 1) & ~(align - 1);
    if (i + n > POOL_PAGES) {
        fail("frame pool", i + n, POOL_PAGES);
        psci_system_off();
    }
    pool_next = i + n;
    uint32_t a = (uintptr_t)pool + i * PAGE_SIZE;
    for (uint32_t off = 0; off < n * PAGE_SIZE; off += 4)
        writel(a + off, 0);
    return a;
}

static void copy_page(uint32_t dst, uint32_t src)
{
    for (uint32_t off = 0; off < PAGE_SIZE; off += 4)
        writel(dst + off, readl(src + off));
}

static inline void write64(uint32_t addr, uint32_t lo, uint32_t hi)
{
    uint64_t v = ((uint64_t)hi << 32) | lo;
    __asm__ volatile("strd %Q0, %R0, [%1]" : : "r"(v), "r"(addr) : "memory");  /* one access */
}

/* A descriptor for a 4 KiB page of the U_BASE region, in the format in use. */
static void page_desc(uint32_t pa, enum perm p, int xn, int ng, int af, uint32_t *lo,
                      uint32_t *hi)
{
    if (!lpae) {
        static const uint8_t ap2[] = {0, 1, 0, 1}, ap10[] = {1, 1, 3, 3};
        *lo = pa | SD_PAGE | SD_PAGE_TEX1 | SD_C | SD_B | SD_PAGE_S | SD_PAGE_AP(ap2[p], ap10[p]) |
              (ng ? SD_PAGE_NG : 0) | (xn ? SD_PAGE_XN : 0);
        *hi = 0;
    } else {
        static const uint8_t ap[] = {0, 2, 1, 3};
        *lo = pa | LD_TABLE | LD_ATTR(LD_ATTR_NORMAL) | LD_AP(ap[p]) | LD_SH_INNER |
              (af ? LD_AF : 0) | (ng ? LD_NG : 0);
        *hi = xn ? LD_HI_XN : 0;
    }
}

/* The address of the U_BASE table's entry for va. */
static uint32_t pte_addr(uint32_t va)
{
    uint32_t i = (va - U_BASE) >> 12;
    return (uintptr_t)utab + (lpae ? 8u : 4u) * i;
}

/* An entry is written with one store (STRD for LPAE), cleaned to the PoU (for walks that do
 * not look in the D-cache, ID_MMFR3.CohWalk = 0) and completed with a DSB. */
static void set_pte(uint32_t va, uint32_t lo, uint32_t hi)
{
    uint32_t a = pte_addr(va);
    if (lpae)
        write64(a, lo, hi);
    else
        writel(a, lo);
    dccmvau(a);
    dsb();
}

static void map_page(uint32_t va, uint32_t pa, enum perm p, int xn, int ng)
{
    uint32_t lo, hi;
    page_desc(pa, p, xn, ng, 1, &lo, &hi);
    set_pte(va, lo, hi);
}

/*
 * Replace a valid entry with break-before-make: invalid entry, DSB, TLB invalidate by VA
 * (TLBIMVA with the ASID for a non-global page, TLBIMVAA for a global one), DSB, new entry,
 * DSB, ISB.
 */
static void remap_page(uint32_t va, uint32_t pa, enum perm p, int xn, int ng)
{
    set_pte(va, 0, 0);
    if (ng)
        tlbimva((va & ~0xfffu) | asid);
    else
        tlbimvaa(va & ~0xfffu);
    dsb();
    map_page(va, pa, p, xn, ng);
    isb();
}

/* ---- the two formats' kernel tables (built with the MMU off) ------------------------------ */
static void build_short(void)
{
    uint32_t ttbr1 = alloc_pages(4, 4);     /* 16 KiB, 16 KiB aligned */
    uint32_t ttbr0 = alloc_pages(1, 1);     /* TTBCR.N=2: 1024 entries, VA < 1 GiB */
    uint32_t l2 = alloc_pages(1, 1);        /* 256 entries used */
    for (uint32_t mb = 0; mb < KERNEL_SIZE >> 20; mb++) {
        uint32_t va = KERNEL_VA + (mb << 20);
        writel(ttbr1 + 4 * (va >> 20), va | SD_SECTION | SD_SEC_TEX1 | SD_C | SD_B | SD_SEC_S |
                                           SD_SEC_AP01 | SD_SEC_DOMAIN(0));
    }
    writel(ttbr0 + 4 * (UART_BASE >> 20),
           UART_BASE | SD_SECTION | SD_B | SD_SEC_XN | SD_SEC_AP01 | SD_SEC_DOMAIN(0));
    writel(ttbr0 + 4 * (U_BASE >> 20), l2 | SD_TABLE | SD_TABLE_DOMAIN(SD_DOMAIN_USER));
    utab = (uint32_t *)l2;
    asid = SHORT_ASID;

    write_dacr(DACR_CLIENT(0) | DACR_CLIENT(SD_DOMAIN_USER));
    write_contextidr(asid);
    write_ttbcr(2);                         /* EAE=0, N=2: TTBR1 from 0x40000000 */
    write_ttbr0(ttbr0 | SD_TTBR_WALK);
    write_ttbr1(ttbr1 | SD_TTBR_WALK);
}

static void build_long(void)
{
    uint32_t l1 = alloc_pages(1, 1);        /* TTBR1, T1SZ=0: level 1, 4 entries */
    uint32_t k2 = alloc_pages(1, 1);        /* level 2 under it for 0x40000000-0x7fffffff */
    uint32_t u2 = alloc_pages(1, 1);        /* TTBR0, T0SZ=2: level 2, 512 entries */
    uint32_t l3 = alloc_pages(1, 1);
    write64(l1 + 8 * (KERNEL_VA >> 30), k2 | LD_TABLE, 0);
    for (uint32_t b = 0; b < KERNEL_SIZE >> 21; b++) {
        uint32_t va = KERNEL_VA + (b << 21);
        write64(k2 + 8 * ((va >> 21) & 511), va | LD_BLOCK | LD_ATTR(LD_ATTR_NORMAL) |
                                                  LD_AP(0) | LD_SH_INNER | LD_AF, 0);
    }
    write64(u2 + 8 * (UART_BASE >> 21), UART_BASE | LD_BLOCK | LD_ATTR(LD_ATTR_DEVICE) | LD_AP(0) |
                                            LD_AF, LD_HI_XN | LD_HI_PXN);
    write64(u2 + 8 * (U_BASE >> 21), l3 | LD_TABLE, 0);
    utab = (uint32_t *)l3;
    asid = LONG_ASID;

    write_mair0(MAIR0_VALUE);
    write_mair1(MAIR1_VALUE);
    write_ttbcr(LD_TTBCR);
    write_ttbr0_64(((uint64_t)asid << 48) | u2);
    write_ttbr1_64(l1);
}

/* With the MMU off: drop stale TLB entries, instructions and D-cache lines (the tables were
 * written with the caches off), then M, C, I on. */
static void mmu_on(void)
{
    isb();
    tlbiall();
    iciallu();
    bpiall();
    uint32_t line = 4u << ((read_ctr() >> 16) & 0xf);
    for (uint32_t a = (uintptr_t)__image_start; a < (uintptr_t)__image_end; a += line)
        dcimvac(a);
    dsb();
    isb();
    uint32_t sctlr = read_sctlr();
    sctlr |= SCTLR_M | SCTLR_C | SCTLR_I | SCTLR_Z;
    sctlr &= ~(SCTLR_A | SCTLR_TRE | SCTLR_AFE | SCTLR_WXN | SCTLR_UWXN);
    write_sctlr(sctlr);
    isb();
}

/* ---- exceptions -------------------------------------------------------------------------- */
static uint32_t dfsr_shown(uint32_t fsr)
{
    return fsr & (lpae ? 0x3a3fu : 0x3c0fu);    /* the defined bits, without the domain */
}

static uint32_t ifsr_shown(uint32_t fsr)
{
    return fsr & (lpae ? 0x123fu : 0x140fu);
}

static uint32_t fs_of(uint32_t fsr)
{
    return lpae ? (fsr & 0x3fu) : ((fsr & 0xfu) | ((fsr >> 6) & 0x10u));
}

static void fault_line(const char *what, uint32_t fsr, uint32_t far, const char *result)
{
    uart_puts(what);
    uart_puts(": dfsr ");
    put_hex(dfsr_shown(fsr));
    uart_puts(" dfar ");
    put_hex(far);
    uart_puts(", ");
    uart_puts(result);
    uart_putc('\n');
}

void exc_dabt(struct exc_frame *f)
{
    uint32_t fsr = read_dfsr(), far = read_dfar();
    uint32_t fs = fs_of(fsr), pc = f->lr - 8;
    int user = (f->spsr & PSR_MODE_MASK) == PSR_MODE_USR;

    if (user && pc == UVA(mmu_task_kread) && far == KERNEL_VA &&
        fs == (lpae ? LFS_PERM(2) : SFS_PERM_SECT) && !(fsr & FSR_WNR)) {
        fault_line("pl0: read kernel", fsr, far, "skipped");
        f->lr = pc + 4;
        return;
    }
    if (user && far - U_DEMAND < U_DEMAND_PAGES * PAGE_SIZE &&
        fs == (lpae ? LFS_TRANS(3) : SFS_TRANS_PAGE) &&
        (pc == UVA(mmu_task_demand_rd) || pc == UVA(mmu_task_demand_wr))) {
        /* invalid -> valid: no TLB maintenance, the DSB in set_pte and an ISB */
        map_page(far & ~0xfffu, alloc_pages(1, 1), U_RW, 1, 1);
        isb();
        demand_faults++;
        fault_line("demand", fsr, far, "mapped");
        f->lr = pc;
        return;
    }
    if (user && pc == UVA(mmu_task_cow_wr) && far - U_COW_A < PAGE_SIZE && (fsr & FSR_WNR) &&
        fs == (lpae ? LFS_PERM(3) : SFS_PERM_PAGE)) {
        uint32_t copy = alloc_pages(1, 1);
        copy_page(copy, cow_frame);
        remap_page(far, copy, U_RW, 1, 1);
        cow_faults++;
        fault_line("cow", fsr, far, "copied");
        f->lr = pc;
        return;
    }
    if (!user && !lpae && far == U_DATA + R_KREAD && fs == SFS_DOMAIN_PAGE) {
        /* the domain: DACR says no access to domain 1; make it a client again */
        last_fsr = fsr;
        last_far = far;
        kernel_faults++;
        write_dacr(DACR_CLIENT(0) | DACR_CLIENT(SD_DOMAIN_USER));
        isb();
        f->lr = pc;
        return;
    }
    if (!user && lpae && far == K_AF && fs == LFS_AF(3)) {
        /* Set AF.  An entry that gives an Access flag fault is never held in a TLB, so there
         * is nothing to invalidate. */
        uint32_t a = pte_addr(far);
        writel(a, readl(a) | LD_AF);
        dccmvau(a);
        dsb();
        isb();
        last_fsr = fsr;
        last_far = far;
        kernel_faults++;
        f->lr = pc;
        return;
    }
    uart_puts("dabt: dfsr ");
    put_hex(fsr);
    uart_puts(" dfar ");
    put_hex(far);
    uart_putc('\n');
    exc_unexpected("dabt", f);
}

void exc_pabt(struct exc_frame *f)
{
    uint32_t fsr = read_ifsr(), far = read_ifar();
    uint32_t fs = fs_of(fsr);
    if ((f->spsr & PSR_MODE_MASK) == PSR_MODE_USR && far == U_DATA && f->lr - 4 == far &&
        fs == (lpae ? LFS_PERM(3) : SFS_PERM_PAGE) && f->r[4] == UVA(mmu_task_xn_resume)) {
        uart_puts("pl0: exec data page: ifsr ");
        put_hex(ifsr_shown(fsr));
        uart_puts(" ifar ");
        put_hex(far);
        uart_puts(", resumed\n");
        f->r[0] = 0;
        f->lr = f->r[4];
        return;
    }
    uart_puts("pabt: ifsr ");
    put_hex(fsr);
    uart_puts(" ifar ");
    put_hex(far);
    uart_putc('\n');
    exc_unexpected("pabt", f);
}

void exc_undef(struct exc_frame *f)
{
    uint32_t pc = f->lr - 4;
    if ((f->spsr & (PSR_MODE_MASK | PSR_T)) == PSR_MODE_USR && pc == UVA(mmu_task_undef)) {
        uart_puts("pl0: undefined ");
        put_hex(readl(pc));
        uart_puts(" (mrc sctlr), stepped over\n");
        return;                             /* f->lr: the next instruction */
    }
    exc_unexpected("undef", f);
}

void exc_svc(struct exc_frame *f)
{
    if ((f->spsr & (PSR_MODE_MASK | PSR_T)) != PSR_MODE_USR)
        exc_unexpected("svc", f);
    uint32_t imm = readl(f->lr - 4) & 0x00ffffffu;    /* read through the task's mapping */
    uint32_t r0 = f->r[0];
    switch (imm) {
    case SYS_EXIT:
        f->lr = (uintptr_t)mmu_run_user_return;   /* r0: the exit code */
        f->spsr = PSR_AIF | PSR_MODE_SVC;
        return;
    case SYS_PUTS:
        if (r0 - U_CODE >= PAGE_SIZE)
            break;
        uart_puts((const char *)r0);
        return;
    case SYS_HEX:
        put_hex(r0);
        return;
    case SYS_PUTC:
        uart_putc((char)r0);
        return;
    }
    uart_puts("svc: bad call ");
    put_hex(imm);
    uart_putc('\n');
    exc_unexpected("svc", f);
}

/* ---- the steps --------------------------------------------------------------------------- */
static void line3(const char *a, uint32_t x, const char *b, uint32_t y, const char *c,
                  uint32_t z)
{
    uart_puts(a);
    put_hex(x);
    uart_puts(b);
    put_hex(y);
    uart_puts(c);
    put_hex(z);
    uart_putc('\n');
}

/* The task's pages: code, data, copy-on-write; the demand pages stay invalid. */
static void map_user(void)
{
    uint32_t code = (uintptr_t)mmu_task;
    check("task page aligned", code & 0xfffu, 0);
    map_page(U_CODE, code, U_RO, 0, 1);
    map_page(U_DATA, alloc_pages(1, 1), U_RW, 1, 1);
    cow_frame = alloc_pages(1, 1);
    for (uint32_t off = 0; off < PAGE_SIZE; off += 4)
        writel(cow_frame + off, COW_OLD);
    map_page(U_COW_A, cow_frame, U_RO, 1, 1);
    map_page(U_COW_B, cow_frame, U_RO, 1, 1);
    isb();
}

static void run_task(void)
{
    demand_faults = cow_faults = 0;
    uint32_t code = mmu_run_user(U_CODE, U_DATA + PAGE_SIZE);
    uart_puts("pl0: exit ");
    put_dec(code);
    uart_putc('\n');
    check("exit code", code, USER_EXIT_CODE);
    check("r0 after the undefined mrc", readl(U_DATA + R_UNDEF), 0);
    check("r1 after the skipped load", readl(U_DATA + R_KREAD), 0xffffffffu);
    check("resumed after the xn branch", readl(U_DATA + R_XN), 0);

    uint32_t d0 = readl(U_DATA + R_DEMAND), d1 = readl(U_DATA + R_DEMAND + 4),
             d2 = readl(U_DATA + R_DEMAND + 8);
    uart_puts("demand: ");
    put_dec(demand_faults);
    line3(" faults, read ", d0, " ", d1, " ", d2);
    check("demand faults", demand_faults, U_DEMAND_PAGES);
    check("demand page 1", d1, DEMAND_VALUE);
    check("demand page 0", d0 | d2, 0);

    uint32_t a0 = readl(U_DATA + R_COW), a1 = readl(U_DATA + R_COW + 4),
             b1 = readl(U_DATA + R_COW + 8);
    uart_puts("cow: ");
    put_dec(cow_faults);
    line3(" fault, a ", a0, " -> ", a1, ", b ", b1);
    check("cow faults", cow_faults, 1);
    check("cow a after", a1, COW_NEW);
    check("cow b", b1, COW_OLD);
    check("cow shared frame", readl(cow_frame + 4), COW_OLD);
    check("cow a word 0", readl(U_COW_A), COW_OLD);
    check("cow a last word", readl(U_COW_A + PAGE_SIZE - 4), COW_OLD);
}

/* Short: domain 1 set to no access, a PL1 read of the task's data page gives a Domain fault. */
static void step_domain(void)
{
    kernel_faults = 0;
    write_dacr(DACR_CLIENT(0));
    isb();
    uint32_t v = readl(U_DATA + R_KREAD);
    uart_puts("domain: dfsr ");
    put_hex(dfsr_shown(last_fsr));
    uart_puts(" domain ");
    put_dec((last_fsr >> 4) & 0xfu);
    uart_puts(" dfar ");
    put_hex(last_far);
    uart_puts(", client again, read ");
    put_hex(v);
    uart_putc('\n');
    check("domain faults", kernel_faults, 1);
}

/* LPAE: a page with AF=0; the first access gives an Access flag fault, the handler sets AF. */
static void step_af(void)
{
    uint32_t frame = alloc_pages(1, 1), lo, hi;
    writel(frame, AF_VALUE);
    page_desc(frame, K_RW, 1, 0, 0, &lo, &hi);
    set_pte(K_AF, lo, hi);
    isb();
    kernel_faults = 0;
    uint32_t v = readl(K_AF);
    uint32_t again = readl(K_AF);           /* no second fault */
    uart_puts("af: dfsr ");
    put_hex(dfsr_shown(last_fsr));
    uart_puts(" dfar ");
    put_hex(last_far);
    uart_puts(", AF set, read ");
    put_hex(v);
    uart_putc('\n');
    check("af again", again, AF_VALUE);
    check("af faults", kernel_faults, 1);
    check("af value", v, AF_VALUE);
}

/* A global page remapped from frame X to frame Y: the new frame shows once the entry was
 * replaced with break-before-make and TLBIMVAA. */
static void step_tlb(void)
{
    uint32_t x = alloc_pages(1, 1), y = alloc_pages(1, 1);
    writel(x, 1);
    writel(y, 2);
    map_page(K_TLB, x, K_RW, 1, 0);
    isb();
    uint32_t before = readl(K_TLB);
    remap_page(K_TLB, y, K_RW, 1, 0);
    uint32_t after = readl(K_TLB);
    uart_puts("tlb: ");
    put_hex(K_TLB);
    uart_puts(" reads ");
    put_hex(before);
    uart_puts(", after break-before-make and tlbimvaa ");
    put_hex(after);
    uart_putc('\n');
    check("tlb before", before, 1);
    check("tlb after", after, 2);
}

/* Code written through K_JIT_W, run through K_JIT_X. */
static uint32_t jit(uint32_t n, int all)
{
    writel(K_JIT_W, 0xe3a00000u | n);       /* mov r0, #n */
    writel(K_JIT_W + 4, 0xe12fff1eu);       /* bx lr */
    dccmvau(K_JIT_W);                       /* D-cache to the PoU, by the written VA */
    dccmvau(K_JIT_W + 4);
    dsb();
    if (all) {
        iciallu();
    } else {
        icimvau(K_JIT_X);                   /* I-cache, by the executed VA */
        icimvau(K_JIT_X + 4);
    }
    bpiall();
    dsb();
    isb();
    return ((uint32_t(*)(void))K_JIT_X)();
}

static void step_icache(void)
{
    uint32_t frame = alloc_pages(1, 1);
    map_page(K_JIT_W, frame, K_RW, 1, 0);
    map_page(K_JIT_X, frame, K_RO, 0, 0);
    isb();
    uint32_t a = jit(0x11, 0), b = jit(0x22, 1);
    uart_puts("icache: ");
    put_hex(a);
    uart_puts(" (icimvau), rewritten ");
    put_hex(b);
    uart_puts(" (iciallu)\n");
    check("jit 1", a, 0x11);
    check("jit 2", b, 0x22);
}

static void run_format(int long_format)
{
    const char *name = long_format ? "long" : "short";
    lpae = long_format;
    if (lpae)
        build_long();
    else
        build_short();
    mmu_on();
    uart_puts("mmu: ");
    uart_puts(name);
    uart_puts(" on\n");

    map_user();
    run_task();
    if (lpae)
        step_af();
    else
        step_domain();
    step_tlb();
    step_icache();

    mmu_off((uintptr_t)__image_start, (uintptr_t)__image_end);
    uart_puts("mmu: ");
    uart_puts(name);
    uart_puts(" off\n");
}

int main(void)
{
    run_format(0);
    run_format(1);
    uart_puts("mmu: done\n");
    return 0;
}
