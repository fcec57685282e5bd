"""Linux on the board (issue 10), marked slow: Debian 12's armmp-lpae kernel with the busybox
initramfs that guests/linux/fetch.py builds, booted with the Linux boot protocol.

- boots to the shell, answers `uname -a` and `cat /proc/interrupts` (timer ticks counted on
  INTID 30), powers off with `poweroff -f`;
- live-migrates while the shell runs `dirtyram` in the background: RAM checksums equal on
  both ends, the shell answers on the destination, uptime goes on smoothly (the downtime
  is added to virtual time: no jump back, no big jump forward);
- determinism: the same kernel, initrd and arguments give the same console and instruction
  count (CI compares the first 40 M steps; S2EMU_LINUX_FULL=1 compares up to /init).

Input is typed the way a terminal delivers it, between bursts (PL011.feed, flow-controlled).
"""
import io
import os
import re

import pytest

from emu.boot.linux import boot_linux
from emu.machine import Machine
from emu.migration import incoming, migrate_out
from hyp.migration.precopy import Params

from conftest import linux_cache

pytestmark = pytest.mark.slow
APPEND = "console=ttyAMA0 cryptomgr.notests"
PROMPT = b"/root # "
SLICE = 2_000_000


@pytest.fixture(scope="module")
def cache() -> str:
    pytest.importorskip("libfdt", reason="the s2emu[linux] extra (pylibfdt) is not installed")
    return linux_cache()


def boot(cache: str, smp: int = 1) -> Machine:
    m = Machine(256 << 20, smp=smp)
    boot_linux(m, os.path.join(cache, "Image"), initrd_path=os.path.join(cache, "initrd.gz"),
               append=APPEND)
    return m


def until(m: Machine, needle: bytes, since: int = 0, limit: int = 600_000_000) -> int:
    """Run until `needle` appears in the console after offset `since`; the step count then."""
    start = m.cpu.instructions
    while needle not in m.uart.output[since:]:
        r = m.run(max_insns=SLICE)
        assert r.reason == "budget", (r, m.uart.output[-400:])
        assert m.cpu.instructions - start < limit, f"no {needle!r} in {limit} steps"
    return m.cpu.instructions


def type_line(m: Machine, line: str) -> int:
    """Type `line` and Enter into the console; the console offset before the echo."""
    mark = len(m.uart.output)
    data = line.encode() + b"\n"
    for _ in range(4000):                   # 200 M steps: the guest must read its input
        data = data[m.uart.feed(data):]
        if not data:
            return mark
        r = m.run(max_insns=50_000)
        assert r.reason == "budget", (r, m.uart.output[-400:])
    raise AssertionError(f"the guest reads no input: {data!r} left, console "
                         f"{bytes(m.uart.output[-200:])!r}")


def command(m: Machine, line: str) -> str:
    """Run a shell command and return its output (the prompt after it ends it)."""
    mark = type_line(m, line)
    until(m, PROMPT, mark + len(line))
    out = m.uart.output[mark:].decode(errors="replace")
    return out[len(line):out.rindex(PROMPT.decode())].strip()


def test_boots_to_a_shell_answers_and_powers_off(cache):
    m = boot(cache)
    init = until(m, b"Run /init")
    until(m, PROMPT)
    uname = command(m, "uname -a")
    assert re.search(r"Linux \S+ 6\.1\.0-\d+-armmp-lpae #1 SMP Debian .* armv7l", uname), uname
    interrupts = command(m, "cat /proc/interrupts")
    ticks = [line for line in interrupts.splitlines() if re.search(r"GIC-0\s+30 ", line)]
    assert ticks and int(ticks[0].split()[1]) > 0, interrupts          # timer ticks counted
    assert re.search(r"GIC-0\s+33 .*uart-pl011", interrupts), interrupts
    type_line(m, "poweroff -f")
    r = m.run(max_insns=200_000_000)
    assert r.reason == "off", r
    print(f"\nLinux: /init at {init} steps, shell at {m.cpu.instructions} steps")


def test_linux_live_migration_with_dirtyram(cache):
    src = boot(cache)
    until(src, PROMPT)
    command(src, "echo 3 > /proc/sys/kernel/printk")
    mark = type_line(src, "dirtyram 4096 256 5 0 50 &")
    until(src, b"dirtyram: round", mark)
    before = float(command(src, "cat /proc/uptime").split()[0])
    buf = io.BytesIO()
    migration = migrate_out(src, buf, Params(bandwidth=1 << 30))
    r = src.run(max_insns=2_000_000_000)
    assert r.reason == "migrate", r
    report = migration.complete()
    assert report.status == "completed", report.error
    buf.seek(0)
    dest, inc = incoming(buf)
    assert inc.digests == report.digests                 # RAM equal on both ends
    after = float(command(dest, "cat /proc/uptime").split()[0])
    gap = after - before
    assert 0 < gap < 5, (before, after)                  # no jump back, no big jump ahead
    assert "ok" in command(dest, "echo ok")
    mark = len(dest.uart.output)
    until(dest, b"dirtyram: round", mark)                # it carries on on the destination
    sums = re.findall(rb"dirtyram: round (\d+) sum ([0-9a-f]+)", src.uart.output +
                      dest.uart.output)
    rounds = [int(r) for r, _ in sums]
    assert rounds == sorted(rounds) and len(set(rounds)) == len(rounds)   # no round twice


def test_boot_is_deterministic(cache):
    full = bool(os.environ.get("S2EMU_LINUX_FULL"))
    runs = []
    for _ in range(2):
        m = boot(cache)
        if full:
            steps = until(m, b"Run /init")
        else:
            r = m.run(max_insns=40_000_000)
            assert r.reason == "budget"
            steps = m.cpu.instructions
        runs.append((steps, bytes(m.uart.output), m.vm.clock.now_ns(), m.cpu.regs()))
    assert runs[0] == runs[1]
