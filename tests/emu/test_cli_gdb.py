"""s2emu run --gdb: a real gdb-multiarch session against the CLI."""
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

GDB = shutil.which("gdb-multiarch")


@pytest.mark.skipif(GDB is None, reason="gdb-multiarch not installed (Debian: gdb-multiarch)")
def test_cli_gdb_break_step_continue():
    emu = subprocess.Popen([sys.executable, "-m", "emu", "run", "guests/hello.elf", "--gdb",
                            "tcp::0", "--gdb-wait"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        line = emu.stderr.readline()
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))
        g = subprocess.run([GDB, "-q", "-batch", "-nx", "-ex", "set confirm off",
                            "-ex", f"target remote :{port}", "-ex", "break main",
                            "-ex", "continue", "-ex", "print/x $pc", "-ex", "stepi",
                            "-ex", "monitor tlb", "-ex", "continue", "guests/hello.elf"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        out, err = emu.communicate(timeout=60)
    finally:
        emu.kill()
    assert "Breakpoint 1, " in g.stdout and "main" in g.stdout
    assert re.search(r"\$1 = 0x400009e4", g.stdout), g.stdout
    assert "TLB:" in g.stderr and "entries for VMID 1" in g.stderr      # monitor output
    assert emu.returncode == 0, err
    assert out == "Hello from an ARMv7 guest under a Python hypervisor!\nhello: done\n"
