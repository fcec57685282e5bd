/*
 * Tiny runtime shared by the bare-metal ARMv7 guests.
 *
 * The board is QEMU's "virt" (see DESIGN.md section 2a): RAM from 0x40000000, PL011 UART at
 * 0x09000000, PSCI 0.2 over HVC.  Guests start in SVC mode with the MMU and caches off; they
 * never enable the MMU, so guest virtual address == IPA.  No floating point anywhere (the FPU
 * is disabled): everything is built with -mfloat-abi=soft -mgeneral-regs-only.
 */
#ifndef GUEST_RT_H
#define GUEST_RT_H

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef signed int int32_t;
typedef unsigned int uintptr_t;

#define NULL ((void *)0)

/* ---- board ------------------------------------------------------------------------------ */
#define RAM_BASE        0x40000000u
#define UART_BASE       0x09000000u     /* PL011 */
#define UART_DR         0x00u           /* data register */
#define UART_FR         0x18u           /* flag register */
#define UART_FR_TXFF    (1u << 5)       /* transmit FIFO full */
#define FLASH0_BASE     0x00000000u     /* read-only memslot */
#define FLASH1_BASE     0x04000000u     /* read-only, execute-never memslot */
#define PAGE_SIZE       4096u

/* ---- hypercalls (HVC #0, function id in r0, result in r0 (and r1)) ---------------------- */
#define PSCI_VERSION        0x84000000u
#define PSCI_SYSTEM_OFF     0x84000008u
#define PSCI_SYSTEM_RESET   0x84000009u
/* SMCCC vendor-specific hypervisor service calls of this project */
#define HV_TIME_NS          0x86000001u /* -> r0 = ns[31:0], r1 = ns[63:32] */
#define HV_SLEEP_US         0x86000002u /* r1 = microseconds -> r0 = 0 */
#define HV_GET_ARGS         0x86000010u /* r1 = buffer, r2 = length -> r0 = string length */
#define HV_NOT_SUPPORTED    0xffffffffu /* SMCCC NOT_SUPPORTED (-1), also QEMU's answer */

/* r0 in the low half, r1 in the high half of the result. */
uint64_t hvc_call(uint32_t fid, uint32_t a1, uint32_t a2, uint32_t a3);
void psci_system_off(void) __attribute__((noreturn));

/* 0 ok, -1 not supported (QEMU): sleeping is then a no-op. */
int hv_sleep_us(uint32_t us);
/* 0 ok (virtual time in *ns), -1 not supported. */
int hv_time_ns(uint64_t *ns);
/*
 * Fetch the argument string with HV_GET_ARGS and split it on spaces.  Returns argc (0..max),
 * or -1 when the hypercall is not supported (argc is then 0).  argv points into a static
 * buffer.
 */
int get_args(char **argv, int max);

/* ---- MMIO / raw accessors: exactly one LDR/STR/LDRB/STRB (no writeback), never elided ---- */
static inline uint32_t readl(uintptr_t addr)
{
    uint32_t v;
    __asm__ volatile("ldr %0, [%1]" : "=r"(v) : "r"(addr) : "memory");
    return v;
}

static inline void writel(uintptr_t addr, uint32_t v)
{
    __asm__ volatile("str %0, [%1]" : : "r"(v), "r"(addr) : "memory");
}

static inline uint32_t readb(uintptr_t addr)
{
    uint32_t v;
    __asm__ volatile("ldrb %0, [%1]" : "=r"(v) : "r"(addr) : "memory");
    return v;
}

static inline void writeb(uintptr_t addr, uint32_t v)
{
    __asm__ volatile("strb %0, [%1]" : : "r"(v), "r"(addr) : "memory");
}

/* ---- console --------------------------------------------------------------------------- */
void uart_putc(char c);
void uart_puts(const char *s);
void put_hex(uint32_t v);   /* exactly 8 lower-case hex digits, no prefix */
void put_dec(uint32_t v);   /* decimal, no leading zeros */

/* ---- helpers --------------------------------------------------------------------------- */
/* Decimal, or hex with a 0x prefix.  Returns 0 on success, -1 on a malformed number. */
int parse_u32(const char *s, uint32_t *out);
/* Hex with or without a 0x prefix.  Returns 0 on success, -1 on a malformed number. */
int parse_hex32(const char *s, uint32_t *out);
/* xorshift32 (Marsaglia): a zero seed is replaced by a fixed non-zero one. */
uint32_t prng_seed(uint32_t seed);
uint32_t xorshift32(uint32_t *state);

/* ---- image layout (from guests.ld) ------------------------------------------------------ */
extern char __image_start[], __image_end[];
/* First 2 MiB boundary at or after __image_end (the image must fit in 2 MiB: 0x40200000). */
extern char __guest_region_start[];

/* ---- exceptions ------------------------------------------------------------------------ */
/*
 * Every vector saves the interrupted registers on the stack of the mode the exception was
 * taken to and calls exc_<name>(frame).  The handler may edit the frame; returning resumes at
 * frame->lr with CPSR = frame->spsr (ldm ... {pc}^).  frame->lr is the raw exception link
 * register: SVC: next insn; undef: insn + 4 (ARM) / + 2 (Thumb); pabt: insn + 4; dabt:
 * insn + 8.  The weak defaults print "unexpected exception <name> ..." and power off.
 */
struct exc_frame {
    uint32_t spsr;
    uint32_t pad;
    uint32_t r[13];
    uint32_t lr;
};

#define PSR_MODE_MASK   0x1fu
#define PSR_MODE_SVC    0x13u
#define PSR_MODE_ABT    0x17u
#define PSR_MODE_UND    0x1bu
#define PSR_T           (1u << 5)
#define PSR_IT_MASK     0x0600fc00u

void exc_reset(struct exc_frame *f);
void exc_undef(struct exc_frame *f);
void exc_svc(struct exc_frame *f);
void exc_pabt(struct exc_frame *f);
void exc_dabt(struct exc_frame *f);
void exc_unused(struct exc_frame *f);
void exc_irq(struct exc_frame *f);
void exc_fiq(struct exc_frame *f);
void exc_unexpected(const char *name, struct exc_frame *f) __attribute__((noreturn));

static inline uint32_t read_ifsr(void)
{
    uint32_t v;
    __asm__ volatile("mrc p15, 0, %0, c5, c0, 1" : "=r"(v));
    return v;
}

static inline uint32_t read_ifar(void)
{
    uint32_t v;
    __asm__ volatile("mrc p15, 0, %0, c6, c0, 2" : "=r"(v));
    return v;
}

static inline uint32_t read_dfsr(void)
{
    uint32_t v;
    __asm__ volatile("mrc p15, 0, %0, c5, c0, 0" : "=r"(v));
    return v;
}

static inline uint32_t read_dfar(void)
{
    uint32_t v;
    __asm__ volatile("mrc p15, 0, %0, c6, c0, 0" : "=r"(v));
    return v;
}

int main(void);

#endif
