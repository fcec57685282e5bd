"""The machinery of test_fuzz_guest.py: build a Machine for a generated case
(guest_fuzz_gen.Case), run it with a wall-clock guard, and check the isolation invariants
(see test_fuzz_guest.py): host memory outside the memslot backings, the stage-2 tables,
host-private values in guest registers, icount=True/False equivalence, and - for cases run
with dirty logging - that every RAM page the guest changed between two harvests is in the
second harvest.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import signal
import threading
import time
from contextlib import contextmanager

import capstone
import numpy as np
from unicorn import arm_const as A

from emu.cp15 import CP15
from emu.cpu import GuestCrash
from emu.machine import Machine
from emu.undef import decode_coproc
from hyp import dirty
from hyp.arch import descriptors as d
from hyp.arch.walk import DESC_HIGH_MASK
from hyp.physmem import PAGE_SIZE
from guest_fuzz_gen import MODES, RAM_SIZE

TIMEOUT = 2.0                  # seconds of wall clock given to m.run
HANG_S = 10.0                  # not returned TIMEOUT + HANG_S later: a hang
GUARD = 64 << 10
CANARY = 0xA5
CANARY64 = np.uint64(0xA5A5_A5A5_A5A5_A5A5)
_ARM = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_ARM)
_THUMB = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB)


class Hang(Exception):
    pass


class Escape(AssertionError):
    pass


class Mismatch(AssertionError):
    pass


@contextmanager
def time_limit(seconds):
    """A Python-level hang becomes Hang (SIGALRM; main thread on POSIX only)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(*_):
        raise Hang(f"run did not return within {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---- building and running a case ---------------------------------------------------------
def put(m, ipa, data):
    """Write `data` at `ipa` into the host backing of whatever memslot holds it (flash
    too: like a flash image), clipped at the slot's end; nothing outside memslots."""
    slot = m.vm.memslot(ipa)
    if slot is not None and data:
        m.host.mem.write(slot.pa_of(ipa), data[:slot.end - ipa])


def build(case, icount=True):
    m = Machine(RAM_SIZE, icount=icount, split=case.split)
    m.vm.args = case.args
    put(m, case.code_at, case.code)
    put(m, case.vbar, case.vector_code)
    cpu = m.cpu
    cpu.cp15_write("VBAR", case.vbar)
    for mode, (sp, lr) in case.banked.items():
        cpu.set_cpsr(0x1C0 | mode)
        cpu.set_reg(13, sp)
        cpu.set_reg(14, lr)
    cpu.set_cpsr(case.cpsr)
    for n, v in enumerate(case.regs):
        cpu.set_reg(n, v)
    cpu.set_pc(case.code_at, case.thumb)
    return m


def run(m, max_insns):
    """RunResult or GuestCrash; anything else propagates; a late return is a Hang."""
    t0 = time.monotonic()
    try:
        with time_limit(TIMEOUT + HANG_S):
            outcome = m.run(max_insns=max_insns, timeout=TIMEOUT)
    except GuestCrash as e:
        outcome = e
    wall = time.monotonic() - t0
    if wall > TIMEOUT + HANG_S / 2:
        raise Hang(f"run returned after {wall:.1f} s (timeout {TIMEOUT} s)")
    return outcome


def kind(outcome) -> str:
    """'off', 'budget', 'error: <message shape>', 'crash: <message shape>'."""
    if isinstance(outcome, GuestCrash):
        text = re.sub(r"(cannot decode: [a-z]+?)(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)? [^:]*",
                      r"\1", str(outcome))
        return "crash: " + re.sub(r"0x[0-9a-f]+", "X", text)[:100]
    if outcome.reason != "error":
        return outcome.reason
    return "error: " + re.sub(r"0x[0-9a-f]+|\b\d+\b", "X", outcome.error).split(" (PC")[0][:70]


# ---- (a) host memory outside the backings, and the tables -----------------------------------
def _madvise():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        return libc.madvise
    except (OSError, TypeError, AttributeError):
        return None


MADVISE = _madvise()
MADV_NOHUGEPAGE = 15


def no_huge_pages(buf, lo, hi):
    """Back [lo, hi) of `buf` with 4 KiB pages (a 64 KiB canary then costs 64 KiB, not a
    zeroed 2 MiB transparent huge page). Only the kernel's page size changes."""
    if MADVISE is not None:
        start = (buf.ctypes.data + lo) & ~0xFFF
        MADVISE(ctypes.c_void_p(start), ctypes.c_size_t(buf.ctypes.data + hi - start),
                MADV_NOHUGEPAGE)


def populated(buf):
    """One bool per 4 KiB host page: could it hold anything but zeros? A page no OS page of
    which is populated (/proc/self/pagemap: present or swapped) is still the zero memory a
    fresh machine starts with. All True where pagemap cannot be read."""
    n = buf.size // PAGE_SIZE
    addr = buf.ctypes.data
    first, count = addr // PAGE_SIZE, n + 1
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        try:
            raw = os.pread(fd, 8 * count, 8 * first)
        finally:
            os.close(fd)
    except OSError:
        return np.ones(n, dtype=bool)
    if len(raw) != 8 * count:
        return np.ones(n, dtype=bool)
    os_pages = np.frombuffer(raw, dtype="<u8") >> np.uint64(62) != 0
    return os_pages[:n] | os_pages[1:] if addr % PAGE_SIZE else os_pages[:n]


ZERO, GUARDED, SKIP = 0, 1, 2


class HostMemory:
    """Canaries in host memory that is no memslot backing (per 4 KiB page: ZERO, GUARDED
    with 0xA5, or SKIP: backings and table pages); pool allocations are recorded."""

    def __init__(self, m):
        self.m = m
        mem, pool = m.host.mem, m.host.pool
        alloc = pool.alloc
        self.allocated: set[int] = set()        # host page indices

        def recording_alloc(npages=1, align_pages=1):
            pa = alloc(npages, align_pages)
            first = (pa - mem.base) // PAGE_SIZE
            self.allocated.update(range(first, first + npages))
            return pa
        pool.alloc = recording_alloc
        self.expect = np.full(mem.size // PAGE_SIZE, ZERO, dtype=np.uint8)
        first_pool = (pool.base - mem.base) // PAGE_SIZE
        self.expect[first_pool + np.flatnonzero(pool.used)] = SKIP
        for s in m.vm.memslots:
            lo, hi = (s.pa - mem.base) // PAGE_SIZE, (s.pa - mem.base + s.size) // PAGE_SIZE
            for a, b in ((lo - GUARD // PAGE_SIZE, lo), (hi, hi + GUARD // PAGE_SIZE)):
                a, b = max(a, 0), min(b, len(self.expect))
                band = self.expect[a:b]
                band[band == ZERO] = GUARDED
            self.expect[lo:hi] = SKIP
        for a, b in _runs(self.expect == GUARDED):
            no_huge_pages(mem.buf, a * PAGE_SIZE, b * PAGE_SIZE)
            mem.buf[a * PAGE_SIZE:b * PAGE_SIZE] = CANARY

    def check(self):
        mem = self.m.host.mem
        expect = self.expect.copy()
        expect[sorted(self.allocated)] = SKIP
        pages = mem.q.reshape(-1, PAGE_SIZE // 8)
        for what, idx in ((ZERO, np.flatnonzero((expect == ZERO) & populated(mem.buf))),
                          (GUARDED, np.flatnonzero(expect == GUARDED))):
            bad = (pages[idx] != (CANARY64 if what else 0)).any(axis=1)
            if bad.any():
                off = int(idx[np.flatnonzero(bad)[0]]) * PAGE_SIZE
                off += 8 * int(np.flatnonzero(mem.q[off // 8:off // 8 + 512] != (CANARY64 if what else 0))[0])
                raise Escape(f"host memory at PA {mem.base + off:#x} (no memslot backing, canary "
                             f"{CANARY if what else 0:#04x}) now holds {mem.read(mem.base + off, 8).hex()}")


def _runs(mask):
    """[start, end) of each run of True in `mask`."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def check_tables(m):
    """Every valid descriptor reachable from VTTBR: tables in pool pages, leaves mapping a
    memslot's backing at the IPA's offset with at most the memslot's permissions. Returns
    the (descriptors, leaf or not) arrays."""
    s2, mem, pool, vm = m.vm.stage2, m.host.mem, m.host.pool, m.vm
    assert m.cpu.mmu.cfg.root_pa == s2.root, "the CPU walks other tables than the VM's"
    found = []
    addr = np.uint64(d.ADDR_MASK)

    def visit(table, level, base, entries):
        view = mem.table(table, entries)
        idx = np.flatnonzero(view & np.uint64(1))
        descs = view[idx]
        shift = d.LEVEL_SHIFT[level]
        ipas = base + (idx.astype(np.uint64) << np.uint64(shift))
        is_table = (descs & np.uint64(2)) != 0 if level < 3 else np.zeros(idx.size, bool)
        assert level < 3 or (descs & np.uint64(2)).all(), f"0b01 at level 3 in {table:#x}"
        assert not (descs & np.uint64(DESC_HIGH_MASK)).any(), f"bits [47:40] in {table:#x}"
        found.append((descs, ~is_table))
        for desc, ipa in zip(descs[is_table].tolist(), ipas[is_table].tolist()):
            assert pool.owns(desc & d.ADDR_MASK), f"table {desc:#x} outside the pool"
            visit(desc & d.ADDR_MASK, level + 1, ipa, 512)
        leaves, lipas, size = descs[~is_table], ipas[~is_table], d.LEVEL_SIZE[level]
        for slot in vm.memslots:                   # each leaf inside one slot, at its offset
            inside = (lipas >= np.uint64(slot.ipa)) & (lipas + np.uint64(size) <= np.uint64(slot.end))
            want = lipas[inside] - np.uint64(slot.ipa) + np.uint64(slot.pa)
            assert ((leaves[inside] & addr & ~np.uint64(size - 1)) == want).all(), \
                f"a leaf of {slot.name} maps the wrong PA"
            for bits in np.unique(leaves[inside] & np.uint64(d.PROT_BITS_MASK)).tolist():
                assert not d.bits_to_prot(bits) & ~vm.prot_for(slot), f"{slot.name}: {bits:#x}"
            leaves, lipas = leaves[~inside], lipas[~inside]
        assert not leaves.size, f"leaves outside memslots: {[hex(x) for x in lipas.tolist()]}"
    visit(s2.root, s2.cfg.start_level, 0, s2.root_pages * 512)
    return found


# ---- (b) host-private values in guest registers ------------------------------------------
def private_values(found) -> set[int]:
    out = set()
    for descs, leaf in found:
        out.update((descs[leaf] & np.uint64(0xFFFF_FFFF)).tolist())
        out.update((descs >> np.uint64(32)).tolist())
    return out - {0, 1}


def guest_registers(cpu) -> dict:
    """r0-r14 of every mode, the SPSRs and the fault address registers."""
    out, saved = {}, cpu.get_cpsr()
    for mode in MODES:
        cpu.set_cpsr(saved & ~0x1F | mode)
        for n in range(15):
            out[f"{mode:#x}:r{n}"] = cpu.reg(n)
        if mode not in (0x10, 0x1F):
            out[f"{mode:#x}:spsr"] = cpu.uc.reg_read(A.UC_ARM_REG_SPSR)
    cpu.set_cpsr(saved)
    out.update(DFAR=cpu.cp15_read("DFAR"), IFAR=cpu.cp15_read("IFAR"))
    return out


def initial_values(case) -> set[int]:
    vals = set(case.regs) | {v for pair in case.banked.values() for v in pair}
    for blob in (case.code, case.vector_code):
        vals |= {int.from_bytes(blob[i:i + 4], "little") for i in range(len(blob) - 3)}
    return vals


def check_leaks(case, m, descs):
    secret = private_values(descs) - initial_values(case)
    leaked = {k: v for k, v in guest_registers(m.cpu).items() if v in secret}
    if leaked:
        raise Escape(f"host-private values in guest registers: "
                     f"{ {k: hex(v) for k, v in leaked.items()} }")


# ---- (c) icount=True vs icount=False -------------------------------------------------------
def reads_clock(case) -> bool:
    """Could the code read a host clock (MRC p15 c14/c9, MRRC p15 c14) at any alignment?"""
    for blob in (case.code, case.vector_code):
        for i in range(0, len(blob) - 3, 2):
            for is_thumb in (False, True):
                t = decode_coproc(blob[i:i + 4], is_thumb)
                if t and t.coproc == 15 and t.read and (t.crm == 14 if t.is64 else t.crn in (9, 14)):
                    return True
    return False


def state(m) -> dict:
    cpu = m.cpu
    ram = m.host.mem.buf[m.ram.pa - m.host.mem.base:][:m.ram.size]
    return dict(regs=guest_registers(cpu), pc=cpu.pc, cpsr=cpu.get_cpsr(),
                cp15={n: cpu.cp15_read(n) for n in CP15}, uart=bytes(m.uart.output), ram=ram)


def compare(case, m, outcome):
    m2 = build(case, icount=False)
    outcome2 = run(m2, max_insns=None)
    if kind(outcome2) != kind(outcome):
        raise Mismatch(f"icount=False ended {kind(outcome2)!r}, icount=True {kind(outcome)!r}")
    a, b = state(m), state(m2)
    for key in a:
        same = np.array_equal(a[key], b[key]) if key == "ram" else a[key] == b[key]
        if not same:
            diff = {k: (hex(v), hex(b[key][k])) for k, v in a[key].items() if v != b[key][k]} \
                if isinstance(a[key], dict) else "differs"
            raise Mismatch(f"icount=True/False {key}: {diff}")


# ---- dirty logging: no page the guest changed escapes a harvest ---------------------------
class DirtyLoss(AssertionError):
    pass


def run_logged(case, m):
    """Run `pre` steps, turn dirty logging on for RAM (bitmap, manual protect or ring), then
    run in slices of `every` steps, harvesting after each: every page whose contents changed
    in a slice must be in that slice's harvest."""
    vm, slot = m.vm, m.ram
    outcome = run(m, case.pre)
    if getattr(outcome, "reason", None) != "budget":
        return outcome
    if case.dirty == "ring":
        dirty.enable_dirty_ring(vm, 256)
    dirty.enable_logging(vm, slot, manual_protect=case.dirty == "manual")
    flat = m.host.mem.buf[slot.pa - m.host.mem.base:][:slot.size]
    ram = flat.view("<u8").reshape(-1, PAGE_SIZE // 8)
    before = np.zeros_like(ram)                # rows of never-populated pages stay zero
    for a, b in _runs(populated(flat)):
        before[a:b] = ram[a:b]
    left = case.budget - case.pre
    while left > 0:
        outcome = run(m, min(left, case.every))
        left -= max(1, getattr(outcome, "instructions", left))
        harvested = dirty.collect(vm, slot)
        for a, b in _runs(populated(flat)):       # the others are still zero, as before
            changed = a + np.flatnonzero((ram[a:b] != before[a:b]).any(axis=1))
            lost = changed[~harvested[changed]]
            if lost.size:
                raise DirtyLoss(f"RAM pages {[hex(slot.ipa + int(p) * PAGE_SIZE) for p in lost[:8]]}"
                                f" changed but were not harvested ({case.dirty}, split {case.split})")
            before[a:b] = ram[a:b]
        if getattr(outcome, "reason", None) not in ("budget", "dirty-ring-full"):
            break
    return outcome


# ---- one case ------------------------------------------------------------------------------
def fuzz_one(case, compare_too: bool):
    """Run one case and check every invariant: (kind, crash detail or None)."""
    m = build(case)
    host = HostMemory(m)
    outcome = run_logged(case, m) if case.dirty else run(m, case.budget)
    host.check()
    check_leaks(case, m, check_tables(m))
    detail = None
    if isinstance(outcome, GuestCrash):
        detail = instruction_at(m.cpu)
    elif compare_too and not case.dirty and outcome.reason in ("off", "reset") \
            and not reads_clock(case) and not m.vm.stats["hvc S2EMU_TIME_NS"]:
        compare(case, m, outcome)
        detail = "compared"
    return kind(outcome), detail


def instruction_at(cpu) -> str:
    """'A32 e1008092 swp r8, r2, [r0] at 0x40000904' for reports."""
    pc, is_thumb = cpu.pc, cpu.thumb
    code = cpu.read_code(pc, 4)
    insn = next((_THUMB if is_thumb else _ARM).disasm(code, pc, count=1), None)
    if is_thumb:
        hw = [int.from_bytes(code[i:i + 2], "little") for i in range(0, len(code) - 1, 2)]
        word = " ".join(f"{h:04x}" for h in hw[:(insn.size // 2 if insn else 2)])
    else:
        word = f"{int.from_bytes(code, 'little'):08x}"
    text = f"{insn.mnemonic} {insn.op_str}" if insn else "(undecodable)"
    return f"{'T32' if is_thumb else 'A32'} {word} {text} at {pc:#x}"


