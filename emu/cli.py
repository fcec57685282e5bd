"""s2emu: run ARMv7 guests under a Python hypervisor (stage-2 translation, dirty logging)."""
from __future__ import annotations

import argparse
import sys

from hyp.abort import HypervisorError
from hyp.dirty import DirtyLogError
from hyp.host import OutOfHostMemory

from .cpu import GuestCrash
from .loader import LoaderError
from .machine import parse_size
from .session import EXIT_ERROR, EXIT_USAGE, Session
from .step import step
from .trace import FORMATS, KINDS, TraceError, parse_kinds, parse_range

STEP_TRACE = "s2,tlb,dirty,exc,exit,mmio,hyp"


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    try:
        v = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not v > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return v


def _addr(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address (use 0x...)") from None
    if not 0 <= v < 1 << 40:
        raise argparse.ArgumentTypeError(f"{text} is outside the 40-bit IPA space")
    return v


def _trace_arg(fn):
    def parse(text):
        try:
            return fn(text)
        except TraceError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def _machine_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("elf", help="bare-metal ARMv7 guest ELF (e.g. guests/hello.elf)")
    p.add_argument("--mem", type=_size, default=128 << 20, help="guest RAM size (default 128M)")
    p.add_argument("--args", default="", help="argument string the guest reads (GET_ARGS hypercall)")
    p.add_argument("--hugepages", choices=("1g", "2m", "4k"), default="1g",
                   help="largest stage-2 leaf RAM may use (default: largest that aligns)")
    p.add_argument("--split", choices=("lazy", "eager"), default="lazy",
                   help="block splitting policy for dirty logging")
    p.add_argument("--no-icount", action="store_true", help="do not count instructions "
                   "(faster; no --max-insns, virtual time advances only by guest sleeps)")
    g = p.add_argument_group("dirty logging")
    g.add_argument("--log-dirty", action="store_true",
                   help="log dirty pages of guest RAM and report them per harvest interval")
    g.add_argument("--dirty-mode", choices=("bitmap", "manual", "ring"), default="bitmap",
                   help="GET_DIRTY_LOG, manual protect (GET + CLEAR), or the dirty ring")
    g.add_argument("--harvest-ms", type=_seconds, default=100.0,
                   help="virtual milliseconds between dirty-log harvests (default 100)")
    g.add_argument("--ring-size", type=_positive, default=4096, help="dirty ring entries")
    p.add_argument("--prefault", action="store_true", help="map all guest RAM at stage 2 "
                   "before the guest starts, with the largest blocks (like -mem-prealloc)")
    t = p.add_argument_group("debugging")
    t.add_argument("--trace", type=_trace_arg(parse_kinds), metavar="KINDS",
                   help=f"trace events: comma-separated {','.join(KINDS)}, or all")
    t.add_argument("--trace-format", choices=FORMATS, default="text",
                   help="text (default) or jsonl (one JSON object per line)")
    t.add_argument("--trace-file", metavar="PATH", help="write the trace here (default: stderr)")
    t.add_argument("--trace-range", type=_trace_arg(parse_range), metavar="LO-HI",
                   help="only events whose PC/VA/IPA is in [LO, HI) (LO+SIZE also works)")
    t.add_argument("--trace-ring", type=_positive, metavar="N",
                   help="keep only the last N events; write them when the run ends or fails")
    t.add_argument("--perfetto", metavar="PATH", help="write exits, stage-2 faults, harvests "
                   "and TLB flushes on the virtual time line as Chrome trace-event JSON")
    t.add_argument("--dump-s2", action="store_true",
                   help="when the run ends, print the VM's stage-2 mappings as merged ranges")
    t.add_argument("--walk", type=_addr, action="append", default=[], metavar="IPA",
                   help="when the run ends, print the per-level stage-2 walk of IPA (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s2emu", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    common = _machine_options()
    r = sub.add_parser("run", parents=[common], help="run a guest ELF to completion")
    r.add_argument("--max-insns", type=_positive, help="stop after this many guest instructions")
    r.add_argument("--timeout", type=_seconds, help="stop after this many seconds of wall clock")
    r.add_argument("--gdb", metavar="LISTEN",
                   help="serve a GDB remote stub on LISTEN (tcp::PORT or tcp:HOST:PORT; "
                        "loopback unless a host is given; port 0 picks a free one)")
    r.add_argument("--gdb-wait", action="store_true",
                   help="with --gdb: stop before the first instruction until gdb connects")
    s = sub.add_parser("step", parents=[common], help="single-step a guest, showing what the "
                       f"hypervisor does at each instruction (default --trace {STEP_TRACE})")
    s.add_argument("--from", dest="start", metavar="SYMBOL|ADDR",
                   help="run freely up to this symbol or address, then step")
    s.add_argument("--count", type=_positive, default=20, help="instructions to step (default 20)")
    return p


def _check(a: argparse.Namespace) -> str | None:
    if a.no_icount and getattr(a, "max_insns", None):
        return "--max-insns needs instruction counting (drop --no-icount)"
    if a.no_icount and a.cmd == "step":
        return "stepping needs instruction counting (drop --no-icount)"
    if not a.trace and (a.trace_file or a.trace_range or a.trace_ring):
        return "--trace-file/--trace-range/--trace-ring need --trace"
    if getattr(a, "gdb_wait", False) and not getattr(a, "gdb", None):
        return "--gdb-wait needs --gdb"
    if getattr(a, "gdb", None) and a.no_icount:
        return "--gdb needs instruction counting (drop --no-icount)"
    if getattr(a, "gdb", None) and a.log_dirty and a.dirty_mode == "ring":
        return "--gdb does not harvest a dirty ring: use --dirty-mode bitmap or manual"
    return None


def _resolve(session: Session, where: str) -> int:
    try:
        return int(where, 0)
    except ValueError:
        return session.image.symbol(where)


def _serve_gdb(session: Session, a: argparse.Namespace):
    from .gdbstub import GdbStub

    def say(text: str) -> None:
        print(f"[s2emu] gdb: {text}", file=sys.stderr, flush=True)

    wait = " (waiting for gdb)" if a.gdb_wait else ""
    stub = GdbStub(session.m, log=say,
                   on_listen=lambda host, port: say(f"listening on {host}:{port}{wait}"))
    return stub.serve(a.gdb, a.gdb_wait, max_insns=a.max_insns, timeout=a.timeout)


def run(a: argparse.Namespace) -> int:
    problem = _check(a)
    if problem:
        print(f"s2emu: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if a.cmd == "step":
        a.trace = a.trace or parse_kinds(STEP_TRACE)
        a.trace_later = bool(a.start)        # trace the steps, not the run up to --from
    session = Session(a)
    result = None
    try:
        if a.cmd == "run" and a.gdb:
            result = _serve_gdb(session, a)
        elif a.cmd == "run":
            result = session.run(max_insns=a.max_insns, timeout=a.timeout)
        else:
            if a.start:
                cpu = session.m.cpu
                target = _resolve(session, a.start)
                cpu.add_breakpoint(target)
                result = session.run()
                cpu.remove_breakpoint(target)
                if result.reason != "debug":
                    print(f"s2emu: error: the guest never reached {a.start} ({result.reason})",
                          file=sys.stderr)
                    session.close()
                    return session.report(result) or EXIT_ERROR
                if session.tracer:
                    session.tracer.attach(session.m)
            result = step(session.m, a.count, session.trace_stream)
    except BaseException as e:        # GuestCrash, Ctrl-C: the trace ring shows what led to it
        session.close(error=f"{type(e).__name__}: {e}")
        raise
    session.close(error=result.error)
    return session.report(result)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (LoaderError, HypervisorError, DirtyLogError, GuestCrash, OutOfHostMemory,
            ValueError, OSError) as e:
        print(f"s2emu: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("s2emu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
