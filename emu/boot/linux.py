"""The Linux boot protocol on the board (Documentation/arch/arm/booting.rst; what QEMU's
hw/arm/boot.c does for -kernel): the kernel Image in RAM, the initrd and the device tree
above it, and vCPU 0 entering the kernel in SVC mode with IRQs/FIQs masked and the MMU off,
r0 = 0, r1 = ~0 (no machine number: DT only), r2 = the DTB's address.

Placement in RAM (base 0x40000000): the Image at +0x208000 (2 MiB + TEXT_OFFSET: Linux
derives PHYS_OFFSET from where it runs, rounded down to 128 MiB, and puts its initial page
tables just below it - DESIGN 8), or where a uImage says; the initrd at +min(RAM/2, 128 MiB)
or above the kernel's image; the DTB 4 KiB-aligned after the initrd (after the kernel without
one). A vmlinux ELF is loaded by its program headers and entered the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from . import dtb as dtbmod
from . import loader
from .kernel import Kernel, KernelError, kernel_image

IMAGE_OFFSET = 0x0020_8000
PAGE = 0x1000
SVC_MASKED = 0x1D3                    # SVC mode, A, I, F set (booting.rst: IRQs and FIQs off)


@dataclass
class Boot:
    """Where everything went, for the user and for tests."""
    kernel: str                       # the format
    entry: int
    kernel_end: int
    initrd: tuple[int, int] | None    # [start, end)
    dtb_address: int
    dtb: bytes


def _align(x: int, a: int = PAGE) -> int:
    return (x + a - 1) & ~(a - 1)


def _read(path: str, what: str) -> bytes:
    try:
        if not os.path.isfile(path):
            raise KernelError(f"{what} {path}: not a regular file")
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise KernelError(f"{what} {path}: {e.strerror}") from None


def board_of(m) -> dtbmod.Board:
    """The device-tree description of machine `m`."""
    return dtbmod.Board(ram_size=m.ram.size, ram_base=m.ram.ipa, cpus=len(m.cpus))


def boot_linux(m, kernel_path: str, *, initrd_path: str | None = None, append: str = "",
               dtb_path: str | None = None) -> Boot:
    """Load a kernel (and initrd, DTB) into `m` and set vCPU 0 up to enter it. KernelError,
    DtbError or LoaderError (one line) on bad input; nothing is written into the guest until
    all the inputs have been read and checked (a vmlinux ELF excepted: its segments are
    loaded before the initrd is placed above them)."""
    ram_lo, ram_hi = m.ram.ipa, m.ram.ipa + m.ram.size
    k = kernel_image(_read(kernel_path, "kernel"))
    initrd = _read(initrd_path, "initrd") if initrd_path else None
    user_dtb = dtbmod.read_dtb(dtb_path) if dtb_path else None
    if k.format == "ELF":
        image = None
        m.image = loader.load(kernel_path, m.vm)      # checks everything before writing
        entry = m.image.entry | (1 if m.image.thumb else 0)
        end = max(ipa + memsz for ipa, _filesz, memsz in m.image.segments)
    else:
        at = k.load_address if k.load_address is not None else ram_lo + IMAGE_OFFSET
        if not ram_lo <= at or at + len(k.image) > ram_hi:
            raise KernelError(f"kernel ({k.format}, {len(k.image)} bytes at {at:#x}) does not "
                              f"fit in RAM [{ram_lo:#x}, {ram_hi:#x}): give more --mem")
        image, entry, end = k.image, at, at + len(k.image)
    # Linux's own image also needs its BSS and early allocations after `end`: leave room.
    initrd_at = max(ram_lo + min(m.ram.size // 2, 128 << 20), _align(end + (8 << 20)))
    span = None
    if initrd is not None:
        span = (initrd_at, initrd_at + len(initrd))
        if span[1] > ram_hi:
            raise KernelError(f"initrd ({len(initrd)} bytes) does not fit in RAM after the "
                              f"kernel: give more --mem")
    dtb_at = _align(span[1]) if span else initrd_at
    blob = dtbmod.patch_chosen(user_dtb, append, span) if user_dtb is not None else \
        dtbmod.build_dtb(board_of(m), append, span)
    if dtb_at + len(blob) > ram_hi:
        raise KernelError("the device tree does not fit in RAM: give more --mem")
    if image is not None:
        m.vm.write_guest(entry, image, debugger=True)
    if initrd is not None:
        m.vm.write_guest(span[0], initrd, debugger=True)
    m.vm.write_guest(dtb_at, blob, debugger=True)
    cpu = m.cpu
    cpu.set_cpsr(SVC_MASKED)
    cpu.set_reg(0, 0)
    cpu.set_reg(1, 0xFFFFFFFF)
    cpu.set_reg(2, dtb_at)
    cpu.set_pc(entry & ~1, bool(entry & 1))
    return Boot(k.format, entry, end, span, dtb_at, blob)


def dump_dtb(m, path: str, *, append: str = "", initrd: tuple[int, int] | None = None) -> int:
    """--dumpdtb: write the board's DTB (as a boot would make it) to `path`; its size."""
    blob = dtbmod.build_dtb(board_of(m), append, initrd)
    try:
        with open(path, "wb") as f:
            f.write(blob)
    except OSError as e:
        raise KernelError(f"--dumpdtb {path}: {e.strerror}") from None
    return len(blob)


__all__ = ["boot_linux", "dump_dtb", "Boot", "Kernel", "KernelError", "board_of"]
