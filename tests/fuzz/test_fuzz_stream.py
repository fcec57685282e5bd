"""Fuzz the migration stream parser: random mutations (bit flips, byte and word overwrites,
insertions, deletions, truncations, record splices) of a real stream of a running dirtyram.
Every case must either arrive whole (checksums equal: then the mutation was harmless) or
raise StreamError with one line - never another exception, never a started guest.

CI: a fixed Hypothesis sample. Long mode: S2EMU_FUZZ_LONG=N [S2EMU_FUZZ_SEED=S] python -m
pytest -s -m slow tests/fuzz/test_fuzz_stream.py.
"""
import io
import os
import random
from collections import Counter
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from emu.machine import Machine
from emu.migration import incoming, migrate_out
from hyp.migration.precopy import Params
from hyp.migration.stream import StreamError

from conftest import GUESTS


@lru_cache(maxsize=1)
def stream() -> bytes:
    m = Machine(8 << 20)
    m.load(os.path.join(GUESTS, "dirtyram.elf"), "512 32 5 0")
    m.run(max_insns=20_000)
    buf = io.BytesIO()
    src = migrate_out(m, buf, Params(bandwidth=16 << 20, compress=False))
    assert m.run(max_insns=10_000_000).reason == "migrate"
    src.complete()
    return buf.getvalue()


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(("flip", "byte", "word", "insert", "delete", "truncate", "splice"))
        at = rng.randrange(len(b)) if b else 0
        if op == "flip" and b:
            b[at] ^= 1 << rng.randrange(8)
        elif op == "byte" and b:
            b[at] = rng.randrange(256)
        elif op == "word" and len(b) > at + 4:
            b[at:at + 4] = rng.choice((0, 1, 0xFFFFFFFF, 0x7FFFFFFF, rng.getrandbits(32))) \
                .to_bytes(4, "little")
        elif op == "insert":
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == "delete":
            del b[at:at + rng.randint(1, 64)]
        elif op == "truncate":
            del b[at:]
        elif op == "splice" and b:
            src = rng.randrange(len(b))
            b[at:at] = b[src:src + rng.randint(1, 256)]
    return bytes(b)


def check(data: bytes) -> str:
    try:
        m, inc = incoming(io.BytesIO(data))
    except StreamError as e:
        assert "\n" not in str(e)
        return "rejected"
    assert inc.digests == inc.source_digests
    return "arrived"


@settings(max_examples=1000, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_fuzz_stream(seed):
    check(mutate(random.Random(seed), stream()))


@pytest.mark.slow
def test_fuzz_stream_long():
    n = int(os.environ.get("S2EMU_FUZZ_LONG", "0"))
    if not n:
        pytest.skip("set S2EMU_FUZZ_LONG=N")
    seed = os.environ.get("S2EMU_FUZZ_SEED", "0")
    counts = Counter(check(mutate(random.Random(f"{seed}:{i}"), stream())) for i in range(n))
    print(f"\nstream fuzz: {n} cases, {dict(counts)}, crashes 0")
