"""Kernel image formats for `--kernel` (Linux Documentation/arch/arm/booting.rst): the
uncompressed Image, the self-decompressing zImage (its payload decompressed here, so the
guest does not spend ~2 G instructions on its decompressor storing to executable pages -
DESIGN 8), a legacy U-Boot uImage around either, or an ELF (vmlinux).

`kernel_image(data)` names the format and gives the Image to load, with the address it wants
(uImage: its load address; otherwise None: the board's default). gzip, XZ, LZMA and LZ4...:
Debian's armmp kernels are XZ; gzip is handled too, the rest is refused by name.
"""
from __future__ import annotations

import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass

ZIMAGE_MAGIC_AT, ZIMAGE_MAGIC = 0x24, 0x016F2818
UIMAGE_MAGIC = 0x27051956
XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b\x08"
ELF_MAGIC = b"\x7fELF"


class KernelError(ValueError):
    """A kernel file s2emu cannot boot (one line)."""


@dataclass
class Kernel:
    format: str                  # "Image", "zImage", "uImage(...)", "ELF"
    image: bytes                 # what to load (not for ELF)
    load_address: int | None     # where it must go (uImage); None: the board's choice


def kernel_image(data: bytes) -> Kernel:
    """Recognise `data` and return the Image to place in RAM."""
    if data[:4] == ELF_MAGIC:
        return Kernel("ELF", data, None)
    if len(data) >= 64 and struct.unpack_from(">I", data)[0] == UIMAGE_MAGIC:
        return _uimage(data)
    if len(data) >= 0x30 and struct.unpack_from("<I", data, ZIMAGE_MAGIC_AT)[0] == ZIMAGE_MAGIC:
        return Kernel("zImage", zimage_payload(data), None)
    if len(data) < 64:
        raise KernelError(f"{len(data)} bytes: too small to be a kernel image")
    return Kernel("Image", data, None)


def _uimage(data: bytes) -> Kernel:
    """A legacy U-Boot image: 64-byte big-endian header (magic, header CRC, time, size, load,
    entry, data CRC, OS, arch, type, compression, name)."""
    (_magic, hcrc, _t, size, load, entry, dcrc, _os, arch, kind, comp,
     _name) = struct.unpack_from(">7I4B32s", data)
    header = bytearray(data[:64])
    header[4:8] = b"\0\0\0\0"
    if zlib.crc32(header) != hcrc:
        raise KernelError("uImage: header CRC mismatch")
    if len(data) < 64 + size:
        raise KernelError(f"uImage: truncated ({len(data) - 64} of {size} data bytes)")
    body = data[64:64 + size]
    if zlib.crc32(body) != dcrc:
        raise KernelError("uImage: data CRC mismatch")
    if arch != 2 or kind != 2:
        raise KernelError(f"uImage: not an ARM kernel (arch {arch}, type {kind})")
    if comp == 1:
        body = gzip.decompress(body)
    elif comp != 0:
        raise KernelError(f"uImage: compression {comp} is not supported (none or gzip)")
    if load != entry:
        raise KernelError(f"uImage: entry {entry:#x} differs from load {load:#x}")
    inner = kernel_image(body)
    return Kernel(f"uImage({inner.format})", inner.image, load)


def zimage_payload(zimage: bytes) -> bytes:
    """The uncompressed Image inside an ARM zImage: the payload is a compressed stream (XZ or
    gzip; the decompressor's own copy of the magic may come first, so each occurrence is
    tried) followed by the Image's size, 32-bit little-endian (scripts/size_append)."""
    for magic, decompressor in ((XZ_MAGIC, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)),
                                (GZIP_MAGIC, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))):
        at = zimage.find(magic)
        while at >= 0:
            dec = decompressor()
            try:
                image = dec.decompress(zimage[at:])
            except (lzma.LZMAError, zlib.error):
                at = zimage.find(magic, at + 1)
                continue
            tail = dec.unused_data
            if (getattr(dec, "eof", True)) and len(tail) >= 4 and \
                    struct.unpack_from("<I", tail)[0] == len(image):
                return image
            at = zimage.find(magic, at + 1)
    raise KernelError("zImage: no XZ or gzip payload ending with its size (other "
                      "compressions: boot the uncompressed Image)")


def uimage(image: bytes, address: int) -> bytes:
    """`mkimage -A arm -O linux -T kernel -C none -a ADDR -e ADDR`: the 64-byte legacy
    header (magic, header and data CRC-32, time 0) and the image - for QEMU, which starts a
    raw Image where it cannot run."""
    def header(hcrc: int) -> bytes:
        return struct.pack(">7I4B32s", UIMAGE_MAGIC, hcrc, 0, len(image), address, address,
                           zlib.crc32(image), 5, 2, 2, 0, b"Linux")
    return header(zlib.crc32(header(0))) + image
