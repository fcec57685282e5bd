"""s2emu: run ARMv7 guests under a Python hypervisor (stage-2 translation, dirty logging).

Bad input anywhere gives one line on stderr and a non-zero status, never a traceback:
1 for a bad file or a run the machine cannot continue, 2 for a bad command line (checked
completely before anything runs), 3 for a guest that did not stop within its limits, 130 for
Ctrl-C (the guest stops at an instruction boundary and the summary is printed).
"""
from __future__ import annotations

import argparse
import sys

from hyp.abort import HypervisorError
from hyp.dirty import DirtyLogError
from hyp.host import OutOfHostMemory
from hyp.migration.errors import StreamError
from hyp.migration.params import Params
from hyp.vcpu import RunResult

from ..boot.loader import LoaderError
from ..cpu import GuestCrash
from ..debug.trace_format import parse_kinds
from ..stop import sigint_stops
from ..migration import MigrationError
from .mainloop import MainLoop
from .monitors import open_monitors
from .options import STEP_TRACE, UsageError, build_parser, check
from .session import (EXIT_ERROR, EXIT_INTERRUPT, EXIT_USAGE, LEVELS, Session, console,
                      make_machine)

# What only some runs need is imported where it is used, so that a plain `s2emu run` starts
# fast: the gdb stub, stepping, the Linux boot and its device tree, several VMs on one host,
# an incoming migration (and, through emu.cli.session and emu.cli.mainloop, tracing, Perfetto,
# outgoing migration and the monitors). tests/emu/test_cli_startup.py checks it.


def _resolve(session: Session, where: str) -> int:
    try:
        return int(where, 0)
    except ValueError:
        return session.image.symbol(where)


def _gdb_stub(session: Session, a: argparse.Namespace):
    """The stub and its bound socket (a busy port fails here, before anything runs)."""
    from ..debug.gdbstub import GdbStub

    def say(text: str) -> None:
        print(f"[s2emu] gdb: {text}", file=sys.stderr, flush=True)

    wait = " (waiting for gdb)" if a.gdb_wait else ""
    stub = GdbStub(session.m, log=say,
                   on_listen=lambda host, port: say(f"listening on {host}:{port}{wait}"))
    return stub, stub.listen(a.gdb)


def _step(session: Session, a: argparse.Namespace, target: int | None) -> RunResult:
    if target is not None:
        for cpu in session.m.cpus:                   # whichever vCPU gets there first
            cpu.add_breakpoint(target)
        result = session.run(max_insns=a.max_insns, timeout=a.timeout)
        for cpu in session.m.cpus:
            cpu.remove_breakpoint(target)
        if result.reason != "debug":
            print(f"s2emu: error: the guest never reached {a.start} ({result.reason})",
                  file=sys.stderr)
            return result
        if session.tracer:
            session.tracer.attach(session.m)
    from ..debug.step import step
    return step(session.m, a.count, session.trace_stream, timeout=a.timeout)


def _params(a: argparse.Namespace) -> Params:
    """Migration parameters from the options (QEMU's defaults otherwise)."""
    p = Params()
    if getattr(a, "max_bandwidth", None):
        p.bandwidth = a.max_bandwidth
    if getattr(a, "downtime_limit", None):
        p.downtime_ns = int(a.downtime_limit * 1e6)
    p.max_iterations = getattr(a, "migrate_max_iterations", None)
    p.auto_converge = getattr(a, "auto_converge", False)
    p.compress = getattr(a, "migrate_compress", False)
    p.rebuild = getattr(a, "migrate_rebuild", None) or "lazy"
    return p


def _dumpdtb(a: argparse.Namespace) -> int:
    """--dumpdtb FILE: the board's device tree as a boot would make it, then exit."""
    from ..boot.linux import dump_dtb
    m = make_machine(a)
    size = dump_dtb(m, a.dumpdtb, append=a.append or "")
    print(f"[s2emu] wrote the board's device tree ({size} bytes, {len(m.cpus)} vCPU"
          f"{'s' if len(m.cpus) > 1 else ''}, {m.ram.size >> 20} MiB) to {a.dumpdtb}",
          file=sys.stderr)
    return 0


