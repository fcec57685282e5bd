/*
 * faults: provoke every kind of stage-2 abort the hypervisor handles, one line per step.
 *
 *   RAM far from the image  - stage 2 starts empty: translation faults, filled on first touch
 *   flash0 (0x00000000)     - read-only memslot: reads are RAM-like, a write is a stage-2
 *                             permission fault emulated as an (ignored) MMIO write
 *   SVC / UDF               - the guest's own exceptions, delivered to its vectors
 *   flash1 (0x04000000)     - read-only and execute-never at stage 2: the fetch is a
 *                             permission (XN) fault; the hypervisor injects a prefetch abort
 *                             (IFSR 0x8, IFAR = the address) and the handler resumes us
 *
 * Under QEMU (no stage 2) the flash and XN steps behave differently; that is expected.
 */
#include "rt.h"

#define RAM_FAR     (RAM_BASE + 100u * 1024u * 1024u)   /* 0x46400000: needs >= 101 MiB */

/*
 * The instructions that trap, at global labels the host (and gdb) can look up:
 *   faults_svc_insn   the "svc #0x42"
 *   faults_udf_insn   the "udf #0"
 *   faults_xn_call    the "blx" into flash1; faults_xn_resume is where the pabt handler
 *                     sends execution back (in SVC mode)
 */
void faults_do_svc(void);
void faults_do_udf(void);
/* Returns 1 when the prefetch abort handler resumed us, 0 if the call returned normally. */
uint32_t faults_do_xn(uintptr_t target);
extern const char faults_svc_insn[], faults_udf_insn[], faults_xn_call[], faults_xn_resume[];

/* Where the prefetch abort handler resumes (SVC mode, ARM state); 0 = not expecting one. */
volatile uint32_t pabt_resume;

__asm__(
    "       .syntax unified\n"
    "       .arm\n"
    "       .section .text.faults_asm, \"ax\", %progbits\n"
    /* SVC from SVC mode overwrites LR_svc: keep the return address on the stack. */
    "       .global faults_do_svc, faults_svc_insn\n"
    "       .type   faults_do_svc, %function\n"
    "faults_do_svc:\n"
    "       push    {r4, lr}\n"
    "faults_svc_insn:\n"
    "       svc     #0x42\n"
    "       pop     {r4, pc}\n"
    "       .size   faults_do_svc, . - faults_do_svc\n"
    "\n"
    "       .global faults_do_udf, faults_udf_insn\n"
    "       .type   faults_do_udf, %function\n"
    "faults_do_udf:\n"
    "faults_udf_insn:\n"
    "       udf     #0\n"
    "       bx      lr\n"
    "       .size   faults_do_udf, . - faults_do_udf\n"
    "\n"
    "       .global faults_do_xn, faults_xn_call, faults_xn_resume\n"
    "       .type   faults_do_xn, %function\n"
    "faults_do_xn:\n"
    "       push    {r4, lr}\n"
    "       ldr     r1, =pabt_resume\n"
    "       adr     r2, faults_xn_resume\n"
    "       str     r2, [r1]\n"
    "faults_xn_call:\n"
    "       blx     r0\n"
    "       mov     r0, #0\n"               /* the call returned: no abort happened */
    "       pop     {r4, pc}\n"
    "faults_xn_resume:\n"
    "       mov     r0, #1\n"
    "       pop     {r4, pc}\n"
    "       .ltorg\n"
    "       .size   faults_do_xn, . - faults_do_xn\n"
    "       .text\n");

static void line_hex(const char *prefix, uint32_t v)
{
    uart_puts(prefix);
    put_hex(v);
    uart_putc('\n');
}

static void check(int ok, const char *what, uint32_t got, uint32_t want)
{
    if (ok)
        return;
    uart_puts("faults: CHECK FAILED: ");
    uart_puts(what);
    uart_puts(" got ");
    put_hex(got);
    uart_puts(" want ");
    put_hex(want);
    uart_putc('\n');
}

void exc_svc(struct exc_frame *f)
{
    uint32_t imm;
    if (f->spsr & PSR_T)
        imm = readb(f->lr - 2);                         /* SVC T1: imm8 in the low byte */
    else
        imm = readl(f->lr - 4) & 0x00ffffffu;           /* SVC A1: imm24 */
    line_hex("svc: imm ", imm);
    check(f->lr - 4 == (uintptr_t)faults_svc_insn, "svc lr - 4", f->lr - 4,
          (uintptr_t)faults_svc_insn);
    /* Return to f->lr: the instruction after the SVC. */
}

void exc_undef(struct exc_frame *f)
{
    int thumb = (f->spsr & PSR_T) != 0;
    uint32_t insn_addr = f->lr - (thumb ? 2u : 4u);
    if (insn_addr != (uintptr_t)faults_udf_insn) {
        line_hex("und: unexpected undefined instruction at ", insn_addr);
        exc_unexpected("undef", f);
    }
    line_hex("und: at ", insn_addr);
    /* Step over it: ARM UDF is 4 bytes; Thumb 2 or 4, by its first halfword. */
    uint32_t len = 4;
    if (thumb) {
        uint32_t hw = (readl(insn_addr & ~3u) >> ((insn_addr & 2u) * 8u)) & 0xffffu;
        len = hw >= 0xe800u ? 4u : 2u;
    }
    f->lr = insn_addr + len;
}

void exc_pabt(struct exc_frame *f)
{
    uint32_t ifsr = read_ifsr(), ifar = read_ifar();
    uint32_t resume = pabt_resume;
    if (resume == 0) {
        line_hex("pabt: unexpected, ifsr ", ifsr);
        line_hex("pabt: ifar ", ifar);
        exc_unexpected("pabt", f);
    }
    uart_puts("pabt: ifsr ");
    put_hex(ifsr);
    uart_puts(" ifar ");
    put_hex(ifar);
    uart_putc('\n');
    check(f->lr - 4 == ifar, "pabt lr - 4", f->lr - 4, ifar);
    check((f->spsr & PSR_MODE_MASK) == PSR_MODE_SVC, "pabt spsr mode", f->spsr & PSR_MODE_MASK,
          PSR_MODE_SVC);
    /* Exception return to the resume point, in the interrupted (SVC) mode and ARM state. */
    pabt_resume = 0;
    f->spsr &= ~(PSR_T | PSR_IT_MASK);
    f->lr = resume;
}

int main(void)
{
    uart_puts("faults: start\n");

    /* RAM far from the image: the stage-2 translation fault is invisible to the guest. */
    line_hex("ram: read ", readl(RAM_FAR));
    writel(RAM_FAR, 0xdeadbeefu);
    line_hex("ram: wrote ", readl(RAM_FAR));

    /* flash0: a read-only memslot.  Reads work; a write is ignored by the flash device. */
    uint32_t a = readl(FLASH0_BASE), b = readl(FLASH0_BASE + 0x1000u);
    uart_puts("flash: read ");
    put_hex(a);
    uart_putc(' ');
    put_hex(b);
    uart_putc('\n');
    writel(FLASH0_BASE, 0x12345678u);
    line_hex("flash: write ignored, read ", readl(FLASH0_BASE));

    /* The guest's own exceptions. */
    faults_do_svc();
    faults_do_udf();

    /* flash1 is execute-never at stage 2: prefetch abort injected into the guest. */
    uint32_t resumed = faults_do_xn(FLASH1_BASE);
    check(resumed == 1, "resumed by the pabt handler", resumed, 1);

    uart_puts("faults: done\n");
    return 0;
}
