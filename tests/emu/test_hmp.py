"""The human monitor (emu/monitor/hmp.py) over io.StringIO and a pipe, on the stub backend
(emu/monitor/stub.py) run by a thread standing in for the main loop: what each command
prints, and the commands it sends."""
import io
import os
import threading
import time

import pytest

from emu.monitor.dispatch import Dispatcher
from emu.monitor.hmp import PROMPT, HumanMonitor, parse_size
from emu.monitor.stub import StubMainLoop, StubVM

TIMEOUT = 5.0


def session(lines, *, tick=None, events=False, vm_index=None, steps=3):
    """Run the monitor over `lines` to end of input; -> (outputs per command, the stub VM)."""
    d = Dispatcher()
    vm = StubVM(d, migration_steps=steps)
    out = io.StringIO()
    with StubMainLoop(d, vm, tick=tick):
        mon = HumanMonitor(d, io.StringIO("".join(f"{l}\n" for l in lines)), out,
                           events=events, vm=vm_index, poll_interval=0.01, timeout=TIMEOUT)
        assert mon.start().join(TIMEOUT)
    chunks = out.getvalue().split(PROMPT)
    assert chunks[0] == ""
    return chunks[1:], vm


ACTIVE = """Migration status: active
total time: 1 ms
expected downtime: 150 ms
setup: 1 ms
transferred ram: 0 kbytes
throughput: 0.00 mbps
remaining ram: 131072 kbytes
total ram: 131072 kbytes
duplicate: 0 pages
normal: 0 pages
normal bytes: 0 kbytes
dirty sync count: 0
page size: 4 kbytes
cpu throttle percentage: 0
"""

COMPLETED = """Migration status: completed
total time: 301 ms
expected downtime: 150 ms
downtime: 7 ms
setup: 1 ms
transferred ram: 131072 kbytes
throughput: 3567.25 mbps
remaining ram: 0 kbytes
total ram: 131072 kbytes
duplicate: 16384 pages
normal: 16384 pages
normal bytes: 65536 kbytes
dirty sync count: 3
page size: 4 kbytes
dirty pages rate: 300 pages
cpu throttle percentage: 20
"""


@pytest.mark.parametrize("lines, outputs", [
    pytest.param(["info status"], ["VM status: running\n"], id="info-status"),
    pytest.param(["stop", "info status", "c", "info status"],
                 ["", "VM status: paused\n", "", "VM status: running\n"], id="stop-cont"),
    pytest.param(["", "   "], ["", ""], id="empty-lines"),
    pytest.param(["foo", "info foo", "info status now"],
                 ["unknown command: 'foo'\n", "unknown command: 'info foo'\n",
                  "unknown command: 'info status now'\n"], id="unknown"),
    pytest.param(["stop now", "migrate", "migrate -d", "migrate -x tcp:h:1", "migrate a b"],
                 ["stop takes no arguments\n"] + ["usage: migrate [-d] URI\n"] * 4,
                 id="bad-arguments"),
    pytest.param(["migrate gopher:h", "cont"], ["unknown migration protocol: gopher:h\n", ""],
                 id="command-error"),
    pytest.param(["info migrate", "migrate -d tcp:10.0.0.2:4444", "info migrate"],
                 ["", "", ACTIVE], id="info-migrate-active"),
    pytest.param(["migrate -d tcp:h:1", "migrate_cancel", "info migrate"],
                 ["", "", ACTIVE.replace("active", "cancelled")], id="cancel"),
    pytest.param(["migrate_set_parameter max-bandwidth 1G",
                  "migrate_set_parameter downtime-limit 50",
                  "migrate_set_parameter x-max-iterations 7", "info migrate_parameters"],
                 ["", "", "", "max-bandwidth: 1073741824 bytes/second\ndowntime-limit: 50 ms\n"
                  "x-max-iterations: 7\ncpu-throttle-initial: 20\n"
                  "cpu-throttle-increment: 10\n"], id="parameters"),
    pytest.param(["migrate_set_parameter max-bandwidth 10x",
                  "migrate_set_parameter downtime-limit -1",
                  "migrate_set_parameter max-bandwidth", "migrate_set_parameter speed 3"],
                 ["'10x' is not a size (N[K|M|G|T] bytes)\n",
                  "'-1' is not a number of milliseconds\n",
                  "usage: migrate_set_parameter NAME VALUE\n",
                  "Parameter 'speed' is unexpected\n"], id="bad-parameters"),
    pytest.param(["migrate_set_capability auto-converge maybe",
                  "migrate_set_capability warp-drive on"],
                 ["usage: migrate_set_capability NAME on|off\n",
                  "Parameter 'capability' does not accept value 'warp-drive'\n"],
                 id="bad-capabilities"),
    pytest.param(["info dirty", "migrate -d tcp:h:1", "info dirty"],
                 ["memslot flash0: logging off, dirty pages 0\n"
                  "memslot flash1: logging off, dirty pages 0\n"
                  "memslot ram: logging off, dirty pages 0\nharvests: 0\n", "",
                  "memslot flash0: logging off, dirty pages 0\n"
                  "memslot flash1: logging off, dirty pages 0\n"
                  "memslot ram: logging on, dirty pages 0\nharvests: 0\n"], id="info-dirty"),
    pytest.param(["info stage2"],
                 ["VMID 1: 3 mappings\n"
                  "IPA 0x00000000-0x001fffff -> PA 0x7f0000000000 r-x level 2\n"
                  "IPA 0x40000000-0x401fffff -> PA 0x7f1000000000 rwx level 2\n"
                  "IPA 0x40200000-0x40200fff -> PA 0x7f1000200000 r-x level 3\n"],
                 id="info-stage2"),
])
def test_command_output(lines, outputs):
    got, _ = session(lines)
    assert got == outputs + [""]                   # the last prompt, then end of input


