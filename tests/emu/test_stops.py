"""Stopping a running guest is always safe: wall-clock timeouts and Ctrl-C stop it at an
instruction boundary (between bursts, or at a block start through the native hook), never with
Unicorn's asynchronous stop, which can execute a load or store twice (DESIGN 5b)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from emu import native
from emu.machine import Machine

from conftest import ROOT
from snippet import CODE, DATA, Snippet, arm

# loop: ldrex r1,[r2]; add r1,r1,#1; strex r3,r1,[r2]; cmp r3,#0; bne loop
#       strb r1,[r4]     (the UART data register: an emulated MMIO write)
#       b loop
COUNTER_LOOP = arm(0xE1921F9F, 0xE2811001, 0xE1823F91, 0xE3530000, 0x1AFFFFFA, 0xE5C41000,
                   0xEAFFFFF8)
PATHS = [pytest.param(True, True, id="counted"),
         pytest.param(False, True, id="uncounted-native"),
         pytest.param(False, False, id="uncounted-python-fallback")]


@pytest.mark.parametrize("icount,use_native", PATHS)
def test_timeouts_never_repeat_an_access(icount, use_native, monkeypatch):
    """Thirty wall-clock timeouts in the middle of an exclusive-monitor loop that also
    writes every count to the UART: the counter in RAM and the UART bytes still agree."""
    if use_native and not native.AVAILABLE:
        pytest.skip("native fast path not built")
    monkeypatch.setattr(native, "AVAILABLE", use_native and native.AVAILABLE)
    s = Snippet(COUNTER_LOOP, icount=icount, regs={2: DATA, 4: 0x0900_0000})
    for _ in range(30):
        r = s.m.run(timeout=0.01)
        assert r.reason == "timeout"
    counter = int.from_bytes(s.m.vm.read_guest(DATA, 4), "little")
    written = len(s.m.uart.output)
    assert counter > 100
    # a stop between the STREX's block and the STRB's leaves the counter one ahead
    assert counter - written in (0, 1)
    assert bytes(s.m.uart.output) == bytes(i & 0xFF for i in range(1, written + 1))
    # at an instruction boundary: a block start (native hook), a budget, or after an exit
    assert CODE <= s.cpu.pc < CODE + len(COUNTER_LOOP) and s.cpu.pc % 4 == 0


def _sigint(args, env=None):
    p = subprocess.Popen([sys.executable, "-m", "emu", *args], cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, **(env or {})))
    line = p.stdout.readline()                        # the guest is running
    assert line.startswith("dirtycheck:"), line
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    return p.returncode, err


@pytest.mark.parametrize("args,env", [
    pytest.param([], {}, id="counted"),
    pytest.param(["--no-icount"], {}, id="uncounted"),
    pytest.param(["--no-icount"], {"S2EMU_NATIVE": "0"}, id="uncounted-fallback"),
])
def test_ctrl_c_stops_the_guest_prints_the_summary_and_exits_130(args, env):
    code, err = _sigint(["run", "guests/dirtycheck.elf", *args], env)
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = err.strip().splitlines()
    assert lines[-2].startswith("[s2emu] interrupt: instructions ")
    assert lines[-1].startswith("s2emu: interrupted (Ctrl-C) at PC 0x")


def test_a_counted_run_checks_the_clock_between_bursts():
    m = Machine(16 << 20)
    m.load(os.path.join(ROOT, "guests", "dirtycheck.elf"))
    t = time.monotonic()
    r = m.run(timeout=0.2)
    assert r.reason == "timeout" and time.monotonic() - t < 5
