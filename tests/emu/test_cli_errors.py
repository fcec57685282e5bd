"""Every bad command line: one line on stderr naming the problem, status 2 (1 for a bad file or
environment), never a traceback, and nothing run or written."""
import os
import socket

import pytest

from emu.cli.main import main
from emu.machine import MAX_RAM, host_memory

HELLO = "guests/hello.elf"
HUGE = f"{(host_memory() >> 30) + 8}G"
R = ["run", HELLO]
LOG = ["--log-dirty"]

CASES = [
    # commands and arguments
    pytest.param([], 2, "choose a command: run or step", id="no-command"),
    pytest.param(["run"], 2, "required: elf", id="no-elf"),
    pytest.param(["fly", HELLO], 2, "invalid choice: 'fly'", id="unknown-command"),
    pytest.param(R + ["--bogus"], 2, "unrecognized arguments: --bogus", id="unknown-option"),
    # sizes and numbers, with their units
    pytest.param(R + ["--mem", "12x"], 2, "bad size '12x'", id="mem-bad"),
    pytest.param(R + ["--mem", "0"], 2, "positive multiple of 4 KiB", id="mem-zero"),
    pytest.param(R + ["--mem", "1000"], 2, "positive multiple of 4 KiB", id="mem-unaligned"),
    pytest.param(R + ["--mem", HUGE], 2, "more than this host can back", id="mem-host"),
    pytest.param(R + ["--mem", f"{(MAX_RAM >> 30) + 1}G"], 2, "at most 255 GiB",
                 id="mem-board"),
    pytest.param(R + ["--max-insns", "0"], 2, "must be positive", id="max-insns-zero"),
    pytest.param(R + ["--max-insns", "1e3"], 2, "not a whole number", id="max-insns-float"),
    pytest.param(R + ["--timeout", "abc"], 2, "'abc' is not a number of seconds",
                 id="timeout-abc"),
    pytest.param(R + ["--timeout", "inf"], 2, "finite", id="timeout-inf"),
    pytest.param(R + ["--timeout", "0"], 2, "at least", id="timeout-zero"),
    pytest.param(R + LOG + ["--harvest-ms", "abc"], 2, "not a number of milliseconds",
                 id="harvest-abc"),
    pytest.param(R + LOG + ["--harvest-ms", "inf"], 2, "finite", id="harvest-inf"),
    pytest.param(R + LOG + ["--harvest-ms", "nan"], 2, "finite", id="harvest-nan"),
    pytest.param(R + LOG + ["--harvest-ms", "1e-9"], 2, "at least 1e-06", id="harvest-sub-ns"),
    # dirty logging options need --log-dirty (and each other)
    pytest.param(R + ["--dirty-mode", "ring"], 2, "--dirty-mode needs --log-dirty",
                 id="mode-without-log"),
    pytest.param(R + ["--ring-size", "256"], 2, "--ring-size needs --log-dirty",
                 id="ring-without-log"),
    pytest.param(R + ["--split", "eager", "--harvest-ms", "5"], 2,
                 "--split, --harvest-ms need --log-dirty", id="split-harvest-without-log"),
    pytest.param(R + LOG + ["--ring-size", "256"], 2, "--ring-size needs --dirty-mode ring",
                 id="ring-size-bitmap"),
    pytest.param(R + LOG + ["--dirty-mode", "ring", "--ring-size", "1"], 2,
                 "power of two from 256 to 65536", id="ring-size-1"),
    pytest.param(R + LOG + ["--dirty-mode", "ring", "--ring-size", "300"], 2,
                 "power of two from 256 to 65536", id="ring-size-300"),
    # the debugger
    pytest.param(R + ["--gdb", "foo"], 2, "bad listen address 'foo'", id="gdb-foo"),
    pytest.param(R + ["--gdb", "tcp::99999"], 2, "bad port", id="gdb-port"),
    pytest.param(R + ["--gdb", ""], 2, "empty address", id="gdb-empty"),
    pytest.param(R + ["--gdb-wait"], 2, "--gdb-wait needs --gdb", id="gdb-wait-alone"),
    pytest.param(R + ["--gdb", "tcp::0", "--no-icount"], 2, "needs instruction counting",
                 id="gdb-no-icount"),
    # tracing and output files
    pytest.param(R + ["--trace", "all,bogus"], 2, "unknown trace kind 'bogus'",
                 id="trace-all-bogus"),
    pytest.param(R + ["--trace", ""], 2, "no trace kinds", id="trace-empty"),
    pytest.param(R + ["--trace-file", "t.txt"], 2, "need --trace", id="trace-file-alone"),
    pytest.param(R + ["--trace", "exit", "--trace-file", ""], 2, "empty path",
                 id="trace-file-empty"),
    pytest.param(R + ["--perfetto", ""], 2, "empty path", id="perfetto-empty"),
    pytest.param(R + ["--perfetto", "/nonexistent/dir/run.json"], 2,
                 "directory /nonexistent/dir does not exist", id="perfetto-no-dir"),
    pytest.param(R + ["--perfetto", "/tmp"], 2, "/tmp is a directory", id="perfetto-dir"),
    pytest.param(R + ["--walk", "bogus"], 2, "is not an address", id="walk-bogus"),
    pytest.param(R + ["--trace-range", "5-1", "--trace", "exit"], 2, "invalid address range",
                 id="trace-range-empty"),
    # guest arguments
    pytest.param(R + ["--args", "caf\udcff"], 2, "not valid UTF-8", id="args-not-utf8"),
    # step
    pytest.param(["step", HELLO, "--from", ""], 2, "empty value", id="step-from-empty"),
    pytest.param(["step", HELLO, "--no-icount"], 2, "stepping needs instruction counting",
                 id="step-no-icount"),
    pytest.param(["step", HELLO, "--from", "nosuchsym"], 1, "no symbol 'nosuchsym'",
                 id="step-from-unknown"),
    pytest.param(["step", HELLO, "--count", "0"], 2, "must be positive", id="step-count-0"),
    # files
    pytest.param(["run", "guests/nope.elf"], 1, "cannot open guests/nope.elf", id="no-file"),
]


@pytest.mark.parametrize("argv,status,message", CASES)
def test_bad_command_lines(argv, status, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert main(argv) == status
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("s2emu: error: "), err
    assert message in lines[0], err
    assert "Traceback" not in err and out == ""


def test_a_busy_gdb_port_is_named(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    perf = tmp_path / "run.json"
    try:
        assert main(["run", HELLO, "--gdb", f"tcp::{port}", "--perfetto", str(perf)]) == 1
    finally:
        busy.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"s2emu: error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert not perf.exists()                       # nothing ran, nothing written


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("s2emu ")
