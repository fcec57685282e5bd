"""Guest memory for the debugger (emu.debug.gdbstub): the side-effect-free debug path.

VA -> IPA through the guest's stage 1 as its translation registers stand now (a debug walk:
no TLB fill, no walk-cache entry; VA = IPA with its MMU off) -> memslot -> host memory,
page by page. Nothing is marked accessed or dirty by a read; devices (MMIO) are never touched:
reading them is an error (E01). Debugger writes go through `VM.write_guest`, so a logging
memslot records them as dirty, and Unicorn's translated code is dropped so a patched
instruction takes effect. An address whose stage-1 walk faults reads as unreadable, as in
QEMU's gdbstub (cpu_memory_rw_debug); stage-1 permissions do not apply to the debugger.

Stage 1 is per vCPU: a VA is translated by the MMU of the vCPU the debugger looks at (its
gdb thread); RAM is shared, so a write drops the translated code of every vCPU.
"""
from __future__ import annotations

from hyp.arch.s1 import S1Leaf

from .gdb_packets import PACKET_SIZE, hex_bytes, parse_addr_len, parse_hex_data, unescape_binary

# The most an m packet returns: its hex reply must fit in the PacketSize we advertise. A
# longer read is answered short (gdb's rule: the stub may return fewer bytes than asked, and
# gdb asks again for the rest); gdb itself never asks for more.
MAX_READ = (PACKET_SIZE - 8) // 2


def va_to_ipa(mmu, va: int) -> int | None:
    """The IPA the guest's stage 1 maps `va` to now (side-effect-free), None if it faults."""
    va &= 0xFFFFFFFF
    if mmu is None or not mmu.s1.enabled:
        return va
    _pa, leaf = mmu.debug_walk(va)
    if isinstance(leaf, S1Leaf):
        return leaf.ipa | (va & 0xFFF)
    return None


def _pieces(vm, mmu, va: int, length: int):
    """(IPA, length) runs backing [va, va + length) in RAM/flash memslots, page by page
    through stage 1; stops at the first byte that has none."""
    done = 0
    while done < length:
        ipa = va_to_ipa(mmu, va + done)
        slot = vm.memslot(ipa) if ipa is not None else None
        if slot is None:
            return
        n = min(length - done, slot.end - ipa, 0x1000 - ((va + done) & 0xFFF))
        yield ipa, n
        done += n


def ram_slot(vm, va: int, length: int, mmu=None):
    """(memslot, IPA of va) when one memslot backs all of [va, va + length) at contiguous
    IPAs through stage 1; None otherwise (unmapped, MMIO, pages mapped apart)."""
    runs = list(_pieces(vm, mmu, va, length))
    if not runs or sum(n for _, n in runs) != length:
        return None
    ipa, off = runs[0][0], 0
    for r_ipa, n in runs:
        if r_ipa != ipa + off:
            return None
        off += n
    slot = vm.memslot(ipa)
    return (slot, ipa) if ipa + length <= slot.end else None


def read_memory(vm, va: int, length: int, mmu=None) -> bytes:
    """Guest memory as the debugger sees it: RAM and flash backing only, no side effect.
    Stops at the first byte outside every memslot (a short read)."""
    out = bytearray()
    for ipa, n in _pieces(vm, mmu, va, length):
        out += vm.read_guest(ipa, n)
    return bytes(out)


def write_memory(vm, cpu, va: int, data: bytes, flush: list | None = None) -> bool:
    """A debugger write: all-or-nothing, RAM/flash backing only, through write_guest
    (dirty logging sees it); `va` through `cpu`'s stage 1. Drops Unicorn's translated code
    of the vCPUs in `flush` (default: `cpu`) so new code runs."""
    pieces = []
    done = 0
    for ipa, n in _pieces(vm, cpu.mmu, va, len(data)):
        pieces.append((ipa, data[done:done + n]))
        done += n
    if done != len(data):
        return False
    for ipa, chunk in pieces:
        vm.write_guest(ipa, chunk, debugger=True)
    if data:
        for c in flush or [cpu]:
            c.flush_translations()          # all of it: no TLB fill (see there)
    return True


# ---- the m / M / X packets -----------------------------------------------------------
# ADDR,LENGTH: hex digits only, ADDR below 2**32 and ADDR + LENGTH at most 2**32 (E01 else:
# an address is never truncated to 32 bits). A write is all-or-nothing.
def read_mem_packet(vm, args: str, mmu=None) -> str:
    """m ADDR,LENGTH: at most MAX_READ bytes, fewer if the range leaves RAM/flash; E01 when
    not even the first byte is readable."""
    try:
        addr, length = parse_addr_len(args)
    except ValueError:
        return "E01"
    data = read_memory(vm, addr, min(length, MAX_READ), mmu)
    if not data and length:
        return "E01"
    return hex_bytes(data)


def write_mem_hex_packet(vm, cpu, args: str, flush: list | None = None) -> str:
    try:
        spec, sep, hexdata = args.partition(":")
        addr, length = parse_addr_len(spec)
        data = parse_hex_data(hexdata)
    except ValueError:
        return "E01"
    if not sep or len(data) != length:
        return "E01"
    return "OK" if write_memory(vm, cpu, addr, data, flush) else "E01"


def write_mem_binary_packet(vm, cpu, args: bytes, flush: list | None = None) -> str:
    spec, sep, raw = args.partition(b":")
    try:
        addr, length = parse_addr_len(spec.decode("latin-1"))
        data = unescape_binary(raw)
    except ValueError:
        return "E01"
    if not sep:
        return "E01"
    if len(data) != length:
        return "E01"
    return "OK" if write_memory(vm, cpu, addr, data, flush) else "E01"
