"""The Linux guest (guests/linux/fetch.py): Debian's kernel and busybox fetched with apt, the
Image, the initramfs; then Linux booted on QEMU with QEMU's own DTB and with ours.

Marked slow: the first run downloads ~44 MB into the cache ($S2EMU_LINUX_CACHE or
~/.cache/s2emu/linux) and later runs reuse it. Skipped when apt cannot download (offline)."""
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time

import pytest

from emu.boot.dtb import Board, build_dtb

from conftest import ROOT, linux_cache

FETCH = os.path.join(ROOT, "guests", "linux", "fetch.py")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache() -> str:
    return linux_cache()


def cpio_entries(data: bytes) -> dict:
    """name -> (mode, data) of a newc archive."""
    out, at = {}, 0
    while True:
        assert data[at:at + 6] == b"070701", at
        f = [int(data[at + 6 + 8 * i:at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[at + 110:at + 110 + namesize - 1].decode()
        at = (at + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data[at:at + size])
        at = (at + size + 3) & ~3


def test_artefacts(cache):
    with open(os.path.join(cache, "manifest.json")) as f:
        man = json.load(f)
    assert man["kernel_package"].startswith("linux-image-6.1.0-")
    for name, info in man["files"].items():
        assert os.path.getsize(os.path.join(cache, name)) == info["size"], name
    with open(os.path.join(cache, "zImage"), "rb") as f:
        assert struct.unpack_from("<I", f.read(0x28), 0x24)[0] == 0x016F2818
    image = os.path.getsize(os.path.join(cache, "Image"))
    with open(os.path.join(cache, "Image.uimg"), "rb") as f:
        magic, _, _, size, load, entry = struct.unpack(">6I", f.read(24))
    assert (magic, size, load, entry) == (0x27051956, image, 0x40208000, 0x40208000)
    with gzip.open(os.path.join(cache, "initrd.gz")) as f:
        files = cpio_entries(f.read())
    mode, init = files["init"]
    assert mode == 0o100755 and init.startswith(b"#!/bin/sh\n")
    assert files["bin/sh"] == (0o120777, b"busybox")
    assert files["dev/console"][0] == 0o020600
    assert files["bin/busybox"][1][:4] == b"\x7fELF"
    assert ("bin/dirtyram" in files) == ("dirtyram" in man["files"])


def test_second_run_does_nothing(cache):
    before = {n: os.stat(os.path.join(cache, n)).st_mtime_ns for n in os.listdir(cache)}
    r = subprocess.run([sys.executable, FETCH], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.startswith("fetch: up to date"), r.stderr
    assert {n: os.stat(os.path.join(cache, n)).st_mtime_ns for n in os.listdir(cache)} == before


def dirtyram_sums(total: int, per_round: int, rounds: int, report: int) -> list[str]:
    """What guests/linux/dirtyram.c prints, computed here."""
    mem, page, lines = [0] * total, 0, []
    for r in range(rounds):
        for _ in range(per_round):
            mem[page], page = r + 1, (page + 1) % total
        if (r + 1) % report == 0 or r + 1 == rounds:
            s = sum((i + 1) * v for i, v in enumerate(mem)) & 0xFFFFFFFF
            lines.append(f"dirtyram: round {r + 1} sum {s:08x}")
    return lines


def boot_qemu(cache: str, extra: list[str], commands: list[str], timeout: float = 240):
    """Boot Image.uimg + initrd.gz on QEMU virt, wait for the shell, type `commands` one
    prompt at a time, then `poweroff -f`. (exit status, console text, seconds to /init's
    banner)."""
    argv = ["qemu-system-arm", "-M", "virt", "-cpu", "cortex-a15", "-m", "256",
            "-nographic", "-no-reboot", "-kernel", os.path.join(cache, "Image.uimg"),
            "-initrd", os.path.join(cache, "initrd.gz"),
            "-append", "console=ttyAMA0 cryptomgr.notests", *extra]
    start = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    out = bytearray()
    reader = threading.Thread(target=lambda: [out.extend(b) for b in iter(
        lambda: p.stdout.read1(4096), b"")], daemon=True)
    reader.start()

    def wait_for(text: bytes, count: int, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while out.count(text) < count and p.poll() is None and time.monotonic() < end:
            time.sleep(0.02)
        return out.count(text) >= count

    banner = None
    try:
        if wait_for(b"s2emu linux guest", 1, timeout):
            banner = time.monotonic() - start
            for n, cmd in enumerate(commands + ["poweroff -f"], 1):
                assert wait_for(b" # ", n, 60), out.decode(errors="replace")[-2000:]
                p.stdin.write(cmd.encode() + b"\n")
                p.stdin.flush()
        status = p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(5)
    return status, out.decode(errors="replace"), banner


@pytest.fixture(scope="module")
def qemu():
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm absent")


@pytest.mark.parametrize("dtb", ["qemu", "ours"])
def test_boots_to_shell_on_qemu(cache, qemu, tmp_path, dtb):
    """Debian's kernel reaches the busybox shell, answers `uname -a`, counts timer ticks in
    /proc/interrupts and powers off through PSCI. With our DTB it runs the physical timer
    on PPI 14 (INTID 30), the one the emulated timer raises; with QEMU's, the virtual one."""
    extra = []
    if dtb == "ours":
        pytest.importorskip("libfdt", reason="the s2emu[linux] extra is not installed")
        path = tmp_path / "board.dtb"
        path.write_bytes(build_dtb(Board(ram_size=256 << 20)))
        extra = ["-dtb", str(path)]
    has_dirtyram = os.path.exists(os.path.join(cache, "dirtyram"))
    commands = ["uname -a", "cat /proc/interrupts"]
    commands += ["dirtyram 64 8 0 24 10"] if has_dirtyram else []
    status, out, banner = boot_qemu(cache, extra, commands)
    assert status == 0 and banner is not None, out[-3000:]
    assert "Linux (none) 6.1.0-" in out and "reboot: Power down" in out
    timer = [ln.split() for ln in out.splitlines() if ln.rstrip().endswith("arch_timer")]
    if dtb == "ours":
        assert "timer(s) running at 62.50MHz (phys)" in out
        assert {t[3]: int(t[1]) > 0 for t in timer} == {"29": False, "30": True}
    else:
        assert "(virt)" in out and [t[3] for t in timer if int(t[1])] == ["27"]
    if has_dirtyram:
        for line in dirtyram_sums(64, 8, 24, 10):
            assert line in out
