"""The honest-benchmark rows of issue 11 (raw Unicorn in both TLB modes, the round-trip
floor, the model TLB refill, the peer rows against QEMU): each produces a number in --quick
mode, and each correctness check behind them can fail. Values are never asserted."""
import json
import math
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

from bench import guest_speed, native_rows
from bench.common import QUICK, BenchError, Context
from bench.logbench import LOG_IPA, PAGE
from bench.raw_unicorn import RawFloor, RawUnicorn, native_identity_fill

QEMU = shutil.which("qemu-system-arm")
PROGS = ("ALU loop", "load sweep", "store sweep", "STM loop")


def quick_rows(substring: str) -> dict:
    p = subprocess.run([sys.executable, "bench/run.py", "--quick", "--json", "--rows", substring],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = {r["row"]: r for r in map(json.loads, p.stdout.splitlines())}
    for r in rows.values():
        assert isinstance(r["value"], (int, float)) and math.isfinite(r["value"])
    return rows


def test_virtual_tlb_rows_quick():
    rows = quick_rows("virtual tlb")
    fill = "virtual tlb" if native_identity_fill() is not None else "virtual tlb, python fill"
    want = {f"{p} vs raw unicorn ({fill})": ">= 0.8" for p in PROGS}
    want.update({f"{p} no-icount vs raw unicorn ({fill})": ">= 1.0" for p in PROGS})
    assert {k: r["target"] for k, r in rows.items()} == want
    assert all(r["unit"] == "x" and r["value"] > 0 for r in rows.values())


def test_floor_and_refill_rows_quick():
    rows = quick_rows("floor")
    assert set(rows) == {"round-trip floor", "dirty fault vs floor",
                         "round-trip floor (raw calls)"}
    for name in ("round-trip floor", "round-trip floor (raw calls)"):
        assert rows[name]["unit"] == "us" and rows[name]["value"] > 0
    assert rows["dirty fault vs floor"]["target"] == "<= 3"
    rows = quick_rows("model tlb refill")
    assert list(rows) == ["model tlb refill"]
    assert rows["model tlb refill"]["unit"] == "us"
    assert rows["model tlb refill"]["target"] == "<= 0.5"


def test_peer_rows_quick():
    rows = quick_rows("compute guest") | quick_rows("hello whole")
    if QEMU is None:
        assert set(rows) == {"compute guest ns per insn"}
    else:
        assert set(rows) == native_rows.NATIVE_ROWS
        assert rows["compute guest cost vs qemu icount"]["target"] == "<= 1.0"
        assert rows["hello whole process vs qemu"]["target"] == "<= 4"
    assert all(r["value"] > 0 for r in rows.values())


# ---- the checks can fail -------------------------------------------------------------------
def test_peer_rows_reject_a_different_console(monkeypatch):
    monkeypatch.setattr(native_rows, "qemu_cmd",
                        lambda elf, icount: [sys.executable, "-c", "print('compute: done')"])
    with pytest.raises(BenchError, match="console differs"):
        native_rows.measure({"compute_quick": "compute_quick.elf"},
                            [native_rows.CONFIGS[0], native_rows.CONFIGS[3]], 1)


def test_peer_rows_reject_a_failed_process(monkeypatch):
    monkeypatch.setattr(native_rows, "s2emu_cmd",
                        lambda elf, icount: [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(BenchError, match="exit status 3"):
        native_rows.measure({"hello": "hello.elf"}, native_rows.CONFIGS[:1], 1)


def test_peer_rows_reject_a_changed_instruction_count(monkeypatch):
    """Two runs of the same guest that report different exact counts."""
    runs = iter([b"[s2emu] off: instructions 5\n", b"[s2emu] off: instructions 6\n"])
    script = "import sys; print('hello: done'); sys.stderr.write(sys.argv[1])"
    monkeypatch.setattr(native_rows, "s2emu_cmd",
                        lambda elf, icount: [sys.executable, "-c", script,
                                             next(runs).decode()])
    with pytest.raises(BenchError, match="6 instructions, earlier 5"):
        native_rows.measure({"hello": "hello.elf"}, native_rows.CONFIGS[:1], 2)


def test_floor_rejects_a_pass_without_denials():
    floor = RawFloor(LOG_IPA, 2 * 16 * PAGE)
    a, b = floor.passes(16, 2 * PAGE, 7)            # the real thing passes its own checks
    assert a > 0 and b > 0
    floor.protect = floor.cold                       # a "protect" that protects nothing
    with pytest.raises(BenchError, match="0 exits"):
        floor.passes(16, 2 * PAGE, 8)


def test_floor_rejects_stores_that_went_elsewhere():
    floor = RawFloor(LOG_IPA, 2 * 16 * PAGE)
    mapped = floor.mem                               # stays mapped (and alive) for the guest
    floor.mem = mapped.copy()                        # the check now reads memory it never wrote
    with pytest.raises(BenchError, match="does not hold"):
        floor.touch(16, 2 * PAGE, 1)
    assert mapped.view("<u4")[0] == 1


def test_virtual_tlb_baseline_checks_memory_and_exact_counts():
    ctx = Context(QUICK, lambda msg: None)
    raw = RawUnicorn(guest_speed._ram(ctx), "virtual")
    side, _, _ = guest_speed._store(raw, ctx)
    seed = 0x1234
    raw.run(side.prog, side.regs(seed))
    side.check(raw, seed)                             # passes
    raw.data(ctx.sizes.sweep)[5] ^= 1
    with pytest.raises(BenchError, match="does not hold"):
        side.check(raw, seed)
    ours = guest_speed.shared_ours_icount(ctx)
    exact, _, _ = guest_speed._alu(ours, ctx)
    exact.insns += 1                                  # expect one instruction too many
    exact = guest_speed._exact(exact)
    ours.run(exact.prog, exact.regs(seed))
    with pytest.raises(BenchError, match="icount instructions"):
        exact.check(ours, seed)


def test_numba_rows_quick_or_skipped():
    """With numba (the '.[numba]' extra) and emu/native built: both comparison rows, with
    positive numbers; without either: no rows, and the run still succeeds."""
    import importlib.util

    from emu import native
    rows = quick_rows("numba")
    if importlib.util.find_spec("numba") is None or not native.AVAILABLE:
        assert rows == {}
    else:
        assert set(rows) == {"numba block hook vs native C", "numba start-up"}
        assert all(r["value"] > 0 for r in rows.values())
