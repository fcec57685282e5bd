"""ELF loader: every malformed or unsuitable input is one LoaderError naming the file and the
problem, and nothing reaches guest memory unless the whole image is valid."""
import os
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from emu.boot.loader import Image, LoaderError, load
from emu.machine import RAM_BASE, Machine

from conftest import GUESTS, ROOT

HELLO = open(os.path.join(GUESTS, "hello.elf"), "rb").read()

# Elf32_Ehdr, Elf32_Phdr, Elf32_Shdr, Elf32_Sym fields: name -> (offset, struct format).
EHDR = dict(e_type=(16, "H"), e_machine=(18, "H"), e_version=(20, "I"), e_entry=(24, "I"),
            e_phoff=(28, "I"), e_shoff=(32, "I"), e_ehsize=(40, "H"), e_phentsize=(42, "H"),
            e_phnum=(44, "H"), e_shentsize=(46, "H"), e_shnum=(48, "H"), e_shstrndx=(50, "H"))
PHDR = dict(p_type=(0, "I"), p_offset=(4, "I"), p_vaddr=(8, "I"), p_paddr=(12, "I"),
            p_filesz=(16, "I"), p_memsz=(20, "I"), p_flags=(24, "I"))
SHDR = dict(sh_type=(4, "I"), sh_offset=(16, "I"), sh_size=(20, "I"), sh_link=(24, "I"),
            sh_entsize=(36, "I"))


def field(data, table, base, name):
    off, fmt = table[name]
    return struct.unpack_from("<" + fmt, data, base + off)[0]


PHOFF, SHOFF = field(HELLO, EHDR, 0, "e_phoff"), field(HELLO, EHDR, 0, "e_shoff")
SHNUM, SIZE = field(HELLO, EHDR, 0, "e_shnum"), len(HELLO)
TEXT = field(HELLO, PHDR, PHOFF, "p_offset"), field(HELLO, PHDR, PHOFF, "p_filesz")  # segment 0


def section(sh_type):
    return next(i for i in range(SHNUM) if field(HELLO, SHDR, SHOFF + 40 * i, "sh_type") == sh_type)


SYMTAB = section(2)
STRTAB = field(HELLO, SHDR, SHOFF + 40 * SYMTAB, "sh_link")
SYM0 = field(HELLO, SHDR, SHOFF + 40 * SYMTAB, "sh_offset")


def eh(name, value, fmt=None):
    off, f = EHDR[name]
    return lambda d: struct.pack_into(fmt or "<" + f, d, off, value)


def ph(i, name, value):
    off, f = PHDR[name]
    return lambda d: struct.pack_into("<" + f, d, PHOFF + 32 * i + off, value)


def sh(i, name, value):
    off, f = SHDR[name]
    return lambda d: struct.pack_into("<" + f, d, SHOFF + 40 * i + off, value)


def ident(index, value):
    return lambda d: d.__setitem__(index, value)


def mutate(*edits, data=HELLO):
    d = bytearray(data)
    for edit in edits:
        edit(d)
    return bytes(d)


@pytest.fixture(scope="module")
def virgin():
    """A board nothing was ever loaded into: every failed load must leave its RAM zero."""
    return Machine()


def load_bytes(tmp_path, data, machine):
    path = tmp_path / "guest.elf"
    path.unlink(missing_ok=True)          # ext4 flushes a file truncated and rewritten
    path.write_bytes(data)
    return str(path), load(str(path), machine.vm)


def ram_is_zero(m, size=0x10000):
    return not any(m.host.mem.read(m.ram.pa_of(RAM_BASE), size))


