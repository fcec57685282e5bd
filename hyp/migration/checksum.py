"""Per-memslot RAM checksums, computed at switch-over on both ends and compared (the cover
letter's proof: RAM checksummed on source and destination after memory is migrated and
before the guest starts)."""
from __future__ import annotations

import hashlib


def digests(vm) -> dict[str, str]:
    """{memslot name: BLAKE2b-128 of its whole contents} (the host memory that backs it)."""
    mem = vm.host.mem
    out = {}
    for slot in vm.memslots:
        off = slot.pa - mem.base
        h = hashlib.blake2b(digest_size=16)
        h.update(memoryview(mem.buf[off:off + slot.size]))
        out[slot.name] = h.hexdigest()
    return out
