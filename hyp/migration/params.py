"""The parameters of a pre-copy migration (hyp.migration.precopy), on their own: the command
line and the main loop keep one per VM for every run, and a run that does not migrate
imports none of the migration code."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Params:
    bandwidth: int = 128 << 20              # bytes per second of virtual time (QEMU default)
    downtime_ns: int = 300_000_000          # QEMU downtime-limit default: 300 ms
    max_iterations: int | None = None       # None: never give up (QEMU)
    auto_converge: bool = False
    throttle_initial: int = 20              # percent (QEMU cpu-throttle-initial)
    throttle_increment: int = 10
    throttle_max: int = 99
    tick_ns: int = 1_000_000                # the link model's granularity
    compress: bool = False                  # zstd page runs (s2emu[migrate])
    rebuild: str = "lazy"                   # after cancel: huge mappings back lazily or "now"
