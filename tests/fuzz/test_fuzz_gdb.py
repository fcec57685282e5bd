"""Fuzzing the GDB stub's packet dispatcher (GdbStub.handle) with random and mutated packets
against a real loaded Machine (guests/hello.elf); generator, oracle and invariants in
gdb_fuzz.py.

CI: a few thousand derandomized hypothesis examples. Long run:
    S2EMU_FUZZ_LONG=20000 python -m pytest -q -s -m slow tests/fuzz/test_fuzz_gdb.py
(S2EMU_FUZZ_SEED picks the seed, default 0) prints cases run / errors answered / crashes /
hangs / invariant violations, with the first few failing packets.
"""
import contextlib
import os
import random
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.debug.gdb_packets import INTERRUPT, Connection
from gdb_fuzz import Fuzzer
from gdb_fuzz_gen import packet

EXAMPLES = 3000


@pytest.fixture(scope="module")
def fuzzer():
    return Fuzzer()


def test_fuzz_packets(fuzzer):
    counts = {"cases": 0, "errors": 0}

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.randoms(use_true_random=False))
    def case(rng):
        reply = fuzzer.check(packet(rng))
        counts["cases"] += 1
        counts["errors"] += reply[:1] == "E"

    case()
    fuzzer.check_memory()
    print(f"\ngdb fuzz: {counts['cases']} cases, {counts['errors']} errors answered")
    assert counts["errors"] > counts["cases"] // 10       # the generator reaches error paths


def test_fuzz_packets_with_two_vcpus():
    """The same fuzzing against a two-vCPU machine, half of it from each vCPU: thread packets
    select vCPU 1 (its registers, its stage 1) and nothing else changes. The generator's own
    Hg packets may move the selection too; each half starts from an explicit Hg so the test
    does not depend on what a hypothesis version happens to generate."""
    fuzzer = Fuzzer(smp=2)
    selected = []

    @settings(max_examples=EXAMPLES // 6, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.randoms(use_true_random=False))
    def case(rng):
        fuzzer.check(packet(rng))

    for thread, vcpu in ((1, 0), (2, 1)):
        assert fuzzer.check(b"Hg%d" % thread) == "OK"
        selected.append(fuzzer.g)
        assert fuzzer.g == vcpu
        case()
    fuzzer.check_memory()
    assert selected == [0, 1]


@pytest.mark.parametrize("pkt", [
    pytest.param(b"X40000000,1:}", id="X-dangling-escape"),
    pytest.param(b"X40000000,2:a}", id="X-dangling-escape-after-byte"),
])
def test_fuzz_findings(fuzzer, pkt):
    """Packets the fuzzer found answered wrongly (each fixed since)."""
    fuzzer.check(pkt)


@pytest.mark.slow
@pytest.mark.skipif("S2EMU_FUZZ_LONG" not in os.environ, reason="set S2EMU_FUZZ_LONG=N")
def test_fuzz_long():
    total = int(os.environ["S2EMU_FUZZ_LONG"])
    seed = int(os.environ.get("S2EMU_FUZZ_SEED", "0"))
    rng = random.Random(seed)
    fuzzer = Fuzzer()
    counts = dict(cases=0, errors=0, crashes=0, hangs=0, violations=0)
    failures = []
    t0 = time.monotonic()
    for _ in range(total):
        pkt = packet(rng)
        try:
            reply = fuzzer.check(pkt)
        except TimeoutError:
            counts["hangs"] += 1
            failures.append(("hang", pkt, ""))
        except AssertionError as e:
            counts["violations"] += 1
            failures.append(("violation", pkt, str(e)))
        except Exception as e:                  # noqa: BLE001 - counted and shown
            counts["crashes"] += 1
            failures.append(("crash", pkt, f"{type(e).__name__}: {e}"))
        else:
            counts["errors"] += reply[:1] == "E"
        counts["cases"] += 1
    try:
        fuzzer.check_memory()
    except AssertionError as e:
        counts["violations"] += 1
        failures.append(("violation", b"(whole memory)", str(e)))
    wall = time.monotonic() - t0
    print(f"\ngdb fuzz (seed {seed}): {counts['cases']} cases run, {counts['errors']} errors "
          f"answered, {counts['crashes']} crashes, {counts['hangs']} hangs, "
          f"{counts['violations']} invariant violations, {wall:.1f} s")
    for what, pkt, why in failures[:20]:
        print(f"  {what}: {pkt[:80]!r} {why[:160]}")
    assert not failures


# ---- the framing under the dispatcher: $payload#checksum, acks, 0x03 ---------------------
def _frame(payload: bytes, check: bytes | None = None) -> bytes:
    return b"$" + payload + b"#" + (check or f"{sum(payload) & 0xFF:02x}".encode())


_PAYLOAD = st.binary(max_size=40).map(lambda b: b.replace(b"$", b"").replace(b"#", b""))
_SEGMENT = st.one_of(
    _PAYLOAD.map(lambda p: ("good", p)),
    st.tuples(_PAYLOAD, st.sampled_from([b"zz", b"+7", b" 7", b"7 ", b"-0", b"0x", b"G0"]))
      .map(lambda pc: ("bad", pc)),
    _PAYLOAD.map(lambda p: ("badsum", p)),
    st.binary(max_size=8).map(lambda b: ("junk", bytes(c for c in b if c not in b"$\x03"))),
    st.just(("intr", b"\x03")),
)


@settings(max_examples=400, derandomize=True, deadline=None, database=None)
@given(st.lists(_SEGMENT, max_size=12), st.integers(1, 64))
def test_fuzz_framing(segments, chunk):
    """Valid frames come out intact and acked '+', corrupt ones (wrong or non-hex checksum,
    which int() would take as ' 7' or '+7') are NAKed '-', junk is skipped, 0x03 interrupts
    - whatever the stream's split into reads."""
    a, b = socket.socketpair()
    conn = Connection(a)
    stream, want, acks = b"", [], b""
    for kind, value in segments:
        if kind == "good":
            stream += _frame(value)
            want.append(value)
            acks += b"+"
        elif kind == "bad":
            payload, check = value
            if b"7" in check:
                payload = b"\x07"              # int(check, 16) == its checksum
            stream += _frame(payload, check)
            acks += b"-"
        elif kind == "badsum":
            stream += _frame(value, f"{(sum(value) + 1) & 0xFF:02x}".encode())
            acks += b"-"
        elif kind == "intr":
            stream += value
            want.append(INTERRUPT)
        else:
            stream += value.replace(b"-", b"")   # a '-' would ask for a retransmission
    got = []
    try:
        for i in range(0, len(stream), chunk):
            conn.buf += stream[i:i + chunk]
            while (item := conn._next()) is not None:
                got.append(item)
        b.setblocking(False)
        sent = b""
        with contextlib.suppress(BlockingIOError):
            while data := b.recv(65536):
                sent += data
    finally:
        a.close()
        b.close()
    assert got == want
    assert sent == acks
