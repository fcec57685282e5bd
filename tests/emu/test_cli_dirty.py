"""CLI: dirty logging reports, stage-2 dumps and walks; deterministic output."""
import subprocess
import sys

import pytest

from conftest import ROOT


def s2emu(*args):
    return subprocess.run([sys.executable, "-m", "emu", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)


@pytest.mark.parametrize("mode,split", [("bitmap", "lazy"), ("manual", "eager"), ("ring", "lazy")])
def test_log_dirty_reports_per_harvest_and_is_deterministic(mode, split):
    args = ["run", "guests/dirtyram.elf", "--args", "512 32 5 40", "--mem", "64M", "--log-dirty",
            "--dirty-mode", mode, "--split", split, "--harvest-ms", "50"]
    if mode == "ring":
        args += ["--ring-size", "256"]
    p1, p2 = s2emu(*args), s2emu(*args)
    assert p1.returncode == 0, p1.stderr
    assert (p1.stdout, p1.stderr) == (p2.stdout, p2.stderr)          # bit-identical runs
    assert "dirtyram: 40 rounds, 512 pages" in p1.stdout
    harvests = [l for l in p1.stderr.splitlines() if "] harvest " in l]
    assert len(harvests) >= 4
    # 32 pages per round, a round every 5 ms: ~10 rounds per 50 ms interval -> >= 320 pages
    pages = [int(l.split(": ")[1].split()[0]) for l in harvests]
    if mode == "ring":       # the 256-entry ring (64 reserved) fills before each interval ends
        assert max(pages) == 192 and any("(ring full)" in l for l in harvests)
    else:
        assert max(pages) >= 320


def test_dump_and_walk():
    p = s2emu("run", "guests/faults.elf", "--dump-s2", "--walk", "0x04000000", "--walk", "0x9000000", "-q")
    assert p.returncode == 0, p.stderr
    assert "IPA 0x000000000-0x000001fff -> PA" in p.stderr and "r-x AF=1 XN=0 4K page" in p.stderr
    assert "r-- AF=1 XN=1 4K page" in p.stderr                      # flash1: execute-never
    assert "-> stage-2 translation fault, level 2, read IPA 0x9000000" in p.stderr
    assert "L3 [   0] @" in p.stderr


def test_log_dirty_under_the_gdb_stub_harvests_the_same():
    """Harvests run on a virtual-time timer inside the vCPU loop, whoever drives it: the
    stub's free run harvests exactly as a plain run does."""
    args = ["run", "guests/dirtyram.elf", "--args", "256 16 5 20", "--mem", "64M",
            "--log-dirty", "--harvest-ms", "25"]
    plain, stub = s2emu(*args), s2emu(*args, "--gdb", "tcp::0")
    assert plain.returncode == stub.returncode == 0, stub.stderr
    harvests = [[l for l in p.stderr.splitlines() if "] harvest " in l] for p in (plain, stub)]
    assert len(harvests[0]) >= 4 and harvests[0] == harvests[1]
