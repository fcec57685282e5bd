"""The board's device tree (emu/boot/dtb.py): what it describes, /chosen, user DTBs.

Every node and property the board needs is checked from the parsed blob (a table); the
cross-checks run dtc and QEMU's own `virt` DTB when they are installed."""
import os
import shutil
import struct
import subprocess

import pytest

pytest.importorskip("libfdt", reason="the s2emu[linux] extra (pylibfdt) is not installed")

from emu.boot import dtb  # noqa: E402
from emu.boot.dtb import Board, DtbError, build_dtb, check_dtb, nodes, patch_chosen, read_dtb

GIC, SERIAL, CLOCK = "/interrupt-controller@8000000", "/serial@9000000", "/apb-pclk"


def cells(*v: int) -> bytes:
    return struct.pack(f">{len(v)}I", *v)


def strs(*s: str) -> bytes:
    return b"".join(x.encode() + b"\0" for x in s)


def phandle_of(tree: dict, path: str) -> bytes:
    return tree[path]["phandle"]


# (node, property, expected value) for the default board: 1 vCPU, 128 MiB.
EXPECTED = [
    ("/", "compatible", strs("linux,dummy-virt")),
    ("/", "#address-cells", cells(2)),
    ("/", "#size-cells", cells(2)),
    ("/memory@40000000", "device_type", strs("memory")),
    ("/memory@40000000", "reg", cells(0, 0x40000000, 0, 128 << 20)),
    ("/cpus", "#address-cells", cells(1)),
    ("/cpus", "#size-cells", cells(0)),
    ("/cpus/cpu@0", "device_type", strs("cpu")),
    ("/cpus/cpu@0", "compatible", strs("arm,cortex-a15")),
    ("/cpus/cpu@0", "reg", cells(0)),
    ("/cpus/cpu@0", "enable-method", strs("psci")),
    ("/psci", "compatible", strs("arm,psci-1.0", "arm,psci-0.2")),
    ("/psci", "method", strs("hvc")),
    ("/psci", "cpu_suspend", cells(0x84000001)),
    ("/psci", "cpu_off", cells(0x84000002)),
    ("/psci", "cpu_on", cells(0x84000003)),
    ("/psci", "migrate", cells(0x84000005)),
    ("/timer", "compatible", strs("arm,armv7-timer")),
    # Secure and non-secure physical timer PPIs only: no virtual (11), no hypervisor (10).
    ("/timer", "interrupts", cells(1, 13, 0x104, 1, 14, 0x104)),
    ("/timer", "always-on", b""),
    ("/timer", "arm,cpu-registers-not-fw-configured", b""),
    (GIC, "compatible", strs("arm,cortex-a15-gic")),
    (GIC, "interrupt-controller", b""),
    (GIC, "#interrupt-cells", cells(3)),
    (GIC, "reg", cells(0, 0x08000000, 0, 0x1000, 0, 0x08010000, 0, 0x2000)),
    (CLOCK, "compatible", strs("fixed-clock")),
    (CLOCK, "#clock-cells", cells(0)),
    (CLOCK, "clock-frequency", cells(24_000_000)),
    (SERIAL, "compatible", strs("arm,pl011", "arm,primecell")),
    (SERIAL, "reg", cells(0, 0x09000000, 0, 0x1000)),
    (SERIAL, "interrupts", cells(0, 1, 4)),
    (SERIAL, "clock-names", strs("uartclk", "apb_pclk")),
    ("/chosen", "bootargs", strs("console=ttyAMA0")),
    ("/chosen", "stdout-path", strs(SERIAL)),
    ("/aliases", "serial0", strs(SERIAL)),
]


@pytest.fixture(scope="module")
def tree() -> dict:
    return nodes(build_dtb(Board(), "console=ttyAMA0"))


@pytest.mark.parametrize("path,prop,value", EXPECTED, ids=[f"{p}:{n}" for p, n, _ in EXPECTED])
def test_node_property(tree, path, prop, value):
    assert tree[path][prop] == value


def test_references(tree):
    """interrupt-parent names the GIC; the PL011's two clocks are the apb-pclk."""
    assert tree["/"]["interrupt-parent"] == phandle_of(tree, GIC)
    assert tree[SERIAL]["clocks"] == phandle_of(tree, CLOCK) * 2
    assert len({phandle_of(tree, GIC), phandle_of(tree, CLOCK)}) == 2


