"""Stopping a running guest safely: Ctrl-C, wall-clock timeouts, debugger interrupts.

Unicorn's asynchronous stops (its `timeout=`, `emu_stop()` from another thread or a signal
handler) can stop right after a guest load or store and restart that instruction: a
duplicated MMIO write, a STREX that succeeds twice. So a stop is only ever a *request*,
honoured at a safe point:
- between bursts of a counted run (bursts are bounded by an instruction budget), and between
  the exits the hypervisor handles;
- in an uncounted run (`--no-icount`), at the start of the next translation block, by the
  native block hook (emu.native.BlockHook), which a watcher thread arms for a deadline or a
  SIGINT (the Python-level signal handler would only run once the guest leaves Unicorn).

Requests carry a reason ("interrupt", "timeout"); the run ends with that reason.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import weakref
from typing import Iterator


class StopControl:
    """Pending stop requests of one vCPU."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.deadline: float | None = None      # time.monotonic() value
        self.running = False                    # a run is in progress: SIGINT requests a stop
        self._native: list = []                 # emu.native.BlockHooks of uncounted runs
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def bind_native(self, hook) -> None:
        """Uncounted runs: arm this block hook for every request, from a watcher thread (one
        control may serve several vCPUs: several VMs on one host)."""
        self._native.append(hook)

    def request(self, reason: str) -> None:
        """Ask the guest to stop at the next safe point (callable from any thread)."""
        if self.reason is None:
            self.reason = reason
        for hook in self._native:
            hook.request_stop()

    def poll(self) -> str | None:
        """The pending reason, if any (a passed deadline becomes "timeout")."""
        if self.reason is None and self.deadline is not None and \
                time.monotonic() >= self.deadline:
            self.reason = "timeout"
        return self.reason

    def take(self) -> str | None:
        """poll() and clear the request."""
        reason = self.poll()
        self.reason = None
        return reason

    def set_deadline(self, deadline: float | None) -> None:
        with self._lock:
            self.deadline = deadline
            if self._native and deadline is not None and self._watcher is None:
                self._watcher = threading.Thread(target=StopControl._watch,
                                                 args=(weakref.ref(self),),
                                                 name="s2emu-stop", daemon=True)
                self._watcher.start()
        self._wake.set()

    # ---- the watcher thread (native hooks only) ---------------------------------------
    @staticmethod
    def _watch(ref) -> None:
        """Arm the native hooks when the deadline passes during a run. It lives while a
        deadline is set (a run with a timeout) and holds the control only weakly: a machine
        that is dropped is freed, with its engines."""
        while True:
            ctl = ref()
            if ctl is None:
                return
            with ctl._lock:
                deadline = ctl.deadline
                if deadline is None:
                    ctl._watcher = None
                    return
            wake = ctl._wake
            del ctl
            wake.wait(max(0.0, deadline - time.monotonic()))
            wake.clear()
            ctl = ref()
            if ctl is None:
                return
            if ctl.deadline is not None and time.monotonic() >= ctl.deadline and ctl.running:
                ctl.request("timeout")
                ctl.deadline = None
            del ctl


@contextlib.contextmanager
def sigint_stops(ctl: StopControl) -> Iterator[None]:
    """While active, Ctrl-C during a run requests a stop ("interrupt") instead of raising
    KeyboardInterrupt inside Unicorn's hooks; outside a run it raises as usual. For uncounted
    runs a wakeup fd lets a thread arm the native hook at once (the Python handler itself
    runs only when the guest next leaves Unicorn)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if ctl.running:
            ctl.request("interrupt")
        else:
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, handler)
    rfd = wfd = None
    old_fd = -1
    if ctl._native:
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        old_fd = signal.set_wakeup_fd(wfd)

        def relay() -> None:
            while True:
                try:
                    data = os.read(rfd, 64)
                except OSError:
                    return
                if not data:
                    return
                if signal.SIGINT in data and ctl.running:
                    ctl.request("interrupt")

        relay_thread = threading.Thread(target=relay, name="s2emu-sigint", daemon=True)
        relay_thread.start()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if wfd is not None:
            signal.set_wakeup_fd(old_fd)
            os.close(wfd)                       # the relay reads EOF and ends
            relay_thread.join(1.0)
            os.close(rfd)
