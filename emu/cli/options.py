"""The command line's options: parsing, validation (one line per problem, status 2) and the
options that need each other. `build_parser()` and `check(namespace)`."""
from __future__ import annotations

import argparse
import math
import os

from hyp.dirty import DirtyLogError, check_ring_size

from ..debug.trace_format import FORMATS, KINDS, TraceError, parse_kinds, parse_range
from ..machine import MAX_SMP, check_ram_size, parse_size
from ..migration import parse_uri
from .console import parse_serial

STEP_TRACE = "s1,s2,tlb,dirty,exc,exit,mmio,hyp"
VERSION = "0.2.0"
_DIRTY_OPTIONS = ("dirty_mode", "split", "harvest_ms", "ring_size")
_DIRTY_DEFAULTS = {"dirty_mode": "bitmap", "split": "lazy", "harvest_ms": 100.0,
                   "ring_size": 4096}


class UsageError(Exception):
    """A bad command line (status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `s2emu: error: <what> (see s2emu run --help)`."""

    def error(self, message: str):
        if "required: {run,step}" in message:
            message = "choose a command: run or step"
        raise UsageError(f"{message} (see {self.prog} --help)")


def _arg(fn):
    """An argparse type from a function raising ValueError/TraceError/DirtyLogError."""
    def parse(text: str):
        try:
            return fn(text)
        except (ValueError, TraceError, DirtyLogError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = fn.__name__.strip("_")
    return parse


def _mem(text: str) -> int:
    size = parse_size(text)
    check_ram_size(size, text)
    return size


def _smp(text: str) -> int:
    n = _positive(text)
    if n > MAX_SMP:
        raise ValueError(f"{n} vCPUs: this board has at most {MAX_SMP} (one GICv2)")
    return n


def _positive(text: str) -> int:
    try:
        v = int(text.replace("_", ""), 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if v <= 0:
        raise ValueError(f"{text} must be positive")
    return v


def _finite(text: str, unit: str, minimum: float) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of {unit}") from None
    if not math.isfinite(v) or v < minimum:
        raise ValueError(f"{text} {unit} must be finite and at least {minimum:g}")
    return v


def _seconds(text: str) -> float:
    return _finite(text, "seconds", 1e-3)


def _milliseconds(text: str) -> float:
    return _finite(text, "milliseconds", 1e-6)          # 1 ns of virtual time


def _ring_size(text: str) -> int:
    n = _positive(text)
    check_ring_size(n)
    return n


def _listen(text: str) -> str:
    if not text.strip():
        raise ValueError("an empty address (use tcp::PORT or tcp:HOST:PORT)")
    from ..debug.gdb_packets import parse_listen     # (the gdb stub's module: only for --gdb)
    parse_listen(text)
    return text


def _out_path(text: str) -> str:
    """A file the run will write: checked before the guest starts."""
    if not text:
        raise ValueError("an empty path")
    if os.path.isdir(text):
        raise ValueError(f"{text} is a directory")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise ValueError(f"directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(text) and not os.access(text, os.W_OK)):
        raise ValueError(f"{text} is not writable")
    return text


def _in_file(text: str) -> str:
    """A file the run reads (kernel, initrd, DTB): a readable regular file."""
    if not text:
        raise ValueError("an empty path")
    if not os.path.exists(text):
        raise ValueError(f"{text} does not exist")
    if not os.path.isfile(text):
        raise ValueError(f"{text} is not a regular file")
    if not os.access(text, os.R_OK):
        raise ValueError(f"{text} is not readable")
    return text


def _nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("an empty value")
    return text


def _guest_args(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8") from None
    return text


def _vmid_bits(text: str) -> int:
    n = _positive(text)
    if n > 8:
        raise ValueError(f"{n}: VMIDs are at most 8 bits on ARMv7")
    return n


def _uri(text: str) -> str:
    parse_uri(text)
    return text


def _bandwidth(text: str) -> int:
    return parse_size(text) if text[-1:].upper() in "KMG" else _positive(text)


def _serial(text: str) -> str:
    mode, path = parse_serial(text)
    if mode == "file":
        _out_path(path)
    return text


def _qmp_address(text: str) -> str:
    kind, sep, rest = text.partition(":")
    if kind == "tcp" and sep:
        from ..debug.gdb_packets import parse_listen
        parse_listen(text)
    elif not (kind == "unix" and sep and rest):
        raise ValueError(f"bad QMP address {text!r} (tcp:HOST:PORT or unix:PATH)")
    return text


def _addr(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise ValueError(f"{text!r} is not an address (use 0x...)") from None
    if not 0 <= v < 1 << 40:
        raise ValueError(f"{text} is outside the 40-bit IPA space")
    return v


def _machine_options() -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    p.add_argument("elf", nargs="*", help="bare-metal ARMv7 guest ELF (e.g. guests/hello.elf); "
                   "run takes several: one VM each, on one host")
    p.add_argument("--mem", type=_arg(_mem), default=128 << 20, help="guest RAM size (default 128M)")
    k = p.add_argument_group("Linux boot protocol (instead of an ELF)")
    k.add_argument("--kernel", type=_arg(_in_file), metavar="IMAGE",
                   help="boot a kernel: Image, zImage, uImage or vmlinux ELF; r0=0, r1=~0, "
                   "r2=DTB, SVC mode, MMU off")
    k.add_argument("--initrd", type=_arg(_in_file), metavar="FILE",
                   help="initial ramdisk (needs --kernel)")
    k.add_argument("--append", metavar="CMDLINE", help="kernel command line (/chosen/bootargs)")
    k.add_argument("--dtb", type=_arg(_in_file), metavar="FILE",
                   help="boot with this device tree instead of the board's (its /chosen is "
                   "rewritten for --append and --initrd)")
    k.add_argument("--dumpdtb", type=_arg(_out_path), metavar="FILE",
                   help="write the board's device tree to FILE and exit")
    p.add_argument("--smp", type=_arg(_smp), default=1, metavar="N",
                   help=f"vCPUs (1-{MAX_SMP}; default 1): vCPU 0 starts, the others wait for "
                   "PSCI CPU_ON")
    p.add_argument("--args", type=_arg(_guest_args), action="append", default=[],
                   help="argument string the guest reads (GET_ARGS hypercall); once per ELF, "
                   "in order")
    p.add_argument("--hugepages", choices=("1g", "2m", "4k"), default="1g",
                   help="largest stage-2 leaf RAM may use (default: largest that aligns)")
    p.add_argument("--no-icount", action="store_true", help="do not count instructions "
                   "(faster; no --max-insns, virtual time advances only by guest sleeps)")
    p.add_argument("--max-insns", type=_arg(_positive), help="stop after this many guest "
                   "instructions (exception entries count as one)")
    p.add_argument("--timeout", type=_arg(_seconds), help="stop after this many seconds of "
                   "wall clock")
    g = p.add_argument_group("dirty logging")
    g.add_argument("--log-dirty", action="store_true",
                   help="log dirty pages of guest RAM and report them per harvest interval")
    g.add_argument("--dirty-mode", choices=("bitmap", "manual", "ring"),
                   help="GET_DIRTY_LOG (default), manual protect (GET + CLEAR), or the dirty ring")
    g.add_argument("--split", choices=("lazy", "eager"),
                   help="block splitting policy for dirty logging (default lazy)")
    g.add_argument("--harvest-ms", type=_arg(_milliseconds),
                   help="virtual milliseconds between dirty-log harvests (default 100)")
    g.add_argument("--ring-size", type=_arg(_ring_size),
                   help="dirty ring entries: a power of two, 256-65536 (default 4096)")
    p.add_argument("--prefault", action="store_true", help="map all guest RAM at stage 2 "
                   "before the guest starts, with the largest blocks (like -mem-prealloc)")
    t = p.add_argument_group("debugging")
    t.add_argument("--trace", type=_arg(parse_kinds), metavar="KINDS",
                   help=f"trace events: comma-separated {','.join(KINDS)}, or all")
    t.add_argument("--trace-format", choices=FORMATS, default="text",
                   help="text (default) or jsonl (one JSON object per line)")
    t.add_argument("--trace-file", type=_arg(_out_path), metavar="PATH",
                   help="write the trace here (default: stderr)")
    t.add_argument("--trace-range", type=_arg(parse_range), metavar="LO-HI",
                   help="only events whose PC/VA/IPA is in [LO, HI) (LO+SIZE also works)")
    t.add_argument("--trace-ring", type=_arg(_positive), metavar="N",
                   help="keep only the last N events; write them when the run ends or fails")
    t.add_argument("--perfetto", type=_arg(_out_path), metavar="PATH",
                   help="write exits, stage-2 faults, harvests and TLB flushes on the virtual "
                   "time line as Chrome trace-event JSON")
    t.add_argument("--dump-s2", action="store_true",
                   help="when the run ends, print the VM's stage-2 mappings as merged ranges")
    t.add_argument("--dump-s1", action="store_true",
                   help="when the run ends, print the guest's own stage-1 mappings as merged "
                   "VA ranges")
    t.add_argument("--walk", type=_arg(_addr), action="append", default=[], metavar="VA",
                   help="when the run ends, print the walk of VA through both stages: the "
                   "guest's stage 1 (VA = IPA with its MMU off), then stage 2 (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="s2emu", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"s2emu {VERSION}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{run,step}",
                           parser_class=_Parser)
    common = _machine_options()
    r = sub.add_parser("run", parents=[common], help="run a guest ELF to completion")
    r.add_argument("--gdb", type=_arg(_listen), metavar="LISTEN",
                   help="serve a GDB remote stub on LISTEN (tcp::PORT or tcp:HOST:PORT; "
                        "loopback unless a host is given; port 0 picks a free one)")
    r.add_argument("--gdb-wait", action="store_true",
                   help="with --gdb: stop before the first instruction until gdb connects")
    r.add_argument("--serial", type=_arg(_serial), default="stdio",
                   metavar="stdio|file:PATH|none",
                   help="the UART: stdio (default; a terminal on stdin is put in raw mode: "
                   "Ctrl-A X quits, Ctrl-A H helps; piped stdin is read as it is), file:PATH "
                   "(output only), none (discarded)")
    r.add_argument("--vmid-bits", type=_arg(_vmid_bits), default=8,
                   help="VMID width (1-8; fewer forces VMID generation rollovers: a test knob)")
    m = r.add_argument_group("live migration")
    m.add_argument("--incoming", type=_arg(_uri), metavar="URI",
                   help="receive a migrating guest (tcp:HOST:PORT, file:PATH, fd:N or -) and "
                   "run it; no ELF")
    m.add_argument("--migrate-to", type=_arg(_uri), action="append", default=[], metavar="URI",
                   help="migrate the VM to URI (once per VM, in order)")
    m.add_argument("--migrate-after", type=_arg(_milliseconds), metavar="MS",
                   help="start migrating after MS of virtual time (default 0)")
    m.add_argument("--max-bandwidth", type=_arg(_bandwidth), metavar="BYTES",
                   help="link bandwidth per second of virtual time (default 128M)")
    m.add_argument("--downtime-limit", type=_arg(_milliseconds), metavar="MS",
                   help="largest downtime to switch over with (default 300)")
    m.add_argument("--migrate-max-iterations", type=_arg(_positive), metavar="N",
                   help="switch over after N iterations even if over the limit")
    m.add_argument("--auto-converge", action="store_true",
                   help="throttle the guest when iterations do not shrink (QEMU's auto-converge)")
    m.add_argument("--migrate-compress", action="store_true",
                   help="zstd-compress page runs (the s2emu[migrate] extra)")
    m.add_argument("--migrate-rebuild", choices=("lazy", "now"),
                   help="after a cancel: rebuild huge mappings lazily (default) or now")
    m.add_argument("--migrate-report", type=_arg(_out_path), metavar="FILE.json",
                   help="write the migration's report as JSON")
    m.add_argument("--migrate-plot", type=_arg(_out_path), metavar="FILE.png",
                   help="plot dirty pages and bytes per iteration (the s2emu[migrate] extra)")
    o = r.add_argument_group("monitors")
    o.add_argument("--qmp", type=_arg(_qmp_address), metavar="ADDR",
                   help="serve QMP (the QEMU Machine Protocol) on tcp:HOST:PORT or unix:PATH")
    o.add_argument("--monitor", choices=("stdio",),
                   help="a line-oriented human monitor (HMP-like) on the terminal")
    s = sub.add_parser("step", parents=[common], help="single-step a guest, showing what the "
                       f"hypervisor does at each instruction (default --trace {STEP_TRACE})")
    s.add_argument("--from", dest="start", type=_arg(_nonempty), metavar="SYMBOL|ADDR",
                   help="run freely up to this symbol or address, then step")
    s.add_argument("--count", type=_arg(_positive), default=20,
                   help="instructions to step (default 20)")
    return p


def _check_vms(a: argparse.Namespace) -> None:
    """How many guests, and which options need exactly one."""
    incoming = getattr(a, "incoming", None)
    if a.command == "step" and len(a.elf) != 1 and not getattr(a, "kernel", None):
        raise UsageError("step takes one ELF")
    if incoming and a.elf:
        raise UsageError("--incoming receives the guest: give no ELF")
    kernel = getattr(a, "kernel", None)
    needs_kernel = [o for o in ("initrd", "append", "dtb") if getattr(a, o, None) is not None]
    if needs_kernel and not kernel:
        raise UsageError(f"--{needs_kernel[0]} needs --kernel")
    if kernel and (a.elf or incoming):
        raise UsageError("--kernel boots the guest: give no ELF" + (" and no --incoming"
                                                                    if incoming else ""))
    if kernel and a.args:
        raise UsageError("--args is for bundled ELF guests: a kernel's is --append")
    if getattr(a, "dumpdtb", None):
        return
    if not incoming and not a.elf and not kernel:
        raise UsageError("the following arguments are required: elf (or --kernel)")
    n = max(1, len(a.elf))
    if len(a.args) > n:
        raise UsageError(f"{len(a.args)} --args for {n} guest{'s' if n > 1 else ''}")
    one_only = [o for o, on in (("--gdb", getattr(a, "gdb", None)), ("--trace", a.trace),
                                ("--perfetto", a.perfetto),
                                ("--serial file:", getattr(a, "serial", "").startswith("file:")))
                if on]
    if n > 1 and one_only:
        raise UsageError(f"{one_only[0]} works with one VM")
    if len(getattr(a, "migrate_to", [])) > n:
        raise UsageError(f"{len(a.migrate_to)} --migrate-to for {n} VM{'s' if n > 1 else ''}")
    if getattr(a, "gdb", None) and (a.migrate_to or a.qmp or a.monitor or incoming):
        raise UsageError("--gdb drives the run: not with migration or a monitor")
    tuning = [o for o in ("migrate_after", "max_bandwidth", "downtime_limit",
                          "migrate_max_iterations", "migrate_rebuild", "migrate_report",
                          "migrate_plot") if getattr(a, o, None) is not None]
    tuning += [o for o in ("auto_converge", "migrate_compress") if getattr(a, o, False)]
    if tuning and not (getattr(a, "migrate_to", None) or getattr(a, "qmp", None)
                       or getattr(a, "monitor", None)):
        raise UsageError(f"--{tuning[0].replace('_', '-')} needs --migrate-to or a monitor")
    if getattr(a, "migrate_plot", None):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--migrate-plot needs matplotlib: pip install 's2emu[migrate]'") \
                from None
    if getattr(a, "migrate_compress", False):
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise UsageError("--migrate-compress needs zstandard: pip install "
                             "'s2emu[migrate]'") from None


def check(a: argparse.Namespace) -> None:
    """Options that need each other; fills the dirty-logging defaults. UsageError if not."""
    _check_vms(a)
    given = [f"--{o.replace('_', '-')}" for o in _DIRTY_OPTIONS if getattr(a, o) is not None]
    if given and not a.log_dirty:
        raise UsageError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} --log-dirty")
    if a.ring_size is not None and a.dirty_mode != "ring":
        raise UsageError("--ring-size needs --dirty-mode ring")
    for o in _DIRTY_OPTIONS:
        if getattr(a, o) is None:
            setattr(a, o, _DIRTY_DEFAULTS[o])
    if a.no_icount and a.max_insns:
        raise UsageError("--max-insns needs instruction counting (drop --no-icount)")
    if a.no_icount and a.command == "step":
        raise UsageError("stepping needs instruction counting (drop --no-icount)")
    if not a.trace and (a.trace_file or a.trace_range or a.trace_ring):
        raise UsageError("--trace-file/--trace-range/--trace-ring need --trace")
    if getattr(a, "gdb_wait", False) and not getattr(a, "gdb", None):
        raise UsageError("--gdb-wait needs --gdb")
    if getattr(a, "gdb", None) and a.no_icount:
        raise UsageError("--gdb needs instruction counting (drop --no-icount)")
