"""The monitors a run asked for (--qmp, --monitor stdio), opened before anything runs (a busy
port is one line, status 1) and fed by the main loop's command queue."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:       # imported when a monitor is asked for
    from ..monitor.dispatch import Dispatcher


class Monitors:
    def __init__(self, a: argparse.Namespace) -> None:
        self.qmp_address = getattr(a, "qmp", None)
        self.hmp = getattr(a, "monitor", None) == "stdio"
        self.dispatcher: Dispatcher | None = None
        self._servers: list = []
        self._qmp = self._hmp = None
        if self.qmp_address or self.hmp:
            from ..monitor import dispatch
            self.dispatcher = dispatch.Dispatcher()
        if self.qmp_address:
            from ..monitor.qmp import QmpServer
            server = QmpServer(self.dispatcher, self.qmp_address)
            server.start()
            self._servers.append(server)
            self._qmp = server
            print(f"[s2emu] QMP on {server.address}", file=sys.stderr, flush=True)

    def start(self, loop) -> None:
        """Wake the running guest for each command; start the human monitor."""
        if self.dispatcher is None:
            return
        stop = loop.vms[0].session.m.cpu.stop
        self.dispatcher._wake = stop.request
        if self.hmp:
            from ..monitor.hmp import HumanMonitor
            self._hmp = HumanMonitor(self.dispatcher, sys.stdin, sys.stderr)
            self._hmp.start()
            self._servers.append(self._hmp)
        loop.monitors_alive = self.alive

    def alive(self) -> bool:
        """Can a command still come? (QMP: always; the human monitor: until its input
        ends.) A run whose VMs all wait for commands nobody can send ends."""
        if self._qmp is not None:
            return True
        return self._hmp is not None and not self._hmp.join(0)

    def close(self) -> None:
        for s in self._servers:
            s.close()
        self._servers = []


def open_monitors(a: argparse.Namespace) -> Monitors:
    return Monitors(a)
