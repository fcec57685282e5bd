"""The migration stream: a versioned, framed, checksummed format of our own.

    stream  := header record*
    header  := MAGIC (12 bytes "S2EMU-MIG\\r\\n\\x1a") version (u16) reserved (u16)
    record  := type (u8) flags (u8) reserved (u16) length (u32) payload[length] crc32 (u32)

All integers little-endian; the CRC-32 (zlib) covers type, flags, reserved, length and payload,
so a flipped bit anywhere in a record is detected. flags bit 0: the payload is zstd-compressed
(only PAGES records). Record types and payloads:

    CONFIG     JSON: the VM to build on the destination (memslots, board, guest arguments)
    PAGES      slot (u16) first gfn (u32) count (u16) + count x 4096 bytes of page contents
    ZERO       slot (u16) first gfn (u32) count (u32): a run of all-zero pages
    ITERATION  JSON: a pre-copy iteration ended (number, pages, bytes, dirty rate...)
    VCPU       JSON: one vCPU's registers by name (hyp.migration.state.VcpuState)
    DEVICE     JSON: {"name", "version", "state"} of one device
    CLOCK      JSON: the virtual clock (instructions, slept_ns) and the modelled downtime
    CHECKSUMS  JSON: {memslot name: digest of its contents at switch-over (hyp.migration.checksum)}
    END        empty: nothing follows; the destination may start the guest

Pages are addressed by (memslot, gfn), so a later postcopy mode can send them in any order on
demand (the destination would leave missing pages unmapped at stage 2 and fetch on fault).
Readers reject a bad magic, another version, an unknown record type, a bad CRC, a truncated
record and an oversized one with a one-line StreamError; nothing is applied half-way by
`hyp.migration.incoming`, which only starts a guest after END.
"""
from __future__ import annotations

import enum
import json
import struct
import zlib
from typing import BinaryIO, Iterator

from .errors import StreamError

MAGIC = b"S2EMU-MIG\r\n\x1a"
VERSION = 1
PAGE = 4096
MAX_PAGES_PER_RECORD = 64
MAX_PAYLOAD = 8 + MAX_PAGES_PER_RECORD * PAGE + 1024      # a full PAGES record, generously
_HEADER = struct.Struct("<12sHH")
_RECORD = struct.Struct("<BBHI")
_CRC = struct.Struct("<I")
_PAGES = struct.Struct("<HIH")
_ZERO = struct.Struct("<HII")
FLAG_ZSTD = 1


class Rec(enum.IntEnum):
    CONFIG = 1
    PAGES = 2
    ZERO = 3
    ITERATION = 4
    VCPU = 5
    DEVICE = 6
    CLOCK = 7
    CHECKSUMS = 8
    END = 9


def _zstd():
    try:
        import zstandard
    except ImportError:
        raise StreamError("this stream uses zstd compression: pip install zstandard "
                          "(s2emu[migrate])") from None
    return zstandard


class Writer:
    """Writes records to a binary sink (`write(bytes)`); counts what went out."""

    def __init__(self, sink: BinaryIO, *, compress: bool = False) -> None:
        self.sink = sink
        self.bytes = 0
        self.raw_page_bytes = 0          # page payload before compression
        self.page_bytes = 0              # page payload as sent
        self._cctx = _zstd().ZstdCompressor(level=1) if compress else None
        self._emit(_HEADER.pack(MAGIC, VERSION, 0))

    def _emit(self, data) -> None:
        self.sink.write(data)
        self.bytes += memoryview(data).nbytes

    def record(self, rtype: Rec, payload=b"", flags: int = 0, prefix: bytes = b"") -> int:
        """Frame and write one record (`prefix` + `payload`, any bytes-like: no copy);
        returns its size on the wire."""
        length = len(prefix) + len(payload)
        head = _RECORD.pack(int(rtype), flags, 0, length) + prefix
        crc = zlib.crc32(payload, zlib.crc32(head))
        self._emit(head)
        self._emit(payload)
        self._emit(_CRC.pack(crc))
        return _RECORD.size + length + _CRC.size

    def json(self, rtype: Rec, obj) -> int:
        return self.record(rtype, json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())

    def pages(self, slot: int, first_gfn: int, data) -> int:
        """A run of up to MAX_PAGES_PER_RECORD pages (compressed if enabled); `data` is any
        bytes-like object (a memoryview of guest RAM: not copied)."""
        size = memoryview(data).nbytes
        count = size // PAGE
        if not 0 < count <= MAX_PAGES_PER_RECORD or size % PAGE:
            raise ValueError("PAGES records hold 1..64 whole pages")
        self.raw_page_bytes += size
        flags = 0
        if self._cctx is not None:
            packed = self._cctx.compress(data)
            if len(packed) < size:
                data, size, flags = packed, len(packed), FLAG_ZSTD
        self.page_bytes += size
        return self.record(Rec.PAGES, data, flags, prefix=_PAGES.pack(slot, first_gfn, count))

    def zero(self, slot: int, first_gfn: int, count: int) -> int:
        return self.record(Rec.ZERO, _ZERO.pack(slot, first_gfn, count))


