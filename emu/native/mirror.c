/* The fill mirror: a native cache of the model TLB (hyp/arch/tlb.py), so that a Unicorn TLB
 * refill of a translation the model already holds never enters Python.
 *
 * Entries are the model's: tagged by VMID and by ASID, GLOBAL or FLAT (MMU off), with the
 * stage-2 permissions and the stage-1 leaf's permissions for PL1 and PL0 in a client domain.
 * Python inserts one whenever its fill hook hands Unicorn a translation, and removes exactly
 * what the model TLB removes (its listeners): a flush the hypervisor skips leaves the stale
 * entry here as it leaves it there. The fill below is MMU.fill's hit path, nothing more:
 * lookup (ASID then GLOBAL), the privilege (PL0 in User mode or for LDRT/STRT and friends at
 * PC), the domain under today's DACR, the permission check; it grants R/X on fetches and R/W
 * on data fills, as emu.cpu does. Anything else - a miss, a permission the entry lacks, code
 * it cannot read - returns false, and Unicorn calls the next fill hook: Python's, which walks,
 * decides (faults included) and updates the model TLB.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

#include "fastpath.h"

#define SETS 8192                  /* power of two */
#define WAYS 4
#define TAG_FLAT (-2)
#define TAG_GLOBAL (-1)
#define NO_S1 (-2)                 /* domain field: no stage-1 leaf (MMU off) */
#define MODE_USR 0x10
#define PROT_R 1
#define PROT_W 2
#define PROT_X 4

struct s2_tlb_entry {
    uint64_t va;                   /* VA page | 1 when valid */
    uint64_t pa;                   /* PA page */
    uint64_t host;                 /* host address of the page */
    int32_t tag;                   /* ASID, TAG_GLOBAL or TAG_FLAT */
    uint8_t vmid, s2, pl1, pl0;    /* stage-2 Prot; stage-1 Prot for PL1 / PL0 */
    int32_t domain;                /* short descriptors' domain, -1 LPAE, NO_S1 */
};

struct s2_mirror {
    struct s2_block_state *blk;    /* reg_read, the code pages, stop requests */
    struct s2_tlb_entry *table;    /* SETS * WAYS, from mirror_new */
    int32_t enabled;               /* serve fills */
    int32_t vmid;                  /* the loaded VMID */
    int32_t asid;                  /* the current ASID, TAG_FLAT with the MMU off */
    uint32_t dacr;
    uint64_t fills;                /* fills since Unicorn's TLB was flushed (both paths) */
    uint64_t grow_at;              /* request a stop past this many (TLB growth) */
    uint64_t hits;                 /* refills served (emu.cpu native_fills) */
    uint32_t next_way;
    uint32_t pad;
};

static inline uint32_t set_of(uint32_t vmid, int32_t tag, uint64_t va)
{
    uint64_t h = (va >> 12) ^ ((uint64_t)vmid * 0x9E3779B1u) ^ ((uint64_t)(uint32_t)tag << 7);
    h ^= h >> 13;
    return (uint32_t)(h & (SETS - 1));
}

static struct s2_tlb_entry *find(struct s2_mirror *m, uint32_t vmid, int32_t tag, uint64_t va)
{
    struct s2_tlb_entry *set = &m->table[set_of(vmid, tag, va) * WAYS];
    uint64_t key = va | 1;
    for (int i = 0; i < WAYS; i++)
        if (set[i].va == key && set[i].tag == tag && set[i].vmid == vmid)
            return &set[i];
    return NULL;
}

/* Stage 1 and stage 2 combined for one privilege (MMU.effective). */
static inline unsigned effective(const struct s2_mirror *m, const struct s2_tlb_entry *e,
                                 int pl0)
{
    if (e->domain == NO_S1)
        return e->s2;
    if (e->domain >= 0) {
        unsigned acc = (m->dacr >> (2 * e->domain)) & 3;
        if (acc == 0 || acc == 2)
            return 0;              /* no access / reserved: a domain fault */
        if (acc == 3)
            return e->s2;          /* manager: no permission checks */
    }
    return (pl0 ? e->pl0 : e->pl1) & e->s2;
}

