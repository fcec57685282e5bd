"""gdb threads of the GDB stub, one per vCPU (emu/debug/gdb_threads.py, gdb_run.py): the
thread packets as tables (in-process: GdbStub.handle), per-vCPU registers, memory through
each vCPU's stage 1, breakpoints and watchpoints on every vCPU with the stop reply naming
the vCPU, single steps of one vCPU; and gdb-multiarch itself on a two-vCPU guest.

The guest is tests/emu/test_smp.py's two-vCPU program (through test_trace_smp.smp_machine):
vCPU 0 at RAM_BASE turns vCPU 1 on at RAM_BASE + 0x100 (CPU_ON, r0 = 0x42), both increment
a counter at DATA with LDREX/STREX (vCPU 0's STREX at +0x50, vCPU 1's at +0x11c), vCPU 1
turns itself off, vCPU 0 waits for it and powers the machine off.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading

import pytest

from emu.debug.gdbstub import GdbStub
from emu.machine import RAM_BASE, Machine

from conftest import GUESTS
from test_smp import DATA
from test_trace_smp import smp_machine

GDB = shutil.which("gdb-multiarch")
needs_gdb = pytest.mark.skipif(GDB is None, reason="gdb-multiarch is not installed")
TIMEOUT = 60
SECONDARY = RAM_BASE + 0x100
LOOP1 = SECONDARY + 0x14               # vCPU 1's ldrex: the top of its loop
STREX0, STREX1 = RAM_BASE + 0x50, SECONDARY + 0x1C
SP0 = RAM_BASE + 0x8000


def hexs(text: str) -> str:
    return text.encode().hex()


def le(value: int) -> str:
    return value.to_bytes(4, "little").hex()


def two_vcpus(**kw) -> GdbStub:
    m = smp_machine(**kw)
    m.cpus[0].set_reg(13, SP0)
    return GdbStub(m, slice_insns=1000)


def reg(stub, n: int) -> int:
    return int.from_bytes(bytes.fromhex(stub.handle(f"p{n:x}")[-1]), "little")


def run(stub, packet: str) -> str:
    """A resume packet; returns its stop reply (console text dropped)."""
    replies = stub.handle(packet, timeout=TIMEOUT)
    return replies[-1]


# ---- the thread packets ------------------------------------------------------------------
# (packet, reply) in order on one stub: vCPU 1 is off, nothing has run
SELECTION = [
    ("qfThreadInfo", "m1,2"), ("qsThreadInfo", "l"), ("qC", "QC1"),
    ("qThreadExtraInfo,1", hexs("vCPU 0 (running)")),
    ("qThreadExtraInfo,2", hexs("vCPU 1 (off)")),
    ("qThreadExtraInfo,3", "E01"), ("qThreadExtraInfo,0", "E01"),
    ("qThreadExtraInfo,-1", "E01"), ("qThreadExtraInfo,zz", "E01"),
    ("T1", "OK"), ("T2", "OK"),                      # an off vCPU's thread is listed, alive
    ("T3", "E01"), ("T0", "E01"), ("T-1", "E01"),
    ("pd", le(SP0)),                                 # vCPU 0's sp
    ("Hg2", "OK"), ("qC", "QC2"), ("pd", le(0)),     # vCPU 1's (its reset state)
    ("Hg0", "OK"), ("qC", "QC2"),                    # any thread: the selection stays
    ("Hg-1", "OK"), ("qC", "QC2"),
    ("Hg3", "E01"), ("Hgzz", "E01"), ("Hx1", "E01"), ("Hg", "E01"), ("qC", "QC2"),
    ("Pd=00100040", "OK"), ("pd", le(0x40001000)),   # written to vCPU 1 only
    ("Hg1", "OK"), ("pd", le(SP0)),
    ("Hc2", "OK"), ("Hc0", "OK"), ("Hc-1", "OK"), ("Hc3", "E01"),
    ("vCont;s:3", "E01"), ("vCont;c:3", "E01"), ("vCont;s:2;c:4", "E01"), ("vCont?",
                                                                           "vCont;c;C;s;S"),
]


def test_thread_packets_and_per_vcpu_registers():
    stub = two_vcpus()
    for packet, want in SELECTION:
        assert stub.handle(packet) == [want], packet
    m = stub.machine
    assert m.cpus[0].reg(13) == SP0 and m.cpus[1].reg(13) == 0x40001000
    assert [c.progress for c in m.cpus] == [0, 0]    # nothing ran


def test_memory_goes_through_the_selected_vcpus_stage_1():
    """vCPU 1 maps VA 0 to RAM (a short-descriptor section); vCPU 0's MMU is off, so VA 0
    is flash for it."""
    stub = two_vcpus()
    m = stub.machine
    table = RAM_BASE + 0x10000                       # 16 KiB aligned, zeros but entry 0
    m.vm.write_guest(table, (RAM_BASE | 0xC02).to_bytes(4, "little"), debugger=True)
    cpu1 = m.cpus[1]
    cpu1.cp15_write("TTBR0", table)
    cpu1.cp15_write("TTBCR", 0)
    cpu1.cp15_write("DACR", 0x3)                     # domain 0: manager
    cpu1.cp15_write("SCTLR", cpu1.cp15_read("SCTLR") | 1)
    cpu1.sync_stage1()
    m.vm.update_vmid()                               # vCPU 1 has not run: give its MMU
    m.vm.map_slot(m.ram)                             # the VM's stage 2, with RAM mapped
    cpu1.load_stage2(m.vm.hcr, m.vm.stage2.vtcr, m.vm.stage2.vttbr)
    code = m.vm.read_guest(RAM_BASE, 8).hex()
    assert stub.handle("m0,8") == ["00" * 8]         # vCPU 0: flash
    assert stub.handle("Hg2") == ["OK"]
    assert stub.handle("m0,8") == [code]             # vCPU 1: RAM through its table
    assert stub.handle("M0,4:0000a0e1") == ["OK"]    # nop, at IPA RAM_BASE
    assert m.vm.read_guest(RAM_BASE, 4) == bytes.fromhex("0000a0e1")
    walk = "".join(bytes.fromhex(r[1:]).decode() for r in stub.handle(
        "qRcmd," + hexs("s1 walk 0x0"))[:-1])
    assert "-> IPA 0x40000000" in walk               # monitor s1: the selected vCPU's
    assert stub.handle("Hg1") == ["OK"] and stub.handle("m0,4") == ["00000000"]


def test_stop_replies_name_the_vcpu_and_steps_run_one_vcpu_alone():
    stub = two_vcpus()
    m = stub.machine
    stub.handle("qSupported:swbreak+")
    # stepping vCPU 1 while it is off: the machine runs until it is on and made its step
    replies = stub.handle("vCont;s:2;c", timeout=TIMEOUT)
    assert replies[-1] == "T05thread:2;"
    assert "vCPU 1 is off" in bytes.fromhex(replies[0][1:]).decode()
    assert m.cpus[1].pc == SECONDARY + 4 and m.cpus[1].reg(8) == 0x42
    assert stub.handle("qC") == ["QC2"]              # the stop selected its thread
    assert stub.handle("qThreadExtraInfo,2") == [hexs("vCPU 1 (running)")]
    # a step of one vCPU: the other does not move
    for tid, cpu in ((1, m.cpus[0]), (2, m.cpus[1]), (2, m.cpus[1])):
        other = m.cpus[2 - tid]
        before, other_pc, other_steps = cpu.pc, other.pc, other.progress
        assert run(stub, f"vCont;s:{tid}") == f"T05thread:{tid};"
        assert cpu.pc == before + 4
        assert (other.pc, other.progress) == (other_pc, other_steps)
    # s steps the Hc thread, or the Hg one
    assert stub.handle("Hg1") == ["OK"] and stub.handle("Hc2") == ["OK"]
    pc0, pc1 = m.cpus[0].pc, m.cpus[1].pc
    assert run(stub, "s") == "T05thread:2;" and m.cpus[1].pc == pc1 + 4
    assert stub.handle("Hc-1") == ["OK"] and stub.handle("Hg1") == ["OK"]
    assert run(stub, "s") == "T05thread:1;" and m.cpus[0].pc == pc0 + 4
    # a breakpoint in vCPU 1's loop: continuing stops there, on vCPU 1, again and again
    assert stub.handle(f"Z0,{LOOP1:x},4") == ["OK"]
    for _ in range(3):
        assert run(stub, "vCont;c") == "T05thread:2;swbreak:;"
        assert m.cpus[1].pc == LOOP1 and stub.handle("qC") == ["QC2"]
    assert stub.handle(f"z0,{LOOP1:x},4") == ["OK"]
    assert run(stub, "c") == "W00"
    assert m.vm.power.states == ["on", "off"]


def test_watchpoints_are_on_every_vcpu():
    """Both vCPUs store to the counter: a write watchpoint stops each of them, before its
    STREX, and the reply names which."""
    stub = two_vcpus(quantum=7)
    m = stub.machine
    assert stub.handle(f"Z2,{DATA:x},4") == ["OK"]
    seen = set()
    for _ in range(12):
        reply = run(stub, "vCont;c")
        tid = int(re.fullmatch(rf"T05thread:(\d);watch:{DATA:x};", reply).group(1))
        assert m.cpus[tid - 1].pc == (STREX0, STREX1)[tid - 1]   # not executed yet
        seen.add(tid)
    assert seen == {1, 2}
    assert stub.handle(f"z2,{DATA:x},4") == ["OK"]
    assert run(stub, "c") == "W00"
    assert int.from_bytes(m.vm.read_guest(DATA, 4), "little") == 2 * 40


# vCPU 0: CPU_ON(1, +0x100); GIC on (distributor, CPU interface, PMR 0xff, SGI 1 enabled);
# loop: wfi (IRQs masked: it only wakes); IAR -> r5; EOIR; r7 += 1
WAITER = [0xE3000003, 0xE3480400, 0xE3A01001, 0xE3002100, 0xE3442000, 0xE3A03000,
          0xE1400070, 0xE3004000, 0xE3404800, 0xE3006000, 0xE3406801, 0xE3A05001,
          0xE5845000, 0xE5865000, 0xE3A050FF, 0xE5865004, 0xE3A05002, 0xE5845100,
          0xE3A07000, 0xE320F003, 0xE596500C, 0xE5865010, 0xE2877001, 0xEAFFFFFA]
WFI = RAM_BASE + 0x4C
# vCPU 1 at +0x100: spin 200 times, then GICD_SGIR = SGI 1 to vCPU 0 (at SEND), again
WAKER = [0xE3004000, 0xE3404800, 0xE3A08000, 0xE2888001, 0xE35800C8, 0x1AFFFFFC,
         0xE3005001, 0xE3405001, 0xE5845F00, 0xE3A08000, 0xEAFFFFF7]
SEND = SECONDARY + 0x20


def test_stepping_a_vcpu_waiting_in_wfi_runs_the_machine_until_it_steps():
    import struct
    m = Machine(16 << 20, smp=2, console=lambda b: None)
    for at, words in ((0, WAITER), (0x100, WAKER)):
        m.vm.write_guest(RAM_BASE + at, struct.pack(f"<{len(words)}I", *words),
                         debugger=True)
    m.cpu.set_pc(RAM_BASE, False)
    m.vcpu.quantum = 100
    stub = GdbStub(m, slice_insns=1000)
    cpu0, cpu1 = m.cpus
    assert stub.handle(f"Z0,{SEND:x},4") == ["OK"]
    assert run(stub, "vCont;c") == "T05thread:2;"
    assert cpu1.pc == SEND and cpu0.pc == WFI + 4
    assert stub.handle("qThreadExtraInfo,1") == [hexs("vCPU 0 (wfi)")]
    # vCPU 0 cannot step alone: vCPU 1 runs on, its SGI wakes vCPU 0, which makes its one
    # step (the IAR read) and stops
    assert stub.handle(f"z0,{SEND:x},4") == ["OK"]
    assert run(stub, "vCont;s:1;c") == "T05thread:1;"
    assert cpu0.pc == WFI + 8 and cpu0.reg(5) == 0x401       # SGI 1 from vCPU 1
    assert cpu1.pc != SEND
    # now it runs: it steps alone, up to its next WFI
    pc1 = cpu1.pc
    for pc in (WFI + 12, WFI + 16, WFI, WFI + 4):
        assert run(stub, "vCont;s:1;c") == "T05thread:1;" and cpu0.pc == pc
    assert cpu1.pc == pc1 and stub.handle("qThreadExtraInfo,1") == [hexs("vCPU 0 (wfi)")]
    # waiting again: while the machine runs for its step, vCPU 1 hits a breakpoint first
    assert stub.handle(f"Z0,{SEND:x},4") == ["OK"]
    assert run(stub, "vCont;s:1;c") == "T05thread:2;"
    assert cpu1.pc == SEND and cpu0.pc == WFI + 4 and cpu0.reg(7) == 1


def test_one_vcpu_answers_as_before():
    m = Machine()
    m.load(os.path.join(GUESTS, "hello.elf"))
    stub = GdbStub(m)
    for packet, want in [("qfThreadInfo", "m1"), ("qC", "QC1"), ("T2", "E01"),
                         ("qThreadExtraInfo,1", hexs("vCPU 0")), ("Hg2", "E01")]:
        assert stub.handle(packet) == [want], packet


# ---- gdb-multiarch -------------------------------------------------------------------------
class Served:
    """A GdbStub serving `machine` on a free loopback port in a thread."""

    def __init__(self, machine) -> None:
        ready = threading.Event()
        self.stub = GdbStub(machine, on_listen=lambda host, port: ready.set())
        self.result = self.error = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        assert ready.wait(TIMEOUT)

    def _serve(self):
        try:
            self.result = self.stub.serve("tcp::0", True)
        except BaseException as e:              # reported by join()
            self.error = e

    def gdb(self, *commands, elf=None):
        args = [GDB, "-q", "-batch", "-nx", "-iex", "set debuginfod enabled off",
                "-ex", "set confirm off", "-ex", "set pagination off"]
        if elf is None:
            args += ["-ex", "set architecture arm"]
        else:
            args += ["-ex", f"directory {GUESTS}"]
        args += ["-ex", f"target remote 127.0.0.1:{self.stub.port}"]
        for c in commands:
            args += ["-ex", c]
        p = subprocess.run(args + ([elf] if elf else []), capture_output=True, text=True,
                           timeout=TIMEOUT)
        return p.stdout + p.stderr

    def join(self):
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "serve() did not return"
        if self.error is not None:
            raise self.error
        return self.result


@needs_gdb
def test_gdb_info_threads_thread_bt_x_stepi_continue():
    m = smp_machine()
    m.cpus[0].set_reg(13, SP0)
    m.vm.write_guest(SP0, bytes(range(16)), debugger=True)
    s = Served(m)
    out = s.gdb("info threads", f"break *{LOOP1:#x}", "continue", "info threads", "bt",
                "x/4x $sp", "thread 1", "x/4x $sp", "p/x $pc", "stepi", "p/x $pc",
                "thread 2", "p/x $pc", "stepi", "p/x $pc", "continue", "p/x $pc",
                "delete", "continue")
    result = s.join()
    threads = out.split("Id   Target Id")[1:]
    assert re.search(r"\* 1 +Thread 1 \(vCPU 0 \(running\)\)", threads[0]), out
    assert re.search(r"  2 +Thread 2 \(vCPU 1 \(off\)\)", threads[0]), out
    assert f"Thread 2 hit Breakpoint 1, {LOOP1:#x} in ?? ()" in out
    assert re.search(r"\* 2 +Thread 2 \(vCPU 1 \(running\)\) +" + f"{LOOP1:#x}", threads[1])
    assert re.search(rf"#0  {LOOP1:#x} in \?\? \(\)", out)                  # bt
    assert re.search(r"^0x0:\s+0x00000000\s+0x00000000", out, re.M)        # vCPU 1's sp: 0
    assert re.search(rf"^{SP0:#x}:\s+0x03020100\s+0x07060504", out, re.M)  # vCPU 0's
    pcs = [int(v, 16) for v in re.findall(r"^\$\d+ = (0x[0-9a-f]+)$", out, re.M)]
    # thread 1 steps one instruction (gdb first steps thread 2 off its breakpoint: alone)
    assert pcs[1] == pcs[0] + 4 and RAM_BASE <= pcs[0] < SECONDARY
    assert pcs[2] == LOOP1 + 4 and pcs[3] == pcs[2] + 4
    assert pcs[4] == LOOP1                                   # continue: back at the break
    assert "exited normally" in out, out
    assert result.reason == "off" and m.vm.power.states == ["on", "off"]
    assert int.from_bytes(m.vm.read_guest(DATA, 4), "little") == 2 * 40


@needs_gdb
def test_gdb_on_the_irq_guest_with_two_vcpus():
    """A guest with symbols: vCPU 1 is off until the guest's CPU_ON."""
    m = Machine(smp=2, console=lambda b: None)
    img = m.load(os.path.join(GUESTS, "irq.elf"))
    s = Served(m)
    out = s.gdb("break main", "continue", "info threads", "bt", "thread 2",
                "info registers pc", "thread 1", "stepi", "info threads", "kill",
                elf=os.path.join(GUESTS, "irq.elf"))
    assert s.join().reason == "killed"
    assert "Thread 1 hit Breakpoint 1, main () at irq.c" in out, out
    assert re.search(r"\* 1 +Thread 1 \(vCPU 0 \(running\)\) main \(\) at irq\.c", out)
    assert re.search(r"  2 +Thread 2 \(vCPU 1 \(off\)\) +0x00000000 in \?\? \(\)", out)
    assert re.search(r"^#0  main \(\) at irq\.c:\d+", out, re.M)
    assert re.search(r"^pc +0x0 +0x0$", out, re.M)                   # vCPU 1: reset state
    assert m.cpus[0].pc == img.symbol("main") + 4
