"""What one `s2emu` invocation sets up around a Machine: console, dirty logging with periodic
harvests, tracing, the Perfetto export, and the report printed when the run ends."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from hyp import dirty
from hyp.vcpu import RunResult

from ..machine import Machine
from . import console as serial

if TYPE_CHECKING:       # imported where used: a plain run needs none of them
    from ..boot.linux import Boot
    from ..debug.perfetto import PerfettoExporter
    from ..debug.trace import Tracer

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LIMIT, EXIT_INTERRUPT = 0, 1, 2, 3, 130
LEVELS = {"1g": 1, "2m": 2, "4k": 3}


class ConsoleSink:
    """A PL011 sink writing the guest's console to stdout (or `out`): each character at once
    to a terminal; to a pipe or file one write per line, so processes sharing it never tear
    each other's lines, with `flush()` for a partial line (emu.cli.console calls it when the
    guest leaves one waiting, e.g. a prompt, and at the end); with a `prefix` (several VMs)
    whole lines only, each prefixed."""

    def __init__(self, prefix: str = "", out=None) -> None:
        self.out = out or sys.stdout.buffer
        self.tag = prefix.encode()
        self.line = bytearray()
        self.interactive = not self.tag and self.out.isatty()

    def __call__(self, b: bytes) -> None:
        if self.interactive:
            self.out.write(b)
            self.out.flush()
            return
        self.line.extend(b)
        if b == b"\n":
            self.out.write(self.tag + bytes(self.line))
            self.out.flush()
            self.line.clear()

    def flush(self) -> None:
        """Write a partial line now (not with a prefix: its line would be split)."""
        if self.line and not self.tag:
            self.out.write(bytes(self.line))
            self.out.flush()
            self.line.clear()


def console(prefix: str = "", out=None) -> ConsoleSink:
    return ConsoleSink(prefix, out)


def make_machine(a: argparse.Namespace, **kw) -> Machine:
    """One board as the options describe it."""
    return Machine(a.mem, split=a.split, icount=not a.no_icount,
                   max_level=LEVELS[a.hugepages], smp=getattr(a, "smp", 1), **kw)


class Session:
    """A Machine (its guest loaded from `elf`, or arrived by migration) plus the observers
    the options asked for. `label`: how messages name the VM when there are several."""

    def __init__(self, a: argparse.Namespace, m: Machine, elf: str | None = None,
                 args: str = "", label: str = "", kernel: str | None = None) -> None:
        """Load the guest, an ELF or a kernel with the Linux boot protocol (nothing runs)."""
        self.a = a
        self.m = m
        self.label = label
        self.image = m.load(elf, args) if elf else None
        self.boot: Boot | None = None
        if kernel:
            from ..boot.linux import boot_linux
            self.boot = boot_linux(m, kernel, initrd_path=a.initrd, append=a.append or "",
                                   dtb_path=a.dtb)
            self.image = m.image
            b = self.boot
            print(f"[s2emu] {label}{b.kernel} at {b.entry:#x}-{b.kernel_end:#x}"
                  + (f", initrd at {b.initrd[0]:#x}-{b.initrd[1]:#x}" if b.initrd else "")
                  + f", DTB at {b.dtb_address:#x} ({len(b.dtb)} bytes)", file=sys.stderr)
        self.migration = None                    # emu.cli.migrate.Migration when one runs
        self._trace_file = None
        self.tracer: Tracer | None = None
        self.exporter: PerfettoExporter | None = None
        self.console: serial.Console | None = None
        self.harvests = 0

    def start(self) -> None:
        """Open the outputs, pre-fault, turn dirty logging on (a harvest every --harvest-ms
        of virtual time, and whenever the dirty ring is full), attach tracing."""
        a, m = self.a, self.m
        self._trace_file = open(a.trace_file, "w") if a.trace and a.trace_file else None
        if a.trace:
            from ..debug.trace import Tracer
            self.tracer = Tracer(a.trace, out=self._trace_file, fmt=a.trace_format,
                                 addr_range=a.trace_range, ring=a.trace_ring,
                                 slices=a.command != "step")
            if not getattr(a, "trace_later", False):
                self.tracer.attach(m)
        if a.perfetto:
            from ..debug.perfetto import PerfettoExporter
            self.exporter = PerfettoExporter(m)
        if a.prefault:
            m.vm.update_vmid()
            m.vm.map_slot(m.ram)
        if a.log_dirty:
            vm = m.vm
            if a.dirty_mode == "ring":
                dirty.enable_dirty_ring(vm, a.ring_size)
                vm.on_dirty_ring_full = lambda: self.harvest(ring_full=True)
            dirty.enable_logging(vm, m.ram, manual_protect=a.dirty_mode == "manual")
            vm.clock.every(max(1, round(a.harvest_ms * 1e6)), lambda now: self.harvest())
            print(f"[s2emu] {self.label}dirty logging on {m.ram.name} ({m.ram.npages} pages, "
                  f"{a.dirty_mode}, split {vm.split}), harvest every {a.harvest_ms:g} ms of "
                  f"virtual time", file=sys.stderr)
        self.console = serial.for_run(a, m.uart, on_quit=lambda: m.cpu.stop.request("quit"))
        if self.console.on_stdout:               # typed input and prompts: after every exit
            m.vcpu.pollers.append(self._poll_console)
        self.console.start()

    def _poll_console(self) -> None:
        self.console.poll(self.m.vm.clock.now_ns())

    @property
    def trace_stream(self):
        """Where the trace goes (and step lines, so the two interleave in order)."""
        return self._trace_file or sys.stderr

    def run(self, max_insns: int | None = None, timeout: float | None = None) -> RunResult:
        """Run the guest (harvests happen on their virtual-time timer)."""
        return self.m.run(max_insns=max_insns, timeout=timeout)

    def finished(self, result: RunResult) -> None:
        """However the guest ran (free, stepped, under gdb): with dirty logging, one last
        harvest when it powers off."""
        if self.a.log_dirty and result.reason in ("off", "reset"):
            self.harvest()

    def harvest(self, ring_full: bool = False) -> int:
        """Collect the RAM slot's dirty pages (and re-protect them) and report the count."""
        vm = self.m.vm
        pages = int(dirty.collect(vm, self.m.ram).sum())
        self.harvests += 1
        if self.exporter:
            self.exporter.harvest(pages)
        why = " (ring full)" if ring_full else ""
        print(f"[s2emu] {self.label}harvest {self.harvests} @ {vm.clock.now_ns() / 1e6:.3f} ms: {pages} "
              f"dirty pages ({pages * 4 / 1024:.2f} MiB){why}", file=sys.stderr)
        return pages

    def close(self, error: str | None = None) -> None:
        """Give the terminal back, flush the trace ring, write the Perfetto file, close the
        trace file."""
        if self.console:
            self.console.close()
        if self.tracer:
            self.tracer.close(error=error)
        if self.exporter:
            self.exporter.write(self.a.perfetto)
        if self._trace_file:
            self._trace_file.close()

    def report(self, result: RunResult) -> int:
        """Print the end-of-run report; return the exit status."""
        m, a = self.m, self.a
        sys.stdout.flush()
        on_stdout = self.console is None or self.console.on_stdout
        if on_stdout and m.uart.output and not m.uart.output.endswith(b"\n"):
            print()
        if a.dump_s2:
            print(f"[s2emu] stage-2 mappings of VMID {m.vm.vmid} (VTTBR {m.vm.stage2.vttbr:#018x},"
                  f" VTCR {m.vm.stage2.vtcr:#010x}):", file=sys.stderr)
            for r in m.vm.stage2.dump():
                print("  " + r.describe(), file=sys.stderr)
        if a.dump_s1 or a.walk:
            from hyp.arch.s1debug import dump_s1, explain_s1, regime_text
        if a.dump_s1:
            print(f"[s2emu] {regime_text(m.mmu.s1)}", file=sys.stderr)
            for r in dump_s1(m.mmu):
                print("  " + r.describe(), file=sys.stderr)
        for va in a.walk:
            print("\n".join(explain_s1(m.mmu, va)), file=sys.stderr)
        if not a.quiet:
            print(m.summary(result).replace("[s2emu] ", f"[s2emu] {self.label}", 1),
                  file=sys.stderr)
        return exit_status(m, result, a)