/* emu.decode.unprivileged: LDRT/STRT and the B, H, SB, SH forms. */
static int unprivileged(const uint8_t *code, int thumb)
{
    if (thumb) {
        uint16_t hw1, hw2;
        memcpy(&hw1, code, 2);
        memcpy(&hw2, code + 2, 2);
        return (hw1 & 0xFE80) == 0xF800 && (hw2 & 0x0F00) == 0x0E00;
    }
    uint32_t w;
    memcpy(&w, code, 4);
    if (w >> 28 == 0xF || (w >> 24 & 1) || !(w >> 21 & 1))
        return 0;
    if ((w >> 26 & 3) == 1)
        return !((w >> 25 & 1) && (w >> 4 & 1));
    return (w >> 25 & 7) == 0 && (w & 0x90) == 0x90 && (w >> 5 & 3) != 0;
}

bool s2_mirror_fill(uc_engine *uc, uint64_t vaddr, uc_mem_type type, uc_tlb_entry *result,
                    void *user_data)
{
    struct s2_mirror *m = (struct s2_mirror *)user_data;
    if (!m->enabled)
        return false;
    uint64_t va = vaddr & ~0xFFFull;
    struct s2_tlb_entry *e = find(m, (uint32_t)m->vmid, m->asid, va);
    if (e == NULL && m->asid != TAG_FLAT)
        e = find(m, (uint32_t)m->vmid, TAG_GLOBAL, va);
    if (e == NULL)
        return false;
    int fetch = type == UC_MEM_FETCH;
    unsigned pl1 = effective(m, e, 0), pl0 = effective(m, e, 1), eff = pl1;
    if (pl0 != pl1 && m->asid != TAG_FLAT) {
        /* which privilege: PL0 in User mode, and for PL1's unprivileged loads/stores */
        struct s2_block_state *b = m->blk;
        uint32_t cpsr = 0, pc = 0;
        b->reg_read(uc, UC_ARM_REG_CPSR, &cpsr);
        if ((cpsr & 0x1F) == MODE_USR) {
            eff = pl0;
        } else if (!fetch) {
            b->reg_read(uc, UC_ARM_REG_PC, &pc);
            const uint8_t *code = (pc & 0xFFF) <= 0xFFC ? code_ptr(b, pc) : NULL;
            if (code == NULL)
                return false;      /* Python reads the code */
            if (unprivileged(code, (cpsr & CPSR_T) != 0))
                eff = pl0;
        }
    }
    unsigned need = fetch ? (PROT_R | PROT_X) : type == UC_MEM_WRITE ? PROT_W : PROT_R;
    if ((eff & need) != need)
        return false;              /* Python re-walks: a fault, or a changed descriptor */
    result->paddr = e->pa;
    if (fetch) {
        result->perms = UC_PROT_READ | UC_PROT_EXEC;
        struct s2_code_page *p = &m->blk->code[(va >> 12) & (CODE_SLOTS - 1)];
        p->va = va | 1;
        p->host = e->host;
    } else {
        result->perms = eff & (PROT_R | PROT_W);
    }
    m->hits++;
    if (++m->fills > m->grow_at)
        m->blk->stop = 1;          /* let Unicorn's TLB grow (at the next block start) */
    return true;
}

/* ---- Python-facing maintenance ---------------------------------------------------------- */
static PyObject *py_table_new(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    void *t = calloc((size_t)SETS * WAYS, sizeof(struct s2_tlb_entry));
    if (t == NULL)
        return PyErr_NoMemory();
    return PyLong_FromVoidPtr(t);
}

static PyObject *py_table_free(PyObject *self, PyObject *arg)
{
    (void)self;
    void *t = PyLong_AsVoidPtr(arg);
    if (PyErr_Occurred())
        return NULL;
    free(t);
    Py_RETURN_NONE;
}

