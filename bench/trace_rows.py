"""Tracing rows: a run with tracing available but off costs what a run without it costs, and
what each traced instruction costs when `--trace insn` is on (the bundled thumb guest)."""
from __future__ import annotations

import io
import os
import statistics

from bench.common import BenchError, Context, Result, Rows, timed
from emu.icount import it_skipped
from emu.machine import Machine
from emu.debug.trace import Tracer

ROWS = Rows()
register = ROWS.register
GUEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "guests", "thumb.elf")
EVENTS = "s2,tlb,dirty,exc,exit,mmio,hyp"


def _run(tracer: Tracer | None = None, detach_first: bool = False) -> tuple[float, Machine]:
    m = Machine()
    m.load(GUEST)
    if tracer is not None:
        tracer.attach(m)
        if detach_first:
            tracer.detach()                      # tracing compiled in, switched off
    dt, res = timed(m.run)
    if res.reason != "off" or not m.uart.text.endswith("thumb: done\n"):
        raise BenchError(f"thumb guest did not finish: {res}")
    if tracer is not None and not detach_first:
        tracer.detach()
    return dt, m


@register("tracing off vs never attached")
def tracing_off(ctx: Context) -> list[Result]:
    reps = max(3, ctx.sizes.reps)
    base, off = [], []
    _run()                                       # warm-up (imports, capstone caches)
    for _ in range(reps):
        base.append(_run()[0])
        off.append(_run(Tracer(EVENTS, out=io.StringIO()), detach_first=True)[0])
    ratio = min(base) / min(off)
    noise = (statistics.median(off) - min(off)) / min(off)
    return [Result("tracing off vs never attached", round(ratio, 3), "x", ">= 0.95", None, None,
                   f"thumb guest run time, a tracer of {EVENTS} attached then detached vs "
                   f"none; best of {reps}", noise)]


@register("traced instruction cost")
def traced_insn(ctx: Context) -> list[Result]:
    reps = max(2, ctx.sizes.reps // 2)
    base = min(_run()[0] for _ in range(reps))
    best, insns = None, 0
    for _ in range(reps):
        out = io.StringIO()
        dt, m = _run(Tracer("insn", out=out))
        text = out.getvalue()
        lines = text.count("\n")
        # every instruction traced (some twice), but for Thumb IT-block instructions whose
        # condition failed: Unicorn calls no hook for them, the block counter counts them
        pcs = [int(ln.split()[3], 16) for ln in text.splitlines() if "] insn  " in ln]
        if lines + it_skipped(pcs, m.cpu.read_code) < m.cpu.instructions:
            raise BenchError(f"{lines} insn lines for {m.cpu.instructions} instructions")
        best, insns = (dt, m.cpu.instructions) if best is None else (min(best, dt), insns)
    per = (best - base) / insns * 1e6
    return [Result("traced instruction cost", round(per, 2), "us", None, None, None,
                   f"--trace insn (text, to memory) on the thumb guest: {insns} instructions, "
                   f"{best * 1e3:.0f} ms traced vs {base * 1e3:.0f} ms untraced; best of {reps}")]
