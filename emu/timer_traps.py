"""The time-related CP15 accesses the machine traps and completes on virtual time (DDI 0406C
B8, C12; B1.14.12 HDCR, B4.1.26 CNTHCTL): the physical counter and timer (CNTHCTL.PL1PCTEN =
PL1PCEN = 0) go to the vCPU's hyp.timer.arch_timer.ArchTimer, every PMU register (HDCR.TPM,
TPMCR) to its hyp.timer.pmu.Pmu. PL0 accesses the guest's own controls forbid (CNTKCTL,
PMUSERENR) are Undefined Instruction exceptions for the guest, as they take priority over
the Hyp trap.

CNTFRQ, CNTKCTL and the virtual timer are not trapped (the virtual counter cannot be on
ARMv7): what a guest reading CNTVCT sees is steered by `steer_virtual_counter`.
"""
from __future__ import annotations

from unicorn import arm_const as A

from hyp.timer.pmu import REGISTERS as PMU_REGISTERS

from .undef import CoprocTransfer

CNTHCTL = (15, 0, 0, 14, 1, 4, 0)        # MRC p15, 4, Rt, c14, c1, 0
CNTKCTL = (15, 0, 0, 14, 1, 0, 0)
CNTVOFF = (15, 1, 0, 0, 14, 4, 0)        # MCRR p15, 4, Rt, Rt2, c14
CNTVCT = (15, 1, 0, 0, 14, 1, 0)         # MRRC p15, 1, Rt, Rt2, c14
HDCR = (15, 0, 0, 1, 1, 4, 1)            # MRC p15, 4, Rt, c1, c1, 1
HDCR_TPMCR, HDCR_TPM = 1 << 5, 1 << 6
_MODE_USR = 0x10


class Untrapped(Exception):
    """Not one of these registers (or a PL0 access the guest's controls forbid)."""


def enable_traps(uc) -> None:
    """Trap the physical counter and timer (PL1PCTEN = PL1PCEN = 0) and the PMU."""
    uc.reg_write(A.UC_ARM_REG_CP_REG, CNTHCTL + (0,))
    hdcr = uc.reg_read(A.UC_ARM_REG_CP_REG, HDCR)
    uc.reg_write(A.UC_ARM_REG_CP_REG, HDCR + (hdcr | HDCR_TPM | HDCR_TPMCR,))


def emulate(cpu, t: CoprocTransfer) -> str:
    """Complete `t` on cpu.timer / cpu.pmu; returns the statistics name."""
    user = cpu.get_cpsr() & 0x1F == _MODE_USR
    if t.coproc == 15 and t.crm == 14 and t.is64 and t.opc1 in (0, 2):
        return _counter_or_cval(cpu, t, user)
    if t.coproc == 15 and t.crn == 14 and t.crm == 2 and t.opc1 == 0 and not t.is64 \
            and t.opc2 in (0, 1):
        _pl0_check(cpu, user, 9)                  # CNTKCTL.PL0PTEN
        timer = cpu.timer
        if t.opc2 == 0:
            _rw(cpu, t, timer.read_tval, timer.write_tval)
        else:
            _rw(cpu, t, timer.read_ctl, timer.write_ctl)
        return "timer"
    if t.coproc == 15 and t.crn == 9 and t.opc1 == 0 and not t.is64:
        name = PMU_REGISTERS.get((t.crm, t.opc2))
        if name is None:
            raise Untrapped
        if user and not cpu.pmu.pl0_allowed(name, not t.read):
            raise Untrapped
        _rw(cpu, t, lambda: cpu.pmu.read(name), lambda v: cpu.pmu.write(name, v))
        return "pmu"
    raise Untrapped


def _counter_or_cval(cpu, t: CoprocTransfer, user: bool) -> str:
    timer = cpu.timer
    if t.opc1 == 0:                               # CNTPCT, read-only
        _pl0_check(cpu, user, 0)                  # CNTKCTL.PL0PCTEN
        if not t.read:
            raise Untrapped
        value = timer.counter()
    else:                                         # CNTP_CVAL
        _pl0_check(cpu, user, 9)
        if not t.read:
            lo = cpu.reg(t.rt) if t.rt != 15 else 0
            hi = cpu.reg(t.rt2) if t.rt2 != 15 else 0
            timer.write_cval(hi << 32 | lo)
            return "timer"
        value = timer.read_cval()
    cpu.set_reg(t.rt, value & 0xFFFFFFFF)
    cpu.set_reg(t.rt2, value >> 32 & 0xFFFFFFFF)
    return "timer"


def _pl0_check(cpu, user: bool, bit: int) -> None:
    if user and not cpu.uc.reg_read(A.UC_ARM_REG_CP_REG, CNTKCTL) >> bit & 1:
        raise Untrapped


def _rw(cpu, t: CoprocTransfer, read, write) -> None:
    if t.read:
        cpu.set_reg(t.rt, read() & 0xFFFFFFFF)
    else:
        write(cpu.reg(t.rt) if t.rt != 15 else 0)


class VirtualCounter:
    """Steers CNTVOFF so the untrappable virtual counter follows the machine's virtual time:
    at every entry CNTVCT = the virtual-time count (CNTPCT), unless the guest may already
    have read more (Unicorn's counter runs on the host clock during a burst): then it goes
    on from there, so it never goes backwards. Between entries it advances with the host
    clock; it is monotonic but not deterministic - use CNTPCT for that (README)."""

    name = "cntvct"
    state_version = 1

    def __init__(self, raw, host_counter) -> None:
        self.raw = raw                            # emu.raw_regs.RawRegs of the vCPU
        self.host_counter = host_counter          # () -> Unicorn's raw counter (host clock)
        self._off = None
        self._last_exit_host = 0
        self._floor = 0                           # the most a restored guest may have read

    def seen(self) -> int:
        """The largest CNTVCT the guest may have read so far."""
        if self._off is None:
            return self._floor
        return max(self._floor, self._last_exit_host - self._off)

    # migration (hyp.migration.state devices): a destination's CNTVCT goes on from there
    # (KVM migrates the counter too, KVM_REG_ARM_TIMER_CNT). The value depends on the host
    # clock - the one field of a stream that does - so it is fixed-width: a stream's length
    # stays deterministic.
    def save(self) -> dict:
        return {"seen": f"{self.seen() & ((1 << 64) - 1):016x}"}

    def load(self, state) -> None:
        seen = state.get("seen") if isinstance(state, dict) and set(state) == {"seen"} else None
        if not isinstance(seen, str) or len(seen) != 16 or \
                any(c not in "0123456789abcdef" for c in seen):
            raise ValueError(f"virtual counter state must be {{seen: 16 hex digits}}, "
                             f"got {state!r:.60}")
        self._floor, self._off = int(seen, 16), None

    def enter(self, virtual: int) -> None:
        host = self.host_counter()
        seen = self.seen()
        off = host - max(virtual, seen)
        if off != self._off:
            self.raw.cp_write(CNTVOFF, off)
            self._off = off

    def exit(self) -> None:
        self._last_exit_host = self.host_counter()
