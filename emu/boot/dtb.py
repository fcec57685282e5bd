"""The board's flattened device tree (DTB): generate it, check a user's, patch /chosen.

The tree describes the QEMU `virt`-like board (DESIGN 2a) the way `qemu-system-arm -M virt`
does (hw/arm/virt.c), and nothing the machine does not really have. Bindings followed (Linux
Documentation/devicetree/bindings): arm,gic (3 interrupt cells: type 0 = SPI / 1 = PPI,
number, flags), arm,arch_timer, arm,psci, arm,pl011 + arm,primecell, fixed-clock, chosen.
libfdt (the reference implementation Linux and U-Boot build in) writes and checks the blobs.

Layout choices (each one a property of this board, kept in one place):
- **#address-cells = #size-cells = 2** at the root, as QEMU's virt: RAM may reach 255 GiB
  (`--mem`), above 4 GiB, so addresses and sizes take two cells everywhere.
- **Timer: the physical timer only.** The emulated timer is CNTP_* on virtual time (trapped
  through CNTHCTL); the virtual timer cannot be trapped on ARMv7 and never fires under
  Unicorn (DESIGN 5b). The binding's `interrupts` are positional: secure physical (PPI 13),
  non-secure physical (PPI 14), virtual (PPI 11), hypervisor (PPI 10). Linux's arm_arch_timer
  (6.1, `arch_timer_of_init`/`arch_timer_select_ppi`) on 32-bit ARM, entered in SVC mode,
  uses the *virtual* timer whenever slot 2 is present; without it, it uses slot 0 and, when
  slot 1 is there too, requests both slot-0 and slot-1 PPIs with the physical-timer handler.
  So we list exactly slots 0 and 1 (PPI 13 and 14): the machine raises PPI 14 (INTID 30,
  a non-secure PL1 guest's CNTP), PPI 13 is listed only because slot 0 must be filled and
  never fires. `arm,cpu-registers-not-fw-configured` (32-bit only) makes Linux pick the
  physical timer even if a virtual PPI were added, and makes the vDSO fall back to system
  calls (arch/arm/kernel/vdso.c `cntvct_functional`): user space then never reads CNTVCT,
  which follows the host clock here, only the trapped CNTPCT on virtual time. `always-on`:
  the timer keeps counting in WFI (no C3STOP, no broadcast timer needed).
- **No flash node by default.** The board has flash memslots at 0 and 0x04000000, but the
  model (emu/devices/flash.py) answers no CFI commands, so a `cfi-flash` node would make
  Linux probe a device that is not there; `Board(flash=...)` adds QEMU's node when it is.
- No rng-seed/kaslr-seed (QEMU adds random ones): the same inputs give the same blob.
"""
from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

try:
    import libfdt
except ImportError:          # the s2emu[linux] extra (pylibfdt builds from source with swig)
    libfdt = None

MAGIC = 0xD00DFEED
HEADER_SIZE = 40                 # struct fdt_header, version 17
MAX_SIZE = 2 << 20               # Linux: arm64 MAX_FDT_SIZE; arm32 maps the DTB in a 2 MiB fixmap
MAX_BOOTARGS = 1023              # arm COMMAND_LINE_SIZE is 1024 with the NUL
MAX_CPUS = 8                     # GICv2 has 8 CPU interfaces

# Interrupt specifiers (arm,gic binding): type, number, flags.
GIC_SPI, GIC_PPI = 0, 1
IRQ_TYPE_LEVEL_HIGH = 4
# The PSCI 0.2 SMC32 function IDs the 0.1 binding's properties name (QEMU lists them too).
PSCI_FN = {"cpu_suspend": 0x84000001, "cpu_off": 0x84000002, "cpu_on": 0x84000003,
           "migrate": 0x84000005}
PHANDLE_GIC, PHANDLE_APB_PCLK = 1, 2


class DtbError(ValueError):
    """A bad board description, command line value or DTB file; the message is one line."""


