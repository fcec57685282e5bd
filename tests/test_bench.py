"""bench/run.py --json: one object per row with the agreed schema (values are not asserted)."""
import json
import subprocess
import sys

from conftest import ROOT


def test_bench_quick_json_schema():
    p = subprocess.run([sys.executable, "bench/run.py", "--quick", "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    names = {r["row"] for r in rows}
    for want in ("ALU loop vs raw unicorn", "load sweep vs raw unicorn",
                 "store sweep vs raw unicorn", "STM loop vs raw unicorn"):
        assert want in names
    for r in rows:
        assert set(r) == {"row", "value", "unit", "target"}
        assert isinstance(r["value"], (int, float)) and isinstance(r["unit"], str)
        assert r["target"] is None or isinstance(r["target"], str)
