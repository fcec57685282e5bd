"""Fuzz the command line: random argument lists built from s2emu's own options with good, bad
and hostile values. Every case must end in main() returning 0, 1, 2, 3 or 130 - never an
exception - with exactly one `s2emu: error:` line on stderr when it fails, no traceback, and
nothing written to an output file when the command line was rejected (status 2).

CI runs a fixed (derandomized) Hypothesis sample; long mode: S2EMU_FUZZ_LONG=N
[S2EMU_FUZZ_SEED=S] python -m pytest -s -m slow tests/fuzz/test_fuzz_cli.py.
"""
import contextlib
import io
import os
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from emu.cli.main import main

from conftest import ROOT

ELFS = ["guests/hello.elf", "guests/thumb.elf", "guests/faults.elf", "guests/nope.elf",
        "pyproject.toml", "guests", "/dev/null", ""]
VALUES = ["0", "1", "-1", "64M", "1G", "3G", "12x", "inf", "nan", "1e-9", "abc", "", " ",
          "0x10", "256", "4096", "300", "all", "all,bogus", "exit,mmio", "s2", "tcp::0",
          "tcp::99999", "foo", "0x40000000-0x40001000", "5-1", "main", "nosuchsym",
          "caf\udcff", "lazy", "eager", "ring", "bitmap", "manual", "text", "jsonl", "4k",
          "/nonexistent/x", "/tmp"]
OPTIONS = ["--mem", "--args", "--hugepages", "--max-insns", "--timeout", "--dirty-mode",
           "--split", "--harvest-ms", "--ring-size", "--trace", "--trace-format",
           "--trace-file", "--trace-range", "--trace-ring", "--perfetto", "--walk", "--gdb",
           "--from", "--count"]
OUTPUTS = ("--trace-file", "--perfetto", "--migrate-report", "--migrate-plot")
FLAGS = ["--no-icount", "--log-dirty", "--prefault", "--dump-s2", "-q", "--bogus"]
STATUSES = {0, 1, 2, 3, 130}


def run_main(argv: list[str], tmp: str) -> tuple[int, str]:
    """main() with stdout/stderr captured; output paths pointed into `tmp`."""
    argv = [os.path.join(tmp, os.path.basename(a)) if a.startswith("OUT:") else a
            for a in argv]
    err, out = io.StringIO(), io.TextIOWrapper(io.BytesIO())      # the console is bytes
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            status = main(argv)
        except SystemExit as e:                    # --help / --version only
            status = e.code
    return status, err.getvalue()


def check(argv: list[str], tmp: str) -> int:
    status, err = run_main(argv, tmp)
    assert status in STATUSES, (argv, status, err)
    assert "Traceback" not in err, (argv, err)
    if status not in (0, 130):
        errors = [l for l in err.splitlines() if l.startswith("s2emu: error:")]
        assert len(errors) == 1, (argv, err)
    if status == 2:
        assert not os.listdir(tmp), (argv, os.listdir(tmp))     # rejected: nothing written
    return status


def make_argv(rng: random.Random) -> list[str]:
    argv = [rng.choice(["run", "run", "step", "fly", ""])]
    argv.append(rng.choice(ELFS))
    for _ in range(rng.randint(0, 5)):
        if rng.random() < 0.3:
            argv.append(rng.choice(FLAGS))
        else:
            opt = rng.choice(OPTIONS)
            if opt in OUTPUTS:                   # files the run may write: only into tmp
                value = rng.choice(["OUT:t.txt", "OUT:run.json", "", "/nonexistent/x", "/tmp"])
            else:
                value = rng.choice(VALUES)
            argv += [opt, value]
    if "--no-icount" not in argv:
        argv += ["--max-insns", "20000"]
    argv += ["--timeout", "5"]
    return [a for a in argv if a != "" or rng.random() < 0.5]


@settings(max_examples=2000, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_fuzz_command_lines(seed, tmp_path_factory):
    os.chdir(ROOT)
    tmp = str(tmp_path_factory.mktemp("cli"))
    check(make_argv(random.Random(seed)), tmp)


@pytest.mark.slow
def test_fuzz_command_lines_long(tmp_path_factory):
    n = int(os.environ.get("S2EMU_FUZZ_LONG", "0"))
    if not n:
        pytest.skip("set S2EMU_FUZZ_LONG=N")
    os.chdir(ROOT)
    seed = os.environ.get("S2EMU_FUZZ_SEED", "0")
    counts = Counter()
    for i in range(n):
        tmp = str(tmp_path_factory.mktemp("cli"))
        counts[check(make_argv(random.Random(f"{seed}:{i}")), tmp)] += 1
    print(f"\ncli fuzz: {n} cases, status counts {dict(sorted(counts.items()))}, crashes 0")