def test_migrate_waits_for_the_end_and_prints_it():
    got, vm = session(["migrate_set_capability auto-converge on", "migrate tcp:h:1",
                       "info migrate", "info status"], tick=0.002)
    assert got == ["", "Migration status: completed\n", COMPLETED,
                   "VM status: paused (postmigrate)\n", ""]
    assert vm.caps["auto-converge"] is True
    assert ("migrate", {"uri": "tcp:h:1"}) in vm.calls


def test_a_failed_migration():
    got, _ = session(["migrate fail:h", "info migrate"], tick=0.002)
    assert got[0] == "Migration status: failed (stub: the destination went away)\n"
    assert got[1].startswith("Migration status: failed (stub: the destination went away)\n")


def test_events_are_printed_one_line_each():
    got, _ = session(["stop", "cont", "migrate tcp:h:1", "quit"], tick=0.002, events=True)
    assert got == ["event STOP\n", "event RESUME\n",
                   "event MIGRATION status=setup\nevent MIGRATION status=active\n"
                   "event STOP\nevent MIGRATION status=completed\n"
                   "Migration status: completed\n",
                   'event SHUTDOWN guest=false reason=host-qmp-quit\n']


def test_quit_ends_the_monitor_and_the_rest_is_not_read():
    got, vm = session(["q", "info status"])
    assert got == [""] and vm.quit.is_set()        # no prompt after quit
    assert [c for c, _ in vm.calls] == ["quit"]


def test_end_of_input_leaves_the_vm_alone():
    d = Dispatcher()
    vm = StubVM(d)
    with StubMainLoop(d, vm):
        mon = HumanMonitor(d, io.StringIO("stop\n"), io.StringIO()).start()
        assert mon.join(TIMEOUT)
        assert d.call("query-status")["status"] == "paused" and not vm.quit.is_set()
        assert d._listeners == []                  # its event printer is gone too


def test_x_vm_goes_with_every_command():
    _, vm = session(["info status", "stop"], vm_index=2)
    assert vm.calls == [("query-status", {"x-vm": 2}), ("stop", {"x-vm": 2})]


def test_help_lists_every_command():
    got, _ = session(["help", "info"])
    for name in ("info", "stop", "cont|c", "migrate [-d] URI", "migrate_cancel",
                 "migrate_set_parameter", "migrate_set_capability", "quit|q"):
        assert f"\n{name}" in "\n" + got[0]
    assert got[1].splitlines() == [f"info {n} -- show {t}" for n, t in (
        ("status", "the VM's run state"), ("migrate", "the migration's progress"),
        ("migrate_parameters", "the migration parameters"),
        ("dirty", "dirty page logging, per memslot"), ("stage2", "the stage-2 mappings"))]


@pytest.mark.parametrize("text, value", [
    ("0", 0), ("4096", 4096), ("64K", 64 << 10), ("10m", 10 << 20), ("1G", 1 << 30),
    ("2T", 2 << 40)])
def test_sizes(text, value):
    assert parse_size(text) == value


def test_a_main_loop_that_does_not_answer_or_answers_nonsense():
    d = Dispatcher()
    out = io.StringIO()
    HumanMonitor(d, io.StringIO("info status\n"), out, timeout=0.1).run()
    assert out.getvalue() == f"{PROMPT}the main loop did not answer in 0.1 s\n{PROMPT}"
    out = io.StringIO()
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            d.wait(0.05)
            d.process(lambda command, args: {"vmid": 1})
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    HumanMonitor(d, io.StringIO("info status\ninfo stage2\n"), out, timeout=TIMEOUT).run()
    stop.set()
    t.join(TIMEOUT)
    assert out.getvalue().split(PROMPT)[1:] == [
        "malformed answer from the main loop: KeyError: 'running'\n",
        "malformed answer from the main loop: KeyError: 'mappings'\n", ""]


def wait_for(predicate):
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_over_a_pipe_line_by_line_and_close_while_migrating():
    d = Dispatcher()
    vm = StubVM(d)
    r, w = os.pipe()
    with StubMainLoop(d, vm, tick=None), os.fdopen(r) as rfile, os.fdopen(w, "w") as wfile:
        out = io.StringIO()
        mon = HumanMonitor(d, rfile, out, poll_interval=0.01).start()
        wait_for(lambda: out.getvalue() == PROMPT)
        wfile.write("stop\n")
        wfile.flush()
        wait_for(lambda: out.getvalue().count(PROMPT) == 2)
        assert vm.status == "paused"
        wfile.write("migrate tcp:h:1\n")             # never completes: tick=None
        wfile.flush()
        wait_for(lambda: len(vm.calls) >= 3)          # stop, migrate, query-migrate...
        assert mon._thread.is_alive()
        mon.close()
        assert mon.join(TIMEOUT)
        assert out.getvalue() == (f"{PROMPT}event STOP\n{PROMPT}event MIGRATION status=setup\n"
                                  "event MIGRATION status=active\n")   # no prompt after close