def _sessions(a: argparse.Namespace) -> list[Session]:
    """The VMs of this run: one ELF, several on one host, or one arriving by migration."""
    if getattr(a, "incoming", None):
        from .incoming import receive
        return [receive(a)]
    args = a.args + [""] * (len(a.elf) - len(a.args))
    # a migration stream on stdout (--migrate-to -) sends the console to stderr
    out = sys.stderr.buffer if "-" in getattr(a, "migrate_to", []) else None
    if getattr(a, "kernel", None):
        return [Session(a, make_machine(a, console=console(out=out)), kernel=a.kernel)]
    if len(a.elf) == 1:
        return [Session(a, make_machine(a, console=console(out=out)), a.elf[0], args[0])]
    from ..host_machine import HostMachine
    hm = HostMachine([a.mem] * len(a.elf), vmid_bits=a.vmid_bits, icount=not a.no_icount,
                     split=a.split, max_level=LEVELS[a.hugepages],
                     consoles=[console(f"[vm{i}] ", out) for i in range(len(a.elf))])
    return [Session(a, m, elf, arg, label=f"{m.vm.name} ")
            for m, elf, arg in zip(hm.machines, a.elf, args)]


def run(a: argparse.Namespace) -> int:
    check(a)
    if getattr(a, "dumpdtb", None):
        return _dumpdtb(a)
    if a.command == "step":
        a.trace = a.trace or parse_kinds(STEP_TRACE)
        a.trace_later = bool(a.start)        # trace the steps, not the run up to --from
    monitors = open_monitors(a)              # a busy port fails before anything runs
    sessions = _sessions(a)
    session = sessions[0]
    target = _resolve(session, a.start) if a.command == "step" and a.start else None
    gdb = _gdb_stub(session, a) if a.command == "run" and a.gdb else None
    for s in sessions:
        s.start()
    results = [RunResult("interrupt", 0)] * len(sessions)
    try:
        with sigint_stops(session.m.cpu.stop):
            if gdb is not None:
                stub, lsock = gdb
                results = [stub.serve(lsock, a.gdb_wait, max_insns=a.max_insns,
                                      timeout=a.timeout)]
            elif a.command == "step":
                results = [_step(session, a, target)]
            else:
                loop = MainLoop(sessions, _params(a), dispatcher=monitors.dispatcher,
                                migrate_kw=dict(report_file=getattr(a, "migrate_report", None),
                                                plot_file=getattr(a, "migrate_plot", None)))
                monitors.start(loop)
                after_ns = int((getattr(a, "migrate_after", None) or 0) * 1e6)
                for v, uri in zip(loop.vms, getattr(a, "migrate_to", [])):
                    loop.migrate_at(v, uri, after_ns)
                results = loop.run(max_insns=a.max_insns, timeout=a.timeout)
    except KeyboardInterrupt:            # Ctrl-C while the guest was not running
        results = [RunResult("interrupt", 0)] * len(sessions)
    except BaseException as e:           # GuestCrash: the trace ring shows what led to it
        for s in sessions:
            s.close(error=f"{type(e).__name__}: {e}")
        raise
    finally:
        monitors.close()
    statuses = []
    for s, r in zip(sessions, results):
        s.finished(r)
        s.close(error=r.error)
        statuses.append(s.report(r))
    return next((st for st in statuses if st), 0)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return run(args)
    except UsageError as e:
        print(f"s2emu: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (LoaderError, HypervisorError, DirtyLogError, GuestCrash, OutOfHostMemory,
            MigrationError, StreamError, ValueError, OSError, MemoryError) as e:
        print(f"s2emu: error: {e or type(e).__name__}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("s2emu: interrupted", file=sys.stderr)
        return EXIT_INTERRUPT


if __name__ == "__main__":
    sys.exit(main())
