"""A vCPU on Unicorn: every guest access is translated by hyp.arch.mmu through the TLB-fill hook.

Python runs only on TLB misses, exits and exceptions: guest code runs at Unicorn speed. Unicorn's
own TLB only ever caches what the MMU model granted, and is flushed whenever the model's TLB is
(or when another VMID is loaded), so a stale entry in the model is a stale entry for the guest.
"""
from __future__ import annotations

import struct

import numpy as np
from typing import Callable

from unicorn import (UC_ARCH_ARM, UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_ERR_EXCEPTION,
                     UC_ERR_INSN_INVALID, UC_HOOK_CODE, UC_HOOK_INTR, UC_HOOK_TLB_FILL, UC_MODE_ARM,
                     UC_PROT_EXEC, UC_PROT_READ, UC_PROT_WRITE, UC_TLB_VIRTUAL, Uc, UcError)
from unicorn import arm_const as A

from hyp.arch.descriptors import Prot
from hyp.arch.exception import CPSR_T, GuestException, enter, lr_offset
from hyp.arch.fault import Access, Fault
from hyp.arch.mmu import MMU
from hyp.arch.syndrome import Syndrome, hsr_hvc
from hyp.arch.walk import Translation, lookup
from hyp.exits import (BudgetExhausted, DebugStop, Exit, Hypercall, Stage2Abort,
                       WaitForInterrupt)
from hyp.physmem import PhysMem

from .decode import DecodeError, decode_access, fault_address
from .icount import Counter

# Unicorn TLB-fill access codes (DESIGN 5).
_UC_ACCESS = {16: Access.READ, 17: Access.WRITE, 18: Access.FETCH}
EXIT_SENTINEL = 0xFFFFFFF0          # never executed: keeps Unicorn's own fills off guest pages
_SENTINEL_PAGE = EXIT_SENTINEL & ~0xFFF
_SENTINEL_PA = 0xFF_FFFF_F000       # a private host page outside guest-visible memory

# CP15 registers as UC_ARM_REG_CP_REG tuples (cp, is64, sec, crn, crm, opc1, opc2), NS bank.
CP15 = {
    "SCTLR": (15, 0, 0, 1, 0, 0, 0),
    "VBAR": (15, 0, 0, 12, 0, 0, 0),
    "DFSR": (15, 0, 0, 5, 0, 0, 0),
    "IFSR": (15, 0, 0, 5, 0, 0, 1),
    "DFAR": (15, 0, 0, 6, 0, 0, 0),
    "IFAR": (15, 0, 0, 6, 0, 0, 2),
    "TTBCR": (15, 0, 0, 2, 0, 0, 2),
}
_SCR = (15, 0, 1, 1, 1, 0, 0)
SCTLR_M = 1 << 0
SCR_HCE = 1 << 8

_REGS = [A.UC_ARM_REG_R0 + i for i in range(13)] + [A.UC_ARM_REG_SP, A.UC_ARM_REG_LR,
                                                     A.UC_ARM_REG_PC]
_FETCH_PERMS = UC_PROT_EXEC | UC_PROT_READ
_DATA_PERMS = {p: (UC_PROT_READ if p & Prot.R else 0) | (UC_PROT_WRITE if p & Prot.W else 0)
               for p in (Prot(v) for v in range(8))}
_UC_TLB_MAX = 1 << 20            # QEMU's dynamic TLB: 256 entries, doubling up to 2^20
_GROW_CHUNK = 65_536             # instructions per burst while the TLB needs to grow
_MAX_CHUNK = 1 << 26
_WFE_ARM = 0x0320F002          # condition field ignored
_WFE_THUMB = (0xBF20, 0xF3AF8002)


class GuestCrash(Exception):
    """The guest did something the machine cannot continue from (reported, not a traceback)."""