def page_record_size(count: int) -> int:
    """Bytes on the wire for `count` non-zero pages sent uncompressed (for the link model)."""
    full, rest = divmod(count, MAX_PAGES_PER_RECORD)
    n_rec = full + (1 if rest else 0)
    return count * PAGE + n_rec * (_RECORD.size + _PAGES.size + _CRC.size)


class Reader:
    """Reads and verifies records from a binary source (`read(n)`)."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.offset = 0
        self.records = 0
        head = self._read(_HEADER.size, "the stream header")
        magic, version, _ = _HEADER.unpack(head)
        if magic != MAGIC:
            raise StreamError("not an s2emu migration stream (bad magic)")
        if version != VERSION:
            raise StreamError(f"migration stream version {version}; this s2emu reads "
                              f"version {VERSION}")
        self._dctx = None

    def _read(self, n: int, what: str) -> bytes:
        chunks, got = [], 0
        while got < n:
            b = self.source.read(n - got)
            if not b:
                raise StreamError(f"migration stream truncated in {what} at byte "
                                  f"{self.offset + got}")
            chunks.append(b)
            got += len(b)
        self.offset += n
        return b"".join(chunks)

    def __iter__(self) -> Iterator[tuple[Rec, bytes]]:
        while True:
            rec = self.next()
            yield rec
            if rec[0] is Rec.END:
                return

    def next(self) -> tuple[Rec, bytes]:
        """The next record (type, decoded payload); StreamError if it is not sound."""
        at = self.offset
        head = self._read(_RECORD.size, f"record {self.records + 1}")
        rtype, flags, _, length = _RECORD.unpack(head)
        try:
            kind = Rec(rtype)
        except ValueError:
            raise StreamError(f"unknown record type {rtype} at byte {at}") from None
        if length > MAX_PAYLOAD:
            raise StreamError(f"{kind.name} record at byte {at} claims {length} bytes "
                              f"(at most {MAX_PAYLOAD})")
        payload = self._read(length, f"{kind.name} record at byte {at}")
        (crc,) = _CRC.unpack(self._read(_CRC.size, f"{kind.name} record at byte {at}"))
        if zlib.crc32(payload, zlib.crc32(head)) != crc:
            raise StreamError(f"{kind.name} record at byte {at}: checksum mismatch "
                              f"(corrupted stream)")
        if flags & ~FLAG_ZSTD or (flags & FLAG_ZSTD and kind is not Rec.PAGES):
            raise StreamError(f"{kind.name} record at byte {at}: bad flags {flags:#x}")
        if flags & FLAG_ZSTD:
            payload = self._decompress(payload, at)
        self.records += 1
        return kind, payload

    def _decompress(self, payload: bytes, at: int) -> bytes:
        if len(payload) < _PAGES.size:
            raise StreamError(f"PAGES record at byte {at} is too short")
        if self._dctx is None:
            self._dctx = _zstd().ZstdDecompressor()
        head, body = payload[:_PAGES.size], payload[_PAGES.size:]
        count = _PAGES.unpack(head)[2]
        try:
            data = self._dctx.decompress(body, max_output_size=count * PAGE)
        except Exception as e:                   # zstd.ZstdError: a corrupt frame
            raise StreamError(f"PAGES record at byte {at}: bad zstd data ({e})") from None
        return head + data


def parse_pages(payload: bytes) -> tuple[int, int, bytes]:
    """PAGES payload -> (slot, first gfn, page bytes); StreamError if inconsistent."""
    if len(payload) < _PAGES.size:
        raise StreamError("PAGES record too short")
    slot, first, count = _PAGES.unpack_from(payload)
    data = payload[_PAGES.size:]
    if not 0 < count <= MAX_PAGES_PER_RECORD or len(data) != count * PAGE:
        raise StreamError(f"PAGES record for {count} pages holds {len(data)} bytes")
    return slot, first, data


def parse_zero(payload: bytes) -> tuple[int, int, int]:
    if len(payload) != _ZERO.size:
        raise StreamError("ZERO record of the wrong size")
    return _ZERO.unpack(payload)


def parse_json(kind: Rec, payload: bytes):
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StreamError(f"{kind.name} record is not valid JSON ({e.__class__.__name__})") \
            from None
