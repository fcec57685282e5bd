/* The machine's native fast path: Unicorn callbacks that run without Python.
 *
 * Only the hardware's fast path lives here - never a hypervisor decision. Each callback gets
 * its state through Unicorn's user_data pointer: a struct that Python allocates and reads with
 * ctypes (emu/native/__init__.py mirrors the layouts below; keep them in step). libunicorn's
 * functions are called through pointers Python hands over (the extension does not link it).
 *
 * Block hook (UC_HOOK_BLOCK): called at the start of every translation block, before any of
 * its instructions run (Unicorn emits it ahead of the block's exit check, so a stop requested
 * here ends the run before the block: no load or store is ever re-executed, unlike emu_stop
 * from another thread or Unicorn's timeout=). It
 *   - honours stop requests (any thread, or a Python hook);
 *   - counts instructions exactly, one block at a time: ARM blocks hold size/4, Thumb blocks
 *     are decoded (16- and 32-bit encodings) from guest memory through the code-page table,
 *     which the TLB-fill path keeps (every page Unicorn executes from was filled for fetch
 *     since Unicorn's TLB was last flushed, and the table is flushed with it);
 *   - enforces a budget: a block that would take the count past `limit` does not start. The
 *     tail (fewer instructions than the block) then runs to a tail hook at the exact
 *     boundary (s2_tail_hook, a UC_HOOK_CODE bounded to one address).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fastpath.h"

/* Instructions in [start, end); -1 when a page is not in the table. */
int64_t s2_count_between(struct s2_block_state *st, uint64_t start, uint64_t end, int thumb)
{
    if (!thumb)
        return end > start ? (int64_t)((end - start) >> 2) : 0;
    int64_t n = 0;
    uint64_t a = start;
    const uint8_t *p = NULL;
    uint64_t page = 1;
    while (a < end) {
        if ((a & ~0xFFFull) != page) {
            page = a & ~0xFFFull;
            p = code_ptr(st, a);
            if (p == NULL)
                return -1;
            p -= a & 0xFFF;
        }
        uint16_t hw;
        memcpy(&hw, p + (a & 0xFFF), 2);
        a += thumb32(hw) ? 4 : 2;
        n++;
    }
    return n;
}

/* ---- the hooks ------------------------------------------------------------------------ */
static void s2_block_hook(uc_engine *uc, uint64_t address, uint32_t size, void *user_data)
{
    struct s2_block_state *st = (struct s2_block_state *)user_data;
    if (st->stopped)
        return;
    if (st->stop) {
        st->stopped = STOP_REQUEST;
        st->emu_stop(uc);
        return;
    }
    if (!st->counting)
        return;
    int thumb;
    if (st->thumb_flag != NULL) {
        thumb = *st->thumb_flag != 0;
    } else {
        uint32_t cpsr = 0;
        st->reg_read(uc, UC_ARM_REG_CPSR, &cpsr);
        thumb = (cpsr & CPSR_T) != 0;
    }
    int64_t n;
    if (thumb) {
        n = s2_count_between(st, address, address + size, 1);
        if (n < 0) {               /* code page unknown: Python decodes it (rare) */
            st->stopped = STOP_UNKNOWN_CODE;
            st->pending_pc = address;
            st->pending_end = address + size;
            st->emu_stop(uc);
            return;
        }
    } else {
        n = size >> 2;
    }
    if (st->count + (uint64_t)n > st->limit) {
        if (!(address == st->allow_pc && st->count == 0)) {
            st->stopped = STOP_BUDGET;
            st->pending_pc = address;
            st->pending_end = address + size;
            st->pending_n = (uint64_t)n;
            st->emu_stop(uc);
            return;
        }
    }
    st->allow_pc = UINT64_MAX;
    st->base = st->count;
    st->count += (uint64_t)n;
    st->block_pc = address;
    st->block_end = address + size;
    st->thumb = thumb;
}

/* UC_HOOK_CODE bounded to the tail's end: stop before that instruction runs. */
static void s2_tail_hook(uc_engine *uc, uint64_t address, uint32_t size, void *user_data)
{
    struct s2_block_state *st = (struct s2_block_state *)user_data;
    (void)address;
    (void)size;
    if (!st->stopped) {
        st->stopped = STOP_TAIL;
        st->emu_stop(uc);
    }
}

/* The fastest raw configuration for benchmarks: virtual-TLB mode with an identity map
 * (execute granted on fetch fills only, as the machine does). */
static bool s2_identity_fill(uc_engine *uc, uint64_t vaddr, uc_mem_type type,
                             uc_tlb_entry *result, void *user_data)
{
    (void)uc;
    (void)user_data;
    result->paddr = vaddr & ~0xFFFull;
    result->perms = type == UC_MEM_FETCH ? (UC_PROT_READ | UC_PROT_EXEC)
                                         : (UC_PROT_READ | UC_PROT_WRITE);
    return true;
}

/* ---- Python-facing helpers (addresses of state structs as ints) ------------------------ */
static PyObject *py_code_page(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (!nargs_ok(nargs, 3, "code_page(state, va_page, host_address)"))
        return NULL;
    struct s2_block_state *st = (struct s2_block_state *)addr_arg(args[0], "state");
    if (st == NULL)
        return NULL;
    uint64_t va = PyLong_AsUnsignedLongLong(args[1]);
    uint64_t host = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    struct s2_code_page *p = &st->code[(va >> 12) & (CODE_SLOTS - 1)];
    p->va = (va & ~0xFFFull) | 1;
    p->host = host;
    Py_RETURN_NONE;
}

static PyObject *py_code_flush(PyObject *self, PyObject *arg)
{
    (void)self;
    struct s2_block_state *st = (struct s2_block_state *)addr_arg(arg, "state");
    if (st == NULL)
        return NULL;
    memset(st->code, 0, sizeof st->code);
    Py_RETURN_NONE;
}

/* retired(state, pc, whole) -> instructions that completed before `pc` in this run: the
 * whole count when `whole` (a fetch fault or a stop at a block start: the next block never
 * started) or when the run stopped outside the current block, else the blocks before it plus
 * the current block's instructions before pc. -1 if the code is unknown. */
static PyObject *py_retired(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (!nargs_ok(nargs, 3, "retired(state, pc, whole)"))
        return NULL;
    struct s2_block_state *st = (struct s2_block_state *)addr_arg(args[0], "state");
    if (st == NULL)
        return NULL;
    uint64_t pc = PyLong_AsUnsignedLongLong(args[1]);
    int whole = PyObject_IsTrue(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (whole || st->count == 0 || pc < st->block_pc || pc > st->block_end)
        return PyLong_FromUnsignedLongLong(st->count);
    int64_t n = s2_count_between(st, st->block_pc, pc, st->thumb);
    if (n < 0)
        return PyLong_FromLong(-1);
    return PyLong_FromUnsignedLongLong(st->base + (uint64_t)n);
}

static PyObject *callbacks(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return Py_BuildValue("{s:N,s:N,s:n,s:N,s:N,s:n,s:n}",
                         "block_hook", PyLong_FromVoidPtr((void *)s2_block_hook),
                         "mirror_fill", PyLong_FromVoidPtr((void *)s2_mirror_fill),
                         "mirror_size", (Py_ssize_t)s2_mirror_size(),
                         "tail_hook", PyLong_FromVoidPtr((void *)s2_tail_hook),
                         "identity_fill", PyLong_FromVoidPtr((void *)s2_identity_fill),
                         "block_state_size", (Py_ssize_t)sizeof(struct s2_block_state),
                         "code_slots", (Py_ssize_t)CODE_SLOTS);
}

static PyMethodDef methods[] = {
    {"callbacks", callbacks, METH_NOARGS,
     "Addresses of the native callbacks and the sizes of their state structs."},
    {"code_page", (PyCFunction)(void (*)(void))py_code_page, METH_FASTCALL,
     "code_page(state, va_page, host_address): a page Unicorn may execute from."},
    {"code_flush", py_code_flush, METH_O, "code_flush(state): forget every code page."},
    {"retired", (PyCFunction)(void (*)(void))py_retired, METH_FASTCALL,
     "retired(state, pc, whole): instructions completed before pc in this run."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "s2emu native fast path (Unicorn callbacks)", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddFunctions(m, s2_mirror_methods) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
