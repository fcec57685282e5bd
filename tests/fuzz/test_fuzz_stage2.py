"""Fuzzing stage 2 with random tables (generator and reference walker: s2_ref.py).

(i) The pure walker: hyp.arch.walk.translate / lookup / explain for random IPAs and accesses
    over random VTCR/VTTBR/descriptors must return a Translation or a Fault - never raise -
    and agree field by field with the reference walker.
(ii) The machine: a BareMachine walks the same kind of tables for a short guest: a menu of
    loads, stores, LDRD/LDM/STM, LDREX/STREX and branches (fetches) at random IPAs. `cpu.run`
    must only return hyp.exits values or raise GuestCrash; every Stage2Abort's page fault,
    fault and syndrome (HSR EC/WnR/DFSC/ISV/SRT, HPFAR, HDFAR/HIFAR) must match the
    reference's verdict for its page; an instruction whose pages the reference finds
    faulting must exit on the first of them, and one whose pages all translate must not.

CI: derandomized hypothesis cases. Long run:
    S2EMU_FUZZ_LONG=20000 [S2EMU_FUZZ_SEED=S] python -m pytest -q -s -m slow tests/fuzz/test_fuzz_stage2.py
Case i of seed S: walker_case / machine_case(random.Random(f"{S}:{i}")).
"""
from __future__ import annotations

import os
import random
import struct
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from emu.cpu import GuestCrash
from emu.machine import BareMachine
from hyp.arch.descriptors import Prot
from hyp.arch.fault import Access, Fault
from hyp.arch.regs import S2Config
from hyp.arch.syndrome import (HSR_DFSC, HSR_EC, HSR_IL, HSR_ISV, HSR_SAS, HSR_SRT, HSR_SSE,
                               HSR_WNR)
from hyp.arch.walk import Translation, explain, lookup, translate
from hyp.exits import (BudgetExhausted, DebugStop, Hypercall, NoProgress, Stage2Abort,
                       StopRequested, WaitForInterrupt)
from hyp.host import HOST_BASE
from hyp.physmem import PhysMem
from s2_ref import FETCH, OA_MASK, READ, SHIFT, WRITE, Tables, config, ref_cpu, walk

WALKER_EXAMPLES = 3000
MACHINE_EXAMPLES = 2000
IPAS = 24                       # IPAs per walker case (x 3 accesses + a lookup)
ACCESSES = 16                   # menu entries per machine case
ACCESS = {READ: Access.READ, WRITE: Access.WRITE, FETCH: Access.FETCH}
EXITS = (Stage2Abort, Hypercall, WaitForInterrupt, BudgetExhausted, DebugStop, StopRequested,
         NoProgress)


# ---- (i) the walker ----------------------------------------------------------------------
def same(got, want) -> bool:
    if isinstance(got, Translation):
        prot = Prot((Prot.R if want.r else 0) | (Prot.W if want.w else 0)
                    | (Prot.X if want.x else 0))
        return want.kind == "ok" and (got.pa, got.level, got.prot, got.desc, got.desc_pa) == \
            (want.pa, want.level, prot, want.desc, want.desc_pa)
    want_pa = want.desc_pa if want.kind in ("access_flag", "permission") else None
    return isinstance(got, Fault) and (got.type.name.lower(), got.level, got.desc_pa) == \
        (want.kind, want.level, want_pa)