def test_nothing_else(tree):
    """Exactly the board: no flash (no CFI model), no PMU, no seeds, no virtual devices."""
    assert set(tree) == {"/", "/aliases", "/chosen", "/memory@40000000", "/cpus",
                         "/cpus/cpu@0", "/psci", "/timer", GIC, CLOCK, SERIAL}
    assert set(tree["/chosen"]) == {"bootargs", "stdout-path"}


def test_round_trip():
    blob = build_dtb(Board(cpus=3, ram_size=1 << 30), "a b c", (0x48000000, 0x48123456))
    assert check_dtb(blob) == blob
    assert blob == build_dtb(Board(cpus=3, ram_size=1 << 30), "a b c", (0x48000000, 0x48123456))
    assert dtb.describe(blob) == f"{len(blob)} bytes, DTB version 17, model 's2emu virt', 3 CPUs"


@pytest.mark.parametrize("n", range(1, 9))
def test_cpus(n):
    tree = nodes(build_dtb(Board(cpus=n)))
    cpus = [p for p in tree if p.startswith("/cpus/")]
    assert cpus == [f"/cpus/cpu@{i}" for i in range(n)]
    assert [tree[p]["reg"] for p in cpus] == [cells(Board(cpus=n).affinity(i)) for i in range(n)]
    mask = (1 << n) - 1
    assert tree["/timer"]["interrupts"] == cells(1, 13, mask << 8 | 4, 1, 14, mask << 8 | 4)


def test_ram_above_4g():
    tree = nodes(build_dtb(Board(ram_size=255 << 30)))
    assert tree["/memory@40000000"]["reg"] == cells(0, 0x40000000, 0x3f, 0xc0000000)


@pytest.mark.parametrize("initrd", [None, (0x44000000, 0x44100000), (0x40000000, 0x48000000)])
def test_chosen(initrd):
    chosen = nodes(build_dtb(Board(), "console=ttyAMA0 quiet", initrd))["/chosen"]
    assert chosen["bootargs"] == strs("console=ttyAMA0 quiet")
    if initrd is None:
        assert "linux,initrd-start" not in chosen and "linux,initrd-end" not in chosen
    else:
        assert chosen["linux,initrd-start"] == struct.pack(">Q", initrd[0])
        assert chosen["linux,initrd-end"] == struct.pack(">Q", initrd[1])


def test_flash_when_asked():
    tree = nodes(build_dtb(Board(flash=((0, 64 << 20), (64 << 20, 64 << 20)))))
    assert tree["/flash@0"] == {"compatible": strs("cfi-flash"),
                                "reg": cells(0, 0, 0, 64 << 20, 0, 64 << 20, 0, 64 << 20),
                                "bank-width": cells(4)}


@pytest.mark.parametrize("make,words", [
    (lambda: Board(cpus=0), "0 vCPUs"),
    (lambda: Board(cpus=9), "9 vCPUs"),
    (lambda: Board(ram_size=1000), "not page aligned"),
    (lambda: Board(ram_size=1 << 40), "40-bit"),
    (lambda: Board(timer_ppis=()), "timer PPIs"),
    (lambda: Board(timer_ppis=(13, 30)), "timer PPIs"),
    (lambda: build_dtb(Board(), "x" * 1024), "at most 1023"),
    (lambda: build_dtb(Board(), "a\0b"), "NUL"),
    (lambda: build_dtb(Board(), "", (0x48000000, 0x48000000)), "non-empty range inside RAM"),
    (lambda: build_dtb(Board(), "", (0x3fff0000, 0x40010000)), "non-empty range inside RAM"),
    (lambda: build_dtb(Board(), "", (0x47ff0000, 0x48000001)), "non-empty range inside RAM"),
])
def test_bad_board_or_arguments(make, words):
    with pytest.raises(DtbError, match=words):
        make()


# ---- user DTBs -------------------------------------------------------------------------------

GOOD = build_dtb(Board(), "console=ttyAMA0")


def corrupt_struct(blob: bytes) -> bytes:
    off = struct.unpack_from(">I", blob, 8)[0]            # off_dt_struct: FDT_BEGIN_NODE
    return blob[:off] + cells(0x77) + blob[off + 4:]


def poke(blob: bytes, at: int, data: bytes) -> bytes:
    return blob[:at] + data + blob[at + len(data):]


RSVMAP, STRINGS = struct.unpack_from(">I", GOOD, 16)[0], struct.unpack_from(">I", GOOD, 12)[0]


