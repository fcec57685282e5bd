"""Per-memslot RAM checksums, computed at switch-over on both ends and compared (the cover
letter's proof: RAM checksummed on source and destination after memory is migrated and
before the guest starts).

A slot's digest is SHA-256 over the SHA-256 digests of its 2 MiB chunks, an all-zero chunk
standing for itself by a constant: the same value on both ends, and never-touched guest RAM
(most of an idle guest) costs a zero test instead of a hash.
"""
from __future__ import annotations

import hashlib

import numpy as np

CHUNK = 2 << 20
_ZERO = hashlib.sha256(bytes(CHUNK)).digest()


def slot_digest(buf: np.ndarray) -> str:
    """The digest of one memslot's backing (a uint8 view of host memory)."""
    h = hashlib.sha256()
    for off in range(0, buf.size, CHUNK):
        chunk = buf[off:off + CHUNK]
        if chunk.size == CHUNK and not chunk.view(np.uint64).any():
            h.update(_ZERO)
        else:
            h.update(hashlib.sha256(memoryview(chunk)).digest())
    return h.hexdigest()[:32]


def digests(vm) -> dict[str, str]:
    """{memslot name: digest of its whole contents} (the host memory that backs it)."""
    mem = vm.host.mem
    return {slot.name: slot_digest(mem.buf[slot.pa - mem.base:slot.pa - mem.base + slot.size])
            for slot in vm.memslots}
