"""A line-oriented human monitor in the style of QEMU's HMP, over the monitor's command queue
(dispatch.Dispatcher): each line is translated to the QMP command(s) the main loop runs, and
the result printed the way QEMU's HMP prints it (migration/migration-hmp-cmds.c,
monitor/hmp-cmds.c), e.g.

    (s2emu) migrate -d tcp:10.0.0.2:4444
    (s2emu) info migrate
    Migration status: active
    total time: 301 ms
    ...

One line of output for an unknown command ("unknown command: 'foo'"), bad arguments (the
usage) or a failed command (the error's desc); the monitor goes on. End of input ends the
monitor thread without stopping the VM; `quit` asks the main loop to exit and ends it too.
Events (STOP, RESUME, MIGRATION, SHUTDOWN...) are printed as they come, one line each
("event MIGRATION status=completed"), unless events=False.
"""
from __future__ import annotations

import json
import re
import sys
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, TextIO

from .dispatch import CommandError, Dispatcher

PROMPT = "(s2emu) "
MIGRATION_DONE = ("completed", "failed", "cancelled")
_SIZE = re.compile(r"^(\d+)([KMGT]?)$", re.IGNORECASE)
_BOOL = {"on": True, "off": False, "true": True, "false": False}


class Usage(Exception):
    """Bad arguments: the one line to print."""


def parse_size(text: str) -> int:
    """'100', '64K', '10M', '1G', '1T' -> bytes (binary multiples)."""
    m = _SIZE.match(text)
    if not m:
        raise Usage(f"'{text}' is not a size (N[K|M|G|T] bytes)")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]


def parse_uint(text: str, what: str) -> int:
    if not text.isdigit():
        raise Usage(f"'{text}' is not a number of {what}")
    return int(text)


