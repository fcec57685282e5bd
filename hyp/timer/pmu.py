"""The PMU a vCPU sees (DDI 0406C C12): the cycle counter PMCCNTR on the machine's virtual
time, every PMU register trapped (HDCR.TPM, HDCR.TPMCR) and emulated here.

Virtual time runs one cycle per nanosecond (a 1 GHz CPU retiring one instruction per cycle,
hyp.vtime), so PMCCNTR counts virtual nanoseconds while PMCR.E and PMCNTENSET.C are set
(every 64th with PMCR.D). It never goes backwards except when the guest writes it or resets
it (PMCR.C) - Unicorn's own PMCCNTR follows the host clock and does. No event counters are
implemented (PMCR.N = 0: the event-counter registers read as zero and ignore writes, C12.8),
and no overflow interrupt is wired (the board's device tree has no PMU node); PMOVSR.C is
set on a 32-bit wrap (64-bit with PMCR.LC does not exist on ARMv7).
"""
from __future__ import annotations

PMCR_E, PMCR_P, PMCR_C, PMCR_D = 1, 2, 4, 8
PMCR_WRITABLE = 0x3F & ~(PMCR_P | PMCR_C)       # E, D, X, DP (P and C are actions)
PMCR_ID = 0x41 << 24 | 0x0F << 16               # ARM, Cortex-A15; N = 0
CYCLE = 1 << 31                                 # the C bit of the enable/overflow sets
MASK32 = 0xFFFFFFFF

# (CRm, opc2) of c9 -> register name (C12.7, Table C12-11)
REGISTERS = {(12, 0): "PMCR", (12, 1): "PMCNTENSET", (12, 2): "PMCNTENCLR",
             (12, 3): "PMOVSR", (12, 4): "PMSWINC", (12, 5): "PMSELR", (12, 6): "PMCEID0",
             (12, 7): "PMCEID1", (13, 0): "PMCCNTR", (13, 1): "PMXEVTYPER",
             (13, 2): "PMXEVCNTR", (14, 0): "PMUSERENR", (14, 1): "PMINTENSET",
             (14, 2): "PMINTENCLR", (14, 3): "PMOVSSET"}


class PmuError(ValueError):
    """A saved PMU state this build cannot restore."""


class Pmu:
    """One vCPU's PMU on `clock` (hyp.vtime.VirtualClock)."""

    name = "pmu"
    state_version = 1

    def __init__(self, clock) -> None:
        self.clock = clock
        self.pmcr = 0
        self.cntens = 0
        self.ovs = 0
        self.intens = 0
        self.userenr = 0
        self._base = 0                # the cycle count at `_since` (64-bit, internal)
        self._since = 0               # virtual ns when counting was last (re)started
        self._running = False

    # ---- the cycle counter -----------------------------------------------------------------
    def _counting(self) -> bool:
        return bool(self.pmcr & PMCR_E and self.cntens & CYCLE)

    def _count(self) -> int:
        if not self._running:
            return self._base
        elapsed = self.clock.now_ns() - self._since
        return self._base + (elapsed // 64 if self.pmcr & PMCR_D else elapsed)

    def _restart(self, base: int | None = None) -> None:
        """Fold what ran so far into the base, then follow the (new) enables."""
        count = self._count() if base is None else base
        if count >> 32 and not self.ovs & CYCLE and base is None:
            self.ovs |= CYCLE                       # wrapped while counting
        self._base = count & MASK32
        self._since = self.clock.now_ns()
        self._running = self._counting()

    def cycles(self) -> int:
        """PMCCNTR."""
        count = self._count()
        if count >> 32:
            self._restart()
        return self._count() & MASK32

    # ---- registers ------------------------------------------------------------------------
    def read(self, name: str) -> int:
        if name == "PMCR":
            return PMCR_ID | self.pmcr
        if name in ("PMCNTENSET", "PMCNTENCLR"):
            return self.cntens
        if name in ("PMOVSR", "PMOVSSET"):
            self.cycles()                           # folds a wrap into PMOVSR.C
            return self.ovs
        if name == "PMCCNTR":
            return self.cycles()
        if name == "PMUSERENR":
            return self.userenr
        if name in ("PMINTENSET", "PMINTENCLR"):
            return self.intens
        return 0        # PMSELR, PMCEID0/1, PMXEVTYPER, PMXEVCNTR: no event counters (N=0)

    def write(self, name: str, value: int) -> None:
        value &= MASK32
        if name == "PMCR":
            self._restart()
            self.pmcr = value & PMCR_WRITABLE
            if value & PMCR_C:
                self._base = 0
            self._running = self._counting()
        elif name == "PMCNTENSET":
            self._restart()
            self.cntens |= value & CYCLE
            self._running = self._counting()
        elif name == "PMCNTENCLR":
            self._restart()
            self.cntens &= ~value
            self._running = self._counting()
        elif name == "PMCCNTR":
            self._restart(value)
        elif name == "PMOVSR":
            self.cycles()
            self.ovs &= ~value
        elif name == "PMOVSSET":
            self.ovs |= value & CYCLE
        elif name == "PMUSERENR":
            self.userenr = value & 0xF
        elif name == "PMINTENSET":
            self.intens |= value & CYCLE
        elif name == "PMINTENCLR":
            self.intens &= ~value
        # PMSWINC, PMSELR, PMXEVTYPER, PMXEVCNTR: write-ignored (no event counters)

    def pl0_allowed(self, name: str, write: bool) -> bool:
        """May User mode access `name` (PMUSERENR: EN, SW, CR, ER; C12.8.17)?"""
        en, sw, cr = self.userenr & 1, self.userenr >> 1 & 1, self.userenr >> 2 & 1
        if en:
            return True
        if name == "PMSWINC" and write:
            return bool(sw)
        if name == "PMCCNTR" and not write:
            return bool(cr)
        return False

    # ---- migration --------------------------------------------------------------------------
    def save(self) -> dict:
        return {"pmcr": self.pmcr, "cntens": self.cntens, "ovs": self.ovs,
                "intens": self.intens, "userenr": self.userenr, "ccnt": self.cycles()}

    def load(self, state) -> None:
        keys = {"pmcr", "cntens", "ovs", "intens", "userenr", "ccnt"}
        if not isinstance(state, dict) or set(state) != keys:
            raise PmuError(f"PMU state must have the fields {sorted(keys)}")
        for k in keys:
            if not isinstance(state[k], int) or not 0 <= state[k] <= MASK32:
                raise PmuError(f"PMU state {k} = {state[k]!r} is not a 32-bit value")
        self.pmcr, self.cntens = state["pmcr"] & PMCR_WRITABLE, state["cntens"] & CYCLE
        self.ovs, self.intens = state["ovs"] & CYCLE, state["intens"] & CYCLE
        self.userenr = state["userenr"] & 0xF
        self._base, self._since = state["ccnt"], self.clock.now_ns()
        self._running = self._counting()
