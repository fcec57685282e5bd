"""What the vCPU does when Unicorn stops for something other than an instruction budget
(a mixin of emu.cpu.VCPU): stage-2 aborts become exits for the hypervisor; the guest's own
exceptions (SVC, undefined instructions, BKPT, SMC, alignment faults) enter its vectors as the
hardware would, without the hypervisor; hints complete; trapped CP15 writes are emulated.

Only failures of the machine itself (an instruction it cannot decode where it must) raise
GuestCrash; everything the guest does is the guest's business.
"""
from __future__ import annotations

import struct

from unicorn import arm_const as A

from hyp.arch import fsr
from hyp.arch.exception import GuestException, lr_offset
from hyp.arch.fault import Access, Fault
from hyp.arch.s1 import S1Fault
from hyp.arch.syndrome import Syndrome, hsr_hvc
from hyp.exits import Hypercall, Stage2Abort, WaitForEvent

from . import traps
from .decode import DecodeError, decode_access, fault_address
from .undef import decode_coproc, hint_before

# Unicorn writes the exception syndrome (ESR) for every stop but a WFE/YIELD one: a value it
# never writes (EC 0x3F is reserved), set before each burst by emu.cpu, tells the two kinds of
# "invalid instruction" stop apart exactly.
ESR_UNTOUCHED = 0xFFFFFFFF
ESR_UNCATEGORIZED = 0x02000000        # syn_uncategorized(): EC 0, IL 1 (an UNDEF)

# UC_HOOK_INTR numbers of Unicorn's ARM target (QEMU's EXCP_*).
EXCP_UDEF, EXCP_SWI, EXCP_PREFETCH_ABORT, EXCP_DATA_ABORT = 1, 2, 3, 4
EXCP_BKPT, EXCP_HVC, EXCP_SMC = 7, 11, 13
TTBCR_EAE = 1 << 31


class GuestCrash(Exception):
    """The machine cannot continue this guest (reported, not a traceback)."""


