"""Fuzzing the machine with random guest code (generator: guest_fuzz_gen.py): random and
"interesting" A32/T32 instruction streams in a 16 MiB `Machine`, with random registers and
sane, random or wild exception vectors, each run with `m.run(max_insns=..., timeout=...)`.

Allowed outcomes: a RunResult (any reason) or emu.cpu.GuestCrash (counted by kind, with the
instruction at PC: gaps of the machine). Anything else - another exception, a run that does
not return within its timeout - fails. After every case, isolation invariants:
  (a) host memory outside the memslot backings is untouched: a 0xA5 canary in 64 KiB guard
      bands on both sides of every backing, and the zeros a fresh machine has everywhere
      else (the table pool's free pages, padding) - except pool pages the hypervisor
      allocated during the run; the stage-2 tables themselves map only memslot backings,
      at the right offset, with no more than the memslot's permissions;
  (b) no guest register (r0-r14 of every mode, SPSRs, DFAR/IFAR) holds a host-private value
      it did not start with: the low word of a valid stage-2 leaf descriptor of this VM
      (AF/MemAttr/SH bits set: 0x0200_07FD, 0x0400_077F, ...) or a descriptor's high word
      other than 0 and 1 (0x0040_0001: XN and PA bit 32). Pool PAs are not compared: their
      low words (0x0-0x01FF_F000) are flash0 IPAs and their high word is 1.
  (c) a subset re-runs with icount=False: a deterministic guest (it powered off, reads no
      clock: no CNTPCT/CNTVCT/timer/PMU registers, no S2EMU_TIME_NS) must end with the same
      registers, RAM, CP15 registers and UART output.

CI: EXAMPLES derandomized hypothesis cases. Long run:
    S2EMU_FUZZ_LONG=20000 [S2EMU_FUZZ_SEED=S] python -m pytest -q -s -m slow tests/fuzz/test_fuzz_guest.py
Case i of seed S is make_case(random.Random(f"{S}:{i}")): `reproduce(S, i)` runs it alone.
"""
from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from collections import Counter
from contextlib import contextmanager

import capstone
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from unicorn import arm_const as A

from emu.cp15 import CP15
from emu.cpu import GuestCrash
from emu.machine import Machine
from emu.undef import decode_coproc
from hyp.arch import descriptors as d
from hyp.arch.walk import DESC_HIGH_MASK
from hyp.physmem import PAGE_SIZE
from guest_fuzz_gen import MODES, RAM_SIZE, make_case

EXAMPLES = 2000
TIMEOUT = 2.0                  # seconds of wall clock given to m.run
HANG_S = 10.0                  # not returned TIMEOUT + HANG_S later: a hang
COMPARE = 0.3                  # share of cases also run with icount=False
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
    m = Machine(RAM_SIZE, icount=icount)
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
def _libc():
    try:
        import ctypes
        import ctypes.util
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except (OSError, TypeError):
        return None


LIBC = _libc()
MADV_NOHUGEPAGE = 15


def no_huge_pages(buf, lo, hi):
    """Back [lo, hi) of `buf` with 4 KiB pages (a 64 KiB canary then costs 64 KiB, not a
    zeroed 2 MiB transparent huge page). Only the kernel's page size changes."""
    if LIBC is not None and hasattr(LIBC, "madvise"):
        start = (buf.ctypes.data + lo) & ~0xFFF
        LIBC.madvise(ctypes_void(start), (buf.ctypes.data + hi) - start, MADV_NOHUGEPAGE)