def walker_case(rng) -> Counter:
    mem = PhysMem(rng.choice((1, 2, 8)) << 20, base=HOST_BASE)
    t = Tables(rng, mem, range(min(64, mem.size // 4096)))
    cfg = S2Config.decode(t.vtcr, t.vttbr)
    counts = Counter()
    for _ in range(IPAS):
        ipa = t.ipa()
        for access in (READ, WRITE, FETCH):
            got = translate(mem, cfg, ipa, ACCESS[access])
            want = walk(mem.read64, mem.base, mem.end, t.vtcr, t.vttbr, ipa, access)
            assert same(got, want), (f"IPA {ipa:#x} {access}: walker {got!r}, reference {want}; "
                                     f"VTCR {t.vtcr:#x} VTTBR {t.vttbr:#x}")
            assert got.ipa == ipa and (isinstance(got, Translation) or got.access == ACCESS[access])
            counts[want.kind] += 1
        got = lookup(mem, cfg, ipa)
        want = walk(mem.read64, mem.base, mem.end, t.vtcr, t.vttbr, ipa, READ, check_perm=False)
        assert same(got, want), f"lookup {ipa:#x}: {got!r} vs {want}"
        assert explain(mem, cfg, ipa)
    return counts


# ---- (ii) the machine ---------------------------------------------------------------------
# Menu entries: the code, ARM or Thumb, ending in HVC #0; per instruction (its offset, bytes
# accessed, access, alignment of r0, must it access memory, the ISS: None for ISV=0, else
# (access size, sign extension, 32-bit encoding) with Rt = r1). r0 holds the IPA, r1-r6 data.
def _a(*words):
    return struct.pack(f"<{len(words) + 1}I", *words, 0xE1400070)


def _t(*halfwords):
    return struct.pack(f"<{len(halfwords) + 2}H", *halfwords, 0xF7E0, 0x8000)


R, W, X = READ, WRITE, FETCH
MENU = [   # (thumb, code, [(offset, size, access, align, must, iss)])
    (False, _a(0xE5901000), [(0, 4, R, 1, True, (4, 0, 1))]),            # ldr r1, [r0]
    (False, _a(0xE5801000), [(0, 4, W, 1, True, (4, 0, 1))]),            # str r1, [r0]
    (False, _a(0xE5D01000), [(0, 1, R, 1, True, (1, 0, 1))]),            # ldrb r1, [r0]
    (False, _a(0xE1C010B0), [(0, 2, W, 1, True, (2, 0, 1))]),            # strh r1, [r0]
    (False, _a(0xE1D010D0), [(0, 1, R, 1, True, (1, 1, 1))]),            # ldrsb r1, [r0]
    (False, _a(0xE1C020D0), [(0, 8, R, 4, True, None)]),                 # ldrd r2, r3, [r0]
    (False, _a(0xE1C020F0), [(0, 8, W, 4, True, None)]),                 # strd r2, r3, [r0]
    (False, _a(0xE890001E), [(0, 16, R, 4, True, None)]),                # ldm r0, {r1-r4}
    (False, _a(0xE880001E), [(0, 16, W, 4, True, None)]),                # stm r0, {r1-r4}
    (False, _a(0xE1901F9F, 0xE1805F91), [(0, 4, R, 4, True, None),       # ldrex r1, [r0]
                                         (4, 4, W, 4, False, None)]),    # strex r5, r1, [r0]
    (False, _a(0xE12FFF10), [(0, 4, X, 1, True, None)]),                 # bx r0
    (False, _a(0xE890000F), [(0, 16, R, 4, True, None)]),                # ldm r0, {r0-r3}
    (True, _t(0xC80F), [(0, 16, R, 4, True, None)]),                     # ldm r0, {r0-r3}
    (True, _t(0x6801), [(0, 4, R, 1, True, (4, 0, 0))]),                 # ldr r1, [r0]
    (True, _t(0x6001), [(0, 4, W, 1, True, (4, 0, 0))]),                 # str r1, [r0]
    (True, _t(0x7801), [(0, 1, R, 1, True, (1, 0, 0))]),                 # ldrb r1, [r0]
    (True, _t(0x8001), [(0, 2, W, 1, True, (2, 0, 0))]),                 # strh r1, [r0]
    (True, _t(0x5781), [(0, 1, R, 1, True, (1, 1, 0))]),                 # ldrsb r1, [r0, r6]
    (True, _t(0xF8D0, 0x1000), [(0, 4, R, 1, True, (4, 0, 1))]),         # ldr.w r1, [r0]
    (True, _t(0xF8A0, 0x1000), [(0, 2, W, 1, True, (2, 0, 1))]),         # strh.w r1, [r0]
    (True, _t(0xE9D0, 0x2300), [(0, 8, R, 4, True, None)]),              # ldrd r2, r3, [r0]
    (True, _t(0xC01E), [(0, 16, W, 4, True, None)]),                     # stm r0!, {r1-r4}
    (True, _t(0xE850, 0x1F00), [(0, 4, R, 4, True, None)]),              # ldrex r1, [r0]
    (True, _t(0x4700), [(0, 2, X, 1, True, None)]),                      # bx r0
]
HVC = 0xE1400070
_SAS = {1: 0, 2: 1, 4: 2}


def menu_code() -> tuple[bytes, list[int]]:
    code, starts = b"", []
    for _, entry, _ in MENU:
        starts.append(len(code))
        code += entry + b"\0" * (-len(entry) % 4)
    return code, starts


CODE, STARTS = menu_code()


class MachineCase:
    """A BareMachine with random tables, the menu mapped (if the tables allow) at code_ipa."""

    def __init__(self, rng):
        self.rng = rng
        self.bm = bm = BareMachine(host_size=2 << 20)
        self.mem = mem = bm.mem
        window = range(16, 80)
        self.t = t = Tables(rng, mem, window, valid_bias=0.9)
        hvcs = struct.pack("<I", HVC) * 1024                   # a fetch elsewhere: an HVC
        for p in window:
            if mem.base + 4096 * p not in t.pages:
                mem.write(mem.base + 4096 * p, hvcs)
        self.code_pa = mem.base + 4096 * 8
        mem.write(self.code_pa, CODE)
        cfg = config(t.vtcr, t.vttbr)
        limit = (1 << min(32, cfg[1])) - 1 if cfg and rng.random() < 0.9 else 0xFFFF_FFFF
        self.code_ipa = (t.ipa(32) if rng.random() < 0.5 else rng.getrandbits(32)) & limit & ~0xFFF
        self.mapped = self.force_code_mapping()
        bm.cpu.load_stage2(1, t.vtcr, t.vttbr)

    def verdict(self, ipa, access):
        return ref_cpu(self.mem, self.t.vtcr, self.t.vttbr, ipa, access)

    def force_code_mapping(self) -> bool:
        """Make code_ipa's walk end in a read-only executable page of the menu: follow the
        table descriptors the walk meets, replace anything else by a fresh table."""
        mem, t, ipa = self.mem, self.t, self.code_ipa
        cfg = config(t.vtcr, t.vttbr)
        if cfg is None or t.vttbr >> 40 & 0xFF or ipa >> cfg[1]:
            return False
        level, inputsize, table = cfg
        index = ipa >> SHIFT[level] & ((1 << (inputsize - SHIFT[level])) - 1)
        spare = 100
        while True:
            addr = table + 8 * index
            if not mem.contains(addr, 8):
                return False
            if level == 3:
                mem.write64(addr, self.code_pa | 3 | 0xF << 2 | 1 << 6 | 3 << 8 | 1 << 10)
                break
            desc = mem.read64(addr)
            table = desc & OA_MASK
            if desc & 3 != 3 or desc >> 40 & 0xFF or not mem.contains(table, 4096) \
                    or table == self.code_pa:
                table, spare = mem.base + 4096 * spare, spare + 1
                mem.zero(table, 4096)
                mem.write64(addr, table | 3)
            level += 1
            index = ipa >> SHIFT[level] & 511
        v = self.verdict(ipa, FETCH)
        return v.kind == "ok" and v.pa & ~0xFFF == self.code_pa

    def check_abort(self, ex: Stage2Abort, known: bool, iss) -> str:
        """The abort against the reference walk of the memory now (a fault is never cached:
        it comes from a walk of the tables as they are); returns the verdict kind."""
        pf = ex.page_fault
        access = {Access.READ: READ, Access.WRITE: WRITE, Access.FETCH: FETCH}[pf.access]
        page = pf.ipa & ~0xFFF
        f, syn = ex.fault, ex.syndrome                 # decoded now, before the next run
        hsr = syn.hsr
        assert f.ipa & ~0xFFF == page and f.va == f.ipa and f.type == pf.type, (f, pf)
        assert HSR_EC.get(hsr) == (0x20 if access == FETCH else 0x24), hex(hsr)
        assert HSR_DFSC.get(hsr) == pf.fsc and syn.hpfar == (f.ipa >> 12) << 4 \
            and syn.far == f.va, (hex(hsr), syn, f)
        if access != FETCH:
            assert HSR_WNR.get(hsr) == (access == WRITE), hex(hsr)
            if iss is not None:
                size, sign, il32 = iss
                assert (HSR_ISV.get(hsr), HSR_SAS.get(hsr), HSR_SSE.get(hsr), HSR_SRT.get(hsr),
                        HSR_IL.get(hsr)) == (1, _SAS[size], sign, 1, il32), hex(hsr)
            elif known:
                assert not HSR_ISV.get(hsr) and not HSR_IL.get(hsr), hex(hsr)
        else:
            assert not HSR_IL.get(hsr), hex(hsr)
        want = self.verdict(page, access)
        assert want.kind != "ok" and (want.kind, want.level) == (pf.type.name.lower(), pf.level), \
            f"{pf.describe()}: reference {want}"
        assert want.fsc == pf.fsc
        if want.kind in ("access_flag", "permission", "external"):
            assert pf.desc_pa == want.desc_pa, (pf, want)
        return want.kind

    def expected(self, ipa, insns):
        """Per instruction: the first page the reference faults (None: all translate), from
        the memory before the entry runs (the TLB is flushed then)."""
        out = []
        for _, size, access, _, _, _ in insns:
            first = ipa & ~1 if access == FETCH else ipa
            pages = list(dict.fromkeys(first + k & 0xFFFF_F000 for k in range(size)))
            bad = [p for p in pages[:1 if access == FETCH else None]
                   if self.verdict(p, access).kind != "ok"]
            out.append(bad[0] if bad else None)
        return out

    def run_entry(self, counts: Counter) -> bool:
        """One menu entry at a random IPA; False once the machine can go no further."""
        rng, cpu = self.rng, self.bm.cpu
        n = rng.randrange(len(MENU))
        is_thumb, code, insns = MENU[n]
        ipa = self.t.ipa(32) & 0xFFFF_FFFF if rng.random() < 0.8 else rng.getrandbits(32)
        if rng.random() < 0.2:
            ipa |= 0xFF0                                     # accesses that cross a page
        ipa &= ~(insns[0][3] - 1)
        fetch_entry = insns[0][2] == FETCH
        if fetch_entry:
            ipa |= rng.random() < 0.3                         # Thumb
        for r in range(1, 7):
            cpu.set_reg(r, 0 if r == 6 else rng.getrandbits(32))
        cpu.set_reg(0, ipa)
        start = self.code_ipa + STARTS[n]
        cpu.set_pc(start, is_thumb)
        if self.mem.read(self.code_pa, len(CODE)) != CODE:   # a store rewrote the menu
            self.mem.write(self.code_pa, CODE)
            cpu.flush_translations()
        self.bm.host.tlb.flush_all_nsnh()
        expect, aborts = self.expected(ipa, insns), {}
        offsets = [ins[0] for ins in insns]
        for _ in range(6):
            try:
                ex = cpu.run(4)
            except GuestCrash as e:
                counts["GuestCrash: " + str(e)[:60]] += 1
                return False
            assert isinstance(ex, EXITS), f"{ex!r} is no exit"
            counts[type(ex).__name__] += 1
            if not isinstance(ex, Stage2Abort):
                break
            fetch = ex.page_fault.access == Access.FETCH
            if fetch:
                i = 0 if fetch_entry and ex.pc == ipa & ~1 else None
            else:
                i = offsets.index(ex.pc - start) if ex.pc - start in offsets else None
            iss = insns[i][5] if i is not None and not fetch else None
            counts[f"s2 {self.check_abort(ex, i is not None, iss)}"] += 1
            if i is not None and not fetch:                 # HDFAR: the first byte accessed
                page = ex.page_fault.ipa & ~0xFFF           # in the faulting page
                want = ipa if ipa & ~0xFFF == page else page
                assert ex.syndrome.far == want, \
                    f"menu {n} at IPA {ipa:#x}: HDFAR {ex.syndrome.far:#x}, want {want:#x}"
            if i is not None:
                aborts.setdefault(i, ex.page_fault.ipa & ~0xFFF)
            if fetch:
                if ex.pc == start:
                    return False                           # the menu itself cannot run
                break
            self.bm.skip(ex)
        else:
            return True
        done = isinstance(ex, Hypercall) and ex.pc == start + len(code)
        for i, (_, _, access, _, must, _) in enumerate(insns):
            if (done or access == FETCH) and (must or i in aborts) and \
                    not (access == FETCH and i in aborts and expect[i] is None):
                assert aborts.get(i) == expect[i], \
                    f"menu {n} instruction {i} at IPA {ipa:#x}: exited on " \
                    f"{aborts.get(i)}, reference faults first at {expect[i]}"
        return True


def machine_case(rng) -> Counter:
    mc, counts = MachineCase(rng), Counter()
    counts["code mapped" if mc.mapped else "code unmapped"] += 1
    for _ in range(ACCESSES):
        if not mc.run_entry(counts):
            break
    return counts


# ---- tests -----------------------------------------------------------------------------------
def _hypothesis(examples, fn, label):
    totals = Counter()

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 2**64 - 1))           # a seed: Python's distribution, fast
    def one(seed):
        rng = random.Random(seed)
        totals.update(fn(rng))

    t0 = time.monotonic()
    one()
    print(f"\n[fuzz-stage2] {label}: {examples} cases in {time.monotonic() - t0:.1f} s: "
          f"{dict(sorted(totals.items()))}")
    return totals


def test_fuzz_walker():
    totals = _hypothesis(WALKER_EXAMPLES, walker_case, "walker")
    assert all(totals[k] for k in ("ok", "translation", "access_flag", "permission",
                                   "address_size", "external_walk"))


def test_fuzz_machine_walks():
    totals = _hypothesis(MACHINE_EXAMPLES, machine_case, "machine")
    assert totals["code mapped"] > MACHINE_EXAMPLES // 2 and totals["Hypercall"]
    assert all(totals[f"s2 {k}"] for k in ("translation", "access_flag", "permission",
                                           "external"))


@pytest.mark.slow
@pytest.mark.skipif("S2EMU_FUZZ_LONG" not in os.environ, reason="set S2EMU_FUZZ_LONG=N")
def test_fuzz_stage2_long():
    n, seed = int(os.environ["S2EMU_FUZZ_LONG"]), os.environ.get("S2EMU_FUZZ_SEED", "0")
    totals, failures, t0 = Counter(), [], time.monotonic()
    for i in range(n):
        for name, fn in (("walker", walker_case), ("machine", machine_case)):
            try:
                totals.update(fn(random.Random(f"{seed}:{i}")))
            except AssertionError as e:
                totals["MISMATCH"] += 1
                failures.append((name, i, str(e)))
            except Exception as e:              # noqa: BLE001 - any other exception is a crash
                totals["CRASH"] += 1
                failures.append((name, i, f"{type(e).__name__}: {e}"))
    print(f"\n[fuzz-stage2] seed {seed}: {n} walker + {n} machine cases in "
          f"{time.monotonic() - t0:.1f} s, crashes {totals['CRASH']}, mismatches "
          f"{totals['MISMATCH']}, hangs 0: {dict(sorted(totals.items()))}")
    for name, i, err in failures[:20]:
        print(f"  {name} case {i}: {err[:300]}")
    assert not failures, f"{len(failures)} failures (seed {seed}); first: {failures[0][:2]}"