class HumanMonitor:
    """The monitor on `input` (default sys.stdin) and `output` (default sys.stdout).

        mon = HumanMonitor(dispatcher).start()     # a daemon thread reads and runs lines
        mon.join()                                 # until end of input or quit

    vm: an index sent as "x-vm" with every command (None: the main loop's default VM).
    poll_interval: how often `migrate` without -d asks query-migrate whether it is done.
    timeout: seconds a command may wait for the main loop."""

    def __init__(self, dispatcher: Dispatcher, input: TextIO | None = None,
                 output: TextIO | None = None, *, prompt: str = PROMPT, events: bool = True,
                 vm: int | None = None, poll_interval: float = 0.1,
                 timeout: float = 60.0) -> None:
        self.dispatcher = dispatcher
        self.input, self.output = input, output
        self.prompt, self.events, self.vm = prompt, events, vm
        self.poll_interval, self.timeout = poll_interval, timeout
        self.quit_requested = False
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.run, name="hmp", daemon=True)
        self._commands: dict[str, tuple[Callable[[list[str]], None], str, str]] = {
            "info": (self._info, "info SUBCOMMAND", "show the VM's state (see 'info')"),
            "stop": (self._simple("stop"), "stop", "pause the VM"),
            "cont": (self._simple("cont"), "cont|c", "resume the VM"),
            "migrate": (self._migrate, "migrate [-d] URI",
                        "migrate to URI (-d: don't wait for it to finish)"),
            "migrate_cancel": (self._simple("migrate_cancel"), "migrate_cancel",
                               "cancel the current migration"),
            "migrate_set_parameter": (self._set_parameter, "migrate_set_parameter NAME VALUE",
                                      "max-bandwidth N[K|M|G] (bytes/s), downtime-limit MS, "
                                      "x-max-iterations N"),
            "migrate_set_capability": (self._set_capability,
                                       "migrate_set_capability NAME on|off",
                                       "e.g. auto-converge on"),
            "quit": (self._quit, "quit|q", "quit the emulator"),
            "help": (self._help, "help|?", "list the commands"),
        }
        self._aliases = {"c": "cont", "q": "quit", "?": "help"}
        self._info_commands: dict[str, tuple[Callable[[], None], str]] = {
            "status": (self._info_status, "the VM's run state"),
            "migrate": (self._info_migrate, "the migration's progress"),
            "migrate_parameters": (self._info_parameters, "the migration parameters"),
            "dirty": (self._info_dirty, "dirty page logging, per memslot"),
            "stage2": (self._info_stage2, "the stage-2 mappings"),
        }

    # ---- life cycle ---------------------------------------------------------------------------
    def start(self) -> "HumanMonitor":
        """Read and run lines in a daemon thread."""
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the monitor thread to end; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        """Stop after the current line (a `migrate` waiting for its end stops waiting); a
        thread blocked reading its input ends with that input."""
        self._closing.set()

    def run(self) -> None:
        """The monitor loop, on the calling thread: until end of input, quit or close()."""
        source = self.input if self.input is not None else sys.stdin
        if self.events:
            self.dispatcher.add_listener(self._on_event)
        try:
            while not self._closing.is_set():
                self._write(self.prompt, newline=False)
                line = source.readline()
                if not line or not self.execute_line(line):
                    break
        finally:
            if self.events:
                self.dispatcher.remove_listener(self._on_event)

    def execute_line(self, line: str) -> bool:
        """Run one command line and print its output; False once the monitor should end
        (after a successful quit)."""
        words = line.split()
        if not words:
            return True
        name = self._aliases.get(words[0], words[0])
        entry = self._commands.get(name)
        try:
            if entry is None:
                raise Usage(f"unknown command: '{words[0]}'")
            entry[0](words[1:])
        except Usage as e:
            self._write(str(e))
        except CommandError as e:
            self._write(e.desc)
        except FutureTimeout:
            self._write(f"the main loop did not answer in {self.timeout:g} s")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self._write(f"malformed answer from the main loop: {type(e).__name__}: {e}")
        return not self.quit_requested

    # ---- plumbing -----------------------------------------------------------------------------
    def _write(self, text: str, newline: bool = True) -> None:
        out = self.output if self.output is not None else sys.stdout
        with self._lock:
            out.write(text + ("\n" if newline else ""))
            out.flush()

    def _call(self, command: str, arguments: dict | None = None):
        args = dict(arguments or {})
        if self.vm is not None:
            args["x-vm"] = self.vm
        return self.dispatcher.call(command, args, timeout=self.timeout)

    def _on_event(self, event: str, data: dict) -> None:
        fields = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                          for k, v in data.items())
        self._write(f"event {event}" + (f" {fields}" if fields else ""))

    def _simple(self, command: str) -> Callable[[list[str]], None]:
        def run(args: list[str]) -> None:
            if args:
                raise Usage(f"{command} takes no arguments")
            self._call(command)
        return run

    # ---- commands -----------------------------------------------------------------------------
    def _help(self, args: list[str]) -> None:
        for usage, text in sorted((u, t) for _, u, t in self._commands.values()):
            self._write(f"{usage} -- {text}")

    def _info(self, args: list[str]) -> None:
        if not args:
            for name, (_, text) in self._info_commands.items():
                self._write(f"info {name} -- show {text}")
            return
        entry = self._info_commands.get(args[0])
        if entry is None or len(args) > 1:
            raise Usage(f"unknown command: '{' '.join(['info'] + args)}'")
        entry[0]()

    def _quit(self, args: list[str]) -> None:
        if args:
            raise Usage("quit takes no arguments")
        self._call("quit")
        self.quit_requested = True

    def _migrate(self, args: list[str]) -> None:
        detach = bool(args) and args[0] == "-d"
        if len(args) != 1 + detach or args[-1].startswith("-"):
            raise Usage("usage: migrate [-d] URI")
        self._call("migrate", {"uri": args[-1]})
        if detach:
            return
        while True:           # QEMU's HMP waits too (hmp_migrate_status_cb), polling 1/10 s
            info = self._call("query-migrate")
            if info.get("status") in MIGRATION_DONE:
                self._write(self._status_line(info))
                return
            if self._closing.wait(self.poll_interval):
                return

    def _set_parameter(self, args: list[str]) -> None:
        if len(args) != 2:
            raise Usage("usage: migrate_set_parameter NAME VALUE")
        name, text = args
        if name == "max-bandwidth":
            value = parse_size(text)
        elif name == "downtime-limit":
            value = parse_uint(text, "milliseconds")
        else:
            value = parse_uint(text, name)
        self._call("migrate-set-parameters", {name: value})

    def _set_capability(self, args: list[str]) -> None:
        if len(args) != 2 or args[1].lower() not in _BOOL:
            raise Usage("usage: migrate_set_capability NAME on|off")
        self._call("migrate-set-capabilities",
                   {"capabilities": [{"capability": args[0],
                                      "state": _BOOL[args[1].lower()]}]})

    # ---- info ---------------------------------------------------------------------------------
    def _info_status(self) -> None:
        info = self._call("query-status")                  # as QEMU's hmp_info_status
        line = "VM status: " + ("running" if info["running"] else "paused")
        if info.get("singlestep"):
            line += " (single step mode)"
        if not info["running"] and info["status"] != "paused":
            line += f" ({info['status']})"
        self._write(line)

    @staticmethod
    def _status_line(info: dict) -> str:
        line = f"Migration status: {info['status']}"
        if info["status"] == "failed" and info.get("error-desc"):
            line += f" ({info['error-desc']})"
        return line

    def _info_migrate(self) -> None:
        """As QEMU's hmp_info_migrate, for the fields s2emu reports."""
        info = self._call("query-migrate")
        if "status" not in info:
            return
        lines = [self._status_line(info), f"total time: {info.get('total-time', 0)} ms"]
        for key, label in (("expected-downtime", "expected downtime"),
                           ("downtime", "downtime"), ("setup-time", "setup")):
            if key in info:
                lines.append(f"{label}: {info[key]} ms")
        ram = info.get("ram")
        if ram:
            lines += [f"transferred ram: {ram['transferred'] >> 10} kbytes",
                      f"throughput: {float(ram.get('mbps', 0)):0.2f} mbps",
                      f"remaining ram: {ram['remaining'] >> 10} kbytes",
                      f"total ram: {ram['total'] >> 10} kbytes",
                      f"duplicate: {ram.get('duplicate', 0)} pages",
                      f"normal: {ram.get('normal', 0)} pages",
                      f"normal bytes: {ram.get('normal-bytes', 0) >> 10} kbytes",
                      f"dirty sync count: {ram.get('dirty-sync-count', 0)}",
                      f"page size: {ram.get('page-size', 4096) >> 10} kbytes"]
            if ram.get("dirty-pages-rate"):
                lines.append(f"dirty pages rate: {ram['dirty-pages-rate']} pages")
        if "cpu-throttle-percentage" in info:
            lines.append(f"cpu throttle percentage: {info['cpu-throttle-percentage']}")
        self._write("\n".join(lines))

    def _info_parameters(self) -> None:
        units = {"max-bandwidth": " bytes/second", "downtime-limit": " ms"}
        params = self._call("query-migrate-parameters")
        self._write("\n".join(f"{k}: {v}{units.get(k, '')}" for k, v in params.items()))

    def _info_dirty(self) -> None:
        stats = self._call("x-s2emu-dirty-log-stats")
        lines = [f"memslot {s['name']}: logging {'on' if s['logging'] else 'off'}, "
                 f"dirty pages {s['dirty-pages']}" for s in stats["memslots"]]
        self._write("\n".join(lines + [f"harvests: {stats['harvests']}"]))

    def _info_stage2(self) -> None:
        dump = self._call("x-s2emu-stage2-dump")
        lines = [f"VMID {dump['vmid']}: {len(dump['mappings'])} mappings"]
        for m in dump["mappings"]:
            lines.append(f"IPA {m['ipa']:#010x}-{m['ipa'] + m['size'] - 1:#010x} -> "
                         f"PA {m['pa']:#x} {m['prot']} level {m['level']}")
        self._write("\n".join(lines))
