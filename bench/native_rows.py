"""Peer rows (issue 11): s2emu against qemu-system-arm on the same bare-metal guests, each run
a whole child process, the configurations interleaved (rotating order), best of N.

  compute guest ns per insn             s2emu's default mode (exact counts): CPU ns per guest
                                        instruction of guests/compute.elf (~993 M instructions)
  compute guest cost vs qemu icount     s2emu default / QEMU `-icount shift=0`, CPU per insn
  compute guest cost vs qemu            s2emu default / QEMU TCG (no -icount), CPU per insn
  compute guest no-icount cost vs qemu  s2emu `--no-icount` / QEMU TCG, CPU per insn
  hello whole process vs qemu           wall time of `s2emu run guests/hello.elf` / of
                                        `qemu-system-arm ... -kernel guests/hello.elf`
The s2emu side is `python -m emu run ELF [--no-icount]` (the environment's S2EMU_NATIVE
applies), QEMU's `qemu-system-arm -M virt -cpu cortex-a15 -nographic -monitor none -no-reboot
[-icount shift=0] -kernel ELF`. CPU time = the child's user + system time (getrusage
RUSAGE_CHILDREN around each run), not wall. Start-up is excluded on both sides alike: cost
per instruction = (best CPU of the compute guest - best CPU of hello, same configuration) /
(their instruction counts' difference). The counts are s2emu's exact ones (checked equal on
every default-mode run); QEMU runs the same instructions: every run's console must equal
s2emu's, byte for byte. --quick runs guests/compute_quick.elf (13.8 M instructions) once,
start-up not subtracted (it would drown the difference): a smoke run, not a measurement.
Without qemu-system-arm only "compute guest ns per insn" is measured.
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

from bench.common import BenchError, Context, Result, Rows

ROWS = Rows()
NATIVE_ROWS = {"compute guest ns per insn", "compute guest cost vs qemu icount",
               "compute guest cost vs qemu", "compute guest no-icount cost vs qemu",
               "hello whole process vs qemu"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUESTS = os.path.join(ROOT, "guests")
_COUNT = re.compile(rb"\[s2emu\] off: instructions (\d+)")
# configurations: (name, runs s2emu, exact counts / -icount)
CONFIGS = [("s2emu", True, True), ("s2emu no-icount", True, False),
           ("qemu icount", False, True), ("qemu", False, False)]


def qemu() -> str | None:
    return shutil.which("qemu-system-arm")


def s2emu_cmd(elf: str, icount: bool) -> list[str]:
    return [sys.executable, "-m", "emu", "run", elf] + ([] if icount else ["--no-icount"])


def qemu_cmd(elf: str, icount: bool) -> list[str]:
    return [qemu() or "qemu-system-arm", "-M", "virt", "-cpu", "cortex-a15", "-nographic",
            "-monitor", "none", "-no-reboot"] + (["-icount", "shift=0"] if icount else []) + \
        ["-kernel", elf]


def child_env() -> dict[str, str]:
    """The environment of every child: this one, but Python may write its bytecode caches
    (as for any installed program; with PYTHONDONTWRITEBYTECODE set, as on some CI and
    sandbox images, every s2emu start would compile all its sources again)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def python_floor(reps: int) -> tuple[float, float]:
    """Best wall seconds of `python -c pass` and of importing numpy, unicorn and pyelftools
    (what any Python program on these libraries pays before its own code)."""
    def best(code: str) -> float:
        out = []
        for _ in range(max(reps, 3)):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True,
                           env=dict(child_env(), OPENBLAS_NUM_THREADS="1"),   # as s2emu's
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
            out.append(time.perf_counter() - t0)
        return min(out)
    return best("pass"), best("import numpy, unicorn, elftools.elf.elffile")


class Run:
    """One finished child process: its CPU seconds (user + system), wall seconds, console
    (CR LF as LF) and, for s2emu's counted runs, the instructions it reports."""

    def __init__(self, cmd: list[str], timeout: float = 600.0) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, env=child_env())
        self.wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if p.returncode != 0:
            raise BenchError(f"{' '.join(cmd)}: exit status {p.returncode}: "
                             f"{p.stderr.decode(errors='replace')[-300:]}")
        self.console = p.stdout.replace(b"\r\n", b"\n")
        m = _COUNT.search(p.stderr)
        self.insns = int(m.group(1)) if m else None


