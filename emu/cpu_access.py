"""What the rest of the machine uses to look at and steer a vCPU (emu.cpu.VCPU): its registers
(the RegisterFile protocol of hyp.arch.exception), CP15, completing an instruction on the
guest's behalf, side-effect-free code reads, and breakpoints as PC checks."""
from __future__ import annotations

from typing import Callable

from unicorn import UC_HOOK_CODE
from unicorn import arm_const as A

from hyp.arch.exception import CPSR_T
from hyp.arch.psr import it_advance, thumb32

from .cp15 import CP15

_REGS = [A.UC_ARM_REG_R0 + i for i in range(13)] + [A.UC_ARM_REG_SP, A.UC_ARM_REG_LR,
                                                     A.UC_ARM_REG_PC]
_PC, _CPSR = A.UC_ARM_REG_PC, A.UC_ARM_REG_CPSR


class CpuAccess:
    """Mixin of emu.cpu.VCPU (needs uc, raw (emu.raw_regs.RawRegs), mem, mmu, _running,
    _pc_t, _breakpoints, _skip_bp_at, debug_stop, instructions, _retired)."""

    # ---- registers (the RegisterFile protocol of hyp.arch.exception) --------------------
    # Through emu.raw_regs (the library call, no binding layers): exits read a few of these.
    def reg(self, n: int) -> int:
        return self.raw.read(_REGS[n])

    def set_reg(self, n: int, value: int) -> None:
        if n == 15:
            self.set_pc(value, self.thumb)
        else:
            self.raw.write(_REGS[n], value)

    # PC and the T bit are cached between runs; every write through this class drops the
    # cache, a run refreshes it.
    def _pc_thumb(self) -> tuple[int, bool]:
        if self._running or self._pc_t is None:
            raw = self.raw
            pc_t = (raw.read(_PC), bool(raw.read(_CPSR) & CPSR_T))
            if self._running:
                return pc_t
            self._pc_t = pc_t
        return self._pc_t

    @property
    def pc(self) -> int:
        return self._pc_thumb()[0]

    @property
    def thumb(self) -> bool:
        return self._pc_thumb()[1]

    def get_cpsr(self) -> int:
        return self.raw.read(_CPSR)

    def set_cpsr(self, value: int) -> None:
        self._pc_t = None
        self.raw.write(_CPSR, value)

    def set_spsr(self, value: int) -> None:
        self.raw.write(A.UC_ARM_REG_SPSR, value)

    def set_lr(self, value: int) -> None:
        self.raw.write(A.UC_ARM_REG_LR, value)

    def set_pc(self, value: int, thumb: bool) -> None:
        self._pc_t = None
        self.raw.write(_PC, (value & ~1) | (1 if thumb else 0))

    def cp15_read(self, name: str) -> int:
        return self.raw.cp_read(CP15[name])

    def cp15_write(self, name: str, value: int) -> None:
        self.raw.cp_write(CP15[name], value)

    def regs(self) -> list[int]:
        """r0-r15 and CPSR."""
        return [self.reg(i) for i in range(16)] + [self.get_cpsr()]

    def skip_instruction(self, length: int) -> None:
        """The hypervisor completed the instruction at PC (emulated MMIO, a trapped register
        write): PC past it, ITSTATE advanced, and it counts as retired (kvm_skip_instr)."""
        pc, thumb = self.pc, self.thumb
        if thumb:
            cpsr = self.get_cpsr()
            advanced = it_advance(cpsr)
            if advanced != cpsr:
                self.set_cpsr(advanced)
        self.set_pc(pc + length, thumb)
        self.instructions += 1
        self._retired()

    def read_code(self, va: int, length: int = 4) -> bytes:
        """Side-effect-free read of guest memory by VA for decoding (debug path)."""
        out = b""
        while len(out) < length:
            a = (va + len(out)) & 0xFFFFFFFF
            pa = self.debug_translate(a)
            if pa is None:
                break
            n = min(length - len(out), 0x1000 - (a & 0xFFF))
            out += self.mem.read(pa, n)
        return out

    def debug_translate(self, va: int) -> int | None:
        """VA -> PA without side effects (gdb, decoder): the TLB entry if one is cached (what
        the CPU would use), else a walk of both stages that fills nothing. None if
        unmapped."""
        s1 = self.mmu.s1
        e = self.mmu.tlb.lookup(self.mmu.vmid, va & ~0xFFF, s1.asid if s1.enabled else None)
        if e is not None:
            pa = e.pa_page | (va & 0xFFF)
        else:
            pa = self.mmu.debug_walk(va)[0]
        return pa if pa is not None and self.mem.contains(pa, 1) else None

    # ---- debugging: breakpoints as PC checks (guest memory is never patched) ------------
    def add_breakpoint(self, addr: int, callback: Callable[[int], bool] | None = None) -> None:
        """Stop before executing the instruction at `addr` (a code hook bounded to that one
        address: no cost anywhere else). `callback(addr)` may return False to not stop."""
        addr &= ~1
        if addr in self._breakpoints:
            return

        def hit(uc, address, size, _ud):
            if self._skip_bp_at == address:
                self._skip_bp_at = None          # resuming from this breakpoint
                return
            if callback is None or callback(address):
                self.debug_stop = "breakpoint"
                uc.emu_stop()
        self._breakpoints[addr] = self.uc.hook_add(UC_HOOK_CODE, hit, begin=addr, end=addr)
        self.flush_translations()

    def remove_breakpoint(self, addr: int) -> None:
        addr &= ~1
        h = self._breakpoints.pop(addr, None)
        if h is not None:
            self.uc.hook_del(h)
            self.flush_translations()

    def flush_translations(self) -> None:
        """Drop Unicorn's translated code (after adding/removing hooks or patching code).
        Not ctl_remove_cache: that looks the address up through the TLB, i.e. it would make a
        TLB fill - a guest-visible side effect of debugging."""
        self.uc.ctl_flush_tb()

    @property
    def breakpoints(self) -> list[int]:
        return sorted(self._breakpoints)

    def resume_from_breakpoint(self) -> None:
        """Let the next run execute the instruction at PC even if a breakpoint is there."""
        if self.pc in self._breakpoints:
            self._skip_bp_at = self.pc

    def insn_length(self, pc: int, thumb: bool) -> int:
        """2 or 4: the length of the instruction at `pc` (T32 32-bit encodings start with
        0b11101/0b11110/0b11111)."""
        if not thumb:
            return 4
        first = int.from_bytes(self.read_code(pc, 2), "little")
        return 4 if thumb32(first) else 2
