"""bench/run.py --json: one object per row with the agreed schema (values are not asserted)."""
import json
import math
import subprocess
import sys

from conftest import ROOT


def test_bench_quick_json_schema():
    p = subprocess.run([sys.executable, "bench/run.py", "--quick", "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    names = {r["row"] for r in rows}
    for prog in ("ALU loop", "load sweep", "store sweep", "STM loop"):
        for suffix in ("vs raw unicorn (cpu tlb)", "vs raw unicorn (virtual tlb)",
                       "no-icount vs raw unicorn (virtual tlb)"):
            assert f"{prog} {suffix}" in names
    for want in ("migration stream serialise zero pages", "migration stream serialise dirty pages",
                 "migration stream parse zero pages", "migration stream parse dirty pages",
                 "migration downtime 256 MiB idle", "migration downtime dirtyram medium",
                 "migration total per GiB idle"):
        assert want in names
    by_name = {r["row"]: r for r in rows}
    assert by_name["migration total per GiB idle"]["target"] == "<= 1"
    assert by_name["migration stream serialise dirty pages"]["unit"] == "MiB/s"
    for r in rows:
        assert set(r) == {"row", "value", "unit", "target"}
        assert isinstance(r["value"], (int, float)) and isinstance(r["unit"], str)
        assert r["target"] is None or isinstance(r["target"], str)


def test_bench_rows_selects_the_migration_rows():
    """--rows migration runs only the migration rows (and prints their header)."""
    p = subprocess.run([sys.executable, "bench/run.py", "--quick", "--rows", "migration"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "migration rows:" in p.stdout and "guest speed rows" not in p.stdout
    lines = p.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("----")) + 1
    rows = [ln.split("  ")[0] for ln in lines[start:] if ln.strip() and not ln.startswith("(")]
    assert "migration total per GiB idle" in rows and "migration downtime 256 MiB idle" in rows
    assert all(r.startswith("migration ") for r in rows)


MMU_RATIO_ROWS = ("ALU loop MMU on vs off", "load sweep MMU on vs off",
                  "store sweep MMU on vs off")
MMU_MISS_ROWS = ("TLB miss MMU off", "TLB miss MMU on short", "TLB miss MMU on LPAE",
                 "MMU.fill MMU off", "MMU.fill MMU on short", "MMU.fill MMU on LPAE")
MMU_EXTRA_ROWS = ("TLB miss MMU on short, stage-1 extra", "TLB miss MMU on LPAE, stage-1 extra")


def test_bench_mmu_rows_quick():
    """--rows mmu: exactly the guest-MMU rows (bench/mmu_rows.py), each with a sane number.
    Every mmubench boot behind them is checked by the bench itself (a failed check exits 1)."""
    p = subprocess.run([sys.executable, "bench/run.py", "--quick", "--json", "--rows", "mmu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = {r["row"]: r for r in map(json.loads, p.stdout.splitlines())}
    assert set(rows) == set(MMU_RATIO_ROWS + MMU_MISS_ROWS + MMU_EXTRA_ROWS)
    for name in MMU_RATIO_ROWS:
        assert rows[name]["unit"] == "x" and rows[name]["target"] == ">= 0.9"
        assert 0 < rows[name]["value"] < 100
    for name in MMU_MISS_ROWS + MMU_EXTRA_ROWS:
        assert rows[name]["unit"] == "us" and rows[name]["target"] is None
        assert math.isfinite(rows[name]["value"])
    for name in MMU_MISS_ROWS:                  # differences (the extra rows) may be any sign
        assert rows[name]["value"] > 0
