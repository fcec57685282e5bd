"""The machine's side of live migration: describe a board for the destination, build one from
that description, carry the vCPU registers and device state, and open the channels QEMU's
syntax names (`tcp:HOST:PORT`, `file:PATH`, `fd:N`, `-` for stdin/stdout).

    src = migrate_out(machine, sink, Params())       # then run the machine; it returns
    ...                                                # "migrate" at switch-over:
    report = src.complete()
    machine2, inc = incoming(source)                   # on the destination: ready to run
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, BinaryIO

from . import cpu_state
from .machine import FLASH0, FLASH1, FLASH_SIZE, MAX_SMP, RAM_BASE, Machine

if TYPE_CHECKING:
    import socket

    from hyp.migration.incoming import Incoming
    from hyp.migration.precopy import MigrationSource, Params

# hyp.migration (the stream, pre-copy, checksums) and socket are imported by the functions
# that use them: the command line imports this module (parse_uri, MigrationError) for every
# run, and a run that does not migrate needs none of them.
CONFIG_FORMAT = 1


class MigrationError(Exception):
    """A migration that cannot start or complete (one line)."""


def board_config(m: Machine) -> dict:
    """What the destination needs to build the same board."""
    return {"format": CONFIG_FORMAT, "board": "virt", "vm": m.vm.name, "ram": m.ram.size,
            "split": m.vm.split, "args": m.vm.args, "icount": m.cpu.icount,
            "smp": len(m.cpus),
            "memslots": [{"name": s.name, "ipa": s.ipa, "size": s.size, "readonly": s.readonly,
                          "noexec": s.noexec} for s in m.vm.memslots]}


def build(config: dict, **machine_kw) -> Machine:
    """A fresh board as `config` describes it (ValueError if this s2emu cannot build it)."""
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        raise ValueError(f"board description format {config.get('format') if isinstance(config, dict) else '?'}")
    if config.get("board") != "virt":
        raise ValueError(f"unknown board {config.get('board')!r}")
    ram = config.get("ram")
    if not isinstance(ram, int) or ram <= 0 or ram % 4096:
        raise ValueError(f"bad RAM size {ram!r}")
    expect = [("ram", RAM_BASE, ram), ("flash0", FLASH0, FLASH_SIZE), ("flash1", FLASH1, FLASH_SIZE)]
    got = [(s.get("name"), s.get("ipa"), s.get("size")) for s in config.get("memslots", [])
           if isinstance(s, dict)]
    if got != expect:
        raise ValueError(f"memslots {got} are not this board's")
    split = config.get("split", "lazy")
    if split not in ("lazy", "eager"):
        raise ValueError(f"bad split policy {split!r}")
    machine_kw.setdefault("icount", bool(config.get("icount", True)))
    smp = config.get("smp", 1)
    if not isinstance(smp, int) or not 1 <= smp <= MAX_SMP:
        raise ValueError(f"bad vCPU count {smp!r}")
    m = Machine(ram, split=split, name=str(config.get("vm", "vm")), smp=smp, **machine_kw)
    args = config.get("args", "")
    m.vm.args = args if isinstance(args, str) else ""
    return m


def migrate_out(m: Machine, sink: BinaryIO, params: Params | None = None,
                progress=None) -> MigrationSource:
    """Start pre-copy of `m` to `sink`; run the machine until it returns "migrate"."""
    from hyp.migration.precopy import MigrationSource
    src = MigrationSource(m.vm, sink, board_config(m),
                          lambda: [cpu_state.save(c).to_json() for c in m.cpus], params,
                          progress)
    src.start()
    return src


def incoming(source: BinaryIO, corrupt=None, **machine_kw) -> tuple[Machine, Incoming]:
    """Receive a whole stream into a new board and restore its vCPU, devices and clock.
    StreamError (one line) if the stream is bad; the half-built board is then dropped."""
    from hyp.migration.incoming import receive
    from hyp.migration.state import StateError, VcpuState, load_devices
    from hyp.migration.stream import StreamError
    m, inc = receive(source, lambda config: build(config, **machine_kw), corrupt)
    # Virtual time first: the timers' deadlines and lines are computed from it.
    clock = m.vm.clock
    clock.instructions = inc.clock["instructions"]
    clock.slept_ns = inc.clock["slept_ns"] + inc.clock["downtime_ns"]
    try:
        if len(inc.vcpus) != len(m.cpus):
            raise StateError(f"{len(inc.vcpus)} vCPU states for a {len(m.cpus)}-vCPU board")
        states = [VcpuState.from_json(v) for v in inc.vcpus]
        for cpu, state in zip(m.cpus, states):
            cpu_state.load(cpu, state)
        load_devices(m.vm.bus, inc.devices)
    except (StateError, ValueError) as e:
        raise StreamError(f"migration stream: {e}") from None
    return m, inc


# ---- channels -------------------------------------------------------------------------------
def parse_uri(uri: str) -> tuple[str, str]:
    """'tcp:HOST:PORT' | 'file:PATH' | 'fd:N' | '-' -> (kind, rest); ValueError if not."""
    if uri == "-":
        return "stdio", ""
    kind, sep, rest = uri.partition(":")
    if not sep or kind not in ("tcp", "file", "fd") or not rest:
        raise ValueError(f"bad migration URI {uri!r} (tcp:HOST:PORT, file:PATH, fd:N or -)")
    if kind == "tcp":
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad migration URI {uri!r} (tcp:HOST:PORT)")
    if kind == "fd" and not rest.isdigit():
        raise ValueError(f"bad migration URI {uri!r} (fd:N, a file descriptor number)")
    return kind, rest


def open_outgoing(uri: str, timeout: float = 30.0) -> BinaryIO:
    """The source's end: connect, create the file, or write to a descriptor."""
    import socket
    kind, rest = parse_uri(uri)
    try:
        if kind == "tcp":
            host, _, port = rest.rpartition(":")
            sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
            sock.settimeout(None)
            return sock.makefile("wb")
        if kind == "file":
            return open(rest, "wb")
        if kind == "fd":
            return os.fdopen(int(rest), "wb", closefd=False)
        return os.fdopen(1, "wb", closefd=False)
    except OSError as e:
        raise MigrationError(f"cannot open migration channel {uri}: {e.strerror or e}") from None


def listen_incoming(uri: str) -> socket.socket | None:
    """For tcp: the listening socket (bound now, so a busy port fails before anything runs);
    None for the other kinds. `tcp:0:PORT` listens on every interface, as QEMU's -incoming."""
    import socket
    kind, rest = parse_uri(uri)
    if kind != "tcp":
        return None
    host, _, port = rest.rpartition(":")
    host = "0.0.0.0" if host in ("0", "") else host
    try:
        lsock = socket.create_server((host, int(port)))
    except OSError as e:
        raise MigrationError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return lsock


def open_incoming(uri: str, lsock: socket.socket | None = None) -> BinaryIO:
    """The destination's end: accept one connection, or open the file / descriptor."""
    kind, rest = parse_uri(uri)
    try:
        if kind == "tcp":
            conn, _ = (lsock or listen_incoming(uri)).accept()
            return conn.makefile("rb")
        if kind == "file":
            return open(rest, "rb")
        if kind == "fd":
            return os.fdopen(int(rest), "rb", closefd=False)
        return os.fdopen(0, "rb", closefd=False)
    except OSError as e:
        raise MigrationError(f"cannot open migration channel {uri}: {e.strerror or e}") from None
