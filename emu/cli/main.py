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
from hyp.vcpu import RunResult

from ..boot.loader import LoaderError
from ..cpu import GuestCrash
from ..debug.step import step
from ..debug.trace import parse_kinds
from ..stop import sigint_stops
from .options import STEP_TRACE, UsageError, build_parser, check
from .session import EXIT_ERROR, EXIT_INTERRUPT, EXIT_USAGE, Session

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
    cpu = session.m.cpu
    if target is not None:
        cpu.add_breakpoint(target)
        result = session.run(max_insns=a.max_insns, timeout=a.timeout)
        cpu.remove_breakpoint(target)
        if result.reason != "debug":
            print(f"s2emu: error: the guest never reached {a.start} ({result.reason})",
                  file=sys.stderr)
            return result
        if session.tracer:
            session.tracer.attach(session.m)
    return step(session.m, a.count, session.trace_stream, timeout=a.timeout)


def run(a: argparse.Namespace) -> int:
    check(a)
    if a.command == "step":
        a.trace = a.trace or parse_kinds(STEP_TRACE)
        a.trace_later = bool(a.start)        # trace the steps, not the run up to --from
    session = Session(a)
    target = _resolve(session, a.start) if a.command == "step" and a.start else None
    gdb = _gdb_stub(session, a) if a.command == "run" and a.gdb else None
    session.start()
    result = RunResult("interrupt", 0)
    try:
        with sigint_stops(session.m.cpu.stop):
            if gdb is not None:
                stub, lsock = gdb
                result = stub.serve(lsock, a.gdb_wait, max_insns=a.max_insns,
                                    timeout=a.timeout)
            elif a.command == "run":
                result = session.run(max_insns=a.max_insns, timeout=a.timeout)
            else:
                result = _step(session, a, target)
    except KeyboardInterrupt:            # Ctrl-C while the guest was not running
        result = RunResult("interrupt", 0)
    except BaseException as e:           # GuestCrash: the trace ring shows what led to it
        session.close(error=f"{type(e).__name__}: {e}")
        raise
    session.finished(result)
    session.close(error=result.error)
    return session.report(result)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return run(args)
    except UsageError as e:
        print(f"s2emu: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (LoaderError, HypervisorError, DirtyLogError, GuestCrash, OutOfHostMemory,
            ValueError, OSError, MemoryError) as e:
        print(f"s2emu: error: {e or type(e).__name__}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("s2emu: interrupted", file=sys.stderr)
        return EXIT_INTERRUPT


if __name__ == "__main__":
    sys.exit(main())
