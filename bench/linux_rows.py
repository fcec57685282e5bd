"""Linux rows (issue 10): Debian 12's armmp-lpae kernel with the busybox initramfs of
guests/linux/fetch.py (taken from its cache; the rows are skipped when it is empty - run
`python guests/linux/fetch.py` first), booted with `cryptomgr.notests`.

  linux boot to /init         wall seconds from the kernel's first instruction to the console
                              line "Run /init" (s2emu in-process: Machine, 256 MiB, one vCPU)
  linux boot guest MIPS       the guest instructions of that boot per wall second
  linux boot to /init vs qemu s2emu's wall seconds / qemu-system-arm -M virt -cpu cortex-a15
                              TCG's on the same kernel (its uImage, loaded at the same address)
                              and initrd, measured in the same run, boots interleaved; skipped
                              without QEMU.
--quick boots once per side and stops at 40 M instructions (no /init): a smoke run.
Every boot is checked: the console reaches "Run /init" (quick: the kernel runs at its virtual
addresses with its MMU on).
"""
from __future__ import annotations

import importlib.util
import os
import select
import shutil
import subprocess
import time

from bench.common import BenchError, Context, Result, Rows

ROWS = Rows()
LINUX_ROWS = {"linux boot to /init", "linux boot guest MIPS", "linux boot to /init vs qemu"}
APPEND = "console=ttyAMA0 cryptomgr.notests"
MARK = b"Run /init"
QUICK_STEPS = 40_000_000


def cache_dir() -> str | None:
    """guests/linux/fetch.py's cache, if it holds what the rows boot."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "guests", "linux", "fetch.py")
    spec = importlib.util.spec_from_file_location("s2emu_linux_fetch", path)
    fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch)
    base = fetch.default_cache()
    need = ("Image", "Image.uimg", "initrd.gz")
    return base if all(os.path.exists(os.path.join(base, n)) for n in need) else None


def s2emu_boot(cache: str, quick: bool) -> tuple[float, int]:
    """(wall seconds, guest instructions) to "Run /init" (quick: to QUICK_STEPS)."""
    from emu.boot.linux import boot_linux
    from emu.machine import Machine
    m = Machine(256 << 20)
    boot_linux(m, os.path.join(cache, "Image"), initrd_path=os.path.join(cache, "initrd.gz"),
               append=APPEND)
    t0 = time.perf_counter()
    while MARK not in m.uart.output:
        r = m.run(max_insns=2_000_000)
        if r.reason != "budget":
            raise BenchError(f"linux boot ended early: {r.reason} {r.error or ''}")
        if quick and m.cpu.instructions >= QUICK_STEPS:
            # no console yet (the PL011 driver probes later): the kernel runs at its own
            # virtual addresses with its MMU on
            if not (m.cpu.mmu.s1.enabled and m.cpu.pc >= 0xC0000000):
                raise BenchError(f"linux boot: not running the kernel with its MMU on after "
                                 f"40 M instructions (pc {m.cpu.pc:#x})")
            break
    return time.perf_counter() - t0, m.cpu.instructions


def qemu_boot(cache: str, timeout: float = 300.0) -> float:
    """Wall seconds from QEMU's start to "Run /init" on its console."""
    cmd = ["qemu-system-arm", "-M", "virt", "-cpu", "cortex-a15", "-m", "256", "-nographic",
           "-no-reboot", "-kernel", os.path.join(cache, "Image.uimg"),
           "-initrd", os.path.join(cache, "initrd.gz"), "-append", APPEND]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    out = b""
    try:
        while MARK not in out:
            if time.perf_counter() - t0 > timeout:
                raise BenchError("qemu did not reach /init")
            ready, _, _ = select.select([p.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    raise BenchError("qemu exited before /init")
                out += chunk
        return time.perf_counter() - t0
    finally:
        p.kill()
        p.wait()


@ROWS.register(*sorted(LINUX_ROWS))
def linux_rows(ctx: Context) -> list[Result]:
    cache = cache_dir()
    if cache is None:
        ctx.progress("linux rows skipped: no kernel in the cache (python guests/linux/fetch.py)")
        return []
    if importlib.util.find_spec("libfdt") is None:
        ctx.progress("linux rows skipped: the board's device tree needs pylibfdt "
                     "(pip install -e '.[linux]')")
        return []
    quick = ctx.sizes.reps <= 1
    reps = 1 if quick else 2
    ours, qemu = [], []
    have_qemu = shutil.which("qemu-system-arm") is not None and not quick
    for _ in range(reps):
        ctx.progress("booting Linux on s2emu ...")
        ours.append(s2emu_boot(cache, quick))
        if have_qemu:
            ctx.progress("booting Linux on qemu ...")
            qemu.append(qemu_boot(cache))
    wall, insns = min(ours)
    what = "to 40 M instructions (--quick)" if quick else f"{insns / 1e6:.0f} M instructions"
    rows = [Result("linux boot to /init", round(wall, 1), "s", None, note=what),
            Result("linux boot guest MIPS", round(insns / wall / 1e6, 2), "Minsn/s", None)]
    if qemu:
        rows.append(Result("linux boot to /init vs qemu", round(wall / min(qemu), 1), "x",
                           None, note=f"qemu TCG {min(qemu):.1f} s"))
    return rows


def header_lines(ctx: Context) -> list[str]:
    return [f"linux rows: {cache_dir() or 'no kernel cached'}, {APPEND!r}, 256 MiB, 1 vCPU"]
