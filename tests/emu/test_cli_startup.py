"""Start-up: a plain `s2emu run guests/hello.elf` imports only what it runs. The debugger,
tracing, Perfetto, migration, the monitors and the Linux boot are imported by the code that
uses them (issue 11: every module imported at start costs each invocation its load time).

Each probe runs in a fresh interpreter and lists which of the modules were loaded."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

HELLO = os.path.join(ROOT, "guests", "hello.elf")

# Not needed by a plain run of a guest ELF, with the option that does need each.
LAZY = [
    pytest.param("emu.debug.gdbstub", id="gdb-stub"),                   # --gdb
    pytest.param("emu.debug.gdb_packets", id="gdb-packets"),            # --gdb, --qmp tcp:
    pytest.param("emu.debug.step", id="step"),                          # s2emu step
    pytest.param("emu.debug.trace", id="trace"),                        # --trace
    pytest.param("emu.debug.trace_uc", id="trace-hooks"),               # --trace insn,mem
    pytest.param("emu.debug.perfetto", id="perfetto"),                  # --perfetto
    pytest.param("hyp.arch.s1debug", id="s1-dump"),                     # --dump-s1, --walk
    pytest.param("emu.boot.linux", id="linux-boot"),                    # --kernel, --dumpdtb
    pytest.param("emu.boot.dtb", id="dtb"),
    pytest.param("emu.boot.kernel", id="kernel-image"),
    pytest.param("libfdt", id="libfdt"),
    pytest.param("emu.host_machine", id="host-machine"),                # several ELFs
    pytest.param("emu.cli.incoming", id="cli-incoming"),                # --incoming
    pytest.param("hyp.migration.incoming", id="migration-incoming"),
    pytest.param("emu.cli.migrate", id="cli-migrate"),                  # --migrate-to, QMP
    pytest.param("hyp.migration.precopy", id="precopy"),
    pytest.param("hyp.migration.stream", id="stream"),
    pytest.param("hyp.migration.checksum", id="checksum"),
    pytest.param("emu.monitor.dispatch", id="monitor-queue"),           # --qmp, --monitor
    pytest.param("emu.monitor.qmp", id="qmp"),
    pytest.param("emu.monitor.hmp", id="hmp"),
    # hello's UART loads and stores are plain LDR/STR: identified from their bits
    # (emu.decode._quick); capstone comes with the first other access decoded, or tracing
    pytest.param("capstone", id="capstone"),
]
LAZY_AT_IMPORT = LAZY

PROBE = """
import json, sys
names = json.loads(sys.argv[1])
{body}
print(json.dumps(sorted(n for n in names if n in sys.modules)))
"""


def _loaded(body: str, names: list[str], *args: str) -> list[str]:
    code = PROBE.format(body=body)
    r = subprocess.run([sys.executable, "-c", code, json.dumps(names), *args], cwd=ROOT,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def _names(params) -> list[str]:
    return [p.values[0] for p in params]


@pytest.fixture(scope="module")
def after_run() -> list[str]:
    """The LAZY modules loaded once `s2emu run guests/hello.elf` has run to the end."""
    return _loaded("from emu.cli.main import main\n"
                   "status = main(['run', sys.argv[2]])\n"
                   "assert status == 0, status", _names(LAZY), HELLO)


@pytest.fixture(scope="module")
def after_import() -> list[str]:
    return _loaded("import emu.cli.main", _names(LAZY_AT_IMPORT))


@pytest.mark.parametrize("module", LAZY)
def test_plain_run_does_not_import(after_run, module):
    assert module not in after_run


@pytest.mark.parametrize("module", LAZY_AT_IMPORT)
def test_importing_the_cli_does_not_import(after_import, module):
    assert module not in after_import


def test_the_probe_sees_imports():
    """The same probe does see what a run needs (the probe itself works)."""
    assert _loaded("from emu.cli.main import main\n"
                   "main(['run', sys.argv[2]])",
                   ["emu.machine", "emu.boot.loader", "emu.decode"], HELLO) == \
        ["emu.boot.loader", "emu.decode", "emu.machine"]


def test_program_finalizes_what_the_run_left_behind(tmp_path):
    """emu.program.run() (s2emu, python -m emu) freezes the interpreter's objects for a fast
    exit, but only after collecting the run's garbage: an object the run left in a
    reference cycle is still finalized when the process ends."""
    out = tmp_path / "finalized"
    code = (
        "import sys, emu.cli.main\n"
        "cli = sys.modules['emu.cli.main']       # (emu.cli.main is also the function)\n"
        "class LeftBehind:\n"
        "    def __del__(self):\n"
        f"        with open({str(out)!r}, 'wb') as f:\n"
        "            f.write(b'finalized')\n"
        "def run_leaving_a_cycle(argv=None):\n"
        "    x = LeftBehind()\n"
        "    x.me = x\n"
        "    return 3\n"
        "cli.main = run_leaving_a_cycle\n"
        "import emu.program\n"
        "raise SystemExit(emu.program.run())\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 3, r.stderr
    assert out.read_bytes() == b"finalized"


@pytest.mark.parametrize("given,expected", [
    pytest.param(None, "1", id="default-one-thread"),
    pytest.param("4", "4", id="the-environment-wins"),
])
def test_program_gives_openblas_one_thread_before_numpy(given, expected):
    """emu.program.run() sets OPENBLAS_NUM_THREADS (unless set) before numpy is imported."""
    code = (
        "import os, sys\n"
        "import emu.program\n"
        "before = 'numpy' in sys.modules\n"
        "real_import = __import__\n"
        "seen = {}\n"
        "def spy(name, *a, **k):\n"
        "    if name == 'numpy' and 'numpy' not in sys.modules:\n"
        "        seen['env'] = os.environ.get('OPENBLAS_NUM_THREADS')\n"
        "    return real_import(name, *a, **k)\n"
        "import builtins\n"
        "builtins.__import__ = spy\n"
        "sys.argv = ['s2emu', '--version']\n"
        "try:\n"
        "    emu.program.run()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(before, seen.get('env'))\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["False", expected]
