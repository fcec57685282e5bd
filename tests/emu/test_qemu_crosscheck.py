"""Guests that use only standard interfaces behave the same on qemu-system-arm -M virt."""
import os
import shutil
import subprocess

import pytest

from conftest import GUESTS
from test_guests import EXPECTED

QEMU = shutil.which("qemu-system-arm")


@pytest.mark.skipif(QEMU is None, reason="qemu-system-arm not installed (Debian: qemu-system-arm)")
@pytest.mark.parametrize("name", ["hello", "thumb", "mmu"])
def test_same_console_output_on_qemu(name):
    p = subprocess.run([QEMU, "-M", "virt", "-cpu", "cortex-a15", "-nographic", "-monitor", "none",
                        "-no-reboot", "-kernel", os.path.join(GUESTS, f"{name}.elf")],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0
    assert p.stdout.decode().replace("\r\n", "\n") == EXPECTED[name]
