"""Live migration between two s2emu processes: over TCP loopback, a file and a pipe; the
counter guest's output on both ends reads as one run; RAM checksums equal on both ends; a
destination that dies mid-stream leaves the source running; a corrupted stream never starts;
several VMs migrate concurrently with VMID rollovers."""
import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from conftest import ROOT

PY = [sys.executable, "-m", "emu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen(PY + list(args), cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def wait_listening(p: subprocess.Popen) -> None:
    line = p.stderr.readline()
    assert "waiting for an incoming migration" in line, line


def counters(text: str) -> list[tuple[int, int]]:
    return [(int(n), int(t)) for n, t in re.findall(r"counter (\d+) at (\d+) ms", text)]


def digests(text: str, side: str) -> str:
    m = re.search(rf"RAM checksums at switch-over \({side}[^)]*\): (.*)", text)
    assert m, text
    return m.group(1)


def check_continuity(src_out: str, dst_out: str, n: int) -> None:
    """The counter goes on: no gap, no repeat, time never going back."""
    both = counters(src_out) + counters(dst_out)
    assert [c for c, _ in both] == list(range(1, n + 1))
    assert all(b[1] >= a[1] for a, b in zip(both, both[1:]))
    assert counters(src_out) and counters(dst_out)


def test_tcp_two_processes_counter_continues_and_checksums_match():
    port = free_port()
    dst = start("run", "--incoming", f"tcp:127.0.0.1:{port}")
    wait_listening(dst)
    src = start("run", "guests/counter.elf", "--args", "40 10", "--migrate-to",
                f"tcp:127.0.0.1:{port}", "--migrate-after", "150", "--mem", "32M")
    s_out, s_err = src.communicate(timeout=120)
    d_out, d_err = dst.communicate(timeout=120)
    assert src.returncode == 0 and dst.returncode == 0, (s_err, d_err)
    assert "[s2emu] migration completed" in s_err and "[s2emu] migrated:" in s_err
    assert digests(s_err, "source") == digests(d_err, "destination")
    check_continuity(s_out, d_out, 40)
    assert d_out.rstrip().endswith("counter: done")


def test_dirtyram_through_a_file_with_a_json_report(tmp_path):
    stream, report = tmp_path / "mig.bin", tmp_path / "report.json"
    src = subprocess.run(PY + ["run", "guests/dirtyram.elf", "--args", "2048 128 5 60",
                               "--mem", "32M", "--migrate-to", f"file:{stream}",
                               "--migrate-after", "50", "--migrate-report", str(report)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert src.returncode == 0, src.stderr
    rep = json.loads(report.read_text())
    assert rep["status"] == "completed" and len(rep["iterations"]) >= 2
    dst = subprocess.run(PY + ["run", "--incoming", f"file:{stream}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert dst.returncode == 0, dst.stderr
    assert "dirtyram: 60 rounds, 2048 pages" in dst.stdout
    assert digests(src.stderr, "source") == digests(dst.stderr, "destination")
    assert " ".join(f"{k} {v}" for k, v in rep["digests"].items()) == \
        digests(dst.stderr, "destination")


def test_a_pipe_carries_the_guest():
    cmd = (f"{sys.executable} -m emu run guests/counter.elf --args '20 10' --mem 32M "
           f"--migrate-to - --migrate-after 50 | {sys.executable} -m emu run --incoming -")
    p = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    check_continuity(p.stderr, p.stdout, 20)       # the source's console went to stderr


def test_a_destination_killed_mid_stream_leaves_the_source_running():
    """96 MiB of RAM at 1 MiB/s (96 s of virtual time for the full pass; the guest runs
    80 s): the destination is killed as soon as the source has started migrating, so it
    dies during the full pass however fast the source runs (a whole source run takes a few
    seconds of wall time); the source reports the failure and the guest carries on to its
    end."""
    port = free_port()
    dst = start("run", "--incoming", f"tcp:127.0.0.1:{port}")
    wait_listening(dst)
    src = start("run", "guests/dirtyram.elf", "--args", "16384 256 5 16000", "--mem", "96M",
                "--migrate-to", f"tcp:127.0.0.1:{port}", "--max-bandwidth", "1M")
    first = src.stderr.readline()
    assert "migrating vm to" in first, first
    dst.send_signal(signal.SIGKILL)
    dst.communicate(timeout=60)
    s_out, s_err = src.communicate(timeout=300)
    assert src.returncode == 0, s_err
    assert "migration failed" in s_err and "went away" in s_err
    assert "dirtyram: 16000 rounds, 16384 pages" in s_out


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupted_stream_is_refused_and_nothing_runs(tmp_path, damage):
    stream = tmp_path / "mig.bin"
    subprocess.run(PY + ["run", "guests/counter.elf", "--args", "10 10", "--mem", "32M",
                         "--migrate-to", f"file:{stream}", "--migrate-after", "30", "-q"],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    data = bytearray(stream.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x40
    stream.write_bytes(bytes(data))
    dst = subprocess.run(PY + ["run", "--incoming", f"file:{stream}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert dst.returncode == 1 and dst.stdout == ""              # the guest never started
    errors = [l for l in dst.stderr.splitlines() if l.startswith("s2emu: error:")]
    assert len(errors) == 1 and "Traceback" not in dst.stderr
    expected = ("truncated",) if damage == "truncate" else (
        "checksum mismatch", "unknown record type", "claims", "bad flags", "truncated")
    assert any(e in errors[0] for e in expected), errors[0]       # where the bit fell


def test_two_vms_migrate_concurrently_with_vmid_rollovers(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    src = subprocess.run(PY + ["run", "guests/counter.elf", "guests/dirtyram.elf",
                               "--args", "30 10", "--args", "1024 64 5 40", "--mem", "32M",
                               "--vmid-bits", "1", "--migrate-to", f"file:{a}",
                               "--migrate-to", f"file:{b}", "--migrate-after", "100"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert src.returncode == 0, src.stderr
    assert src.stderr.count("[s2emu] migration completed") == 2
    outs = []
    for stream in (a, b):
        d = subprocess.run(PY + ["run", "--incoming", f"file:{stream}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert d.returncode == 0, d.stderr
        outs.append(d)
    src_vm0 = "\n".join(l[len("[vm0] "):] for l in src.stdout.splitlines()
                        if l.startswith("[vm0] "))
    check_continuity(src_vm0, outs[0].stdout, 30)
    assert "dirtyram: 40 rounds, 1024 pages" in outs[1].stdout
