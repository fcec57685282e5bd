"""Monitor commands between threads: protocol servers (QMP, the human monitor) submit
commands from their own threads; the main loop executes them on its thread, between slices of
guest code, and publishes events (QEMU's STOP, RESUME, MIGRATION, SHUTDOWN).

    dispatcher = Dispatcher(wake=cpu.stop.request)       # wake: make a running guest return
    fut = dispatcher.submit("query-status", {})           # any thread
    ...
    dispatcher.process(execute)                           # the main loop's thread
    fut.result(timeout=...)                               # {"status": "running", ...}

`execute(command, arguments) -> dict` raises CommandError for a bad command or argument; the
error is delivered to the submitter as QMP would ({"class": ..., "desc": ...}).
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable


class CommandError(Exception):
    """A command that failed: QMP error class (GenericError, CommandNotFound, ...) and a
    one-line description."""

    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class


Execute = Callable[[str, dict], dict]


class Dispatcher:
    """A queue of (command, arguments, future) plus event listeners."""

    def __init__(self, wake: Callable[[str], None] | None = None) -> None:
        self._q: queue.Queue[tuple[str, dict, Future]] = queue.Queue()
        self._wake = wake
        self._listeners: list[Callable[[str, dict], None]] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition()

    # ---- any thread ---------------------------------------------------------------------
    def submit(self, command: str, arguments: dict | None = None) -> Future:
        """Queue a command for the main loop; returns a Future of its result dict (or of a
        CommandError)."""
        fut: Future = Future()
        with self._arrived:
            self._q.put((command, dict(arguments or {}), fut))
            self._arrived.notify_all()
        if self._wake is not None:
            self._wake("monitor")
        return fut

    def call(self, command: str, arguments: dict | None = None, timeout: float = 60.0) -> dict:
        """submit() and wait for the result (raises CommandError)."""
        return self.submit(command, arguments).result(timeout=timeout)

    def add_listener(self, fn: Callable[[str, dict], None]) -> None:
        """fn(event, data) for every event from now on (called on the main loop's thread)."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[str, dict], None]) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    # ---- the main loop's thread ---------------------------------------------------------------
    def pending(self) -> bool:
        return not self._q.empty()

    def process(self, execute: Execute) -> int:
        """Execute every queued command; returns how many ran."""
        n = 0
        while True:
            try:
                command, args, fut = self._q.get_nowait()
            except queue.Empty:
                return n
            n += 1
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(execute(command, args))
            except CommandError as e:
                fut.set_exception(e)
            except Exception as e:                      # a bug of ours: the client learns it
                fut.set_exception(CommandError(f"internal error: {type(e).__name__}: {e}"))
                raise

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a command is queued (True) or `timeout` passes (False)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: not self._q.empty(), timeout)

    def emit(self, event: str, data: dict | None = None) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            fn(event, dict(data or {}))
