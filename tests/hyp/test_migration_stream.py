"""The migration stream: round trips, and every kind of bad stream rejected with one line."""
import io
import struct
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from hyp.migration.state import REGISTERS, StateError, VcpuState
from hyp.migration.stream import (MAGIC, PAGE, Reader, Rec, StreamError, Writer, page_record_size,
                                  parse_pages)


def sample(compress=False) -> bytes:
    buf = io.BytesIO()
    w = Writer(buf, compress=compress)
    w.json(Rec.CONFIG, {"ram": 1 << 20})
    w.pages(0, 5, bytes(range(256)) * 16 + b"\x01" * PAGE)
    w.zero(0, 7, 100)
    w.json(Rec.CLOCK, {"instructions": 1, "slept_ns": 2, "downtime_ns": 3})
    w.record(Rec.END)
    return buf.getvalue()


def records(data: bytes):
    return list(Reader(io.BytesIO(data)))


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "zstd"])
def test_round_trip(compress):
    data = sample(compress)
    recs = records(data)
    assert [k for k, _ in recs] == [Rec.CONFIG, Rec.PAGES, Rec.ZERO, Rec.CLOCK, Rec.END]
    slot, gfn, pages = parse_pages(recs[1][1])
    assert (slot, gfn, pages) == (0, 5, bytes(range(256)) * 16 + b"\x01" * PAGE)
    if compress:
        assert len(data) < len(sample(False))


def _record_at(data: bytes, n: int) -> int:
    """Byte offset of record n (0-based) in a stream."""
    off = 16
    for _ in range(n):
        length = struct.unpack_from("<I", data, off + 4)[0]
        off += 8 + length + 4
    return off


def _patch(data: bytes, off: int, new: bytes) -> bytes:
    return data[:off] + new + data[off + len(new):]


def _recrc(data: bytes, n: int) -> bytes:
    """Recompute record n's CRC after editing it (so only the intended check fires)."""
    off = _record_at(data, n)
    length = struct.unpack_from("<I", data, off + 4)[0]
    crc = zlib.crc32(data[off + 8:off + 8 + length], zlib.crc32(data[off:off + 8]))
    return _patch(data, off + 8 + length, struct.pack("<I", crc))


GOOD = sample()
CASES = [
    pytest.param(b"", "truncated in the stream header", id="empty"),
    pytest.param(b"GARBAGE!" * 4, "bad magic", id="not-a-stream"),
    pytest.param(_patch(GOOD, 12, struct.pack("<H", 9)), "version 9", id="foreign-version"),
    pytest.param(GOOD[:40], "truncated", id="truncated-in-record"),
    pytest.param(_patch(GOOD, _record_at(GOOD, 1) + 30, b"\xff"), "checksum mismatch",
                 id="flipped-byte"),
    pytest.param(_recrc(_patch(GOOD, _record_at(GOOD, 1), b"\x63"), 1),
                 "unknown record type 99", id="unknown-type"),
    pytest.param(_patch(GOOD, _record_at(GOOD, 1) + 4, struct.pack("<I", 1 << 30)),
                 "claims 1073741824 bytes", id="oversized"),
    pytest.param(_recrc(_patch(GOOD, _record_at(GOOD, 1) + 1, b"\x04"), 1), "bad flags",
                 id="bad-flags"),
]


@pytest.mark.parametrize("data,message", CASES)
def test_bad_streams_are_one_line_errors(data, message):
    with pytest.raises(StreamError, match=message) as e:
        records(data)
    assert "\n" not in str(e.value)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(cut=st.integers(0, len(GOOD) - 1))
def test_every_truncation_is_detected(cut):
    with pytest.raises(StreamError, match="truncated"):
        records(GOOD[:cut])


@settings(max_examples=500, derandomize=True, deadline=None)
@given(pos=st.integers(16, len(GOOD) - 1), bit=st.integers(0, 7))
def test_every_flipped_bit_is_detected(pos, bit):
    data = _patch(GOOD, pos, bytes([GOOD[pos] ^ (1 << bit)]))
    with pytest.raises(StreamError):
        records(data)


def test_page_record_size_is_what_the_writer_sends():
    for n in (1, 63, 64, 65, 200):
        buf = io.BytesIO()
        w = Writer(buf)
        before = w.bytes
        for first in range(0, n, 64):
            w.pages(0, first, b"\x01" * PAGE * min(64, n - first))
        assert w.bytes - before == page_record_size(n)


def test_vcpu_state_validation():
    regs = {n: 0 for n in REGISTERS}
    st_ = VcpuState.from_json({"version": 1, "regs": regs})
    assert st_.to_json()["regs"] == regs
    for bad, msg in [({"version": 2, "regs": regs}, "version 2"),
                     ({"version": 1, "regs": {**regs, "r99": 0}}, "unknown"),
                     ({"version": 1, "regs": {k: v for k, v in regs.items() if k != "pc"}},
                      "missing"),
                     ({"version": 1, "regs": {**regs, "r0": 1 << 32}}, "r0"),
                     ({"version": 1, "regs": {**regs, "cpsr": "x"}}, "cpsr")]:
        with pytest.raises(StateError, match=msg):
            VcpuState.from_json(bad)
