"""The destination's side: read a migration stream into a fresh VM, verify it, and hand back
what the machine needs to start the guest - only after END and matching checksums. A bad,
truncated, foreign-version or corrupted stream raises StreamError (one line); the VM built for
it is then simply dropped, never started."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO, Callable

import numpy as np

from .checksum import digests
from .stream import PAGE, Reader, Rec, StreamError, parse_json, parse_pages, parse_zero


@dataclass
class Incoming:
    """What arrived besides memory: the source's configuration, vCPU, device and clock state,
    the iteration reports, and both sides' checksums."""
    config: dict
    vcpus: list = field(default_factory=list)
    devices: list = field(default_factory=list)
    clock: dict | None = None
    iterations: list = field(default_factory=list)
    source_digests: dict = field(default_factory=dict)
    digests: dict = field(default_factory=dict)
    bytes: int = 0
    pages: int = 0
    zero_pages: int = 0


def receive(source: BinaryIO, build: Callable[[dict], object],
            corrupt: Callable[[object], None] | None = None) -> tuple[object, Incoming]:
    """Build the VM `build(config)` returns (an object with .vm) and fill it from `source`.
    `corrupt(target)` (tests only) runs before the checksums are compared."""
    reader = Reader(source)
    kind, payload = reader.next()
    if kind is not Rec.CONFIG:
        raise StreamError(f"migration stream starts with {kind.name}, not CONFIG")
    config = parse_json(kind, payload)
    try:
        target = build(config)
    except (ValueError, KeyError, TypeError) as e:
        raise StreamError(f"migration stream describes a VM this s2emu cannot build: {e}") \
            from None
    vm = target.vm
    inc = Incoming(config)
    mem = vm.host.mem
    for kind, payload in reader:
        if kind is Rec.PAGES:
            sid, gfn, data = parse_pages(payload)
            off = _page_offset(vm, sid, gfn, len(data) // PAGE)
            mem.buf[off:off + len(data)] = np.frombuffer(data, dtype=np.uint8)
            inc.pages += len(data) // PAGE
        elif kind is Rec.ZERO:
            sid, gfn, count = parse_zero(payload)
            off = _page_offset(vm, sid, gfn, count)
            block = mem.buf[off:off + count * PAGE]
            if block.view(np.uint64).any():        # QEMU's ram_handle_zero: a fresh board's
                block[:] = 0                       # untouched RAM stays unallocated
            inc.zero_pages += count
        elif kind is Rec.ITERATION:
            inc.iterations.append(parse_json(kind, payload))
        elif kind is Rec.VCPU:
            inc.vcpus.append(parse_json(kind, payload))
        elif kind is Rec.DEVICE:
            inc.devices.append(parse_json(kind, payload))
        elif kind is Rec.CLOCK:
            inc.clock = parse_json(kind, payload)
        elif kind is Rec.CHECKSUMS:
            inc.source_digests = parse_json(kind, payload)
        elif kind is Rec.CONFIG:
            raise StreamError("a second CONFIG record in the migration stream")
    inc.bytes = reader.offset
    _check_complete(inc)
    if corrupt is not None:
        corrupt(target)
    inc.digests = digests(vm)
    for name, theirs in inc.source_digests.items():
        if inc.digests.get(name) != theirs:
            raise StreamError(f"RAM checksum mismatch on memslot {name}: source {theirs}, "
                              f"destination {inc.digests.get(name)} - not starting the guest")
    return target, inc


def _page_offset(vm, sid: int, gfn: int, count: int) -> int:
    if not 0 <= sid < len(vm.memslots):
        raise StreamError(f"pages for memslot {sid}, which this VM does not have")
    slot = vm.memslots[sid]
    if gfn + count > slot.npages:
        raise StreamError(f"pages {gfn}+{count} beyond memslot {slot.name} "
                          f"({slot.npages} pages)")
    return slot.pa - vm.host.mem.base + gfn * PAGE


def _check_complete(inc: Incoming) -> None:
    missing = [what for what, ok in (("vCPU state", inc.vcpus), ("clock", inc.clock),
                                     ("checksums", inc.source_digests)) if not ok]
    if missing:
        raise StreamError(f"migration stream ended without {', '.join(missing)}")
    if not isinstance(inc.clock, dict) or not all(
            isinstance(inc.clock.get(k), int) and inc.clock[k] >= 0
            for k in ("instructions", "slept_ns", "downtime_ns")):
        raise StreamError("migration stream has a malformed CLOCK record")
    if not isinstance(inc.source_digests, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in inc.source_digests.items()):
        raise StreamError("migration stream has a malformed CHECKSUMS record")
