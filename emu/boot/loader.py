"""Load a bare-metal ARM ELF into guest RAM (as `qemu-system-arm -kernel guest.elf` does).

Field names are those of the System V gABI ("Object Files": ELF Header, Program Header,
Sections, Symbol Table) for ELFCLASS32. pyelftools parses the tables, but it trusts the header
(table sizes, offsets, links), so the raw values are checked here first. The whole image -
every segment, the entry point, the symbol table - is validated before the first byte is
written into guest memory; any bad input is one LoaderError naming the file and the problem.
"""
from __future__ import annotations

import io
import os
import stat
import struct
from collections import namedtuple
from dataclasses import dataclass
from typing import Callable, NoReturn

from elftools.common.exceptions import ELFError
from elftools.common.utils import struct_parse
from elftools.construct import ConstructError
from elftools.elf.descriptions import describe_e_machine
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_E_MACHINE

EHDR = struct.Struct("<16sHHIIIIIHHHHHH")     # Elf32_Ehdr, 52 bytes
SHDR = struct.Struct("<10I")                  # Elf32_Shdr, 40 bytes
PHDR_SIZE, SYM_SIZE = 32, 16                  # Elf32_Phdr, Elf32_Sym
ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB, EV_CURRENT = 1, 2, 1, 2, 1
ET_EXEC, ET_DYN, EM_ARM, PF_X, PN_XNUM = 2, 3, 40, 1, 0xFFFF
SHT_SYMTAB, SHT_STRTAB, SHN_XINDEX = 2, 3, 0xFFFF
# What pyelftools (and the construct library vendored in it) raise on a malformed file.
PARSE_ERRORS = (ELFError, ConstructError, struct.error, ValueError, KeyError, IndexError,
                AttributeError, TypeError, UnicodeDecodeError, OverflowError, AssertionError)

Fail = Callable[[str], NoReturn]


class LoaderError(Exception):
    pass


@dataclass
class Image:
    path: str
    entry: int
    thumb: bool
    segments: list[tuple[int, int, int]]      # (ipa, filesz, memsz)
    symbols: dict[str, int]

    def symbol(self, name: str) -> int:
        try:
            return self.symbols[name]
        except KeyError:
            raise LoaderError(f"{self.path}: no symbol {name!r}") from None


# A validated PT_LOAD entry: index in the program header table, p_paddr (an IPA), p_offset,
# p_filesz, p_memsz, p_flags & PF_X, and the host PA that p_paddr maps to.
Segment = namedtuple("Segment", "index ipa offset filesz memsz executable pa")
# The ELF header fields the loader goes on to use (e_shnum, e_shstrndx after PN_XNUM/SHN_XINDEX).
Ehdr = namedtuple("Ehdr", "entry phoff phnum shoff shnum shstrndx")


def load(path: str, vm) -> Image:
    """Copy every PT_LOAD segment to its physical address p_paddr (an IPA) in `vm`'s RAM and
    zero [p_filesz, p_memsz). The CPU starts at e_entry (bit 0: Thumb). Nothing is written
    to guest memory unless the whole image is valid."""
    def fail(msg: str) -> NoReturn:
        raise LoaderError(f"{path}: {msg}")

    data = _read(path)
    ehdr = _check_header(data, fail)
    try:                                  # symbols last: the costliest to parse
        elf = ELFFile(io.BytesIO(data))
        phdrs = [struct_parse(elf.structs.Elf_Phdr, elf.stream, ehdr.phoff + i * PHDR_SIZE)
                 for i in range(ehdr.phnum)]
        segments = _check_segments(data, phdrs, vm, fail)
        pc, thumb = _check_entry(ehdr.entry, segments, fail)
        symbols = _symbols(data, elf, ehdr, fail)
    except PARSE_ERRORS as e:
        fail(f"malformed ELF ({type(e).__name__}: {' '.join(str(e).split())})")
    for s in segments:                            # all valid: now write guest memory
        vm.host.mem.write(s.pa, data[s.offset:s.offset + s.filesz])
        vm.host.mem.zero(s.pa + s.filesz, s.memsz - s.filesz)
    return Image(path=path, entry=pc, thumb=thumb, symbols=symbols,
                 segments=[(s.ipa, s.filesz, s.memsz) for s in segments])


def _read(path: str) -> bytes:
    """The whole file; only a regular file (a FIFO would block, /dev/zero never ends)."""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            kind = next((k for test, k in kinds if test(mode)), "a special file")
            raise LoaderError(f"{path}: {kind}, not a regular file")
        # O_NONBLOCK and fstat: a FIFO swapped in after the stat neither blocks nor loads.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise LoaderError(f"{path}: not a regular file")
            data = f.read(4)              # a huge non-ELF file is not read in full
            return data + f.read() if data == b"\x7fELF" else data
    except (OSError, ValueError) as e:    # ValueError: a NUL in the path
        raise LoaderError(f"cannot open {path}: {getattr(e, 'strerror', None) or e}") from None


