"""The main loop of one s2emu process (QEMU's main loop): runs the VMs in turns on the one CPU,
executes monitor commands between slices, drives and finishes migrations.

Each VM runs `SLICE` steps per turn, so several VMs share the CPU deterministically (a VM's
guest-visible behaviour never depends on the slicing: time is its own virtual clock). A
monitor command wakes a running guest at its next safe point (emu.stop); a paused VM waits for
commands. A VM ends when it powers off, fails, is interrupted, or has migrated away
("migrated": its guest runs on elsewhere); Ctrl-A X on the console (emu.cli.console) ends
them all.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from hyp.migration.params import Params
from hyp.vcpu import RunResult

from ..migration import MigrationError

if TYPE_CHECKING:       # imported where used: a run without migration or monitors needs neither
    from ..monitor.dispatch import Dispatcher

SLICE = 5_000_000
ENDS = ("off", "reset", "error", "wfi", "stuck")


class VmState:
    def __init__(self, session, params: Params, status: str = "running") -> None:
        self.session = session
        self.params = params
        self.status = status                     # running, paused, postmigrate, shutdown
        self.result: RunResult | None = None
        self.steps = 0


class MainLoop:
    """Runs `sessions` (emu.cli.session.Session, one per VM) until every VM ended."""

    def __init__(self, sessions, params: Params, *, dispatcher: Dispatcher | None = None,
                 migrate_kw: dict | None = None) -> None:
        self.vms = [VmState(s, Params(**vars(params))) for s in sessions]
        self.dispatcher = dispatcher
        self.migrate_kw = migrate_kw or {}
        self.quit = False
        self.monitors_alive = lambda: self.dispatcher is not None

    # ---- running ----------------------------------------------------------------------
    def run(self, max_insns: int | None = None, timeout: float | None = None) -> list[RunResult]:
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            if self.dispatcher is not None:
                self.dispatcher.process(self.execute)
            if self.quit:
                for v in self.vms:
                    self._end(v, RunResult("quit", v.steps))
                return [v.result for v in self.vms]
            running = [v for v in self.vms if v.status == "running"]
            if not running:
                # paused, or migrated away (QEMU keeps the source until `quit`): wait for
                # commands while a monitor can still send one
                idle = [v for v in self.vms if v.result is None or v.status == "postmigrate"]
                if self.dispatcher is None or not idle or not self.monitors_alive():
                    for v in idle:                     # paused with nobody to resume it
                        self._end(v, RunResult("paused", v.steps))
                    return [v.result for v in self.vms]
                self.dispatcher.wait(0.5)
                continue
            for v in running:
                left = None if max_insns is None else max_insns - v.steps
                wall = None if deadline is None else max(1e-3, deadline - time.monotonic())
                budget = SLICE if left is None else min(SLICE, left)
                r = v.session.run(max_insns=budget, timeout=wall)
                v.steps += r.instructions
                self._handled(v, r, left)
                if r.reason in ("interrupt", "timeout", "quit"):      # quit: Ctrl-A X
                    for other in self.vms:
                        self._end(other, RunResult(r.reason, other.steps))
                    return [x.result for x in self.vms]

    def _handled(self, v: VmState, r: RunResult, left: int | None) -> None:
        mig = v.session.migration
        if mig is not None:
            mig.failed_while_running()
        if r.reason == "migrate":
            mig.complete()
            self._status(v, "postmigrate")
            self._end(v, RunResult("migrated", v.steps))
        elif r.reason in ENDS or r.reason == "debug":
            if mig is not None and mig.status == "active":
                mig.cancel(f"the guest stopped ({r.reason}) during migration")
            self._end(v, RunResult(r.reason, v.steps, r.error, r.exit))
            self._emit("SHUTDOWN", {"guest": True, "reason": r.reason})
        elif r.reason == "budget" and left is not None and left <= r.instructions:
            self._end(v, RunResult("budget", v.steps))

    def _end(self, v: VmState, r: RunResult) -> None:
        if v.result is None:
            v.result = r
            if v.status == "running":
                v.status = "shutdown"

    def _status(self, v: VmState, status: str) -> None:
        v.status = status

    def _emit(self, event: str, data: dict) -> None:
        if self.dispatcher is not None:
            self.dispatcher.emit(event, data)

    # ---- migrations ---------------------------------------------------------------------
    def start_migration(self, v: VmState, uri: str) -> None:
        """Begin pre-copy of VM `v` now (MigrationError if the channel does not open)."""
        if v.session.migration is not None and v.session.migration.status in ("setup", "active"):
            raise MigrationError("a migration is already in progress")
        if v.result is not None:
            raise MigrationError(f"{v.session.m.vm.name} is not running")
        from .migrate import Migration
        mig = Migration(v.session, uri, v.params, on_status=lambda st: self._emit(
            "MIGRATION", {"status": st}), **self.migrate_kw)
        v.session.migration = mig
        mig.start()

    def migrate_at(self, v: VmState, uri: str, at_ns: int) -> None:
        """--migrate-after: start migrating when the VM's virtual clock reaches `at_ns`."""
        def start(now: int) -> None:
            self.start_migration(v, uri)     # MigrationError ends the run: one line, status 1
        v.session.m.vm.clock.add_timer(at_ns, start)

    # ---- monitor commands (QMP names; emu.monitor) -----------------------------------------
    def execute(self, command: str, args: dict) -> dict:
        from ..monitor.dispatch import CommandError
        v = self._vm(args.get("x-vm", 0))
        if command == "query-status":
            return {"status": v.status, "running": v.status == "running", "singlestep": False}
        if command == "stop":
            if v.status == "running":
                v.status = "paused"
                self._emit("STOP", {})
            return {}
        if command == "cont":
            if v.status == "postmigrate" or v.result is not None:
                raise CommandError(f"{v.session.m.vm.name} cannot continue ({v.status})")
            if v.status == "paused":
                v.status = "running"
                self._emit("RESUME", {})
            return {}
        if command == "migrate":
            uri = args.get("uri")
            if not isinstance(uri, str):
                raise CommandError("migrate needs a 'uri' string")
            try:
                self.start_migration(v, uri)
            except (MigrationError, ValueError) as e:
                raise CommandError(str(e)) from None
            if v.status == "paused":                # QEMU: a paused VM switches over at once
                v.session.migration.complete()
                self._end(v, RunResult("migrated", v.steps))
                v.status = "postmigrate"
            return {}
        if command == "migrate_cancel":
            mig = v.session.migration
            if mig is not None and mig.status == "active":
                mig.cancel()
            return {}
        if command == "query-migrate":
            mig = v.session.migration
            return {} if mig is None else mig.query()
        if command == "migrate-set-parameters":
            return self._set_parameters(v, args)
        if command == "query-migrate-parameters":
            p = v.params
            return {"max-bandwidth": p.bandwidth, "downtime-limit": p.downtime_ns // 1_000_000,
                    "x-max-iterations": p.max_iterations or 0,
                    "cpu-throttle-initial": p.throttle_initial,
                    "cpu-throttle-increment": p.throttle_increment}
        if command == "migrate-set-capabilities":
            for cap in args.get("capabilities", []):
                if not isinstance(cap, dict) or cap.get("capability") not in ("auto-converge",
                                                                               "x-compress"):
                    raise CommandError(f"unknown migration capability {cap!r}")
                state = bool(cap.get("state"))
                if cap["capability"] == "auto-converge":
                    v.params.auto_converge = state
                else:
                    v.params.compress = state
            return {}
        if command == "quit":
            self.quit = True
            self._emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
            return {}
        if command == "x-s2emu-dirty-log-stats":
            vm = v.session.m.vm
            return {"memslots": [{"name": s.name, "logging": s.log_dirty,
                                  "dirty-pages": int(s.dirty.sum())} for s in vm.memslots],
                    "harvests": vm.stats["harvests"]}
        if command == "x-s2emu-stage2-dump":
            vm = v.session.m.vm
            return {"vmid": vm.vmid, "mappings": [
                {"ipa": r.ipa, "pa": r.pa, "size": r.size, "level": r.level,
                 "prot": str(r.prot)} for r in vm.stage2.dump()]}
        raise CommandError(f"The command {command} has not been found", "CommandNotFound")

    def _vm(self, index) -> VmState:
        from ..monitor.dispatch import CommandError
        if not isinstance(index, int) or not 0 <= index < len(self.vms):
            raise CommandError(f"no VM {index!r} (x-vm: 0..{len(self.vms) - 1})")
        return self.vms[index]

    def _set_parameters(self, v: VmState, args: dict) -> dict:
        from ..monitor.dispatch import CommandError
        p = v.params
        for key, value in args.items():
            if key == "x-vm":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CommandError(f"Parameter '{key}' expects a non-negative integer")
            if key == "max-bandwidth":
                if value == 0:
                    raise CommandError("Parameter 'max-bandwidth' must be positive")
                p.bandwidth = value
            elif key == "downtime-limit":
                p.downtime_ns = value * 1_000_000
            elif key == "x-max-iterations":
                p.max_iterations = value or None
            elif key == "cpu-throttle-initial":
                p.throttle_initial = min(99, value)
            elif key == "cpu-throttle-increment":
                p.throttle_increment = min(99, value)
            else:
                raise CommandError(f"Parameter '{key}' is unexpected")
        return {}
