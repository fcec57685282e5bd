"""Load a bare-metal ARM ELF into guest RAM (as `qemu-system-arm -kernel guest.elf` does)."""
from __future__ import annotations

from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile


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


def load(path: str, vm) -> Image:
    """Copy every PT_LOAD segment to its physical address (IPA) in `vm`'s RAM, zero the rest."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise LoaderError(f"cannot open {path}: {e.strerror}") from None
    with f:
        try:
            elf = ELFFile(f)
        except ELFError as e:
            raise LoaderError(f"{path}: not an ELF file ({e})") from None
        if elf["e_machine"] != "EM_ARM" or elf.elfclass != 32 or not elf.little_endian:
            raise LoaderError(f"{path}: not a 32-bit little-endian ARM ELF "
                              f"(machine {elf['e_machine']}, class {elf.elfclass})")
        segments = []
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                continue
            ipa, filesz, memsz = seg["p_paddr"], seg["p_filesz"], seg["p_memsz"]
            slot = vm.memslot(ipa)
            if slot is None or ipa + memsz > slot.end:
                raise LoaderError(f"{path}: segment at {ipa:#x}+{memsz:#x} is outside guest RAM")
            data = seg.data()[:filesz] + bytes(memsz - filesz)
            vm.host.mem.write(slot.pa_of(ipa), data)
            segments.append((ipa, filesz, memsz))
        if not segments:
            raise LoaderError(f"{path}: no loadable segments")
        symbols = {}
        symtab = elf.get_section_by_name(".symtab")
        if symtab is not None:
            for sym in symtab.iter_symbols():
                if sym.name and sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE"):
                    symbols.setdefault(sym.name, sym["st_value"])
        entry = elf["e_entry"]
    return Image(path=path, entry=entry & ~1, thumb=bool(entry & 1), segments=segments,
                 symbols=symbols)
