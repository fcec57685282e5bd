"""The Generic Timer a vCPU sees (DDI 0406C B8), on the machine's virtual time: the physical
counter CNTPCT and the EL1 physical timer CNTP_CTL/CVAL/TVAL, trapped (CNTHCTL.PL1PCTEN =
PL1PCEN = 0) and emulated here, as KVM's arch timer emulation does for its guests
(virt/kvm/arm/arch_timer.c).

Virtual time (hyp.vtime) is in nanoseconds; the counter runs at CNTFRQ = 62.5 MHz (one tick
per 16 ns, the frequency Unicorn's and QEMU's CNTFRQ report), so CNTPCT = now_ns // 16 and a
compare value CVAL fires at exactly CVAL * 16 ns. The timer's condition (B8.1.4): CNTPCT >=
CVAL; ISTATUS shows it, and the interrupt line - a level-sensitive PPI - is asserted while
ENABLE=1, IMASK=0 and the condition holds. A virtual-clock timer raises it at the deadline
(the run is cut exactly there); every register write re-evaluates it.
"""
from __future__ import annotations

from typing import Callable

CNTFRQ = 62_500_000
NS_PER_TICK = 16                   # 1e9 / CNTFRQ
CTL_ENABLE, CTL_IMASK, CTL_ISTATUS = 1, 2, 4
MASK64 = (1 << 64) - 1

Line = Callable[[bool], None]      # set the timer's PPI level at the interrupt controller


class ArchTimerError(ValueError):
    """A saved timer state this build cannot restore (names the field)."""


class ArchTimer:
    """One vCPU's physical timer on `clock` (hyp.vtime.VirtualClock), driving `line`."""

    name = "arch-timer"
    state_version = 1

    def __init__(self, clock, line: Line) -> None:
        self.clock = clock
        self.line = line
        self.ctl = 0                  # ENABLE, IMASK (ISTATUS is computed)
        self.cval = 0
        self._level = False
        self._timer: int | None = None

    # ---- the counter --------------------------------------------------------------------
    def counter(self) -> int:
        """CNTPCT: virtual time in 62.5 MHz ticks."""
        return self.clock.now_ns() // NS_PER_TICK

    # ---- registers (B8.2) -----------------------------------------------------------------
    def read_ctl(self) -> int:
        status = CTL_ISTATUS if self.ctl & CTL_ENABLE and self.counter() >= self.cval else 0
        return self.ctl | status

    def write_ctl(self, value: int) -> None:
        self.ctl = value & (CTL_ENABLE | CTL_IMASK)
        self._update()

    def read_cval(self) -> int:
        return self.cval

    def write_cval(self, value: int) -> None:
        self.cval = value & MASK64
        self._update()

    def read_tval(self) -> int:
        """CNTP_TVAL: CVAL - CNTPCT, as a 32-bit (signed) down-counter."""
        return (self.cval - self.counter()) & 0xFFFFFFFF

    def write_tval(self, value: int) -> None:
        """CVAL = CNTPCT + TVAL, TVAL sign-extended (B8.1.4)."""
        tval = value & 0xFFFFFFFF
        if tval & 0x80000000:
            tval -= 1 << 32
        self.write_cval(self.counter() + tval)

    # ---- the interrupt --------------------------------------------------------------------
    def _asserted(self) -> bool:
        return self.ctl & (CTL_ENABLE | CTL_IMASK) == CTL_ENABLE and \
            self.counter() >= self.cval

    def _update(self) -> None:
        """Set the line from the condition now and arm a wake-up timer for the deadline."""
        if self._timer is not None:
            self.clock.cancel(self._timer)
            self._timer = None
        level = self._asserted()
        if level != self._level:
            self._level = level
            self.line(level)
        if not level and self.ctl & (CTL_ENABLE | CTL_IMASK) == CTL_ENABLE:
            self._timer = self.clock.add_timer(self.cval * NS_PER_TICK, self._expired,
                                               wake=True)

    def _expired(self, _now: int) -> None:
        self._timer = None
        self._update()
        return None

    @property
    def level(self) -> bool:
        return self._level

    def deadline_ns(self) -> int | None:
        """When the line will rise, if armed."""
        return self.cval * NS_PER_TICK if self._timer is not None else None

    # ---- migration --------------------------------------------------------------------------
    def save(self) -> dict:
        return {"ctl": self.ctl, "cval": self.cval}

    def load(self, state) -> None:
        if not isinstance(state, dict) or set(state) != {"ctl", "cval"}:
            raise ArchTimerError(f"arch timer state must be {{ctl, cval}}, got {state!r:.60}")
        ctl, cval = state["ctl"], state["cval"]
        if not isinstance(ctl, int) or ctl & ~(CTL_ENABLE | CTL_IMASK) or ctl < 0:
            raise ArchTimerError(f"arch timer ctl {ctl!r} is not ENABLE|IMASK bits")
        if not isinstance(cval, int) or not 0 <= cval <= MASK64:
            raise ArchTimerError(f"arch timer cval {cval!r} is not a 64-bit value")
        self.ctl, self.cval = ctl, cval
        self._level = not self._asserted()          # force the line to be re-asserted
        self._update()