@dataclass(frozen=True)
class Board:
    """What the DTB describes. Interrupt numbers as the GIC binding counts them: an SPI n is
    INTID 32 + n, a PPI n is INTID 16 + n."""
    ram_size: int = 128 << 20
    ram_base: int = 0x4000_0000
    cpus: int = 1
    uart_base: int = 0x0900_0000
    uart_size: int = 0x1000
    uart_spi: int = 1                        # QEMU virt UART0: SPI 1 (INTID 33)
    gicd_base: int = 0x0800_0000
    gicd_size: int = 0x1000                  # GICv2 frames (IHI 0048B tables 4-1, 4-2), as
    gicc_base: int = 0x0801_0000             # the vGIC maps them; QEMU reserves 64 KiB each
    gicc_size: int = 0x2000
    timer_ppis: tuple[int, ...] = (13, 14)   # binding slots: secure, non-secure physical
    timer_frequency: int | None = None       # Hz; None: Linux reads CNTFRQ
    apb_pclk_hz: int = 24_000_000            # QEMU's "clk24mhz"
    flash: tuple[tuple[int, int], ...] = ()  # CFI flash banks (base, size); none by default

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise DtbError(msg)
        need(1 <= self.cpus <= MAX_CPUS, f"{self.cpus} vCPUs: a GICv2 board has 1 to 8")
        need(self.ram_size > 0 and self.ram_size % 4096 == 0 and self.ram_base % 4096 == 0,
             f"RAM {self.ram_base:#x}+{self.ram_size:#x} is not page aligned")
        need(self.ram_base + self.ram_size <= 1 << 40, "RAM ends above the 40-bit IPA space")
        need(0 <= self.uart_spi < 988, f"UART SPI {self.uart_spi} is not 0-987")
        need(1 <= len(self.timer_ppis) <= 4 and all(0 <= p < 16 for p in self.timer_ppis),
             f"timer PPIs {self.timer_ppis}: 1 to 4 PPI numbers 0-15")
        need(self.timer_frequency is None or 0 < self.timer_frequency < 1 << 32,
             f"timer frequency {self.timer_frequency} Hz does not fit 32 bits")

    def affinity(self, cpu: int) -> int:
        """MPIDR[23:0] of vCPU `cpu`, the cpu node's `reg`: QEMU virt's GICv2 layout, eight
        CPUs per cluster (Aff1 = cluster, Aff0 = CPU). The guest's MPIDR is this | 1 << 31."""
        return (cpu // 8) << 8 | cpu % 8


def _cells(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def _reg(base: int, size: int) -> bytes:
    """One (address, size) pair in 2 + 2 cells."""
    return _cells(base >> 32, base & 0xFFFFFFFF, size >> 32, size & 0xFFFFFFFF)


def _strings(*items: str) -> bytes:
    return b"".join(s.encode() + b"\0" for s in items)


def _check_initrd(board: Board, initrd: tuple[int, int] | None) -> None:
    if initrd is None:
        return
    start, end = initrd
    ram_end = board.ram_base + board.ram_size
    if not board.ram_base <= start < end <= ram_end:
        raise DtbError(f"initrd {start:#x}-{end:#x} is not a non-empty range inside RAM "
                       f"{board.ram_base:#x}-{ram_end:#x}")


def _check_bootargs(bootargs: str) -> bytes:
    data = bootargs.encode("utf-8", "surrogateescape")
    if b"\0" in data:
        raise DtbError("kernel command line contains a NUL character")
    if len(data) > MAX_BOOTARGS:
        raise DtbError(f"kernel command line is {len(data)} bytes; Linux on ARM takes at most "
                       f"{MAX_BOOTARGS}")
    return data


def uart_path(board: Board) -> str:
    return f"/serial@{board.uart_base:x}"


def build_dtb(board: Board, bootargs: str = "",
              initrd: tuple[int, int] | None = None) -> bytes:
    """The board's DTB. `initrd` = (start, end) guest physical addresses, end exclusive
    (`linux,initrd-end` is the first byte after the image), written as 64-bit values."""
    args = _check_bootargs(bootargs)
    _check_initrd(board, initrd)
    sw = _libfdt().FdtSw()
    sw.finish_reservemap()
    with sw.add_node(""):
        sw.property("compatible", _strings("linux,dummy-virt"))
        sw.property_string("model", "s2emu virt")
        sw.property_u32("#address-cells", 2)
        sw.property_u32("#size-cells", 2)
        sw.property_u32("interrupt-parent", PHANDLE_GIC)
        with sw.add_node("aliases"):
            sw.property_string("serial0", uart_path(board))
        with sw.add_node("chosen"):
            sw.property("bootargs", args + b"\0")
            sw.property_string("stdout-path", uart_path(board))
            if initrd is not None:
                sw.property_u64("linux,initrd-start", initrd[0])
                sw.property_u64("linux,initrd-end", initrd[1])
        with sw.add_node(f"memory@{board.ram_base:x}"):
            sw.property_string("device_type", "memory")
            sw.property("reg", _reg(board.ram_base, board.ram_size))
        with sw.add_node("cpus"):
            sw.property_u32("#address-cells", 1)
            sw.property_u32("#size-cells", 0)
            for i in range(board.cpus):
                aff = board.affinity(i)
                with sw.add_node(f"cpu@{aff:x}"):
                    sw.property_string("device_type", "cpu")
                    sw.property("compatible", _strings("arm,cortex-a15"))
                    sw.property_u32("reg", aff)
                    sw.property_string("enable-method", "psci")
        with sw.add_node("psci"):
            sw.property("compatible", _strings("arm,psci-1.0", "arm,psci-0.2"))
            sw.property_string("method", "hvc")
            for name, fn in PSCI_FN.items():
                sw.property_u32(name, fn)
        with sw.add_node("timer"):
            sw.property("compatible", _strings("arm,armv7-timer"))
            # Flags: level-high, and the PPI's CPU mask in bits [15:8] (GICv2 only).
            flags = ((1 << board.cpus) - 1) << 8 | IRQ_TYPE_LEVEL_HIGH
            sw.property("interrupts", b"".join(_cells(GIC_PPI, p, flags)
                                               for p in board.timer_ppis))
            sw.property("always-on", b"")
            sw.property("arm,cpu-registers-not-fw-configured", b"")
            if board.timer_frequency is not None:
                sw.property_u32("clock-frequency", board.timer_frequency)
        with sw.add_node(f"interrupt-controller@{board.gicd_base:x}"):
            sw.property("compatible", _strings("arm,cortex-a15-gic"))
            sw.property("interrupt-controller", b"")
            sw.property_u32("#interrupt-cells", 3)
            sw.property_u32("#address-cells", 0)         # no interrupt-map children
            sw.property("reg", _reg(board.gicd_base, board.gicd_size)
                        + _reg(board.gicc_base, board.gicc_size))
            sw.property_u32("phandle", PHANDLE_GIC)
        with sw.add_node("apb-pclk"):
            sw.property("compatible", _strings("fixed-clock"))
            sw.property_u32("#clock-cells", 0)
            sw.property_u32("clock-frequency", board.apb_pclk_hz)
            sw.property_string("clock-output-names", "clk24mhz")
            sw.property_u32("phandle", PHANDLE_APB_PCLK)
        with sw.add_node(uart_path(board)[1:]):
            sw.property("compatible", _strings("arm,pl011", "arm,primecell"))
            sw.property("reg", _reg(board.uart_base, board.uart_size))
            sw.property("interrupts", _cells(GIC_SPI, board.uart_spi, IRQ_TYPE_LEVEL_HIGH))
            sw.property("clocks", _cells(PHANDLE_APB_PCLK, PHANDLE_APB_PCLK))
            sw.property("clock-names", _strings("uartclk", "apb_pclk"))
        if board.flash:
            with sw.add_node(f"flash@{board.flash[0][0]:x}"):
                sw.property("compatible", _strings("cfi-flash"))
                sw.property("reg", b"".join(_reg(b, s) for b, s in board.flash))
                sw.property_u32("bank-width", 4)
    fdt = sw.as_fdt()
    fdt.pack()
    return bytes(fdt.as_bytearray())


# ---- a user's DTB ----------------------------------------------------------------------------

def _libfdt():
    """libfdt, or a one-line DtbError saying how to get it."""
    if libfdt is None:
        raise DtbError("device trees need pylibfdt: pip install 's2emu[linux]' (it builds "
                       "from source: apt-get install swig)")
    return libfdt


def _why(err: int) -> str:
    return {libfdt.BADMAGIC: "bad magic", libfdt.BADVERSION: "unsupported version",
            libfdt.TRUNCATED: "a block runs past the end",
            libfdt.BADSTRUCTURE: "corrupt structure block",
            libfdt.BADLAYOUT: "blocks in an impossible order",
            libfdt.BADOFFSET: "an offset points outside the blob",
            libfdt.BADSTATE: "unfinished tree"}.get(err, libfdt.strerror(-err))


def _layout_error(blob: bytes) -> str | None:
    """What libfdt's full check leaves out: the memory reservation map (16-byte address,
    size entries from off_mem_rsvmap, ended by a size of 0 as libfdt and Linux read it)
    must end inside the blob, and the three blocks must not overlap; otherwise Linux would
    reserve whatever the structure block's bytes say."""
    off_struct, off_strings, off_rsv, version = struct.unpack_from(">IIII", blob, 8)
    size_strings, size_struct = struct.unpack_from(">II", blob, 32)
    rsv_end = next((at + 16 for at in range(off_rsv, len(blob) - 15, 16)
                    if struct.unpack_from(">Q", blob, at + 8)[0] == 0), None)
    if rsv_end is None:
        return "the memory reservation map has no end"
    if version < 17:                      # no size_dt_struct: up to the next block
        size_struct = min([o for o in (off_strings, off_rsv) if o > off_struct]
                          + [len(blob)]) - off_struct
    blocks = sorted([(off_rsv, rsv_end), (off_struct, off_struct + size_struct),
                     (off_strings, off_strings + size_strings)])
    if any(a[1] > b[0] for a, b in zip(blocks, blocks[1:])):
        return "its blocks overlap (memory reservations, structure, strings)"
    return None


def check_dtb(blob: bytes, name: str = "DTB") -> bytes:
    """The blob (cut to the header's totalsize) if it is a complete, well-formed DTB that
    libfdt's full check accepts; else DtbError "<name>: <why>". The header is checked here
    first: libfdt trusts totalsize and would read past a short buffer."""
    def fail(why: str) -> DtbError:
        return DtbError(f"{name}: {why}")
    _libfdt()
    if not blob:
        raise fail("empty file, not a device tree blob")
    if len(blob) > MAX_SIZE:
        raise fail(f"{len(blob)} bytes, more than the {MAX_SIZE >> 20} MiB a DTB may have")
    if len(blob) < 8:
        raise fail(f"{len(blob)} bytes, too short for a device tree blob")
    magic, total = struct.unpack_from(">II", blob)
    if magic != MAGIC:
        raise fail(f"not a device tree blob (magic {magic:#010x}, expected {MAGIC:#010x})")
    if len(blob) < HEADER_SIZE:
        raise fail(f"truncated device tree blob: {len(blob)} bytes, the header alone is "
                   f"{HEADER_SIZE}")
    if total > len(blob):
        raise fail(f"truncated device tree blob: the header says {total} bytes, there are "
                   f"{len(blob)}")
    if total > MAX_SIZE or total < HEADER_SIZE:
        raise fail(f"bad device tree blob: totalsize {total} is not {HEADER_SIZE} bytes to "
                   f"{MAX_SIZE >> 20} MiB")
    blob = bytes(blob[:total])
    err = libfdt.fdt_check_full(bytearray(blob), total)
    if err == 0 and (why := _layout_error(blob)):
        raise fail(f"bad device tree blob: {why}")
    if err < 0:
        why = _why(-err)
        raise fail(f"bad device tree blob: {why} (libfdt {libfdt.strerror(err)})")
    try:          # names are not checked by libfdt; pylibfdt decodes them as UTF-8
        nodes(blob)
    except (libfdt.FdtException, SystemError, UnicodeDecodeError):
        raise fail("bad device tree blob: a node or property name is not text") from None
    return blob


def read_dtb(path: str) -> bytes:
    """A user's DTB file (`--dtb`), checked by `check_dtb`; errors name the path. Only a
    regular file is read, and none larger than a DTB may be."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise DtbError(f"{path}: not a regular file")
        if st.st_size > MAX_SIZE:
            raise DtbError(f"{path}: {st.st_size} bytes, more than the {MAX_SIZE >> 20} MiB "
                           f"a DTB may have")
        with open(path, "rb") as f:
            data = f.read(MAX_SIZE + 1)
    except (OSError, ValueError) as e:
        if isinstance(e, DtbError):
            raise
        raise DtbError(f"cannot open {path}: {getattr(e, 'strerror', None) or e}") from None
    return check_dtb(data, path)


def nodes(blob: bytes) -> dict[str, dict[str, bytes]]:
    """Every node of a checked DTB by path, with its properties' raw values, in blob order."""
    fdt = _libfdt().Fdt(blob)
    out: dict[str, dict[str, bytes]] = {}
    node, depth = 0, 0
    while node >= 0 and depth >= 0:          # depth -1: past the root's end
        props, off = {}, fdt.first_property_offset(node, libfdt.QUIET_NOTFOUND)
        while off >= 0:
            prop = fdt.get_property_by_offset(off)
            props[prop.name] = bytes(prop)
            off = fdt.next_property_offset(off, libfdt.QUIET_NOTFOUND)
        out[fdt.get_path(node)] = props
        node, depth = fdt.next_node(node, depth, libfdt.QUIET_NOTFOUND)
    return out


def describe(blob: bytes) -> str:
    """One line about a checked DTB: size, version, model, CPUs."""
    tree = nodes(blob)
    model = tree["/"].get("model", b"no model\0").rstrip(b"\0").decode(errors="replace")
    cpus = sum(1 for path in tree if path.startswith("/cpus/cpu@"))
    version = struct.unpack_from(">I", blob, 20)[0]
    return f"{len(blob)} bytes, DTB version {version}, model {model!r}, {cpus} CPUs"


def patch_chosen(blob: bytes, bootargs: str | None = None,
                 initrd: tuple[int, int] | None = None) -> bytes:
    """A copy of a checked DTB with /chosen (created if missing) holding `bootargs` (when not
    None; else the blob's own) and `linux,initrd-start/end` (64-bit) when `initrd` is given;
    without an initrd, stale `linux,initrd-*` properties are removed, since no image would
    be where they point. Everything else is kept byte for byte (memory reservations too)."""
    args = _check_bootargs(bootargs) if bootargs is not None else None
    if initrd is not None and not 0 <= initrd[0] < initrd[1] < 1 << 64:
        raise DtbError(f"initrd {initrd[0]:#x}-{initrd[1]:#x} is not a non-empty range")
    fdt = libfdt.Fdt(check_dtb(blob))
    try:
        fdt.resize(fdt.totalsize() + len(args or b"") + 256)
        chosen = fdt.path_offset("/chosen", [libfdt.NOTFOUND])
        if chosen < 0:
            chosen = fdt.add_subnode(0, "chosen")
        if args is not None:
            fdt.setprop(chosen, "bootargs", args + b"\0")
        for i, prop in enumerate(("linux,initrd-start", "linux,initrd-end")):
            if initrd is not None:
                fdt.setprop_u64(chosen, prop, initrd[i])
            else:
                fdt.delprop(chosen, prop, [libfdt.NOTFOUND])
        fdt.pack()
    except libfdt.FdtException as e:
        raise DtbError(f"DTB: cannot patch /chosen (libfdt {libfdt.strerror(e.err)})") from None
    return bytes(fdt.as_bytearray())