def ctypes_void(addr):
    import ctypes
    return ctypes.c_void_p(addr)


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
    the (descriptor, is_leaf) pairs."""
    s2, mem, pool, vm = m.vm.stage2, m.host.mem, m.host.pool, m.vm
    assert m.cpu.mmu.cfg.root_pa == s2.root, "the CPU walks other tables than the VM's"
    found = []

    def visit(table, level, base, entries):
        view = mem.table(table, entries)
        for i in np.flatnonzero(view & np.uint64(1)):
            desc, ipa = int(view[i]), base + (int(i) << d.LEVEL_SHIFT[level])
            kind_ = d.kind(desc, level)
            assert kind_ is not d.Kind.INVALID and not desc & DESC_HIGH_MASK, \
                f"L{level} descriptor {desc:#x} for IPA {ipa:#x}"
            found.append((desc, kind_ is not d.Kind.TABLE))
            if kind_ is d.Kind.TABLE:
                assert pool.owns(desc & d.ADDR_MASK), f"table {desc:#x} outside the pool"
                visit(desc & d.ADDR_MASK, level + 1, ipa, 512)
                continue
            size, slot = d.LEVEL_SIZE[level], vm.memslot(ipa)
            assert slot is not None and ipa + size <= slot.end, f"leaf {desc:#x} at {ipa:#x}"
            assert d.out_addr(desc, level) == slot.pa_of(ipa), f"leaf {desc:#x} at {ipa:#x}"
            assert not d.bits_to_prot(desc) & ~vm.prot_for(slot), f"leaf {desc:#x} at {ipa:#x}"
    visit(s2.root, s2.cfg.start_level, 0, s2.root_pages * 512)
    return found


# ---- (b) host-private values in guest registers ------------------------------------------
def private_values(descs) -> set[int]:
    out = {desc & 0xFFFF_FFFF for desc, leaf in descs if leaf}
    return out | {desc >> 32 for desc, _ in descs if desc >> 32 not in (0, 1)}


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


# ---- one case ------------------------------------------------------------------------------
def fuzz_one(case, compare_too: bool):
    """Run one case and check every invariant: (kind, crash detail or None)."""
    m = build(case)
    host = HostMemory(m)
    outcome = run(m, case.budget)
    host.check()
    check_leaks(case, m, check_tables(m))
    detail = None
    if isinstance(outcome, GuestCrash):
        detail = instruction_at(m.cpu)
    elif compare_too and outcome.reason in ("off", "reset") and not reads_clock(case) \
            and not m.vm.stats["hvc S2EMU_TIME_NS"]:
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


def case_at(seed, i):
    rng = random.Random(f"{seed}:{i}")
    return make_case(rng), rng.random() < COMPARE


def reproduce(seed, i):
    """Run case i of seed `seed` alone (what the long mode prints for a failure)."""
    case, cmp = case_at(seed, i)
    print(case.describe())
    return fuzz_one(case, cmp)


def report(counts, crashes, title):
    print(f"\n[fuzz-guest] {title}")
    for k, v in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {v:6d}  {k}")
    for k, (n, example) in sorted(crashes.items(), key=lambda kv: -kv[1][0]):
        print(f"  GuestCrash x{n}: {k}\n      e.g. {example}")


def test_fuzz_guest():
    counts, crashes = Counter(), {}

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 2**64 - 1))           # a seed: Python's distribution, fast
    def one(seed):
        rng = random.Random(seed)
        case = make_case(rng)
        k, detail = fuzz_one(case, rng.random() < COMPARE)
        counts[k] += 1
        counts["compared with icount=False"] += detail == "compared"
        if k.startswith("crash"):
            n, ex = crashes.get(k, (0, detail))
            crashes[k] = (n + 1, ex)

    t0 = time.monotonic()
    one()
    report(counts, crashes, f"hypothesis: {EXAMPLES} cases in {time.monotonic() - t0:.1f} s, "
                            f"crashes 0, hangs 0, escapes 0, mismatches 0")
    assert counts["off"] and counts["budget"] and counts["compared with icount=False"] > 50


@pytest.mark.slow
@pytest.mark.skipif("S2EMU_FUZZ_LONG" not in os.environ, reason="set S2EMU_FUZZ_LONG=N")
def test_fuzz_guest_long():
    n, seed = int(os.environ["S2EMU_FUZZ_LONG"]), os.environ.get("S2EMU_FUZZ_SEED", "0")
    counts, crashes, failures, t0 = Counter(), {}, [], time.monotonic()
    for i in range(n):
        case, cmp = case_at(seed, i)
        try:
            k, detail = fuzz_one(case, cmp)
        except Hang as e:
            k, detail = "HANG", None
            failures.append((i, f"hang: {e}"))
        except (Escape, Mismatch) as e:
            k, detail = type(e).__name__.upper(), None
            failures.append((i, f"{type(e).__name__}: {e}"))
        except Exception as e:              # noqa: BLE001 - any other exception is a crash
            k, detail = "CRASH", None
            failures.append((i, f"{type(e).__name__}: {e}"))
        counts[k] += 1
        counts["compared with icount=False"] += detail == "compared"
        if k.startswith("crash"):
            c, ex = crashes.get(k, (0, f"case {i}: {detail}"))
            crashes[k] = (c + 1, ex)
    report(counts, crashes, f"seed {seed}: {n} cases in {time.monotonic() - t0:.1f} s, crashes "
                            f"{counts['CRASH']}, hangs {counts['HANG']}, escapes "
                            f"{counts['ESCAPE']}, mismatches {counts['MISMATCH']}")
    for i, err in failures[:20]:
        print(f"  case {i}: {err[:300]}")
    assert not failures, f"{len(failures)} failures (seed {seed}); first: case {failures[0][0]}"
