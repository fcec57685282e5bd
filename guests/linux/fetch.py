#!/usr/bin/env python3
"""Fetch Debian 12's Linux kernel and busybox for armhf, and build a Linux guest from them.

    python guests/linux/fetch.py [--cache DIR] [--refresh] [-q]

With apt only (the machine's own Debian sources, armhf indexes kept in the cache, nothing
installed on the host): `linux-image-6.1.0-<N>-armmp-lpae` (the highest N) and
`busybox-static`. It writes, in the cache directory ($S2EMU_LINUX_CACHE, else
$XDG_CACHE_HOME/s2emu/linux, else ~/.cache/s2emu/linux):

    zImage      the kernel as Debian ships it (/boot/vmlinuz-*)
    Image       the uncompressed kernel, XZ payload of the zImage (load it at 0x40208000)
    Image.uimg  Image behind a U-Boot legacy header (load = entry = 0x40208000), so that
                `qemu-system-arm -kernel` runs it where s2emu does (QEMU puts a raw image
                at RAM + 0x10000, where an uncompressed ARM kernel cannot start)
    initrd.gz   a newc cpio (gzip) whose /init is a busybox script: mounts proc, sys, dev,
                prints a banner, runs a shell on the console, powers off when it exits
    dirtyram    dirtyram.c built static with arm-linux-gnueabihf-gcc, also in the initramfs
                as /bin/dirtyram (skipped, with a note, when the cross compiler is missing)
    manifest.json  versions, sizes and SHA-256 of the above

A second run finds the manifest up to date and does nothing (no network); --refresh asks
apt for a newer kernel. Exit status: 0 done, 1 error, 2 bad usage, 3 download failed.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from emu.boot.kernel import KernelError, uimage, zimage_payload  # noqa: E402  (the repo's)

RECIPE = 2                           # bump when what the outputs contain changes
HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_RE = re.compile(r"^linux-image-6\.1\.0-(\d+)-armmp-lpae$")
CROSS_CC = "arm-linux-gnueabihf-gcc"
IMAGE_ADDRESS = 0x40208000           # DESIGN 8: RAM + 2 MiB + TEXT_OFFSET

INIT = """#!/bin/sh
# /init of the s2emu Linux guest (written by guests/linux/fetch.py)
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "s2emu linux guest: $(uname -sr), busybox initramfs ('poweroff -f' stops it)"
cd /root
if command -v cttyhack >/dev/null; then setsid cttyhack sh; else sh; fi
echo "init: the shell exited, powering off"
poweroff -f
"""


class FetchError(Exception):
    """One line for the user; `status` is the exit status."""
    def __init__(self, msg: str, status: int = 1) -> None:
        super().__init__(msg)
        self.status = status


def default_cache() -> str:
    if os.environ.get("S2EMU_LINUX_CACHE"):
        return os.environ["S2EMU_LINUX_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "s2emu", "linux")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write via a temporary file and rename: an interrupted run leaves no half file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---- apt ------------------------------------------------------------------------------------

def apt(cache: str, tool: str, *args: str, cwd: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run apt-get/apt-cache on armhf indexes of our own (state and cache under `cache`).
    With `check`, a failure is a FetchError (status 3 for a download) naming apt's first
    error."""
    state = os.path.join(cache, "apt")
    for d in ("lists/partial", "cache/archives/partial"):
        os.makedirs(os.path.join(state, d), exist_ok=True)
    opts = ["-oAPT::Architecture=armhf", "-oAPT::Architectures=armhf",
            f"-oDir::State::Lists={state}/lists", f"-oDir::Cache={state}/cache",
            "-oAcquire::Languages=none", "-q"]
    if os.geteuid() == 0:            # the _apt sandbox user cannot write into root's home
        opts.append("-oAPT::Sandbox::User=root")
    if shutil.which(tool) is None or shutil.which("dpkg-deb") is None:
        raise FetchError(f"{tool} or dpkg-deb not found: this script needs Debian's apt")
    r = subprocess.run([tool, *opts, *args], cwd=cwd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise FetchError(f"{tool} {args[0]}: {first_problem(r.stderr)}",
                         3 if args[0] in ("update", "download") else 1)
    return r


def first_problem(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith(("E:", "W:"))]
    return " ".join((lines or [stderr or "failed"])[0].split())


def update(cache: str, say) -> None:
    """apt-get update. It exits 0 when it reaches no mirror, and non-zero when one suite
    fails (e.g. mid-sync): what counts is whether armhf package indexes arrived."""
    r = apt(cache, "apt-get", "update", check=False)
    lists = os.path.join(cache, "apt", "lists")
    if not any("binary-armhf_Packages" in f for f in os.listdir(lists)):
        raise FetchError(f"apt-get update got no armhf package index (offline?): "
                         f"{first_problem(r.stderr)}", 3)
    if r.returncode != 0 or "W: Failed to fetch" in r.stderr:
        say(f"fetch: warning: apt-get update: {first_problem(r.stderr)} (continuing with "
            f"the indexes that arrived)")


def latest_kernel(cache: str) -> str:
    names = apt(cache, "apt-cache", "pkgnames", "linux-image-6.1.0-").stdout.split()
    found = sorted((int(m.group(1)), n) for n in names if (m := KERNEL_RE.match(n)))
    if not found:
        raise FetchError("no linux-image-6.1.0-<N>-armmp-lpae in this machine's apt sources "
                         "(they must include Debian 12 bookworm)")
    return found[-1][1]


def download(cache: str, packages: list[str]) -> None:
    """Into an empty debs/, so that what is there afterwards is exactly what apt chose."""
    debs = os.path.join(cache, "debs")
    os.makedirs(debs, exist_ok=True)
    for name in os.listdir(debs):
        if name.endswith(".deb"):
            os.unlink(os.path.join(debs, name))
    apt(cache, "apt-get", "download", *packages, cwd=debs)


def find_debs(cache: str) -> tuple[str, str] | None:
    """The newest kernel .deb and a busybox-static .deb already in the cache, if both are."""
    debs = os.path.join(cache, "debs")
    names = os.listdir(debs) if os.path.isdir(debs) else []
    kernels = sorted((int(m.group(1)), n) for n in names
                     if (m := KERNEL_RE.match(n.split("_")[0])) and n.endswith(".deb"))
    busybox = sorted(n for n in names if n.startswith("busybox-static_") and n.endswith(".deb"))
    if not kernels or not busybox:
        return None
    return os.path.join(debs, kernels[-1][1]), os.path.join(debs, busybox[-1])


def deb_field(deb: str, field: str) -> str:
    r = subprocess.run(["dpkg-deb", "-f", deb, field], capture_output=True, text=True)
    if r.returncode != 0:
        raise FetchError(f"{deb}: not a Debian package ({' '.join(r.stderr.split())})")
    return r.stdout.strip()


def deb_member(deb: str, member: str) -> bytes:
    """One file of a .deb's data archive (dpkg-deb streams it; nothing else is unpacked)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    data = None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                if info.name == member and info.isfile():
                    data = tar.extractfile(info).read()
                    break
    except tarfile.TarError as e:
        raise FetchError(f"{deb}: broken data archive ({e})") from None
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()
    if data is None:
        raise FetchError(f"{deb}: no {member}")
    return data


# ---- the kernel and the initramfs -----------------------------------------------------------

def zimage_to_image(zimage: bytes) -> bytes:
    """The uncompressed Image inside Debian's zImage (emu.boot.kernel does the work)."""
    try:
        return zimage_payload(zimage)
    except KernelError as e:
        raise FetchError(str(e)) from None


def cpio_newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A newc ("070701") cpio archive of (name, mode, data, rdev) entries, in order; every
    entry owned by root with mtime 0, so the same inputs give the same bytes. A symlink's
    data is its target. Ends with the TRAILER!!! entry."""
    out = bytearray()
    for ino, (name, mode, data, rdev) in enumerate(entries + [("TRAILER!!!", 0, b"", 0)], 1):
        raw = name.encode() + b"\0"
        nlink = 2 if mode & 0o170000 == 0o040000 else 1
        fields = (ino if name != "TRAILER!!!" else 0, mode, 0, 0, nlink, 0, len(data), 0, 0,
                  rdev >> 8, rdev & 0xFF, len(raw), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def initramfs(busybox: bytes, dirtyram: bytes | None) -> bytes:
    DIR, EXE, LINK, CHR = 0o040755, 0o100755, 0o120777, 0o020600
    entries = [(d, DIR, b"", 0) for d in ("bin", "dev", "etc", "proc", "root", "sbin", "sys",
                                          "tmp", "usr", "usr/bin", "usr/sbin")]
    entries += [("dev/console", CHR, b"", 5 << 8 | 1),
                ("bin/busybox", EXE, busybox, 0),
                ("bin/sh", LINK, b"busybox", 0),
                ("init", EXE, INIT.encode(), 0)]
    if dirtyram is not None:
        entries.append(("bin/dirtyram", EXE, dirtyram, 0))
    return gzip.compress(cpio_newc(entries), compresslevel=9, mtime=0)


def build_dirtyram(cache: str) -> bytes | None:
    """dirtyram.c, static for armhf Linux, or None without the cross compiler."""
    if shutil.which(CROSS_CC) is None:
        return None
    out = os.path.join(cache, ".dirtyram.build")
    r = subprocess.run([CROSS_CC, "-static", "-O2", "-s", "-Wall", "-Wextra", "-Werror",
                        "-Wl,--build-id=none", "-o", out, os.path.join(HERE, "dirtyram.c")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise FetchError(f"{CROSS_CC} dirtyram.c failed: {' '.join(r.stderr.split())[:300]}")
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return data


def recipe_key() -> str:
    """What the built outputs depend on besides the .debs."""
    with open(os.path.join(HERE, "dirtyram.c"), "rb") as f:
        src = f.read()
    cc = shutil.which(CROSS_CC) is not None
    return sha256(b"%d\0%s\0%s\0%d" % (RECIPE, INIT.encode(), src, cc))


# ---- main ------------------------------------------------------------------------------------

def up_to_date(cache: str) -> dict | None:
    try:
        with open(os.path.join(cache, "manifest.json")) as f:
            man = json.load(f)
        ok = man["recipe_key"] == recipe_key() and all(
            os.path.getsize(os.path.join(cache, name)) == info["size"]
            for name, info in man["files"].items())
        return man if ok else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fetch(cache: str, refresh: bool, say) -> dict:
    os.makedirs(cache, exist_ok=True)
    man = None if refresh else up_to_date(cache)
    if man is not None:
        say(f"fetch: up to date in {cache}")
        return man
    debs = None if refresh else find_debs(cache)
    if debs is None:
        say("fetch: apt-get update (armhf indexes)")
        update(cache, say)
        kernel = latest_kernel(cache)
        say(f"fetch: apt-get download {kernel} busybox-static")
        download(cache, [kernel, "busybox-static"])
        debs = find_debs(cache)
        if debs is None:
            raise FetchError(f"apt-get download left no .deb files in {cache}/debs")
    kdeb, bdeb = debs
    kpkg = deb_field(kdeb, "Package")
    kver = KERNEL_RE.match(kpkg)
    if kver is None:
        raise FetchError(f"{kdeb}: package {kpkg!r} is not linux-image-6.1.0-<N>-armmp-lpae")
    release = kpkg.removeprefix("linux-image-")
    say(f"fetch: extracting /boot/vmlinuz-{release} and /bin/busybox")
    zimage = deb_member(kdeb, f"./boot/vmlinuz-{release}")
    busybox = deb_member(bdeb, "./bin/busybox")
    image = zimage_to_image(zimage)
    dirtyram = build_dirtyram(cache)
    if dirtyram is None:
        say(f"fetch: note: no {CROSS_CC} (apt-get install gcc-arm-linux-gnueabihf): "
            f"dirtyram skipped")
    files = {"zImage": zimage, "Image": image, "Image.uimg": uimage(image, IMAGE_ADDRESS),
             "initrd.gz": initramfs(busybox, dirtyram)}
    if dirtyram is not None:
        files["dirtyram"] = dirtyram
    elif os.path.exists(os.path.join(cache, "dirtyram")):
        os.unlink(os.path.join(cache, "dirtyram"))
    for name, data in files.items():
        write_atomic(os.path.join(cache, name), data, 0o755 if name == "dirtyram" else 0o644)
    man = {"recipe_key": recipe_key(), "kernel_package": kpkg, "kernel_release": release,
           "kernel_version": deb_field(kdeb, "Version"),
           "busybox_version": deb_field(bdeb, "Version"),
           "image_load_address": f"{IMAGE_ADDRESS:#x}",
           "files": {n: {"size": len(d), "sha256": sha256(d)} for n, d in files.items()}}
    write_atomic(os.path.join(cache, "manifest.json"), json.dumps(man, indent=2).encode())
    return man


def summary(cache: str, man: dict) -> str:
    lines = [f"kernel     {man['kernel_package']} {man['kernel_version']}",
             f"busybox    busybox-static {man['busybox_version']}"]
    for name, info in man["files"].items():
        lines.append(f"{name:<10} {os.path.join(cache, name)}  {info['size']:,} bytes")
    if "dirtyram" not in man["files"]:
        lines.append(f"dirtyram   not built (no {CROSS_CC})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fetch.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", help="cache directory (default: $S2EMU_LINUX_CACHE, else "
                    "$XDG_CACHE_HOME/s2emu/linux, else ~/.cache/s2emu/linux)")
    ap.add_argument("--refresh", action="store_true", help="ask apt for a newer kernel")
    ap.add_argument("-q", "--quiet", action="store_true", help="only errors")
    args = ap.parse_args(argv)
    cache = os.path.abspath(args.cache or default_cache())
    say = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    try:
        man = fetch(cache, args.refresh, say)
    except FetchError as e:
        print(f"fetch: error: {e}", file=sys.stderr)
        return e.status
    except OSError as e:
        print(f"fetch: error: {e.filename or cache}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fetch: interrupted", file=sys.stderr)
        return 130
    if not args.quiet:
        print(summary(cache, man))
    return 0


if __name__ == "__main__":
    sys.exit(main())
