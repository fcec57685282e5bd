"""What the vCPU does when Unicorn stops for something other than an instruction budget
(a mixin of emu.cpu.VCPU): stage-2 aborts become exits for the hypervisor; the guest's own
exceptions (SVC, undefined instructions, BKPT, SMC, alignment faults) enter its vectors as the
hardware would, without the hypervisor; hints complete; trapped CP15 writes are emulated.

Only failures of the machine itself (an instruction it cannot decode where it must) raise
GuestCrash; everything the guest does is the guest's business.
"""
from __future__ import annotations

import struct

from hyp.arch import fsr
from hyp.arch.exception import GuestException, lr_offset
from hyp.arch.fault import Access, Fault
from hyp.arch.syndrome import Syndrome, hsr_hvc
from hyp.exits import Hypercall, Stage2Abort

from .cp15 import SCTLR_M, tvm_trapped
from .decode import DecodeError, decode_access, fault_address
from .undef import decode_coproc, hint_before

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
    def _invalid(self, pc: int, thumb: bool, begin: int, counted: int, counting: bool):
        hint = hint_before(self.read_code, pc, thumb)
        if hint is not None and not self._stopped_at_first_insn(pc, begin, counted, counting):
            self._account(counted, counting)            # WFE/YIELD completed: PC is after it
            self.stats[hint[0]] += 1
            return None
        self._account(counted - 1, counting)            # PC is on the instruction
        code = self.read_code(pc, 4)
        t = decode_coproc(code, thumb)
        name = tvm_trapped(t) if t is not None else None
        if name is not None:
            return self._emulate_tvm_write(name, t, pc)
        self.take_exception(GuestException.UNDEFINED,
                            pc + lr_offset(GuestException.UNDEFINED, thumb))
        return None

    def _stopped_at_first_insn(self, pc: int, begin: int, counted: int, counting: bool) -> bool:
        """Did the burst stop on its very first instruction? Then that instruction is the
        culprit, whatever precedes it (a hint before `begin` completed in an earlier burst)."""
        if pc != begin:
            return False
        if counting:
            return counted <= 1
        return self._native.blocks - self._blocks_at_start <= 1

    def _emulate_tvm_write(self, name: str, t, pc: int):
        value = self.reg(t.rt) if t.rt != 15 else 0
        if t.is64:
            value |= (self.reg(t.rt2) if t.rt2 != 15 else 0) << 32
        if name == "SCTLR" and value & SCTLR_M:
            raise GuestCrash(f"the guest enabled its stage-1 MMU (SCTLR.M=1, write "
                             f"{value:#010x} at PC {pc:#x}): guest stage 1 is not modelled yet")
        self.cp15_write(name, value)
        self.stats["trap tvm"] += 1
        self.skip_instruction(4)
        return None

    # ---- UC_HOOK_INTR: exceptions Unicorn raised ------------------------------------------
    def _interrupt(self, intno: int, pc: int, thumb: bool, counted: int, counting: bool):
        if intno == EXCP_HVC:                           # PC is past it
            self._account(counted, counting)
            imm = self._hvc_imm(pc, thumb)
            return Hypercall(imm=imm, hsr=hsr_hvc(imm), pc=pc)
        if intno == EXCP_SWI:                           # PC is past it; SVC retired
            self._account(counted, counting)
            self.take_exception(GuestException.SVC, pc, retired=True)
            return None
        if intno == EXCP_SMC:
            # PC is past it. No EL3 on this board (PSCI is over HVC): SMC is UNDEFINED, as
            # QEMU's virt makes it without firmware.
            self._account(counted - 1, counting)
            insn = pc - 4
            self.take_exception(GuestException.UNDEFINED,
                                insn + lr_offset(GuestException.UNDEFINED, thumb))
            return None
        if intno == EXCP_BKPT:
            # PC on it: a debug event taken as a Prefetch Abort (B1.9.7), IFSR "debug event";
            # IFAR is UNKNOWN and QEMU writes 0.
            self._account(counted - 1, counting)
            self.cp15_write("IFSR", fsr.fsr(fsr.Status.DEBUG, lpae=self._lpae()))
            self.cp15_write("IFAR", 0)
            self.take_exception(GuestException.PREFETCH_ABORT,
                                pc + lr_offset(GuestException.PREFETCH_ABORT, thumb))
            return None
        if intno == EXCP_DATA_ABORT:
            # The TLB-fill hook never raises this: it is an alignment fault (LDREX & co. on an
            # unaligned address, or SCTLR.A), the guest's own Data Abort.
            self._account(counted - 1, counting)
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

    # ---- denied TLB fills: stage-2 aborts for the hypervisor -----------------------------
    def _abort_exit(self, fault: Fault, pc: int, thumb: bool) -> Stage2Abort:
        serial = self.stats["bursts"]
        # The bytes now (the handler may unmap the code page); the decode itself waits.
        code = b"" if fault.access == Access.FETCH else self.read_code(pc, 4)

        def resolve() -> tuple[Fault, Syndrome, object]:
            if self.stats["bursts"] != serial:
                raise RuntimeError("a stage-2 abort's syndrome was decoded after the vCPU "
                                   "ran again: decode it while handling the exit")
            return self._decode_abort(fault, pc, thumb, code)
        return Stage2Abort(fault, pc, thumb, resolve)

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
                va = fault_address(info, page)
            except DecodeError:
                self.stats["undecoded aborts"] += 1
                va = fault.va
        fault = Fault(type=fault.type, level=fault.level, access=fault.access,
                      ipa=(fault.ipa & ~0xFFF) | (va & 0xFFF), stage=fault.stage,
                      s1ptw=fault.s1ptw, va=va, desc_pa=fault.desc_pa)
        return fault, Syndrome.for_fault(fault, info), info
