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
  (d) about 30% of the cases turn dirty logging of RAM on after a while (bitmap, manual
      protect or a 256-entry ring; lazy or eager splitting) and harvest every few hundred
      steps: every RAM page whose contents changed between two harvests must be in the
      second one.

CI: EXAMPLES derandomized hypothesis cases. Long run:
    S2EMU_FUZZ_LONG=20000 [S2EMU_FUZZ_SEED=S] python -m pytest -q -s -m slow tests/fuzz/test_fuzz_guest.py
Case i of seed S is make_case(random.Random(f"{S}:{i}")): `reproduce(S, i)` runs it alone.
"""
from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import hyp.abort

import guest_fuzz as gf
from guest_fuzz import DirtyLoss, Escape, Hang, Mismatch, fuzz_one
from guest_fuzz_gen import A32_OFF, RAM_BASE, VEC, Case, a32_sweep, arm, make_case, sane_vectors

EXAMPLES = 1800
COMPARE = 0.3                  # share of cases also run with icount=False


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


def _planted_case(**kw):
    code = arm(a32_sweep(random.Random(1)) + A32_OFF)
    return Case(False, RAM_BASE, code, "off", VEC, sane_vectors(False), 0x1D3, [0] * 15, **kw)


def test_oracles_catch_planted_faults(monkeypatch):
    """Each invariant fails on a fault planted in an otherwise clean run."""
    case = _planted_case()
    assert fuzz_one(case, True) == ("off", "compared")
    m = gf.build(case)
    host = gf.HostMemory(m)
    assert gf.run(m, 1000).reason == "off"
    found = gf.check_tables(m)
    for pa, value in ((m.ram.pa + m.ram.size, b"\0"), (m.ram.pa + m.ram.size + (1 << 20), b"\1"),
                      (m.host.pool.base + (8 << 20), b"\2")):
        saved = m.host.mem.read(pa, 1)
        m.host.mem.write(pa, value)
        with pytest.raises(Escape):
            host.check()
        m.host.mem.write(pa, saved)
    host.check()
    leaf = next(int(x) for descs, leaf in found for x in descs[leaf])
    m.cpu.set_reg(5, leaf & 0xFFFF_FFFF)
    with pytest.raises(Escape, match="host-private"):
        gf.check_leaks(case, m, found)
    m2 = gf.build(case)
    gf.run(m2, 1000)
    m2.host.mem.write(m2.ram.pa + 0x5000, b"x")
    with pytest.raises(Mismatch, match="ram"):
        gf.compare(case, m2, gf.run(gf.build(case), 1000))
    desc_pa = m.vm.stage2.lookup(RAM_BASE).desc_pa
    m.host.mem.write64(desc_pa, m.host.mem.read64(desc_pa) + (2 << 20))
    with pytest.raises(AssertionError, match="wrong PA"):
        gf.check_tables(m)
    monkeypatch.setattr(hyp.abort, "mark_dirty", lambda *a, **k: None)
    with pytest.raises(DirtyLoss):
        fuzz_one(_planted_case(dirty="bitmap", pre=8, every=100), False)


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
        counts["dirty-logged"] += bool(case.dirty)
        if k.startswith("crash"):
            n, ex = crashes.get(k, (0, detail))
            crashes[k] = (n + 1, ex)

    t0 = time.monotonic()
    one()
    report(counts, crashes, f"hypothesis: {EXAMPLES} cases in {time.monotonic() - t0:.1f} s, "
                            f"crashes 0, hangs 0, escapes 0, mismatches 0, dirty pages lost 0")
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
        except (Escape, Mismatch, DirtyLoss) as e:
            k, detail = type(e).__name__.upper(), None
            failures.append((i, f"{type(e).__name__}: {e}"))
        except Exception as e:              # noqa: BLE001 - any other exception is a crash
            k, detail = "CRASH", None
            failures.append((i, f"{type(e).__name__}: {e}"))
        counts[k] += 1
        counts["compared with icount=False"] += detail == "compared"
        counts["dirty-logged"] += bool(case.dirty)
        if k.startswith("crash"):
            c, ex = crashes.get(k, (0, f"case {i}: {detail}"))
            crashes[k] = (c + 1, ex)
    report(counts, crashes, f"seed {seed}: {n} cases in {time.monotonic() - t0:.1f} s, crashes "
                            f"{counts['CRASH']}, hangs {counts['HANG']}, escapes "
                            f"{counts['ESCAPE']}, mismatches {counts['MISMATCH']}, dirty pages lost "
                            f"{counts['DIRTYLOSS']}")
    for i, err in failures[:20]:
        print(f"  case {i}: {err[:300]}")
    assert not failures, f"{len(failures)} failures (seed {seed}); first: case {failures[0][0]}"