/* insert(m, vmid, tag, va, pa, host, s2, pl1, pl0, domain) */
static PyObject *py_insert(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (!nargs_ok(nargs, 10, "mirror_insert takes 10 arguments"))
        return NULL;
    struct s2_mirror *m = (struct s2_mirror *)addr_arg(args[0], "mirror");
    if (m == NULL)
        return NULL;
    long vmid = PyLong_AsLong(args[1]), tag = PyLong_AsLong(args[2]);
    uint64_t va = PyLong_AsUnsignedLongLong(args[3]), pa = PyLong_AsUnsignedLongLong(args[4]);
    uint64_t host = PyLong_AsUnsignedLongLong(args[5]);
    long s2 = PyLong_AsLong(args[6]), pl1 = PyLong_AsLong(args[7]), pl0 = PyLong_AsLong(args[8]);
    long domain = PyLong_AsLong(args[9]);
    if (PyErr_Occurred())
        return NULL;
    va &= ~0xFFFull;
    struct s2_tlb_entry *e = find(m, (uint32_t)vmid, (int32_t)tag, va);
    if (e == NULL) {
        struct s2_tlb_entry *set = &m->table[set_of((uint32_t)vmid, (int32_t)tag, va) * WAYS];
        for (int i = 0; i < WAYS && e == NULL; i++)
            if (!(set[i].va & 1))
                e = &set[i];
        if (e == NULL)
            e = &set[m->next_way++ % WAYS];    /* evict: the model TLB still has it */
    }
    e->va = va | 1;
    e->pa = pa & ~0xFFFull;
    e->host = host;
    e->tag = (int32_t)tag;
    e->vmid = (uint8_t)vmid;
    e->s2 = (uint8_t)s2;
    e->pl1 = (uint8_t)pl1;
    e->pl0 = (uint8_t)pl0;
    e->domain = (int32_t)domain;
    Py_RETURN_NONE;
}

/* remove(m, vmid, tag, va) */
static PyObject *py_remove(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (!nargs_ok(nargs, 4, "mirror_remove(m, vmid, tag, va)"))
        return NULL;
    struct s2_mirror *m = (struct s2_mirror *)addr_arg(args[0], "mirror");
    if (m == NULL)
        return NULL;
    long vmid = PyLong_AsLong(args[1]), tag = PyLong_AsLong(args[2]);
    uint64_t va = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    struct s2_tlb_entry *e = find(m, (uint32_t)vmid, (int32_t)tag, va & ~0xFFFull);
    if (e != NULL)
        e->va = 0;
    Py_RETURN_NONE;
}

/* clear(m, vmid): every entry of that VMID (-1: all) */
static PyObject *py_clear(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (!nargs_ok(nargs, 2, "mirror_clear(m, vmid)"))
        return NULL;
    struct s2_mirror *m = (struct s2_mirror *)addr_arg(args[0], "mirror");
    if (m == NULL)
        return NULL;
    long vmid = PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (vmid < 0) {
        memset(m->table, 0, (size_t)SETS * WAYS * sizeof(struct s2_tlb_entry));
    } else {
        for (size_t i = 0; i < (size_t)SETS * WAYS; i++)
            if (m->table[i].vmid == (uint8_t)vmid)
                m->table[i].va = 0;
    }
    Py_RETURN_NONE;
}

PyMethodDef s2_mirror_methods[] = {
    {"mirror_table_new", py_table_new, METH_NOARGS, "A zeroed mirror table (address)."},
    {"mirror_table_free", py_table_free, METH_O, "Free a mirror table."},
    {"mirror_insert", (PyCFunction)(void (*)(void))py_insert, METH_FASTCALL,
     "mirror_insert(m, vmid, tag, va, pa, host, s2, pl1, pl0, domain)"},
    {"mirror_remove", (PyCFunction)(void (*)(void))py_remove, METH_FASTCALL,
     "mirror_remove(m, vmid, tag, va)"},
    {"mirror_clear", (PyCFunction)(void (*)(void))py_clear, METH_FASTCALL,
     "mirror_clear(m, vmid): that VMID's entries, -1 all"},
    {NULL, NULL, 0, NULL},
};

size_t s2_mirror_size(void) { return sizeof(struct s2_mirror); }
