"""Guest memory for the debugger (emu.debug.gdbstub): the side-effect-free debug path.

VA -> IPA (guest stage 1 is not modelled: VA = IPA) -> memslot -> host memory. No TLB fill,
no access flag, nothing marked dirty; devices (MMIO) are never touched: reading them is an
error (E01). Debugger writes go through `VM.write_guest`, so a logging memslot records them
as dirty, and Unicorn's translated code is dropped so a patched instruction takes effect.
"""
from __future__ import annotations

from .gdb_packets import PACKET_SIZE, hex_bytes, parse_addr_len, parse_hex_data, unescape_binary

# The most an m packet returns: its hex reply must fit in the PacketSize we advertise. A
# longer read is answered short (gdb's rule: the stub may return fewer bytes than asked, and
# gdb asks again for the rest); gdb itself never asks for more.
MAX_READ = (PACKET_SIZE - 8) // 2


def va_to_ipa(va: int) -> int:
    # Guest stage 1 is not modelled (README, Known limitations): VA = IPA.
    return va & 0xFFFFFFFF


def ram_slot(vm, va: int, length: int):
    """The memslot holding all of [va, va + length), or None (unmapped or MMIO)."""
    ipa = va_to_ipa(va)
    slot = vm.memslot(ipa)
    if slot is None or ipa + length > slot.end:
        return None
    return slot


def read_memory(vm, va: int, length: int) -> bytes:
    """Guest memory as the debugger sees it: RAM and flash backing only, no side effect.
    Stops at the first byte outside every memslot (a short read)."""
    out = bytearray()
    while len(out) < length:
        ipa = va_to_ipa(va + len(out))
        slot = vm.memslot(ipa)
        if slot is None:
            break
        n = min(length - len(out), slot.end - ipa)
        out += vm.read_guest(ipa, n)
    return bytes(out)


def write_memory(vm, cpu, va: int, data: bytes) -> bool:
    """A debugger write: all-or-nothing, RAM/flash backing only, through write_guest
    (dirty logging sees it). Drops Unicorn's translated code so new code runs."""
    pieces = []
    done = 0
    while done < len(data):
        ipa = va_to_ipa(va + done)
        slot = vm.memslot(ipa)
        if slot is None:
            return False
        n = min(len(data) - done, slot.end - ipa)
        pieces.append((ipa, data[done:done + n]))
        done += n
    for ipa, chunk in pieces:
        vm.write_guest(ipa, chunk, debugger=True)
    if data:
        cpu.flush_translations()            # all of it: no TLB fill (see there)
    return True


# ---- the m / M / X packets -----------------------------------------------------------
# ADDR,LENGTH: hex digits only, ADDR below 2**32 and ADDR + LENGTH at most 2**32 (E01 else:
# an address is never truncated to 32 bits). A write is all-or-nothing.
def read_mem_packet(vm, args: str) -> str:
    """m ADDR,LENGTH: at most MAX_READ bytes, fewer if the range leaves RAM/flash; E01 when
    not even the first byte is readable."""
    try:
        addr, length = parse_addr_len(args)
    except ValueError:
        return "E01"
    data = read_memory(vm, addr, min(length, MAX_READ))
    if not data and length:
        return "E01"
    return hex_bytes(data)


def write_mem_hex_packet(vm, cpu, args: str) -> str:
    try:
        spec, sep, hexdata = args.partition(":")
        addr, length = parse_addr_len(spec)
        data = parse_hex_data(hexdata)
    except ValueError:
        return "E01"
    if not sep or len(data) != length:
        return "E01"
    return "OK" if write_memory(vm, cpu, addr, data) else "E01"


def write_mem_binary_packet(vm, cpu, args: bytes) -> str:
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
    return "OK" if write_memory(vm, cpu, addr, data) else "E01"