def exit_status(m: Machine, result: RunResult, a: argparse.Namespace) -> int:
    if result.reason in ("off", "reset", "killed", "migrated", "quit"):
        return EXIT_OK      # killed: by the debugger; migrated: runs elsewhere; quit: Ctrl-A X
    if result.reason == "budget":
        if getattr(a, "max_insns", None) is None:
            return EXIT_OK                      # a bounded step session ended normally
        print(f"s2emu: error: guest did not stop within {a.max_insns} instructions "
              f"(PC {m.cpu.pc:#x})", file=sys.stderr)
        return EXIT_LIMIT
    if result.reason == "timeout":
        print(f"s2emu: error: guest did not stop within {a.timeout} s (PC {m.cpu.pc:#x})",
              file=sys.stderr)
        return EXIT_LIMIT
    if result.reason == "interrupt":
        print(f"s2emu: interrupted (Ctrl-C) at PC {m.cpu.pc:#x}", file=sys.stderr)
        return EXIT_INTERRUPT
    if result.reason == "wfi":
        print(f"s2emu: error: guest waits for an interrupt (WFI at PC {m.cpu.pc:#x}) and this "
              f"board has no interrupt source", file=sys.stderr)
        return EXIT_ERROR
    print(f"s2emu: error: {result.error or result.reason}", file=sys.stderr)
    return EXIT_ERROR
