"""C extension or numba for the native fast path: the measurement behind the choice (README
"Native fast path"). Skipped when numba is not installed (pip install -e '.[numba]').

  numba block hook vs native C   speed ratio on the ALU loop (4-instruction blocks: one hook
                                 call per 4 instructions) of raw Unicorn in virtual-TLB mode
                                 with a block hook: a numba @cfunc doing what emu/native's
                                 counting block hook does for ARM code (count the block, check
                                 the budget) against emu/native's BlockHook; same run,
                                 interleaved, best of N; instruction results checked
  numba start-up                 what numba adds to every s2emu start: `import numba` in a
                                 fresh interpreter plus compiling that one @cfunc (ms)
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

from bench.common import MASK32, BenchError, Context, Result, Rows, check_eq
from bench.native_rows import child_env

ROWS = Rows()
NUMBA_ROWS = {"numba block hook vs native C", "numba start-up"}

# The hook, as source: compiled in this process for the speed row, and timed in a fresh
# interpreter for the start-up row. State (uint64): blocks, count, limit, stopped.
HOOK = """
import numpy as np
from numba import carray, cfunc, types

@cfunc(types.void(types.voidptr, types.uint64, types.uint32, types.voidptr), nopython=True)
def block_hook(uc, address, size, user):
    st = carray(user, 4, dtype=np.uint64)
    st[0] += 1
    if st[3]:
        return
    n = np.uint64(size >> 2)
    if st[1] + n > st[2]:
        st[3] = 1
        return
    st[1] += n
"""
STARTUP = "import time, numpy; t = time.perf_counter()\n" + HOOK + \
    "\nprint((time.perf_counter() - t) * 1e3)"     # numpy: s2emu imports it anyway


def _compiled():
    ns: dict = {}
    exec(compile(HOOK, "<numba hook>", "exec"), ns)
    return ns["block_hook"]


@ROWS.register(*sorted(NUMBA_ROWS))
def numba_rows(ctx: Context) -> list[Result]:
    if importlib.util.find_spec("numba") is None:
        ctx.progress("numba rows skipped: numba is not installed (pip install -e '.[numba]')")
        return []
    import numpy as np
    from unicorn import UC_HOOK_BLOCK

    from bench.raw_unicorn import RawUnicorn
    from emu import native
    if not native.AVAILABLE:
        ctx.progress("numba rows skipped: emu/native is not built (nothing to compare with)")
        return []
    reps = max(1, ctx.sizes.reps)
    iters = 2_000_000 if reps <= 1 else 50_000_000
    hook = _compiled()
    sides = {}
    for name in ("C", "numba"):
        raw = RawUnicorn(4 << 20, tlb="virtual")
        if name == "numba":
            state = np.zeros(4, dtype=np.uint64)
            state[2] = 1 << 63
            native.hook_add(raw.uc, UC_HOOK_BLOCK, hook.address, state.ctypes.data)
            keep = state
        else:
            keep = native.BlockHook(raw.uc, counting=True)
            keep.start(None)
        sides[name] = (raw, keep, [])
    for rep in range(reps + 1):
        for name in (("C", "numba") if rep % 2 else ("numba", "C")):
            raw, keep, times = sides[name]
            dt = raw.run("alu", {0: iters, 1: rep, 2: 7})
            check_eq(f"{name} ALU r1", raw.reg(1), (rep + iters * (iters + 1) // 2) & MASK32)
            if rep:
                times.append(dt)
    counted = int(sides["numba"][1][1])
    if counted != (reps + 1) * 4 * iters:
        raise BenchError(f"numba hook counted {counted} instructions, expected "
                         f"{(reps + 1) * 4 * iters}")
    c, nb = min(sides["C"][2]), min(sides["numba"][2])
    startup = []
    for _ in range(min(reps, 3)):
        p = subprocess.run([sys.executable, "-c", STARTUP], capture_output=True, text=True,
                           env=child_env(), stdin=subprocess.DEVNULL, timeout=300)
        if p.returncode:
            raise BenchError(f"numba start-up probe failed: {p.stderr[-300:]}")
        startup.append(float(p.stdout.split()[-1]))
    insns = 4 * iters
    return [Result("numba block hook vs native C", round(c / nb, 3), "x", None,
                   insns / c / 1e6, insns / nb / 1e6,
                   f"ALU loop, raw Unicorn (virtual tlb) + a block hook, {insns / 1e6:.0f} M "
                   f"insns/run, best of {reps}: C {insns / c / 1e6:.0f} vs numba "
                   f"{insns / nb / 1e6:.0f} Minsn/s"),
            Result("numba start-up", round(min(startup), 1), "ms", None,
                   note=f"import numba + compile the @cfunc, fresh interpreter, best of "
                        f"{len(startup)} (numba {_version()})")]


def _version() -> str:
    import numba
    return numba.__version__
