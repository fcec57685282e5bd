"""SCTLR.A: alignment checking of single loads and stores (DDI 0406C A3.2.1, Table A3-1).

Unicorn 2.1.4 ignores SCTLR.A (measured: an unaligned LDR with A=1 just loads), while the
accesses that are checked whatever A says (LDRD/STRD, LDM/STM, LDREX/STREX and friends) do
raise its alignment exception (emu.cpu_events). With A=1 the architecture also faults
unaligned LDR/STR (word) and LDRH/STRH/LDRSH (halfword), their unprivileged forms included.
While the guest has A set, a code hook decodes each instruction before it runs and, for such
an access whose condition passes and whose address is unaligned, stops before it: the run
loop then delivers the guest's Alignment fault (DFSR status 0b00001 / LPAE 0b100001, DFAR =
the address) exactly as for the always-checked ones - nothing of the access has happened.

Cost: Python per instruction, only while SCTLR.A = 1 (the hook is removed when the guest
clears it); guests that keep A = 0, Linux among them, pay nothing.
"""
from __future__ import annotations

from unicorn import UC_HOOK_CODE
from unicorn import arm_const as A

from hyp.arch.psr import condition_passed, current_condition
from hyp.arch.s1 import SCTLR_A

from .decode import DecodeError, _identify, decode_access

_CPSR_T = 1 << 5


def _single_checked(code: bytes, thumb: bool) -> bool:
    """Is it a single halfword or word load/store, which SCTLR.A=1 alignment-checks?"""
    _size, op, _raw, mnemonic, _text = _identify(code, thumb)
    return op is not None and op.form == "ldst" and op.size in (2, 4) and \
        not mnemonic.startswith(("ldm", "stm", "push", "pop"))


class AlignmentCheck:
    """The SCTLR.A checker of one vCPU (emu.cpu.VCPU): `update(sctlr)` after every change
    of the guest's SCTLR installs or removes the hook."""

    def __init__(self, cpu) -> None:
        self.cpu = cpu
        self._handle = None
        self.pending = False         # the hook stopped before an unaligned access

    @property
    def active(self) -> bool:
        return self._handle is not None

    def update(self, sctlr: int) -> None:
        want = bool(sctlr & SCTLR_A)
        if want == self.active:
            return
        if want:
            self._handle = self.cpu.uc.hook_add(UC_HOOK_CODE, self._hook, begin=1, end=0)
        else:
            self.cpu.uc.hook_del(self._handle)
            self._handle = None
        self.cpu.flush_translations()        # translated blocks must (not) call the hook

    def _hook(self, uc, address: int, size: int, _ud) -> None:
        cpu = self.cpu
        cpsr = uc.reg_read(A.UC_ARM_REG_CPSR)
        thumb = size == 2 or bool(cpsr & _CPSR_T)
        code = cpu.read_code(address, size)
        if not _single_checked(code, thumb):
            return
        if not condition_passed(current_condition(code, thumb, cpsr), cpsr):
            return
        try:
            info = decode_access(code, address, thumb, cpu.reg, cpsr=cpsr)
        except DecodeError:
            return
        if info.addr % info.size:
            self.pending = True
            uc.emu_stop()
