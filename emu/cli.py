"""s2emu command line: run guests under the Python hypervisor."""
from __future__ import annotations

import argparse
import sys
import time

from hyp import dirty
from hyp.abort import HypervisorError
from hyp.arch.walk import explain
from hyp.vcpu import RunResult
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


def _addr(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address (use 0x...)") from None
    if not 0 <= v < 1 << 40:
        raise argparse.ArgumentTypeError(f"{text} is outside the 40-bit IPA space")
    return v


def print_stage2(m: Machine, a: argparse.Namespace) -> None:
    """--dump-s2 / --walk: the debug path (no TLB fill, nothing marked)."""
    if a.dump_s2:
        print(f"[s2emu] stage-2 mappings of VMID {m.vm.vmid} "
              f"(VTTBR {m.vm.stage2.vttbr:#018x}, VTCR {m.vm.stage2.vtcr:#010x}):", file=sys.stderr)
        for r in m.vm.stage2.dump():
            print("  " + r.describe(), file=sys.stderr)
    for ipa in a.walk:
        print("\n".join(explain(m.host.mem, m.vm.stage2.cfg, ipa)), file=sys.stderr)


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
    r.add_argument("--log-dirty", action="store_true",
                   help="log dirty pages of guest RAM and report them per harvest interval")
    r.add_argument("--dirty-mode", choices=("bitmap", "manual", "ring"), default="bitmap",
                   help="GET_DIRTY_LOG, manual protect (GET + CLEAR), or the dirty ring")
    r.add_argument("--harvest-ms", type=float, default=100.0,
                   help="virtual milliseconds between dirty-log harvests (default 100)")
    r.add_argument("--ring-size", type=_positive, default=4096, help="dirty ring entries")
    r.add_argument("--dump-s2", action="store_true",
                   help="when the run ends, print the VM's stage-2 mappings as merged ranges")
    r.add_argument("--walk", type=_addr, action="append", default=[], metavar="IPA",
                   help="when the run ends, print the per-level stage-2 walk of IPA (repeatable)")
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
    if a.log_dirty:
        if a.harvest_ms <= 0:
            print("s2emu: error: --harvest-ms must be positive", file=sys.stderr)
            return EXIT_USAGE
        result = run_logging(m, a)
    else:
        result = m.run(max_insns=a.max_insns, timeout=a.timeout)
    out.flush()
    if m.uart.output and not m.uart.output.endswith(b"\n"):
        print()
    print_stage2(m, a)
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


def run_logging(m: Machine, a: argparse.Namespace):
    """Run with dirty logging on guest RAM, harvesting every --harvest-ms of virtual time."""
    vm, slot = m.vm, m.ram
    if a.dirty_mode == "ring":
        dirty.enable_dirty_ring(vm, a.ring_size)
    dirty.enable_logging(vm, slot, manual_protect=a.dirty_mode == "manual")
    step = int(a.harvest_ms * 1e6)
    deadline = time.monotonic() + a.timeout if a.timeout else None
    start = m.cpu.instructions
    n = 0
    print(f"[s2emu] dirty logging on {slot.name} ({slot.npages} pages, {a.dirty_mode}, "
          f"split {vm.split}), harvest every {a.harvest_ms:g} ms of virtual time", file=sys.stderr)
    while True:
        left = None if a.max_insns is None else a.max_insns - (m.cpu.instructions - start)
        if left is not None and left <= 0:
            result = RunResult("budget", m.cpu.instructions - start)
            break
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        result = m.vcpu.run(max_insns=left, timeout=timeout,
                            until_ns=(vm.clock.now_ns() // step + 1) * step)
        if result.reason in ("time", "dirty-ring-full") or result.reason in ("off", "reset"):
            n += 1
            pages = _harvest(vm, slot, a.dirty_mode)
            why = " (ring full)" if result.reason == "dirty-ring-full" else ""
            print(f"[s2emu] harvest {n} @ {vm.clock.now_ns() / 1e6:.3f} ms: {pages} dirty pages "
                  f"({pages * 4 / 1024:.2f} MiB){why}", file=sys.stderr)
        if result.reason not in ("time", "dirty-ring-full"):
            break
    return result


def _harvest(vm, slot, mode: str) -> int:
    if mode == "ring":
        pages = len({g for s, g in vm.dirty_ring.harvest() if s == slot.slot})
        dirty.reset_dirty_ring(vm)
        return pages
    bitmap = dirty.get_dirty_log(vm, slot)
    if mode == "manual":
        dirty.clear_dirty_log(vm, slot, 0, slot.npages, bitmap)
    return int(bitmap.sum())


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
