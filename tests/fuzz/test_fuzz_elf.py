"""Fuzz the ELF loader: random mutations (bit flips, byte / half-word / word overwrites in
the ELF header, program and section header tables and symbol table, truncations) of the
bundled guests. Every case must either load or raise LoaderError: any other exception, or a
load that takes longer than HANG_S, is a failure; a load that succeeds must give a sane image.

CI runs a fixed (derandomized) Hypothesis sample. Long mode: S2EMU_FUZZ_LONG=N [S2EMU_FUZZ_SEED=S]
python -m pytest -s -m slow tests/fuzz - N seeded random cases, counts printed at the end; case
i of seed S is `make_case(random.Random(f"{S}:{i}"))`, so any crash reproduces alone.
"""
import glob
import os
import random
import signal
import struct
import threading
import time
from collections import Counter
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from emu.boot.loader import LoaderError, load
from emu.machine import Machine

from conftest import GUESTS

HANG_S = 5.0
GUEST_ELFS = {os.path.basename(p): open(p, "rb").read()
              for p in sorted(glob.glob(os.path.join(GUESTS, "*.elf")))}
NAMES = sorted(GUEST_ELFS)
OPS = ("flip", "byte", "half", "word", "truncate")
WORDS = (0, 1, 2, 3, 4, 16, 32, 40, 52, 0x7F, 0x80, 0xFF, 0x100, 0x1000, 0x7FFF, 0x8000,
         0xFFFF, 0x10000, 0x0400_0000, 0x0900_0000, 0x3FFF_F000, 0x4000_0000, 0x4000_0001,
         0x47FF_F000, 0x4800_0000, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_F000, 0xFFFF_FFFE, 0xFFFF_FFFF)


def regions(data):
    """[start, end) of the ELF header, program header table, section header table and the
    symbol table of an unmutated guest, and the whole file."""
    phoff, shoff = struct.unpack_from("<II", data, 28)
    phnum, _, shnum = struct.unpack_from("<HHH", data, 44)
    out = {"ehdr": (0, 52), "phdrs": (phoff, phoff + 32 * phnum),
           "shdrs": (shoff, shoff + 40 * shnum), "file": (0, len(data))}
    for i in range(shnum):
        sh_type, _, _, off, size = struct.unpack_from("<5I", data, shoff + 40 * i + 4)
        if sh_type == 2:
            out["symtab"] = (off, off + size)
    return out


REGIONS = {name: regions(data) for name, data in GUEST_ELFS.items()}
AREAS = ("ehdr", "phdrs", "shdrs", "symtab", "file")


def mutate(name, mutations):
    """Apply (op, area, position, value) mutations to guest `name`; position and value are
    any 32-bit numbers, folded into the area and the op's width."""
    data = bytearray(GUEST_ELFS[name])
    for op, area, pos, value in mutations:
        start, end = REGIONS[name][area]
        if op == "truncate":
            del data[pos % (len(data) + 1):]
            continue
        width = {"flip": 1, "byte": 1, "half": 2, "word": 4}[op]
        at = start + pos % max(end - start, 1)
        at -= at % width
        if at + width > len(data):
            continue
        if op == "flip":
            data[at] ^= 1 << (value % 8)
        elif op == "byte":
            data[at] = value & 0xFF
        else:
            v = WORDS[value % len(WORDS)] if value & 0x8000_0000 else value
            struct.pack_into("<H" if width == 2 else "<I", data, at, v & (1 << 8 * width) - 1)
    return bytes(data)


def make_case(rng):
    """One random case (the long mode's generator): a guest and 1..6 mutations."""
    muts = [(rng.choice(OPS[:4]) if rng.random() < 0.9 else "truncate", rng.choice(AREAS),
             rng.getrandbits(32), rng.getrandbits(32)) for _ in range(rng.randint(1, 6))]
    return rng.choice(NAMES), muts


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds):
    """Turn a load that never returns into a Hang (SIGALRM, main thread on POSIX only)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return
    def on_alarm(*_):
        raise Hang(f"load did not return within {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check_image(img, vm):
    """What an accepted image must be: segments in RAM memslots, disjoint, entry in code."""
    spans = sorted((ipa, ipa + memsz) for ipa, _, memsz in img.segments)
    assert spans and all(a_end <= b for (_, a_end), (b, _) in zip(spans, spans[1:])), spans
    for ipa, filesz, memsz in img.segments:
        slot = vm.memslot(ipa)
        assert 0 < memsz and filesz <= memsz and slot and not slot.readonly
        assert ipa + memsz <= slot.end
    assert any(ipa <= img.entry < ipa + filesz for ipa, filesz, _ in img.segments)
    assert img.thumb or img.entry % 4 == 0


def run_case(machine, path, data):
    """'loaded' or 'rejected'; anything else raises (Hang included)."""
    path.unlink(missing_ok=True)          # ext4 flushes a file truncated and rewritten
    path.write_bytes(data)
    with time_limit(HANG_S):
        try:
            img = load(str(path), machine.vm)
        except LoaderError as e:
            assert str(e).startswith(f"{path}: ") and "\n" not in str(e), str(e)
            return "rejected"
    check_image(img, machine.vm)
    return "loaded"


@pytest.fixture(scope="module")
def machine():
    return Machine()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "guest.elf"


CI_COUNTS = Counter()


@pytest.fixture(scope="module", autouse=True)
def report_ci_counts():
    yield
    if CI_COUNTS:
        print(f"\n[fuzz-elf] hypothesis: {sum(CI_COUNTS.values())} cases, loaded "
              f"{CI_COUNTS['loaded']}, rejected {CI_COUNTS['rejected']}, crashes 0, hangs 0")


MUTATION = st.tuples(st.sampled_from(OPS), st.sampled_from(AREAS),
                     st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))


@settings(max_examples=3000, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.sampled_from(NAMES), st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_guest_loads_or_is_rejected(machine, scratch, name, mutations):
    CI_COUNTS[run_case(machine, scratch, mutate(name, mutations))] += 1


@pytest.mark.slow
@pytest.mark.skipif("S2EMU_FUZZ_LONG" not in os.environ, reason="set S2EMU_FUZZ_LONG=N")
def test_fuzz_long(machine, scratch):
    n, seed = int(os.environ["S2EMU_FUZZ_LONG"]), os.environ.get("S2EMU_FUZZ_SEED", "0")
    counts, failures, t0 = Counter(), [], time.perf_counter()
    for i in range(n):
        name, muts = make_case(random.Random(f"{seed}:{i}"))
        try:
            counts[run_case(machine, scratch, mutate(name, muts))] += 1
        except Hang as e:
            counts["hangs"] += 1
            failures.append((i, name, muts, e))
        except Exception as e:               # noqa: BLE001 - any other exception is a crash
            counts["crashes"] += 1
            failures.append((i, name, muts, f"{type(e).__name__}: {e}"))
    print(f"\n[fuzz-elf] seed {seed}: {n} cases in {time.perf_counter() - t0:.1f} s, loaded "
          f"{counts['loaded']}, rejected {counts['rejected']}, crashes {counts['crashes']}, "
          f"hangs {counts['hangs']}")
    for i, name, muts, err in failures[:10]:
        print(f"  case {i} ({name}, {muts}): {err}")
    assert not failures, f"{len(failures)} crashes/hangs (seed {seed}); first: case {failures[0][0]}"