def measure(guests: dict[str, str], configs: list[tuple[str, bool, bool]], reps: int,
            progress=lambda msg: None) -> dict[tuple[str, str], list[Run]]:
    """Every (guest, configuration) `reps` times, interleaved: each rep runs them all, in an
    order rotated by one per rep. Checks every run: exit status 0, the console equal to the
    first s2emu run's of that guest (which must end with "<guest>: done"), and s2emu's exact
    instruction count equal on every counted run."""
    jobs = [(g, c) for g in guests for c in configs]
    runs: dict[tuple[str, str], list[Run]] = {(g, c[0]): [] for g, c in jobs}
    want_console: dict[str, bytes] = {}
    want_insns: dict[str, int] = {}
    for rep in range(reps):
        k = rep % len(jobs)
        for guest, (name, ours, icount) in jobs[k:] + jobs[:k]:
            progress(f"{guest} on {name} ({rep + 1}/{reps}) ...")
            elf = os.path.join(GUESTS, guests[guest])
            r = Run(s2emu_cmd(elf, icount) if ours else qemu_cmd(elf, icount))
            if guest not in want_console:
                if not ours:
                    raise BenchError("measure: configurations must start with s2emu's")
                if not r.console.endswith(f"{guest.split('_')[0]}: done\n".encode()):
                    raise BenchError(f"{guest} on {name}: console does not end with done: "
                                     f"{r.console[-200:]!r}")
                want_console[guest] = r.console
            if r.console != want_console[guest]:
                raise BenchError(f"{guest} on {name}: console differs from s2emu's:\n"
                                 f"{r.console[-300:]!r}\nexpected\n"
                                 f"{want_console[guest][-300:]!r}")
            if ours and icount:
                if r.insns is None:
                    raise BenchError(f"{guest} on {name}: no instruction count reported")
                if want_insns.setdefault(guest, r.insns) != r.insns:
                    raise BenchError(f"{guest} on {name}: {r.insns} instructions, earlier "
                                     f"{want_insns[guest]}")
            runs[(guest, name)].append(r)
    return runs


def _spread(xs: list[float]) -> float:
    return statistics.median(xs) / min(xs) - 1


@ROWS.register(*sorted(NATIVE_ROWS))
def native_rows(ctx: Context) -> list[Result]:
    quick = ctx.sizes.reps <= 1
    work = "compute_quick" if quick else "compute"
    reps = 1 if quick else min(ctx.sizes.reps, 5)
    have_qemu = qemu() is not None
    configs = CONFIGS if have_qemu else CONFIGS[:1]
    if not have_qemu:
        ctx.progress("qemu-system-arm not installed: only 'compute guest ns per insn'")
    runs = measure({work: f"{work}.elf", "hello": "hello.elf"}, configs, reps, ctx.progress)
    n_work, n_hello = runs[(work, "s2emu")][0].insns, runs[("hello", "s2emu")][0].insns
    if quick:               # 13.8 M instructions are lost in start-up noise: whole processes
        n_hello = 0
    n = n_work - n_hello

    def ns(name: str) -> float:
        """CPU ns per instruction of configuration `name`, start-up (hello) subtracted."""
        cpu = min(r.cpu for r in runs[(work, name)])
        if not quick:
            cpu -= min(r.cpu for r in runs[("hello", name)])
        if cpu <= 0:
            raise BenchError(f"{name}: the compute guest took no more CPU than hello")
        return cpu / n * 1e9

    def noise(*names: str) -> float:
        return sum(_spread([r.cpu for r in runs[(work, x)]]) for x in names)

    what = (f"{work}.elf, {n_work / 1e6:.1f} M instructions (s2emu's exact count) " +
            ("(--quick: whole processes, start-up included)" if quick else
             f"minus hello.elf's {n_hello} (start-up)") +
            f"; CPU (user + sys) of the child, best of {reps}")
    ours = ns("s2emu")
    out = [Result("compute guest ns per insn", round(ours, 3), "ns", None,
                  our_speed=1e3 / ours, note=f"s2emu default (exact counts); {what}",
                  noise=noise("s2emu"))]
    if not have_qemu:
        return out
    qi, q, free = ns("qemu icount"), ns("qemu"), ns("s2emu no-icount")
    out += [
        Result("compute guest cost vs qemu icount", round(ours / qi, 3), "x", "<= 1.0",
               1e3 / qi, 1e3 / ours, f"s2emu default {ours:.2f} ns/insn vs QEMU -icount "
               f"shift=0 {qi:.2f}; {what}", noise("s2emu", "qemu icount")),
        Result("compute guest cost vs qemu", round(ours / q, 3), "x", None, 1e3 / q,
               1e3 / ours, f"s2emu default {ours:.2f} ns/insn vs QEMU TCG {q:.2f}",
               noise("s2emu", "qemu")),
        Result("compute guest no-icount cost vs qemu", round(free / q, 3), "x", None, 1e3 / q,
               1e3 / free, f"s2emu --no-icount {free:.2f} ns/insn vs QEMU TCG {q:.2f}",
               noise("s2emu no-icount", "qemu")),
    ]
    ours_wall = [r.wall for r in runs[("hello", "s2emu")]]
    qemu_wall = [r.wall for r in runs[("hello", "qemu")]]
    bare, deps = python_floor(reps)
    qw = min(qemu_wall)
    out.append(Result("hello whole process vs qemu", round(min(ours_wall) / qw, 3),
                      "x", "<= 4", note=f"wall: s2emu run guests/hello.elf {min(ours_wall):.3f} "
                      f"s vs qemu-system-arm {qw:.3f} s (TCG, no -icount), best of {reps}; "
                      f"the Python floor in this environment: `python -c pass` {bare:.3f} s "
                      f"({bare / qw:.1f}x), + importing numpy, unicorn, pyelftools {deps:.3f} s "
                      f"({deps / qw:.1f}x)", noise=_spread(ours_wall) + _spread(qemu_wall)))
    return out


def header_lines(ctx: Context) -> list[str]:
    return [f"peer rows: child processes (bytecode caches written), CPU = user + sys "
            f"(getrusage), start-up (hello.elf) subtracted; {qemu() or 'no qemu-system-arm'}; "
            f"S2EMU_NATIVE="
            f"{os.environ.get('S2EMU_NATIVE', '1 (default)')}"]
