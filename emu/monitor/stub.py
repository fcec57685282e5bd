"""An in-memory backend for the monitor commands, for tests of the protocol front-ends (QMP,
the human monitor) without a guest: the same commands, results and events the main loop
implements, on made-up numbers.

    d = Dispatcher()
    vm = StubVM(d)
    with StubMainLoop(d, vm):                  # a thread: d.process(vm.execute), vm.tick()
        d.call("migrate", {"uri": "tcp:localhost:4444"})

Commands (QEMU's names and shapes, qapi/run-state.json and qapi/migration.json):
query-status, stop, cont, quit, migrate, migrate_cancel, query-migrate,
migrate-set-parameters, query-migrate-parameters, migrate-set-capabilities,
query-migrate-capabilities, x-s2emu-dirty-log-stats, x-s2emu-stage2-dump, and the stub's own
x-stub-tick {"n": N} (N ticks now, on the main loop's thread). Every command takes an optional
"x-vm" (an int); the stub checks its type and ignores it.

Events: STOP, RESUME, SHUTDOWN, MIGRATION {"status": ...}. A migration goes setup -> active at
once (inside `migrate`), then each tick() is one pre-copy iteration; after `migration_steps`
iterations the guest stops (STOP, status "postmigrate") and the migration completes. A URI
starting with "fail:" fails instead (status "failed", "error-desc"). Times are virtual (an
iteration takes 100 ms), so every number is deterministic.
"""
from __future__ import annotations

import threading

from .dispatch import CommandError, Dispatcher

PAGE = 4096
CAPABILITIES = ("auto-converge", "zero-blocks", "events", "x-s2emu-compress")
URI_SCHEMES = ("tcp:", "unix:", "exec:", "file:", "fd:", "fail:")


def _unexpected(args: dict, allowed: tuple[str, ...]) -> None:
    for key in args:
        if key not in allowed:
            raise CommandError(f"Parameter '{key}' is unexpected")