class VCPU:
    """One ARMv7 CPU. `run(budget)` executes guest code until an exit for the hypervisor."""

    def __init__(self, mem: PhysMem, mmu: MMU, *, icount: bool = True) -> None:
        self.mem, self.mmu = mem, mmu
        uc = Uc(UC_ARCH_ARM, UC_MODE_ARM)
        uc.ctl_set_page_size(4096)
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        uc.mem_map_ptr(mem.base, mem.size, UC_PROT_READ | UC_PROT_WRITE | UC_PROT_EXEC,
                       mem.buf.ctypes.data)
        # Unicorn fetch-fills the exit page after every run: give it a page of its own.
        self._sentinel = np.zeros(0x1000, dtype=np.uint8)
        uc.mem_map_ptr(_SENTINEL_PA, 0x1000, UC_PROT_READ | UC_PROT_EXEC,
                       self._sentinel.ctypes.data)
        uc.reg_write(A.UC_ARM_REG_CP_REG, _SCR + (uc.reg_read(A.UC_ARM_REG_CP_REG, _SCR) | SCR_HCE,))
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([EXIT_SENTINEL])
        uc.hook_add(UC_HOOK_TLB_FILL, self._fill)
        uc.hook_add(UC_HOOK_INTR, self._intr)
        self.uc = uc
        self.icount = icount
        self._counter = Counter(uc) if icount else None
        self.instructions = 0
        self._fault: Fault | None = None
        self._intno: int | None = None
        self._loaded_vmid: int | None = None
        self.stats = {"fills": 0, "denied": 0, "svc": 0, "und": 0, "unicorn_flushes": 0,
                      "tlb_growth_flushes": 0}
        self._fills_since_flush = 0
        self._uc_tlb_size = 256
        self.wall_timeout: float | None = None    # seconds per run, only without icount
        self.exception_observers: list[Callable[[GuestException, int, int], None]] = []
        self._breakpoints: dict[int, int] = {}
        self._skip_bp_at: int | None = None
        mmu.tlb.listeners.append(self._tlb_flushed)

    # ---- the fast path's only Python: TLB misses ----------------------------------------
    def _fill(self, uc, vaddr, access_code, entry, _ud) -> bool:
        if vaddr & ~0xFFF == _SENTINEL_PAGE:
            entry.paddr = _SENTINEL_PA        # Unicorn's own post-run fetch, not the guest's
            entry.perms = UC_PROT_READ | UC_PROT_EXEC
            return True
        access = _UC_ACCESS[access_code]
        result = self.mmu.fill(vaddr, access)
        self.stats["fills"] += 1
        if isinstance(result, Fault):
            self._fault = result
            self.stats["denied"] += 1
            return False
        entry.paddr = result.pa_page
        # Never grant X on data fills: stores to X pages take Unicorn's slow path.
        entry.perms = _FETCH_PERMS if access == Access.FETCH else _DATA_PERMS[result.prot]
        self._fills_since_flush += 1
        return True

    def _intr(self, uc, intno, _ud) -> None:
        self._intno = intno
        uc.emu_stop()

    def _tlb_flushed(self, op: str, vmid: int | None) -> None:
        self.flush_unicorn_tlb()

    def flush_unicorn_tlb(self) -> None:
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        self.stats["unicorn_flushes"] += 1
        if self._fills_since_flush > 0.7 * self._uc_tlb_size:
            self._uc_tlb_size = min(_UC_TLB_MAX, self._uc_tlb_size * 2)
        self._fills_since_flush = 0

    def _maybe_grow_unicorn_tlb(self) -> None:
        """Unicorn's TLB starts at 256 entries and only grows when flushed while mostly used
        (QEMU's tlb_mmu_resize_locked). Our flushes are rare, so a guest sweeping more pages
        would miss on every page forever: flush at an exit when the fills since the last flush
        exceed 70% of its size. Purely a cache refill: no effect on what the guest sees."""
        if self._fills_since_flush > 0.7 * self._uc_tlb_size and self._uc_tlb_size < _UC_TLB_MAX:
            self.stats["tlb_growth_flushes"] += 1
            self.flush_unicorn_tlb()

    def load_stage2(self, hcr: int, vtcr: int, vttbr: int) -> None:
        """Enter a VM: program HCR/VTCR/VTTBR. Unicorn's TLB is not VMID-tagged, so switching
        VMID drops it (the model's TLB keeps every VMID's entries)."""
        self.mmu.set_stage2(hcr, vtcr, vttbr)
        if self._loaded_vmid != self.mmu.vmid:
            self._loaded_vmid = self.mmu.vmid
            self.flush_unicorn_tlb()

    # ---- registers (the RegisterFile protocol of hyp.arch.exception) --------------------
    def reg(self, n: int) -> int:
        return self.uc.reg_read(_REGS[n])

    def set_reg(self, n: int, value: int) -> None:
        if n == 15:
            self.set_pc(value, self.thumb)
        else:
            self.uc.reg_write(_REGS[n], value & 0xFFFFFFFF)

    # PC and the T bit are cached between runs (each reg_read costs ~1.5 us on the fault
    # path); every write through this class drops the cache, a run refreshes it.
    _pc_t: tuple[int, bool] | None = None

    def _pc_thumb(self) -> tuple[int, bool]:
        if self._running or self._pc_t is None:
            pc_t = (self.uc.reg_read(A.UC_ARM_REG_PC), bool(self.get_cpsr() & CPSR_T))
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
        return self.uc.reg_read(A.UC_ARM_REG_CPSR)

    def set_cpsr(self, value: int) -> None:
        self._pc_t = None
        self.uc.reg_write(A.UC_ARM_REG_CPSR, value)

    def set_spsr(self, value: int) -> None:
        self.uc.reg_write(A.UC_ARM_REG_SPSR, value)

    def set_lr(self, value: int) -> None:
        self.uc.reg_write(A.UC_ARM_REG_LR, value & 0xFFFFFFFF)

    def set_pc(self, value: int, thumb: bool) -> None:
        self._pc_t = None
        self.uc.reg_write(A.UC_ARM_REG_PC, (value & ~1) | (1 if thumb else 0))

    def cp15_read(self, name: str) -> int:
        return self.uc.reg_read(A.UC_ARM_REG_CP_REG, CP15[name])

    def cp15_write(self, name: str, value: int) -> None:
        self.uc.reg_write(A.UC_ARM_REG_CP_REG, CP15[name] + (value,))

    def regs(self) -> list[int]:
        """r0-r15 and CPSR."""
        return [self.reg(i) for i in range(16)] + [self.get_cpsr()]

    def read_code(self, va: int, length: int = 4) -> bytes:
        """Side-effect-free read of guest memory by VA for decoding (debug path)."""
        out = b""
        while len(out) < length:
            a = va + len(out)
            pa = self.debug_translate(a)
            if pa is None:
                break
            n = min(length - len(out), 0x1000 - (a & 0xFFF))
            out += self.mem.read(pa, n)
        return out

    def debug_translate(self, va: int) -> int | None:
        """VA -> PA without side effects (gdb, decoder): the TLB entry if one is cached (what
        the CPU would use), else a walk that fills nothing. None if unmapped."""
        if not self.mmu.stage2_enabled:
            return va if self.mem.contains(va) else None
        e = self.mmu.tlb.lookup(self.mmu.vmid, va & ~0xFFF)
        if e is not None:
            return e.pa_page | (va & 0xFFF)
        t = lookup(self.mem, self.mmu.cfg, va)
        return t.pa if isinstance(t, Translation) else None

    # ---- guest exceptions the hardware delivers without the hypervisor -----------------
    def take_exception(self, exc: GuestException, lr: int) -> int:
        vector = enter(self, exc, lr)
        for fn in self.exception_observers:
            fn(exc, lr, vector)
        return vector

    # ---- running ------------------------------------------------------------------------
    def run(self, budget: int) -> Exit:
        """Run guest code for at most `budget` instructions; return the first exit."""
        while True:
            # Unicorn's TLB only grows when flushed: a guest whose working set does not fit
            # would miss on every access for a whole long burst. Bursts start short and double
            # while the TLB copes; a thrashing chunk triggers a growth flush (a cache refill
            # only: nothing the guest can see).
            chunk = min(budget, self._chunk) if self.icount else budget
            fills = self.stats["fills"]
            exit_ = self._burst(chunk)
            if self._uc_tlb_size < _UC_TLB_MAX and \
                    self.stats["fills"] - fills > 0.35 * self._uc_tlb_size:
                self._maybe_grow_unicorn_tlb()
                self._chunk = _GROW_CHUNK
            else:
                self._chunk = min(self._chunk * 2, _MAX_CHUNK)
            if isinstance(exit_, BudgetExhausted) and chunk < budget:
                budget -= chunk
                continue
            if exit_ is not None:
                self._maybe_grow_unicorn_tlb()
                # Checked at exits other than stage-2 aborts (the fault path stays short), and
                # at least every 64th exit: enabling the MMU cannot go unnoticed for long.
                if (not isinstance(exit_, Stage2Abort) or not self._exits & 63) and \
                        self.cp15_read("SCTLR") & SCTLR_M:
                    raise GuestCrash(f"the guest enabled its stage-1 MMU (SCTLR.M=1, PC "
                                     f"{self.pc:#x}): guest stage 1 is not modelled yet")
                return exit_
            budget -= self._last_executed
            if budget <= 0:          # e.g. an SVC was the budget's last instruction
                return BudgetExhausted(pc=self.pc)

    _chunk = 65_536

    _exits = 0

    def _burst(self, budget: int) -> Exit | None:
        self._exits += 1
        self._fault = None
        self._intno = None
        begin = self.pc | (1 if self.thumb else 0)
        err = None
        self._running = True
        self._pc_t = None
        try:
            if self.icount:
                self.uc.emu_start(begin, EXIT_SENTINEL, count=budget)
            else:   # no budget without counting: only a wall-clock guard stops a runaway guest
                timeout_us = int(self.wall_timeout * 1e6) if self.wall_timeout else 0
                self.uc.emu_start(begin, EXIT_SENTINEL, timeout=timeout_us)
        except UcError as e:
            err = e
        finally:
            self._running = False
        hook_exc = getattr(self.uc, "_hook_exception", None)
        if hook_exc is not None:
            self.uc._hook_exception = None
            raise hook_exc
        counted = self._counter.value if self._counter else 0
        pc, thumb = self.pc, self.thumb
        if err is not None and err.errno == UC_ERR_EXCEPTION and self._fault is not None:
            fault = self._fault
            executed = counted if fault.access == Access.FETCH else counted - 1
            self._account(executed)
            return self._abort_exit(fault, pc, thumb)
        if err is not None and err.errno == UC_ERR_INSN_INVALID:
            self._account(counted - 1)
            wfe_len = self._wfe_length(pc, thumb)
            if wfe_len:
                self.set_pc(pc + wfe_len, thumb)   # WFE with no event source: a NOP
                self._account(1)
                return None
            self.stats["und"] += 1
            self.take_exception(GuestException.UNDEFINED, pc + lr_offset(GuestException.UNDEFINED, thumb))
            return None
        if err is not None:
            raise GuestCrash(f"unicorn stopped at PC {pc:#x}: {err}")
        if self._intno is not None:
            intno = self._intno
            if intno == 11:                      # HVC: PC is past it
                self._account(counted)
                imm = self._hvc_imm(pc, thumb)
                return Hypercall(imm=imm, hsr=hsr_hvc(imm), pc=pc)
            if intno == 2:                       # SVC: PC is past it
                self._account(counted)
                self.stats["svc"] += 1
                self.take_exception(GuestException.SVC, pc)
                return None
            if intno in (7, 13):                 # BKPT / SMC: undefined to this guest
                self._account(counted - 1 if intno == 7 else counted)
                ret = pc + (2 if thumb else 4) if intno == 7 else pc
                self.take_exception(GuestException.UNDEFINED if intno == 13 else
                                    GuestException.PREFETCH_ABORT, ret)
                return None
            raise GuestCrash(f"unexpected CPU exception {intno} at PC {pc:#x}")
        if self.icount and counted > budget:
            # Unicorn counts an instruction before running it and stops there: `budget` ran.
            # (Thumb IT blocks cannot be split: Unicorn may then run and count a few more;
            # see README "Known limitations".)
            self._account(budget)
            return BudgetExhausted(pc=pc)
        if self.debug_stop is not None:
            # A debug hook stopped before the instruction at PC ran (it was counted).
            self._account(counted - 1)
            reason, self.debug_stop = self.debug_stop, None
            return DebugStop(pc=pc, reason=reason)
        self._account(counted)
        if not self.icount and self.wall_timeout and not self._is_after_wfi(pc, thumb):
            return BudgetExhausted(pc=pc)       # Unicorn's wall-clock timeout expired
        return WaitForInterrupt(pc=pc)

    _last_executed = 0
    _running = False
    debug_stop: str | None = None     # set by a debug hook that called emu_stop()

    def _is_after_wfi(self, pc: int, thumb: bool) -> bool:
        if thumb:
            code = self.read_code(pc - 2, 2)
            return code == b"\x30\xbf"
        code = self.read_code(pc - 4, 4)
        return len(code) == 4 and struct.unpack("<I", code)[0] & 0x0FFFFFFF == 0x0320F003

    def insn_index(self) -> int:
        """Instructions completed so far, exact even from inside a hook during a run."""
        if self._running and self._counter is not None:
            return self.instructions + max(0, self._counter.value - 1)
        return self.instructions

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
        return 4 if first >> 11 in (0b11101, 0b11110, 0b11111) else 2

    def _wfe_length(self, pc: int, thumb: bool) -> int:
        code = self.read_code(pc, 4)
        if thumb:
            if len(code) >= 2 and struct.unpack_from("<H", code)[0] == _WFE_THUMB[0]:
                return 2
            if len(code) == 4:
                hw1, hw2 = struct.unpack("<HH", code)
                if (hw1 << 16 | hw2) == _WFE_THUMB[1]:
                    return 4
            return 0
        return 4 if len(code) == 4 and struct.unpack("<I", code)[0] & 0x0FFFFFFF == _WFE_ARM else 0

    def _account(self, n: int) -> None:
        self._last_executed = max(0, n)
        if n > 0:
            self._skip_bp_at = None              # the resumed instruction has run
        self.instructions += self._last_executed

    def _hvc_imm(self, pc_after: int, thumb: bool) -> int:
        if thumb:
            hw = self.read_code(pc_after - 4, 4)
            first, second = struct.unpack("<HH", hw)
            return ((first & 0xF) << 12) | (second & 0xFFF)
        word = struct.unpack("<I", self.read_code(pc_after - 4, 4))[0]
        return ((word >> 4) & 0xFFF0) | (word & 0xF)

    def _abort_exit(self, fault: Fault, pc: int, thumb: bool) -> Stage2Abort:
        serial = self._exits
        # The bytes now (the handler may unmap the code page); the decode itself waits.
        code = b"" if fault.access == Access.FETCH else self.read_code(pc, 4)

        def resolve() -> tuple[Fault, Syndrome, object]:
            if self._exits != serial:
                raise RuntimeError("a stage-2 abort's syndrome was decoded after the vCPU "
                                   "ran again: decode it while handling the exit")
            return self._decode_abort(fault, pc, thumb, code)
        return Stage2Abort(fault, pc, thumb, resolve)

    def _decode_abort(self, fault: Fault, pc: int, thumb: bool,
                      code: bytes) -> tuple[Fault, Syndrome, object]:
        """The exact faulting VA and the ISS, from the instruction at PC (capstone)."""
        page = fault.va & ~0xFFF
        info = None
        if fault.access == Access.FETCH:
            va = pc if (pc & ~0xFFF) == page else page
        else:
            try:
                info = decode_access(code, pc, thumb, self.reg, page, cpsr=self.get_cpsr())
            except DecodeError as e:
                raise GuestCrash(f"data abort at PC {pc:#x} by an instruction we cannot "
                                 f"decode: {e}") from None
            va = fault_address(info, page)
        fault = Fault(type=fault.type, level=fault.level, access=fault.access,
                      ipa=(fault.ipa & ~0xFFF) | (va & 0xFFF), stage=fault.stage,
                      s1ptw=fault.s1ptw, va=va, desc_pa=fault.desc_pa)
        return fault, Syndrome.for_fault(fault, info), info