BAD = [
    # not ELF / not for us
    pytest.param(b"", "not an ELF file", id="empty"),
    pytest.param(b"#!/bin/sh\necho hi\n", "not an ELF file", id="not-elf"),
    pytest.param(HELLO[:12], "truncated ELF header (12 of 52 bytes)", id="truncated-ident"),
    pytest.param(HELLO[:40], "truncated ELF header (40 of 52 bytes)", id="truncated-ehdr"),
    pytest.param(mutate(ident(4, 0)), "bad EI_CLASS 0", id="bad-class"),
    pytest.param(mutate(ident(4, 2))[:48], "truncated ELF header", id="truncated-64-bit"),
    pytest.param(mutate(ident(5, 3)), "bad EI_DATA 3", id="bad-data"),
    pytest.param(mutate(ident(4, 2), eh("e_machine", 183)),
                 "64-bit ELF for EM_AARCH64 (AArch64); s2emu runs 32-bit ARM guests", id="64-bit"),
    pytest.param(mutate(ident(5, 2), eh("e_machine", 40, ">H")),
                 "big-endian ARM ELF; s2emu runs little-endian guests", id="big-endian"),
    pytest.param(mutate(eh("e_machine", 62)), "ELF for EM_X86_64 (", id="x86-64"),
    pytest.param(mutate(eh("e_machine", 44)), "ELF for EM_TRICORE", id="undescribed"),
    pytest.param(mutate(eh("e_machine", 0x7777)), "ELF for unknown machine 30583, not ARM",
                 id="unknown-machine"),
    pytest.param(mutate(ident(6, 0)), "bad ELF version", id="bad-ei-version"),
    pytest.param(mutate(eh("e_version", 2)), "bad ELF version", id="bad-e-version"),
    pytest.param(mutate(eh("e_type", 1)), "e_type 1 is not an executable", id="relocatable"),
    pytest.param(mutate(eh("e_ehsize", 64)), "bad e_ehsize 64", id="bad-ehsize"),
    # program header table
    pytest.param(mutate(eh("e_phnum", 0)), "no program headers", id="phnum-0"),
    pytest.param(mutate(eh("e_phnum", 0xFFFF)), "PN_XNUM", id="phnum-xnum"),
    pytest.param(mutate(eh("e_phentsize", 56)), "bad e_phentsize 56", id="bad-phentsize"),
    pytest.param(mutate(eh("e_phentsize", 0)), "bad e_phentsize 0", id="phentsize-0"),
    pytest.param(mutate(eh("e_phoff", SIZE - 16)), f"program header table [{SIZE - 16:#x}, "
                 f"{SIZE + 48:#x}) lies beyond the end of the file ({SIZE:#x} bytes)",
                 id="phdrs-beyond-eof"),
    pytest.param(mutate(eh("e_phoff", 0xFFFFFFF0)), "program header table", id="phoff-huge"),
    pytest.param(mutate(eh("e_phnum", 5000)), "program header table", id="phnum-huge"),
    # section header table
    pytest.param(mutate(eh("e_shoff", len(HELLO))), "section header table", id="shdrs-beyond-eof"),
    pytest.param(HELLO[:-1], "section header table", id="shdrs-truncated"),
    pytest.param(mutate(eh("e_shnum", 0xFF00)), "section header table (65280 entries)",
                 id="shnum-huge"),
    pytest.param(mutate(eh("e_shnum", 0), sh(0, "sh_size", 100_000)),
                 "section header table (100000 entries)", id="shnum-extended-huge"),
    pytest.param(mutate(eh("e_shentsize", 64)), "bad e_shentsize 64", id="bad-shentsize"),
    pytest.param(mutate(eh("e_shentsize", 0)), "bad e_shentsize 0", id="shentsize-0"),
    pytest.param(mutate(eh("e_shstrndx", SHNUM)), f"bad e_shstrndx {SHNUM}", id="shstrndx-past"),
    pytest.param(mutate(eh("e_shstrndx", 0xFFFF), sh(0, "sh_link", 500)), "bad e_shstrndx 500",
                 id="shstrndx-xindex"),
    pytest.param(mutate(eh("e_shstrndx", 1)), "e_shstrndx points at section 1 of type 1, not a "
                 "string table", id="shstrndx-not-strtab"),
    pytest.param(mutate(eh("e_shoff", 0)), "without a section header table", id="shnum-no-shoff"),
    # symbol table
    pytest.param(mutate(sh(SYMTAB, "sh_entsize", 0)), f"symbol table (section {SYMTAB}): bad "
                 "sh_entsize 0", id="symtab-entsize-0"),
    pytest.param(mutate(sh(SYMTAB, "sh_entsize", 1)), "bad sh_entsize 1", id="symtab-entsize-1"),
    pytest.param(mutate(sh(SYMTAB, "sh_size", 17)), "sh_size 17 is not a multiple of 16",
                 id="symtab-size"),
    pytest.param(mutate(sh(SYMTAB, "sh_size", 0xFFFFFFF0)), "beyond the end of the file",
                 id="symtab-beyond-eof"),
    pytest.param(mutate(sh(SYMTAB, "sh_link", 0)), "bad sh_link 0", id="symtab-link-0"),
    pytest.param(mutate(sh(SYMTAB, "sh_link", 99)), "bad sh_link 99", id="symtab-link-past"),
    pytest.param(mutate(sh(SYMTAB, "sh_link", 1)), "sh_link points at section 1 of type 1, not "
                 "a string table", id="symtab-link-not-strtab"),
    pytest.param(mutate(sh(STRTAB, "sh_offset", 0xFFFFFF00)), f"string table (section {STRTAB}) "
                 "[0xffffff00", id="strtab-beyond-eof"),
    pytest.param(mutate(sh(STRTAB, "sh_size", field(HELLO, SHDR, SHOFF + 40 * STRTAB, "sh_size")
                           - 1)), "does not end with a NUL byte", id="strtab-unterminated"),
    pytest.param(mutate(lambda d: struct.pack_into("<I", d, SYM0 + 16, 0xFFFF)),
                 "symbol 1 has st_name 65535 beyond its string table", id="st-name-past"),
    # segments
    pytest.param(mutate(ph(0, "p_offset", SIZE)), f"segment 0 file data [{SIZE:#x}, "
                 f"{SIZE + TEXT[1]:#x}) lies beyond the end of the file", id="p-offset-beyond-eof"),
    pytest.param(mutate(ph(0, "p_filesz", 0x10000), ph(0, "p_memsz", 0x10000)),
                 f"segment 0 file data [{TEXT[0]:#x}, {TEXT[0] + 0x10000:#x}) lies beyond the end",
                 id="p-filesz-beyond-eof"),
    pytest.param(mutate(ph(0, "p_filesz", TEXT[1] + 1)), f"segment 0: p_filesz {TEXT[1] + 1:#x} > "
                 f"p_memsz {TEXT[1]:#x}", id="filesz-gt-memsz"),
    pytest.param(mutate(ph(1, "p_filesz", 1), ph(1, "p_memsz", 0)), "p_filesz 0x1 > p_memsz 0x0",
                 id="filesz-memsz-0"),
    pytest.param(mutate(ph(1, "p_paddr", RAM_BASE + 0x800)),
                 "segments 0 and 1 overlap at 0x40000800", id="overlap"),
    pytest.param(mutate(ph(0, "p_paddr", RAM_BASE + 0x1800)), "segments 1 and 0 overlap",
                 id="overlap-reversed"),
    pytest.param(mutate(ph(0, "p_paddr", 0x1000), eh("e_entry", 0x1000)), f"segment 0 at "
                 f"0x1000+{TEXT[1]:#x} lies in flash (read-only memslot flash0), not RAM", id="flash0"),
    pytest.param(mutate(ph(1, "p_paddr", 0x0400_0000)), "lies in flash (read-only memslot flash1)",
                 id="flash1"),
    pytest.param(mutate(ph(0, "p_paddr", 0x0900_0000)), f"segment 0 at 0x9000000+{TEXT[1]:#x} is "
                 "outside guest RAM", id="uart-mmio"),
    pytest.param(mutate(ph(0, "p_paddr", 0x2000_0000)), "outside guest RAM", id="hole"),
    pytest.param(mutate(ph(1, "p_memsz", 0x1000_0000)), "segment 1 at 0x40001000+0x10000000 runs "
                 "past the end of memslot ram at 0x48000000", id="past-ram-end"),
    pytest.param(mutate(ph(1, "p_paddr", 0xFFFF_F000)), "wraps past the 32-bit address space",
                 id="wraps"),
    pytest.param(mutate(ph(0, "p_type", 0), ph(1, "p_type", 4)), "no loadable segments",
                 id="no-pt-load"),
    pytest.param(mutate(ph(0, "p_memsz", 0), ph(0, "p_filesz", 0), ph(1, "p_memsz", 0)),
                 "no loadable segments", id="all-empty"),
    # entry point
    pytest.param(mutate(eh("e_entry", 0x4010_0000)), "entry point 0x40100000 is outside every "
                 "loaded segment", id="entry-outside"),
    pytest.param(mutate(eh("e_entry", 0x4000_2000)), "outside every loaded segment",
                 id="entry-in-bss"),
    pytest.param(mutate(eh("e_entry", 0)), "outside every loaded segment", id="entry-0"),
    pytest.param(mutate(ph(0, "p_flags", 4)), "entry point 0x40000000 is in segment 0, which is "
                 "not executable (p_flags lacks PF_X)", id="entry-not-exec"),
    pytest.param(mutate(eh("e_entry", 0x4000_0002)), "is not word-aligned", id="entry-misaligned"),
]


