"""Deterministic virtual time: advanced by guest steps and by guest sleeps only, never by the
wall clock. Timers fire at exact virtual times: a run is cut short so that it stops precisely
at the next deadline (guest instructions are counted), and the callback runs between bursts
of guest code, in the hypervisor."""
from __future__ import annotations

import heapq
import itertools
from typing import Callable

NS_PER_INSN = 1          # a 1 GHz, one-instruction-per-cycle guest


class VirtualClock:
    """now = steps executed x NS_PER_INSN + time slept. Never reads the wall clock."""

    def __init__(self, ns_per_insn: int = NS_PER_INSN) -> None:
        self.ns_per_insn = ns_per_insn
        self.slept_ns = 0
        self.instructions = 0
        self._timers: list[tuple[int, int, Callable[[int], int | None]]] = []
        self._seq = itertools.count()
        self._cancelled: set[int] = set()
        self._wakes: set[int] = set()        # handles of timers that raise guest interrupts

    def now_ns(self) -> int:
        return (self.instructions + self.in_flight()) * self.ns_per_insn + self.slept_ns

    @staticmethod
    def in_flight() -> int:
        """Steps the running vCPU made that are not in `instructions` yet (its run loop
        replaces this while it runs, so a trapped timer read mid-burst sees the exact time)."""
        return 0

    def sleep(self, ns: int) -> None:
        self.slept_ns += max(0, ns)

    # ---- timers --------------------------------------------------------------------
    def add_timer(self, deadline_ns: int, fn: Callable[[int], int | None], *,
                  wake: bool = False) -> int:
        """Call fn(now_ns) once virtual time reaches `deadline_ns`; fn returns the next
        deadline to re-arm itself, or None. `wake`: the timer can raise a guest interrupt,
        so a vCPU waiting in WFI sleeps until it (`next_wake`). Returns a handle for
        `cancel`."""
        handle = next(self._seq)
        heapq.heappush(self._timers, (deadline_ns, handle, fn))
        if wake:
            self._wakes.add(handle)
        return handle

    def next_wake(self) -> int | None:
        """The earliest deadline of a timer that can raise a guest interrupt."""
        return min((d for d, h, _ in self._timers if h in self._wakes and
                    h not in self._cancelled), default=None)

    def every(self, period_ns: int, fn: Callable[[int], None]) -> int:
        """Call fn(now_ns) at every multiple of `period_ns` of virtual time from now on."""
        if period_ns <= 0:
            raise ValueError("a timer period must be positive")

        def tick(now: int) -> int:
            fn(now)
            return (now // period_ns + 1) * period_ns
        return self.add_timer((self.now_ns() // period_ns + 1) * period_ns, tick)

    def cancel(self, handle: int) -> None:
        self._cancelled.add(handle)

    def sleep_to_wake(self, until_ns: int | None) -> str | None:
        """Every vCPU waits (WFI): jump to the next timer that can raise an interrupt and
        fire the due ones (None); "wfi" when none is armed (nothing can ever wake a vCPU),
        "time" when `until_ns` comes first (the clock stops there)."""
        wake = self.next_wake()
        if wake is None:
            return "wfi"
        target = min(wake, self.next_deadline() or wake)
        if until_ns is not None and target > until_ns:
            self.sleep(until_ns - self.now_ns())
            return "time"
        self.sleep(target - self.now_ns())
        self.fire_due()
        return None

    def next_deadline(self) -> int | None:
        while self._timers and self._timers[0][1] in self._cancelled:
            handle = heapq.heappop(self._timers)[1]
            self._cancelled.discard(handle)
            self._wakes.discard(handle)
        return self._timers[0][0] if self._timers else None

    def fire_due(self) -> int:
        """Run every timer whose deadline has passed, in deadline order; returns how many."""
        fired = 0
        while True:
            deadline = self.next_deadline()
            now = self.now_ns()
            if deadline is None or deadline > now:
                return fired
            _, handle, fn = heapq.heappop(self._timers)
            nxt = fn(now)
            fired += 1
            if nxt is not None and handle not in self._cancelled:
                heapq.heappush(self._timers, (max(nxt, now + 1), handle, fn))
            else:
                self._wakes.discard(handle)
            self._cancelled.discard(handle)