def reservations_into_structure() -> bytes:
    """A reservation whose map runs on into the structure block, where 8 zero bytes of a
    property value (read as a size of 0) end it: libfdt's check passes this."""
    import libfdt
    sw = libfdt.FdtSw()
    sw.finish_reservemap()
    with sw.add_node(""):
        sw.property("a", bytes(16))
    fdt = sw.as_fdt()
    fdt.pack()
    blob = bytes(fdt.as_bytearray())
    return poke(blob, struct.unpack_from(">I", blob, 16)[0], cells(0, 0x40000000, 0, 0x1000))


def reservations_inside_structure() -> bytes:
    """off_mem_rsvmap moved into the structure block, the first place libfdt accepts."""
    import libfdt
    start = struct.unpack_from(">I", GOOD, 8)[0]
    for off in range(start, STRINGS):
        blob = poke(GOOD, 16, cells(off))
        if libfdt.fdt_check_full(bytearray(blob), len(blob)) == 0:
            return blob
    raise AssertionError("libfdt rejects every such blob")


BAD_FILES = [
    ("empty", b"", "empty file"),
    ("tiny", b"\xd0\x0d", "too short"),
    ("elf", b"\x7fELF" + bytes(60), "not a device tree blob (magic 0x7f454c46"),
    ("text", b"/dts-v1/;\n/ { };\n", "not a device tree blob"),
    ("short header", GOOD[:24], "the header alone is 40"),
    ("truncated", GOOD[:len(GOOD) // 2], f"the header says {len(GOOD)} bytes, there are"),
    ("totalsize tiny", GOOD[:4] + cells(16) + GOOD[8:], "totalsize 16"),
    ("corrupt structure", corrupt_struct(GOOD), "bad device tree blob"),
    ("bad version", GOOD[:20] + cells(99, 99) + GOOD[28:], "bad device tree blob"),
    ("unterminated reservations", poke(GOOD, RSVMAP, cells(0, 0x40000000, 0, 0x1000)),
     "a block runs past the end"),
    ("reservations into structure", reservations_into_structure(), "its blocks overlap"),
    ("reservations inside structure", reservations_inside_structure(), "its blocks overlap"),
    ("name not text", poke(GOOD, STRINGS, b"\x80"), "a node or property name is not text"),
    ("too large", GOOD + bytes((2 << 20) + 1 - len(GOOD)), "more than the 2 MiB"),
]


@pytest.mark.parametrize("data,words", [(d, w) for _, d, w in BAD_FILES],
                         ids=[n for n, _, _ in BAD_FILES])
def test_bad_dtb_file(tmp_path, data, words):
    path = tmp_path / "bad.dtb"
    path.write_bytes(data)
    with pytest.raises(DtbError) as e:
        read_dtb(str(path))
    msg = str(e.value)
    assert words in msg and msg.startswith(f"{path}: ") and "\n" not in msg


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_dtb_not_a_file(tmp_path, kind):
    path = tmp_path / "x.dtb"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(DtbError, match="cannot open|not a regular file"):
        read_dtb(str(path))


def test_read_good_dtb(tmp_path):
    path = tmp_path / "good.dtb"
    path.write_bytes(GOOD + b"\0" * 100)                  # padding after totalsize is cut
    assert read_dtb(str(path)) == GOOD


def test_patch_chosen():
    """bootargs replaced, initrd added then removed; every other node kept as it was."""
    patched = patch_chosen(GOOD, "root=/dev/ram", (0x48000000, 0x48200000))
    before, after = nodes(GOOD), nodes(patched)
    assert after["/chosen"] == {"bootargs": strs("root=/dev/ram"),
                                "stdout-path": strs(SERIAL),
                                "linux,initrd-start": struct.pack(">Q", 0x48000000),
                                "linux,initrd-end": struct.pack(">Q", 0x48200000)}
    assert {p: v for p, v in after.items() if p != "/chosen"} == \
        {p: v for p, v in before.items() if p != "/chosen"}
    again = nodes(patch_chosen(patched))                  # no initrd: stale entries go
    assert again["/chosen"] == {"bootargs": strs("root=/dev/ram"), "stdout-path": strs(SERIAL)}


def test_patch_adds_chosen_and_keeps_reservations():
    import libfdt
    sw = libfdt.FdtSw()
    sw.add_reservemap_entry(0x40000000, 0x1000)
    sw.finish_reservemap()
    with sw.add_node(""):
        sw.property_u32("#address-cells", 2)
    fdt = sw.as_fdt()
    fdt.pack()
    patched = patch_chosen(bytes(fdt.as_bytearray()), "quiet")
    assert nodes(patched)["/chosen"] == {"bootargs": strs("quiet")}
    assert libfdt.Fdt(patched).get_mem_rsv(0) == [0x40000000, 0x1000]


def test_patch_rejects_garbage():
    with pytest.raises(DtbError, match="DTB: not a device tree blob"):
        patch_chosen(b"hello world, not a dtb", "x")


# ---- cross-checks ----------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("dtc") is None, reason="dtc (device-tree-compiler) absent")
@pytest.mark.parametrize("board", [Board(), Board(cpus=8, ram_size=3 << 30,
                                                  flash=((0, 64 << 20), (64 << 20, 64 << 20)))])
def test_dtc_accepts(tmp_path, board):
    """dtc decompiles the blob with no warning, and its source compiles back to the same
    tree (decompiled phandles are bare numbers, which dtc warns about on the way back)."""
    blob = build_dtb(board, "console=ttyAMA0", (0x44000000, 0x44100000))
    (tmp_path / "b.dtb").write_bytes(blob)
    r = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", "-o", str(tmp_path / "b.dts"),
                        str(tmp_path / "b.dtb")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(tmp_path / "c.dtb"),
                        str(tmp_path / "b.dts")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert nodes((tmp_path / "c.dtb").read_bytes()) == nodes(blob)


def by_compatible(tree: dict, compat: str) -> dict:
    [props] = [v for v in tree.values() if compat.encode() + b"\0" in v.get("compatible", b"")]
    return props


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm absent")
def test_same_board_as_qemu_virt(tmp_path):
    """QEMU's own DTB for `-M virt -cpu cortex-a15 -smp 2 -m 256` puts every device we
    describe at the same address with the same interrupt (its GIC frames are 64 KiB
    windows, ours the architectural 4 and 8 KiB); its timer lists the virtual and
    hypervisor PPIs after the two physical ones we keep."""
    out = tmp_path / "virt.dtb"
    subprocess.run(["qemu-system-arm", "-M", f"virt,dumpdtb={out}", "-cpu", "cortex-a15",
                    "-smp", "2", "-m", "256", "-nographic"], capture_output=True, timeout=60,
                   check=True)
    qemu = nodes(read_dtb(str(out)))
    ours = nodes(build_dtb(Board(cpus=2, ram_size=256 << 20)))
    q, o = by_compatible(qemu, "arm,pl011"), by_compatible(ours, "arm,pl011")
    assert (q["reg"], q["interrupts"]) == (o["reg"], o["interrupts"])
    q, o = by_compatible(qemu, "arm,cortex-a15-gic")["reg"], ours[GIC]["reg"]
    assert (q[:8], q[16:24]) == (o[:8], o[16:24]) == (cells(0, 0x08000000), cells(0, 0x08010000))
    assert by_compatible(qemu, "fixed-clock")["clock-frequency"] == \
        ours[CLOCK]["clock-frequency"]
    assert qemu["/memory@40000000"]["reg"] == ours["/memory@40000000"]["reg"]
    assert qemu["/"]["#address-cells"] == ours["/"]["#address-cells"] == cells(2)
    assert qemu["/psci"]["method"] == ours["/psci"]["method"]
    for fn in dtb.PSCI_FN:
        assert qemu["/psci"][fn] == ours["/psci"][fn]
    q_timer = by_compatible(qemu, "arm,armv7-timer")["interrupts"]
    assert q_timer[:24] == ours["/timer"]["interrupts"]
    assert q_timer[24:] == cells(1, 11, 0x304, 1, 10, 0x304)        # virtual, hypervisor
    q_cpus = sorted(v["reg"] for p, v in qemu.items() if p.startswith("/cpus/cpu@"))
    assert q_cpus == [ours["/cpus/cpu@0"]["reg"], ours["/cpus/cpu@1"]["reg"]]
    assert by_compatible(qemu, "cfi-flash")["reg"] == nodes(build_dtb(
        Board(flash=((0, 64 << 20), (64 << 20, 64 << 20)))))["/flash@0"]["reg"]


# ---- libfdt is C: a corrupt blob must give DtbError, never a crash or another exception ------

from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)),
                min_size=1, max_size=6))
def test_mutated_blobs(edits):
    data = bytearray(GOOD)
    for at, value in edits:
        data[at] = value
    try:
        blob = check_dtb(bytes(data))
    except DtbError as e:
        assert "\n" not in str(e)
        return
    dtb.describe(blob)
    assert check_dtb(patch_chosen(blob, "x", (0x1000, 0x2000)))