@pytest.mark.parametrize("data,message", BAD)
def test_bad_elf_is_one_loader_error(tmp_path, virgin, data, message):
    with pytest.raises(LoaderError) as e:
        load_bytes(tmp_path, data, virgin)
    text = str(e.value)
    assert text.startswith(f"{tmp_path / 'guest.elf'}: ") and "\n" not in text
    assert message in text
    assert ram_is_zero(virgin), "a rejected image wrote guest memory"


GOOD = [
    pytest.param(HELLO, id="hello"),
    pytest.param(mutate(eh("e_shoff", 0), eh("e_shnum", 0), eh("e_shstrndx", 0)), id="no-sections"),
    pytest.param(mutate(eh("e_shstrndx", 0)), id="no-section-names"),
    pytest.param(mutate(eh("e_type", 3)), id="et-dyn"),
    pytest.param(mutate(ph(1, "p_type", 6)), id="one-pt-load"),     # .bss turned into PT_PHDR
    pytest.param(mutate(ph(0, "p_vaddr", 0x8000)), id="vaddr-ignored"),
    pytest.param(mutate(eh("e_shnum", 0), sh(0, "sh_size", SHNUM)), id="extended-shnum"),
    pytest.param(mutate(eh("e_shstrndx", 0xFFFF), sh(0, "sh_link", SHNUM - 1)), id="extended-shstrndx"),
]