def _machine(n: int) -> str:
    """e_machine as 'EM_AARCH64 (AArch64)', 'EM_TRICORE' or 'unknown machine 30583'."""
    name = next((k for k, v in ENUM_E_MACHINE.items() if v == n and k.startswith("EM_")), None)
    if name is None:
        return f"unknown machine {n}"
    desc = describe_e_machine(name)
    return name if desc.startswith("<") else f"{name} ({desc})"


def _check_header(data: bytes, fail: Fail) -> Ehdr:
    """ELF header: e_ident (magic, EI_CLASS, EI_DATA, EI_VERSION), e_machine, e_type, and the
    program / section header tables (e_phoff, e_phentsize, e_phnum; e_shoff, e_shentsize,
    e_shnum, e_shstrndx) lying inside the file."""
    if data[:4] != b"\x7fELF":
        fail("not an ELF file (no \\x7fELF magic)")
    if len(data) < EHDR.size:
        fail(f"truncated ELF header ({len(data)} of {EHDR.size} bytes)")
    ei_class, ei_data, ei_version = data[4:7]
    if ei_class not in (ELFCLASS32, ELFCLASS64):
        fail(f"bad EI_CLASS {ei_class} (neither 32- nor 64-bit)")
    if ei_data not in (ELFDATA2LSB, ELFDATA2MSB):
        fail(f"bad EI_DATA {ei_data} (neither little- nor big-endian)")
    machine = int.from_bytes(data[18:20], "little" if ei_data == ELFDATA2LSB else "big")
    if ei_class == ELFCLASS64:
        fail(f"64-bit ELF for {_machine(machine)}; s2emu runs 32-bit ARM guests")
    if machine != EM_ARM:
        fail(f"ELF for {_machine(machine)}, not ARM")
    if ei_data == ELFDATA2MSB:
        fail("big-endian ARM ELF; s2emu runs little-endian guests")
    (_, e_type, _, version, entry, phoff, shoff, _, ehsize, phentsize, phnum, shentsize,
     shnum, shstrndx) = EHDR.unpack_from(data)
    if ei_version != EV_CURRENT or version != EV_CURRENT:
        fail(f"bad ELF version (EI_VERSION {ei_version}, e_version {version}; want 1)")
    if e_type not in (ET_EXEC, ET_DYN):
        fail(f"e_type {e_type} is not an executable (ET_EXEC or ET_DYN)")
    if ehsize != EHDR.size:
        fail(f"bad e_ehsize {ehsize} (an Elf32_Ehdr is {EHDR.size} bytes)")
    if phnum == 0:
        fail("no program headers (e_phnum 0)")
    if phnum == PN_XNUM:
        fail("e_phnum PN_XNUM (extended program header numbering) is not supported")
    if phentsize != PHDR_SIZE:
        fail(f"bad e_phentsize {phentsize} (an Elf32_Phdr is {PHDR_SIZE} bytes)")
    _in_file(data, phoff, phnum * PHDR_SIZE, "program header table", fail)
    if shoff == 0:                        # no section header table: no symbols
        if shnum or shstrndx:
            fail(f"e_shnum {shnum} / e_shstrndx {shstrndx} without a section header table")
        return Ehdr(entry, phoff, phnum, 0, 0, 0)
    if shentsize != SHDR.size:
        fail(f"bad e_shentsize {shentsize} (an Elf32_Shdr is {SHDR.size} bytes)")
    _in_file(data, shoff, SHDR.size, "section header table", fail)
    sh0 = SHDR.unpack_from(data, shoff)   # index 0 holds the real count / index if they overflow
    shnum = shnum or sh0[5]               # sh_size
    _in_file(data, shoff, shnum * SHDR.size, f"section header table ({shnum} entries)", fail)
    if shstrndx == SHN_XINDEX:
        shstrndx = sh0[6]                 # sh_link
    if shstrndx:
        if shstrndx >= shnum:
            fail(f"bad e_shstrndx {shstrndx} (there are {shnum} sections)")
        _check_strtab(data, shoff, shstrndx, "e_shstrndx", fail)
    return Ehdr(entry, phoff, phnum, shoff, shnum, shstrndx)


def _in_file(data: bytes, offset: int, size: int, what: str, fail: Fail) -> None:
    if offset + size > len(data):
        fail(f"{what} [{offset:#x}, {offset + size:#x}) lies beyond the end of the file "
             f"({len(data):#x} bytes)")


