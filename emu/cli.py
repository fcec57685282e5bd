"""s2emu command line: run guests under the Python hypervisor."""
from __future__ import annotations

import argparse
import sys

from hyp.abort import HypervisorError
from hyp.host import OutOfHostMemory

from .cpu import GuestCrash
from .loader import LoaderError
from .machine import Machine, parse_size

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LIMIT = 0, 1, 2, 3


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s2emu", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a guest ELF to completion")
    r.add_argument("elf", help="bare-metal ARMv7 guest ELF (e.g. guests/hello.elf)")
    r.add_argument("--mem", type=_size, default=128 << 20, help="guest RAM size (default 128M)")
    r.add_argument("--args", default="", help="argument string the guest reads (GET_ARGS hypercall)")
    r.add_argument("--max-insns", type=_positive, help="stop after this many guest instructions")
    r.add_argument("--timeout", type=float, help="stop after this many seconds of wall clock")
    r.add_argument("--split", choices=("lazy", "eager"), default="lazy",
                   help="block splitting policy for dirty logging")
    r.add_argument("--hugepages", choices=("1g", "2m", "4k"), default="1g",
                   help="largest stage-2 leaf RAM may use (default: largest that aligns)")
    r.add_argument("--no-icount", action="store_true",
                   help="do not count instructions (faster; no --max-insns, no virtual time from execution)")
    r.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    return p


def cmd_run(a: argparse.Namespace) -> int:
    if a.no_icount and a.max_insns:
        print("s2emu: error: --max-insns needs instruction counting (drop --no-icount)",
              file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout.buffer

    def console(b: bytes) -> None:
        out.write(b)
        if b == b"\n":
            out.flush()

    level = {"1g": 1, "2m": 2, "4k": 3}[a.hugepages]
    m = Machine(a.mem, split=a.split, icount=not a.no_icount, max_level=level, console=console)
    m.load(a.elf, a.args)
    result = m.run(max_insns=a.max_insns, timeout=a.timeout)
    out.flush()
    if m.uart.output and not m.uart.output.endswith(b"\n"):
        print()
    if not a.quiet:
        print(m.summary(result), file=sys.stderr)
    if result.reason in ("off", "reset"):
        return EXIT_OK
    if result.reason == "budget":
        print(f"s2emu: error: guest did not stop within {a.max_insns} instructions "
              f"(PC {m.cpu.pc:#x})", file=sys.stderr)
        return EXIT_LIMIT
    if result.reason == "timeout":
        print(f"s2emu: error: guest did not stop within {a.timeout} s (PC {m.cpu.pc:#x})",
              file=sys.stderr)
        return EXIT_LIMIT
    if result.reason == "wfi":
        print(f"s2emu: error: guest waits for an interrupt (WFI at PC {m.cpu.pc:#x}) and this "
              f"board has no interrupt source", file=sys.stderr)
        return EXIT_ERROR
    print(f"s2emu: error: {result.error}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return cmd_run(args)
    except (LoaderError, HypervisorError, GuestCrash, OutOfHostMemory, ValueError) as e:
        print(f"s2emu: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("s2emu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