@pytest.mark.parametrize("data", GOOD)
def test_valid_variants_load(tmp_path, data):
    m = Machine()
    path, img = load_bytes(tmp_path, data, m)
    assert (img.entry, img.thumb) == (RAM_BASE, False)
    assert img.segments[0] == (RAM_BASE, TEXT[1], TEXT[1])
    assert m.host.mem.read(m.ram.pa_of(RAM_BASE), TEXT[1]) == HELLO[TEXT[0]:sum(TEXT)]
    if field(data, EHDR, 0, "e_shoff"):
        assert img.symbol("main") > RAM_BASE


def test_thumb_entry(tmp_path):
    _, img = load_bytes(tmp_path, mutate(eh("e_entry", RAM_BASE + 0x41)), Machine())
    assert (img.entry, img.thumb) == (RAM_BASE + 0x40, True)


def test_segment_zero_fill_and_symbols_unchanged(tmp_path):
    m = Machine()
    m.host.mem.write(m.ram.pa_of(RAM_BASE + 0x1000), b"\xff" * 0x6900)
    img = load(os.path.join(GUESTS, "hello.elf"), m.vm)
    assert isinstance(img, Image) and img.segments == [(RAM_BASE, TEXT[1], TEXT[1]),
                                                        (RAM_BASE + 0x1000, 0, 0x6900)]
    assert not any(m.host.mem.read(m.ram.pa_of(RAM_BASE + 0x1000), 0x6900))
    assert {"main", "_start"} <= img.symbols.keys()


def test_ram_too_small_for_a_segment(tmp_path):
    with pytest.raises(LoaderError, match="runs past the end of memslot ram at 0x40004000"):
        load_bytes(tmp_path, HELLO, Machine(ram=16 << 10))


# ---- files that are not regular ------------------------------------------------------------
def special_files(tmp_path):
    yield "directory", str(tmp_path), "a directory, not a regular file"
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.elf"
        os.mkfifo(fifo)
        yield "fifo", str(fifo), "a named pipe (FIFO), not a regular file"
    if os.path.exists("/dev/zero"):
        yield "dev-zero", "/dev/zero", "a character device, not a regular file"
    yield "missing", str(tmp_path / "nope.elf"), "No such file or directory"
    yield "nul-in-path", "guest\0.elf", "embedded null byte"
    yield "too-long", "x" * 5000, "cannot open"


def test_special_files_are_rejected_without_blocking(tmp_path, virgin):
    seen = []
    for kind, path, message in special_files(tmp_path):
        with pytest.raises(LoaderError) as e:
            load(path, virgin.vm)
        assert path in str(e.value) and message in str(e.value), kind
        seen.append(kind)
    assert "directory" in seen and "missing" in seen


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_cli_fifo_is_one_line_and_does_not_hang(tmp_path):
    fifo = tmp_path / "guest.elf"
    os.mkfifo(fifo)
    p = subprocess.run([sys.executable, "-m", "emu", "run", str(fifo)], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert p.stderr == f"s2emu: error: {fifo}: a named pipe (FIFO), not a regular file\n"


# ---- truncation at any offset ------------------------------------------------------------
@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("trunc") / "guest.elf"


def load_or_reject(path, data, machine):
    path.unlink(missing_ok=True)          # ext4 flushes a file truncated and rewritten
    path.write_bytes(data)
    try:
        return load(str(path), machine.vm)
    except LoaderError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
        return e


@pytest.fixture(scope="module")
def board():
    return Machine()


@settings(max_examples=300, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0, max_value=len(HELLO)))
def test_truncated_hello_loads_or_is_rejected(scratch, board, n):
    result = load_or_reject(scratch, HELLO[:n], board)
    assert isinstance(result, Image) == (n == len(HELLO))     # section headers come last


def test_truncation_at_every_header_boundary(scratch, virgin):
    """Every offset inside the ELF header and program headers, and around each section."""
    cuts = set(range(0, PHOFF + 2 * 32 + 1))
    for i in range(SHNUM):
        base = SHOFF + 40 * i
        off, size = field(HELLO, SHDR, base, "sh_offset"), field(HELLO, SHDR, base, "sh_size")
        cuts |= {base, base + 20, off, off + 1, off + size - 1, off + size}
    for n in sorted(c for c in cuts if c < len(HELLO)):
        assert isinstance(load_or_reject(scratch, HELLO[:n], virgin), LoaderError), n
    assert ram_is_zero(virgin)
