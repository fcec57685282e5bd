"""The irq guest (GICv2, generic timer, PSCI CPU_ON/OFF with two CPUs, PL011 interrupts):
its console on qemu-system-arm -M virt -smp 2 is the golden, and s2emu must print the same."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import GUESTS, ROOT

QEMU = shutil.which("qemu-system-arm")
ELF = os.path.join(GUESTS, "irq.elf")
GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "irq_console_qemu.txt")


def golden() -> str:
    with open(GOLDEN, encoding="utf-8") as f:
        return f.read()


@pytest.mark.skipif(QEMU is None, reason="qemu-system-arm not installed (Debian: qemu-system-arm)")
def test_irq_guest_on_qemu_matches_golden():
    p = subprocess.run([QEMU, "-M", "virt", "-cpu", "cortex-a15", "-smp", "2", "-m", "256",
                        "-nographic", "-monitor", "none", "-no-reboot", "-kernel", ELF],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().replace("\r\n", "\n") == golden()


def test_irq_guest_on_s2emu_matches_golden():
    """GIC, SGIs between vCPUs, the physical timer, PL011 transmit interrupts, PSCI: the same
    console as qemu-system-arm's, byte for byte."""
    p = subprocess.run([sys.executable, "-m", "emu", "run", ELF, "--smp", "2", "-q",
                        "--timeout", "120"],
                       cwd=ROOT, capture_output=True, timeout=180, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode() == golden()