class CpuEvents:
    """Mixin for emu.cpu.VCPU: handling of Unicorn's stops."""

    def _lpae(self) -> bool:
        return bool(self.cp15_read("TTBCR") & TTBCR_EAE)

    # ---- UC_ERR_INSN_INVALID: hint, Hyp trap or undefined instruction (emu.undef) ---------
    trap_wfe = False             # HCR.TWE: a WFE is an exit (hyp.exits.WaitForEvent)

    def _hint_ended(self, pc: int, thumb: bool) -> str | None:
        """WFE or YIELD completed and PC is after it ("wfe", "yield"), or None: an UNDEF or a
        trap, PC on the instruction. An UNDEF writes ESR = syn_uncategorized (0x02000000) and
        a trap its own EC; a hint writes nothing, but a TLB fill earlier in the burst may have
        left the data-abort ISS template of a load/store there (QEMU's restore_state_to_opc:
        EC 0, ISV set, or 0), so that case is decided by the instruction before PC."""
        esr = self.raw.read(A.UC_ARM_REG_ESR)
        if esr == ESR_UNTOUCHED:
            hint = hint_before(self.read_code, pc, thumb)
            return hint[0] if hint else "hint"
        if esr >> 26 == 0 and esr != ESR_UNCATEGORIZED:
            hint = hint_before(self.read_code, pc, thumb)
            return hint[0] if hint else None
        return None

    def _invalid(self, pc: int, thumb: bool):
        hint = self._hint_ended(pc, thumb)
        if hint is not None:
            self._settle(on_insn=False)
            self.stats[hint] += 1
            return WaitForEvent(pc=pc) if hint == "wfe" and self.trap_wfe else None
        self._settle(on_insn=True)
        t = decode_coproc(self.read_code(pc, 4), thumb)
        if t is not None:
            try:
                return traps.emulate(self, t, pc, thumb)   # a Hyp trap we set (emu.traps)
            except traps.Untrapped:
                pass
        self.take_exception(GuestException.UNDEFINED,
                            pc + lr_offset(GuestException.UNDEFINED, thumb))
        return None

    # ---- UC_HOOK_INTR: exceptions Unicorn raised ------------------------------------------
    def _interrupt(self, intno: int, pc: int, thumb: bool):
        if intno == EXCP_HVC:                           # PC is past it
            self._settle(on_insn=False)
            imm = self._hvc_imm(pc, thumb)
            return Hypercall(imm=imm, hsr=hsr_hvc(imm), pc=pc)
        if intno == EXCP_SWI:                           # PC is past it; SVC retired
            self._settle(on_insn=False)
            self.take_exception(GuestException.SVC, pc, retired=True)
            return None
        if intno == EXCP_SMC:
            # PC is past it. No EL3 on this board (PSCI is over HVC): SMC is UNDEFINED, as
            # QEMU's virt makes it without firmware.
            self._settle(on_insn=True, pc_after=True)
            insn = pc - 4
            self.take_exception(GuestException.UNDEFINED,
                                insn + lr_offset(GuestException.UNDEFINED, thumb))
            return None
        if intno == EXCP_BKPT:
            # PC on it: a debug event taken as a Prefetch Abort (B1.9.7), IFSR "debug event";
            # IFAR is UNKNOWN and QEMU writes 0.
            self._settle(on_insn=True)
            self.cp15_write("IFSR", fsr.fsr(fsr.Status.DEBUG, lpae=self._lpae()))
            self.cp15_write("IFAR", 0)
            self.take_exception(GuestException.PREFETCH_ABORT,
                                pc + lr_offset(GuestException.PREFETCH_ABORT, thumb))
            return None
        if intno == EXCP_DATA_ABORT:
            # The TLB-fill hook never raises this: it is an alignment fault (LDREX & co. on an
            # unaligned address, or SCTLR.A), the guest's own Data Abort.
            self._settle(on_insn=True)
            self._alignment_fault(pc, thumb)
            return None
        raise GuestCrash(f"unexpected CPU exception {intno} at PC {pc:#x}")

    def _alignment_fault(self, pc: int, thumb: bool) -> None:
        code = self.read_code(pc, 4)
        try:
            info = decode_access(code, pc, thumb, self.reg, cpsr=self.get_cpsr())
        except DecodeError as e:
            raise GuestCrash(f"alignment fault at PC {pc:#x} by an instruction we cannot "
                             f"decode: {e}") from None
        self.cp15_write("DFSR", fsr.fsr(fsr.Status.ALIGNMENT, lpae=self._lpae(),
                                        write=info.write))
        self.cp15_write("DFAR", info.addr)
        self.take_exception(GuestException.DATA_ABORT,
                            pc + lr_offset(GuestException.DATA_ABORT, thumb))

    def _hvc_imm(self, pc_after: int, thumb: bool) -> int:
        if thumb:
            first, second = struct.unpack("<HH", self.read_code(pc_after - 4, 4))
            return ((first & 0xF) << 12) | (second & 0xFFF)
        word = struct.unpack("<I", self.read_code(pc_after - 4, 4))[0]
        return ((word >> 4) & 0xFFF0) | (word & 0xF)

    # ---- denied TLB fills: the guest's own stage-1 aborts ---------------------------------
    def _stage1_abort(self, fault: S1Fault, pc: int, thumb: bool) -> None:
        """The MMU refused the access at stage 1: the guest's Data or Prefetch Abort, with
        DFSR/DFAR or IFSR/IFAR in the format its TTBCR.EAE selects (B3.13), no hypervisor
        involved."""
        va = self._fault_address.value if (self._fault_address.value & ~0xFFF) == \
            (fault.va & ~0xFFF) else fault.va
        if fault.fetch:
            self.cp15_write("IFSR", fault.fsr())
            self.cp15_write("IFAR", va & 0xFFFFFFFF)
            self.stats["s1 prefetch abort"] += 1
            self.take_exception(GuestException.PREFETCH_ABORT,
                                pc + lr_offset(GuestException.PREFETCH_ABORT, thumb))
        else:
            self.cp15_write("DFSR", fault.fsr())
            self.cp15_write("DFAR", va & 0xFFFFFFFF)
            self.stats["s1 data abort"] += 1
            self.take_exception(GuestException.DATA_ABORT,
                                pc + lr_offset(GuestException.DATA_ABORT, thumb))

    # ---- denied TLB fills: stage-2 aborts for the hypervisor -----------------------------
    def _abort_exit(self, fault: Fault, pc: int, thumb: bool) -> Stage2Abort:
        serial = self.stats["bursts"]
        exact = self._fault_address.value
        if (exact & ~0xFFF) != (fault.va & ~0xFFF):
            exact = None
        code = None
        if fault.access == Access.READ:
            # A load: its bytes now, for an LDRD that must be made restartable.
            code = self.read_code(pc, 4)
            self._restore_ldrd_base(code, thumb, fault.va if exact is None else exact)

        def resolve() -> tuple[Fault, Syndrome, object]:
            """Built lazily: the dirty-fault path never needs it. The bytes are read here
            unless pinned at the exit (Stage2Abort.pin: observers may decode after the
            hypervisor unmapped the code page); the hypervisor itself decodes before it
            changes anything (MMIO)."""
            if self.stats["bursts"] != serial:
                raise RuntimeError("a stage-2 abort's syndrome was decoded after the vCPU "
                                   "ran again: decode it while handling the exit")
            f = fault
            if exact is not None:
                f = Fault(type=f.type, level=f.level, access=f.access, ipa=f.ipa,
                          stage=f.stage, s1ptw=f.s1ptw, va=exact, desc_pa=f.desc_pa)
            pin()
            return self._decode_abort(f, pc, thumb, code)

        def pin() -> None:
            nonlocal code
            if code is None:
                code = b"" if fault.access == Access.FETCH else self.read_code(pc, 4)
        return Stage2Abort(fault, pc, thumb, resolve, pin)

    def _restore_ldrd_base(self, code: bytes, thumb: bool, fault_va: int) -> None:
        """Make an LDRD Rt, Rt2, [Rn, #+/-imm] (or [Rn, +/-Rm]) with Rt == Rn restartable.

        Unicorn (QEMU 5's op_ldrd) writes the first word into Rt before loading the second:
        when the second word's page faults, Rn already holds the loaded word and the restarted
        LDRD would read from there. The hardware restarts it with Rn intact, so put Rn back:
        the access crossed into the faulting page at its first byte (`fault_va`, exact), its
        first word was 4 bytes before, Rn = that - offset. Rn is left alone unless it holds
        that first word and Rn + offset is not the faulting address (a fault on the first
        word leaves Rn intact)."""
        page = fault_va & ~0xFFF
        if fault_va != page:
            return
        if thumb:
            if len(code) < 4:
                return
            hw1, hw2 = struct.unpack("<HH", code[:4])
            # T1 LDRD (immediate), offset form: 1110 1001 U101 Rn | Rt Rt2 imm8
            if hw1 & 0xFF50 != 0xE950 or hw1 & 0x20:
                return
            rn, rt = hw1 & 15, hw2 >> 12
            offset = (hw2 & 0xFF) * 4 * (1 if hw1 & 0x80 else -1)
        else:
            w = struct.unpack("<I", code[:4])[0]
            if w >> 28 == 0xF or w & 0x0F2000F0 != 0x010000D0 or w & (1 << 20):
                return                      # not LDRD, offset addressing (P=1, W=0)
            rn, rt = w >> 16 & 15, w >> 12 & 15
            if w & (1 << 22):               # immediate: imm4H:imm4L
                magnitude = (w >> 4 & 0xF0) | (w & 0xF)
            else:                           # register: Rm
                magnitude = self.reg(w & 15)
            offset = magnitude if w & (1 << 23) else -magnitude
        if rn != rt or rn == 15:
            return
        first = (page - 4) & 0xFFFFFFFF
        loaded = self.read_code(first, 4)
        current = self.reg(rn)
        if len(loaded) != 4 or struct.unpack("<I", loaded)[0] != current:
            return
        if (current + offset) & 0xFFFFFFFF == fault_va:
            return                          # Rn + offset faulted: a first-word fault
        self.set_reg(rn, (first - offset) & 0xFFFFFFFF)
        self.stats["ldrd base restored"] += 1

    def _decode_abort(self, fault: Fault, pc: int, thumb: bool,
                      code: bytes) -> tuple[Fault, Syndrome, object]:
        """The exact faulting VA and the ISS, from the instruction at PC (capstone). An
        instruction the decoder does not model gets ISV=0 and the page as HDFAR."""
        page = fault.va & ~0xFFF
        info = None
        if fault.access == Access.FETCH:
            va = pc if (pc & ~0xFFF) == page else page
        else:
            try:
                info = decode_access(code, pc, thumb, self.reg, page, cpsr=self.get_cpsr())
                if info.write != fault.write:
                    # e.g. an STM that overwrote its own encoding before its second page
                    # faulted: the bytes at PC are not what ran
                    raise DecodeError(f"{info.mnemonic} is not the access that faulted")
                va = fault_address(info, page)
            except DecodeError:
                self.stats["undecoded aborts"] += 1
                info, va = None, fault.va
        ipa = fault.ipa if fault.s1ptw else (fault.ipa & ~0xFFF) | (va & 0xFFF)
        fault = Fault(type=fault.type, level=fault.level, access=fault.access, ipa=ipa,
                      stage=fault.stage, s1ptw=fault.s1ptw, va=va, desc_pa=fault.desc_pa)
        return fault, Syndrome.for_fault(fault, info), info