def _check_strtab(data: bytes, shoff: int, index: int, user: str, fail: Fail) -> int:
    """Section `index` must be an SHT_STRTAB inside the file whose last byte is NUL (so every
    string ends inside it); returns its sh_size."""
    _, sh_type, _, _, offset, size, *_ = SHDR.unpack_from(data, shoff + index * SHDR.size)
    what = f"string table (section {index})"
    if sh_type != SHT_STRTAB:
        fail(f"{user} points at section {index} of type {sh_type}, not a string table")
    _in_file(data, offset, size, what, fail)
    if size and data[offset + size - 1]:
        fail(f"{what} does not end with a NUL byte")
    return size


def _symbols(data: bytes, elf: ELFFile, ehdr: Ehdr, fail: Fail) -> dict[str, int]:
    """Functions, objects and untyped symbols of the SHT_SYMTAB section (if any): sh_entsize
    is sizeof(Elf32_Sym), sh_link names its SHT_STRTAB, every st_name lies inside it."""
    for index in range(ehdr.shnum):
        (_, sh_type, _, _, offset, size, link, _, _, entsize) = SHDR.unpack_from(
            data, ehdr.shoff + index * SHDR.size)
        if sh_type == SHT_SYMTAB:
            break
    else:
        return {}
    what = f"symbol table (section {index})"
    if entsize != SYM_SIZE:
        fail(f"{what}: bad sh_entsize {entsize} (an Elf32_Sym is {SYM_SIZE} bytes)")
    if size % SYM_SIZE:
        fail(f"{what}: sh_size {size} is not a multiple of {SYM_SIZE}")
    _in_file(data, offset, size, what, fail)
    if not 0 < link < ehdr.shnum:
        fail(f"{what}: bad sh_link {link} (there are {ehdr.shnum} sections)")
    strsize = _check_strtab(data, ehdr.shoff, link, f"{what} sh_link", fail)
    symbols: dict[str, int] = {}
    for n, sym in enumerate(elf.get_section(index).iter_symbols()):
        if sym["st_name"] == 0:               # no name
            continue
        if sym["st_name"] >= strsize:
            fail(f"{what}: symbol {n} has st_name {sym['st_name']} beyond its string table")
        if sym.name and sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE"):
            symbols.setdefault(sym.name, sym["st_value"])
    return symbols


def _check_segments(data: bytes, phdrs, vm, fail: Fail) -> list[Segment]:
    """PT_LOAD entries: p_filesz <= p_memsz, [p_offset, +p_filesz) inside the file,
    [p_paddr, +p_memsz) inside one RAM memslot (not read-only flash), no two overlapping."""
    segments: list[Segment] = []
    for i, ph in enumerate(phdrs):
        if ph["p_type"] != "PT_LOAD":
            continue
        ipa, offset, filesz, memsz = ph["p_paddr"], ph["p_offset"], ph["p_filesz"], ph["p_memsz"]
        where = f"segment {i} at {ipa:#x}+{memsz:#x}"
        if filesz > memsz:
            fail(f"segment {i}: p_filesz {filesz:#x} > p_memsz {memsz:#x}")
        if memsz == 0:
            continue
        _in_file(data, offset, filesz, f"segment {i} file data", fail)
        if ipa + memsz > 1 << 32:
            fail(f"{where} wraps past the 32-bit address space")
        slot = vm.memslot(ipa)
        if slot is None:
            fail(f"{where} is outside guest RAM (no memslot there)")
        if slot.readonly:
            fail(f"{where} lies in flash (read-only memslot {slot.name}), not RAM")
        if ipa + memsz > slot.end:
            fail(f"{where} runs past the end of memslot {slot.name} at {slot.end:#x}")
        segments.append(Segment(i, ipa, offset, filesz, memsz, bool(ph["p_flags"] & PF_X),
                                slot.pa_of(ipa)))
    if not segments:
        fail("no loadable segments")
    ordered = sorted(segments, key=lambda s: s.ipa)
    for a, b in zip(ordered, ordered[1:]):
        if b.ipa < a.ipa + a.memsz:
            fail(f"segments {a.index} and {b.index} overlap at {b.ipa:#x}")
    return segments


def _check_entry(entry: int, segments: list[Segment], fail: Fail) -> tuple[int, bool]:
    """e_entry (bit 0 set: Thumb state) must lie in the file bytes of a PF_X segment."""
    thumb, pc = bool(entry & 1), entry & ~1
    if not thumb and pc & 3:
        fail(f"entry point {entry:#x} is not word-aligned (ARM state; Thumb sets bit 0)")
    hit = next((s for s in segments if s.ipa <= pc < s.ipa + s.filesz), None)
    if hit is None:
        fail(f"entry point {entry:#x} is outside every loaded segment")
    if not hit.executable:
        fail(f"entry point {entry:#x} is in segment {hit.index}, which is not executable "
             f"(p_flags lacks PF_X)")
    return pc, thumb
