/* Shared between the native fast path's C files (emu/native/_fastpath.c, mirror.c), which
 * include Python.h first. The structs are mirrored by ctypes in emu/native/__init__.py:
 * keep them in step. */
#ifndef S2EMU_FASTPATH_H
#define S2EMU_FASTPATH_H

#include <stdint.h>
#include <string.h>
#include <unicorn/unicorn.h>

typedef uc_err (*emu_stop_fn)(uc_engine *uc);
typedef uc_err (*reg_read_fn)(uc_engine *uc, int regid, void *value);

#define CODE_SLOTS 1024            /* direct-mapped VA page -> host page (power of two) */
#define CPSR_T (1u << 5)

enum { STOP_NONE, STOP_REQUEST, STOP_BUDGET, STOP_TAIL, STOP_UNKNOWN_CODE };

struct s2_code_page {
    uint64_t va;                   /* VA page | 1 when valid */
    uint64_t host;                 /* host address of that page */
};

struct s2_block_state {
    volatile int32_t stop;         /* set by any thread: stop before the next block runs */
    int32_t stopped;               /* why this hook stopped the run (STOP_*) */
    emu_stop_fn emu_stop;          /* uc_emu_stop of the loaded libunicorn */
    reg_read_fn reg_read;          /* uc_reg_read */
    const volatile uint32_t *thumb_flag;   /* the CPU's Thumb flag (env->thumb), or NULL */
    int32_t counting;              /* count instructions and enforce `limit` */
    int32_t thumb;                 /* the current block is Thumb */
    uint64_t count;                /* instructions of the blocks entered in this run */
    uint64_t limit;                /* no block may take `count` past this */
    uint64_t base;                 /* `count` before the current block */
    uint64_t block_pc, block_end;  /* the current block */
    uint64_t pending_pc, pending_end, pending_n;  /* the block a stop held back, its length */
    uint64_t allow_pc;             /* a tail: this block may start first, past the limit */
    struct s2_code_page code[CODE_SLOTS];
};

/* ---- guest code by VA, through the code-page table ---------------------------------- */
static inline const uint8_t *code_ptr(struct s2_block_state *st, uint64_t va)
{
    struct s2_code_page *p = &st->code[(va >> 12) & (CODE_SLOTS - 1)];
    if (p->va != ((va & ~0xFFFull) | 1))
        return NULL;
    return (const uint8_t *)(uintptr_t)(p->host + (va & 0xFFF));
}

static inline int thumb32(uint16_t hw)
{
    return (hw >> 11) >= 0x1D;     /* 0b11101, 0b11110, 0b11111: first half of a T32 insn */
}

/* ---- the Python-facing methods of both files: state structs travel as int addresses --- */
static inline void *addr_arg(PyObject *o, const char *what)
{
    void *p = PyLong_AsVoidPtr(o);
    if (p == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "null %s", what);
    return p;
}

static inline int nargs_ok(Py_ssize_t nargs, Py_ssize_t want, const char *usage)
{
    if (nargs == want)
        return 1;
    PyErr_SetString(PyExc_TypeError, usage);
    return 0;
}

/* Instructions in [start, end); -1 when a page is not in the table. */
int64_t s2_count_between(struct s2_block_state *st, uint64_t start, uint64_t end, int thumb);

bool s2_mirror_fill(uc_engine *uc, uint64_t vaddr, uc_mem_type type, uc_tlb_entry *result,
                    void *user_data);
extern PyMethodDef s2_mirror_methods[];
size_t s2_mirror_size(void);

#endif