def _uint(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(f"Invalid parameter type for '{name}', expected: integer")
    if value < 0:
        raise CommandError(f"Parameter '{name}' expects a non-negative integer")
    return value


class StubVM:
    """The monitor commands' state, in memory. `execute` runs on the main loop's thread (the
    one that calls Dispatcher.process); events go out through the dispatcher."""

    def __init__(self, dispatcher: Dispatcher, *, ram_bytes: int = 128 << 20,
                 migration_steps: int = 3) -> None:
        self.dispatcher = dispatcher
        self.ram_bytes = ram_bytes
        self.migration_steps = migration_steps
        self.status = "running"
        self.migration: dict | None = None
        self.params = {"max-bandwidth": 128 << 20, "downtime-limit": 300,
                       "x-max-iterations": 0, "cpu-throttle-initial": 20,
                       "cpu-throttle-increment": 10}
        self.caps = {name: False for name in CAPABILITIES}
        self.harvests = 0
        self.dirty_pages = 0
        self.calls: list[tuple[str, dict]] = []     # every command executed, in order
        self.quit = threading.Event()

    # ---- the command table ------------------------------------------------------------------
    def execute(self, command: str, args: dict) -> dict:
        self.calls.append((command, dict(args)))
        args = dict(args)
        if "x-vm" in args:
            _uint("x-vm", args.pop("x-vm"))
        fn = getattr(self, "cmd_" + command.replace("-", "_"), None)
        if fn is None:
            raise CommandError(f"The command {command} has not been found", "CommandNotFound")
        return fn(args)

    def _emit(self, event: str, data: dict | None = None) -> None:
        self.dispatcher.emit(event, data)

    def _migrating(self) -> bool:
        return self.migration is not None and self.migration["status"] in ("setup", "active")

    def cmd_query_status(self, args: dict) -> dict:
        _unexpected(args, ())
        return {"status": self.status, "running": self.status == "running",
                "singlestep": False}

    def cmd_stop(self, args: dict) -> dict:
        _unexpected(args, ())
        if self.status == "running":
            self.status = "paused"
            self._emit("STOP")
        return {}

    def cmd_cont(self, args: dict) -> dict:
        _unexpected(args, ())
        if self.status == "shutdown":
            raise CommandError("Resetting the Virtual Machine is required")
        if self.status == "inmigrate":
            raise CommandError("Migration is not finished: cannot run")
        if self.status != "running":
            self.status = "running"
            self._emit("RESUME")
        return {}

    def cmd_quit(self, args: dict) -> dict:
        _unexpected(args, ())
        self.status = "shutdown"
        self._emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        self.quit.set()
        return {}

    def cmd_migrate(self, args: dict) -> dict:
        _unexpected(args, ("uri", "detach"))
        uri = args.get("uri")
        if uri is None:
            raise CommandError("Parameter 'uri' is missing")
        if not isinstance(uri, str):
            raise CommandError("Invalid parameter type for 'uri', expected: string")
        if not uri.startswith(URI_SCHEMES):
            raise CommandError(f"unknown migration protocol: {uri}")
        if self._migrating():
            raise CommandError("There's a migration process in progress")
        self.migration = {"status": "setup", "uri": uri, "iteration": 0,
                          "transferred": 0,
                          "remaining": self.ram_bytes, "normal": 0, "duplicate": 0}
        self._emit("MIGRATION", {"status": "setup"})
        self.migration["status"] = "active"
        self._emit("MIGRATION", {"status": "active"})
        return {}

    def cmd_migrate_cancel(self, args: dict) -> dict:
        _unexpected(args, ())
        if self._migrating():
            self.migration["status"] = "cancelled"
            self._emit("MIGRATION", {"status": "cancelled"})
        return {}

    def cmd_query_migrate(self, args: dict) -> dict:
        _unexpected(args, ())
        m = self.migration
        if m is None:
            return {}
        total_ms = 1 + 100 * m["iteration"]          # virtual: an iteration takes 100 ms
        normal = m["normal"]
        info = {"status": m["status"], "total-time": total_ms,
                "expected-downtime": self.params["downtime-limit"] // 2, "setup-time": 1,
                "ram": {"transferred": m["transferred"], "remaining": m["remaining"],
                        "total": self.ram_bytes, "duplicate": m["duplicate"], "normal": normal,
                        "normal-bytes": normal * PAGE, "dirty-pages-rate": 100 * m["iteration"],
                        "mbps": round(m["transferred"] * 8 / 1e3 / total_ms, 2),
                        "dirty-sync-count": m["iteration"], "page-size": PAGE},
                "cpu-throttle-percentage": 20 if self.caps["auto-converge"] else 0}
        if m["status"] == "completed":
            info["downtime"] = 7
        if m["status"] == "failed":
            info["error-desc"] = m["error-desc"]
        return info

    def cmd_migrate_set_parameters(self, args: dict) -> dict:
        _unexpected(args, tuple(self.params))
        new = {key: _uint(key, value) for key, value in args.items()}
        self.params.update(new)
        return {}

    def cmd_query_migrate_parameters(self, args: dict) -> dict:
        _unexpected(args, ())
        return dict(self.params)

    def cmd_migrate_set_capabilities(self, args: dict) -> dict:
        _unexpected(args, ("capabilities",))
        caps = args.get("capabilities")
        if not isinstance(caps, list):
            raise CommandError("Invalid parameter type for 'capabilities', expected: array")
        if self._migrating():
            raise CommandError("There's a migration process in progress")
        new = {}
        for cap in caps:
            name = cap.get("capability") if isinstance(cap, dict) else None
            if name not in self.caps:
                raise CommandError(f"Parameter 'capability' does not accept value '{name}'")
            if not isinstance(cap.get("state"), bool):
                raise CommandError("Invalid parameter type for 'state', expected: boolean")
            new[name] = cap["state"]
        self.caps.update(new)
        return {}

    def cmd_query_migrate_capabilities(self, args: dict) -> list:
        _unexpected(args, ())
        return [{"capability": k, "state": v} for k, v in self.caps.items()]

    def cmd_x_s2emu_dirty_log_stats(self, args: dict) -> dict:
        _unexpected(args, ())
        logging = self._migrating()
        return {"memslots": [{"name": "flash0", "logging": False, "dirty-pages": 0},
                             {"name": "flash1", "logging": False, "dirty-pages": 0},
                             {"name": "ram", "logging": logging,
                              "dirty-pages": self.dirty_pages if logging else 0}],
                "harvests": self.harvests}

    def cmd_x_s2emu_stage2_dump(self, args: dict) -> dict:
        _unexpected(args, ())
        return {"vmid": 1, "mappings": [
            {"ipa": 0x0, "pa": 0x7f0000000000, "size": 0x200000, "prot": "r-x", "level": 2},
            {"ipa": 0x40000000, "pa": 0x7f1000000000, "size": 0x200000, "prot": "rwx",
             "level": 2},
            {"ipa": 0x40200000, "pa": 0x7f1000200000, "size": 0x1000, "prot": "r-x",
             "level": 3}]}

    def cmd_x_stub_tick(self, args: dict) -> dict:
        _unexpected(args, ("n",))
        for _ in range(_uint("n", args.get("n", 1))):
            self.tick()
        return {}

    # ---- time passing -----------------------------------------------------------------------
    def tick(self) -> None:
        """One pre-copy iteration of a running migration (nothing otherwise)."""
        m = self.migration
        if m is None or m["status"] != "active":
            return
        m["iteration"] += 1
        self.harvests += 1
        sent = m["remaining"] // 2 if m["iteration"] < self.migration_steps else m["remaining"]
        m["transferred"] += sent
        m["remaining"] -= sent
        m["normal"] += sent // PAGE // 2
        m["duplicate"] += sent // PAGE - sent // PAGE // 2
        self.dirty_pages = m["remaining"] // PAGE // 4
        if m["uri"].startswith("fail:"):
            m["status"], m["error-desc"] = "failed", "stub: the destination went away"
            self._emit("MIGRATION", {"status": "failed"})
        elif m["iteration"] >= self.migration_steps:
            if self.status == "running":
                self._emit("STOP")
            self.status = "postmigrate"
            m["status"] = "completed"
            self._emit("MIGRATION", {"status": "completed"})


class StubMainLoop:
    """A thread standing in for the main loop: runs queued commands on `vm` and calls
    vm.tick() every `tick` seconds (tick=None: never; the test sends x-stub-tick)."""

    def __init__(self, dispatcher: Dispatcher, vm: StubVM, tick: float | None = 0.005) -> None:
        self.dispatcher, self.vm, self.tick = dispatcher, vm, tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stub-main-loop", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.dispatcher.wait(self.tick if self.tick is not None else 0.05)
                self.dispatcher.process(self.vm.execute)
                if self.tick is not None:
                    self.vm.tick()
        except BaseException as e:                       # surfaced by stop()
            self.error = e

    def start(self) -> "StubMainLoop":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> "StubMainLoop":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
