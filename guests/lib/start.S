/*
 * Guest startup: entry point, exception vectors, hypercall stub.
 *
 * Entered at _start (ARM state) in SVC mode with the MMU off, as QEMU's virt board and our
 * hypervisor start a bare ELF.  _start masks A/I/F, zeroes .bss, gives every exception mode a
 * stack in .bss, points VBAR at the vector table, calls main() and finally PSCI SYSTEM_OFF.
 */
        .syntax unified
        .arch   armv7-a
        .arch_extension sec             @ VBAR (Security Extensions)
        .arch_extension virt            @ HVC
        .arm

#define MODE_FIQ 0x11
#define MODE_IRQ 0x12
#define MODE_SVC 0x13
#define MODE_ABT 0x17
#define MODE_UND 0x1b

#define SCTLR_V  (1 << 13)              /* high vectors: would ignore VBAR */
#define SCTLR_TE (1 << 30)              /* exceptions taken in Thumb state */

        .section .text.start, "ax", %progbits
        .global _start
        .type   _start, %function
_start:
        cpsid   aif, #MODE_SVC

        /* Zero .bss (the stacks live there too); guests.ld 8-aligns both ends. */
        ldr     r0, =__bss_start
        ldr     r1, =__bss_end
        mov     r2, #0
        mov     r3, #0
1:      cmp     r0, r1
        strdlo  r2, r3, [r0], #8
        blo     1b

        /* One stack per mode that can take an exception. */
        cps     #MODE_UND
        ldr     sp, =__und_stack_top
        cps     #MODE_ABT
        ldr     sp, =__abt_stack_top
        cps     #MODE_IRQ
        ldr     sp, =__irq_stack_top
        cps     #MODE_FIQ
        ldr     sp, =__fiq_stack_top
        cps     #MODE_SVC
        ldr     sp, =__svc_stack_top

        /* Low vectors at VBAR, taken in ARM state (SCTLR is only written if it must change). */
        ldr     r0, =vectors
        mcr     p15, 0, r0, c12, c0, 0          @ VBAR
        mrc     p15, 0, r0, c1, c0, 0           @ SCTLR
        bic     r1, r0, #SCTLR_V
        bic     r1, r1, #SCTLR_TE
        cmp     r1, r0
        mcrne   p15, 0, r1, c1, c0, 0
        isb

        mov     r0, #0
        mov     r1, #0
        bl      main                            @ the linker makes this a BLX for Thumb main
        bl      psci_system_off
        .size   _start, . - _start

/*
 * uint64_t hvc_call(uint32_t fid, uint32_t a1, uint32_t a2, uint32_t a3)
 * SMCCC: function id and arguments in r0-r3, results in r0 (low) and r1 (high).
 */
        .section .text.hvc_call, "ax", %progbits
        .global hvc_call
        .type   hvc_call, %function
hvc_call:
        hvc     #0
        bx      lr
        .size   hvc_call, . - hvc_call

/*
 * Exception vectors.  Each entry saves r0-r12 and the exception LR on the current mode's
 * stack, below them SPSR and a pad word (the frame is struct exc_frame, 64 bytes, 8-aligned),
 * calls exc_<name>(frame) and returns to frame->lr with CPSR = frame->spsr.
 */
        .macro  EXC_ENTRY name
        .type   \name\()_entry, %function
\name\()_entry:
        push    {r0-r12, lr}
        mrs     r0, spsr
        sub     sp, sp, #8
        str     r0, [sp]
        mov     r0, sp
        bl      exc_\name
        ldr     r0, [sp]
        msr     spsr_cxsf, r0
        add     sp, sp, #8
        ldm     sp!, {r0-r12, pc}^
        .size   \name\()_entry, . - \name\()_entry
        .endm

        .section .text.vectors, "ax", %progbits
        .balign 32
        .global vectors
        .type   vectors, %function
vectors:
        b       reset_entry                     @ 0x00 reset (only reached by a jump)
        b       undef_entry                     @ 0x04 undefined instruction
        b       svc_entry                       @ 0x08 supervisor call
        b       pabt_entry                      @ 0x0c prefetch abort
        b       dabt_entry                      @ 0x10 data abort
        b       unused_entry                    @ 0x14 not used (Hyp trap in HVBAR only)
        b       irq_entry                       @ 0x18 IRQ
        b       fiq_entry                       @ 0x1c FIQ
        .size   vectors, . - vectors

        EXC_ENTRY reset
        EXC_ENTRY undef
        EXC_ENTRY svc
        EXC_ENTRY pabt
        EXC_ENTRY dabt
        EXC_ENTRY unused
        EXC_ENTRY irq
        EXC_ENTRY fiq

/* Stacks (in .bss, zeroed by _start before use). */
        .section .bss.stacks, "aw", %nobits
        .balign 8
        .space  16384
        .global __svc_stack_top
__svc_stack_top:
        .space  4096
        .global __und_stack_top
__und_stack_top:
        .space  4096
        .global __abt_stack_top
__abt_stack_top:
        .space  1024
        .global __irq_stack_top
__irq_stack_top:
        .space  1024
        .global __fiq_stack_top
__fiq_stack_top:
