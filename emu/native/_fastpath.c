/* The machine's native fast path: Unicorn callbacks that run without Python.
 *
 * Only the hardware's fast path lives here - never a hypervisor decision. Each callback gets
 * its state through Unicorn's user_data pointer: a struct that Python allocates and reads with
 * ctypes (emu/native/__init__.py mirrors the layouts below; keep them in step).
 *
 * Block hook (UC_HOOK_BLOCK): called at the start of every translation block, before any of its
 * instructions run. A stop requested here is safe: Unicorn's exit check at the block start sees
 * it, so no load or store is ever re-executed (unlike emu_stop from another thread or Unicorn's
 * timeout=, which can stop after a memory access and restart the instruction).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <unicorn/unicorn.h>

typedef uc_err (*emu_stop_fn)(uc_engine *uc);

struct s2_block_state {
    volatile int32_t stop;      /* set by any thread: stop before the next block runs */
    int32_t stopped;            /* set here when this hook stopped the run */
    emu_stop_fn emu_stop;       /* uc_emu_stop of the loaded libunicorn */
    uint64_t blocks;            /* blocks started (statistics) */
};

static void s2_block_hook(uc_engine *uc, uint64_t address, uint32_t size, void *user_data)
{
    struct s2_block_state *st = (struct s2_block_state *)user_data;
    (void)address;
    (void)size;
    st->blocks++;
    if (st->stop && !st->stopped) {
        st->stopped = 1;
        st->emu_stop(uc);
    }
}

static PyObject *callbacks(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return Py_BuildValue("{s:N,s:n}",
                         "block_hook", PyLong_FromVoidPtr((void *)s2_block_hook),
                         "block_state_size", (Py_ssize_t)sizeof(struct s2_block_state));
}

static PyMethodDef methods[] = {
    {"callbacks", callbacks, METH_NOARGS,
     "Addresses of the native callbacks and the sizes of their state structs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "s2emu native fast path (Unicorn callbacks)", -1, methods,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    return PyModule_Create(&module);
}
