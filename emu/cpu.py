"""A vCPU on Unicorn: every guest access is translated by hyp.arch.mmu through the TLB-fill hook.

Python runs only on TLB misses, exits and exceptions: guest code runs at Unicorn speed. Unicorn's
own TLB only ever caches what the MMU model granted, and is flushed whenever the model's TLB is
(or when another VMID is loaded), so a stale entry in the model is a stale entry for the guest.

Progress is counted in *steps*: an instruction that retires (run by Unicorn, or completed by the
hypervisor: an emulated MMIO access, a trapped CP15 write) or an exception entry that retires
no instruction (an undefined instruction, a BKPT, an injected abort). Budgets, single steps and
virtual time all count steps, so a guest looping on exception entries still ends.

No guest-visible address is reserved: Unicorn runs with no exit address at all and stops only
on instruction budgets, exceptions, denied fills, WFI and safe stop requests (emu.stop).
"""
from __future__ import annotations

import ctypes
from collections import Counter
import time
from typing import Callable

from unicorn import (UC_ARCH_ARM, UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_ERR_EXCEPTION,
                     UC_ERR_INSN_INVALID, UC_HOOK_INTR, UC_HOOK_TLB_FILL, UC_MODE_ARM,
                     UC_PROT_EXEC, UC_PROT_READ, UC_PROT_WRITE, UC_TLB_VIRTUAL, Uc, UcError)
from unicorn import arm_const as A
from unicorn.unicorn_py3.unicorn import uclib

from hyp.arch.descriptors import Prot
from hyp.arch.exception import CPSR_T, MODE_USR, GuestException, enter
from hyp.arch.fault import Access, Fault
from hyp.arch.mmu import MMU
from hyp.arch.s1 import PL0, PL1, S1Fault, S1Regime
from hyp.exits import BudgetExhausted, DebugStop, Exit, NoProgress, StopRequested, WaitForInterrupt
from hyp.physmem import PhysMem

from . import native, timer_traps
from .cp15 import (CP15, HCR, HCR_FMO, HCR_IMO, HCR_TRAPS, HCR_VF, HCR_VI, HSTR, HSTR_TRAPS,
                   SCR, SCR_HCE, VMPIDR)
from .decode import unprivileged
from .align import AlignmentCheck
from .cpu_access import CpuAccess
from .cpu_count import CpuCount
from .cpu_events import ESR_UNTOUCHED, CpuEvents, GuestCrash
from .icount import BlockCount, FaultAddress
from .icount import Counter as InsnCounter
from .raw_regs import TLB_FILL_CFUNC, RawRegs
from .timer_traps import VirtualCounter
from .stop import StopControl

__all__ = ["VCPU", "GuestCrash", "CP15"]

# Unicorn TLB-fill access codes (DESIGN 5).
_UC_ACCESS = {16: Access.READ, 17: Access.WRITE, 18: Access.FETCH}
_FETCH_PERMS = UC_PROT_EXEC | UC_PROT_READ
_DATA_PERMS = {p: (UC_PROT_READ if p & Prot.R else 0) | (UC_PROT_WRITE if p & Prot.W else 0)
               for p in (Prot(v) for v in range(8))}
_UC_TLB_MAX = 1 << 20            # QEMU's dynamic TLB: 256 entries, doubling up to 2^20
_TLB_GROW_AT = 0.7               # grow when the fills since a flush pass this share of it
_GROW_CHUNK = 65_536             # instructions per burst while the TLB needs to grow
_MAX_CHUNK = 1 << 22             # bursts between stop-request checks (~0.1 s of guest code)
_UNCOUNTED_CHUNK = 1 << 22       # uncounted runs without the native hook: budgeted bursts
NO_PROGRESS_LIMIT = 10_000       # exception entries in a row with no instruction retired


class VCPU(CpuAccess, CpuCount, CpuEvents):
    """One ARMv7 CPU. `run(budget)` executes guest code until an exit for the hypervisor."""

    def __init__(self, mem: PhysMem, mmu: MMU, *, icount: bool = True,
                 stop: StopControl | None = None) -> None:
        self.mem, self.mmu = mem, mmu
        uc = Uc(UC_ARCH_ARM, UC_MODE_ARM)
        uc.ctl_set_page_size(4096)
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        uc.mem_map_ptr(mem.base, mem.size, UC_PROT_READ | UC_PROT_WRITE | UC_PROT_EXEC,
                       mem.buf.ctypes.data)
        uc.reg_write(A.UC_ARM_REG_CP_REG, SCR + (uc.reg_read(A.UC_ARM_REG_CP_REG, SCR) | SCR_HCE,))
        uc.reg_write(A.UC_ARM_REG_CP_REG, HCR + (HCR_TRAPS,))
        uc.reg_write(A.UC_ARM_REG_CP_REG, HSTR + (HSTR_TRAPS,))
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])         # no exit address: none of the guest's is reserved
        self.uc = uc
        self.raw = RawRegs(uc)
        self._host = mem.buf.ctypes.data - mem.base    # host address of PA 0
        self._esr_arg = ctypes.byref(ctypes.c_uint32(ESR_UNTOUCHED))
        self.icount = icount
        # The native block hook counts instructions per block (exact budgets) and stops runs
        # safely at block starts; the native fill mirror serves refills of what the model
        # TLB holds (asked before our fill hook). Without them: Unicorn's own per-instruction
        # counter (count=), budgeted bursts for uncounted runs, every fill in Python
        # (identical results, slower).
        self._native = native.BlockHook(uc, counting=icount) if native.AVAILABLE else None
        self._mirror = native.FillMirror(uc, self._native) if self._native else None
        if self._mirror is not None:
            mmu.tlb.removal_listeners.append(self._mirror.removed)
        self._py_fills = 0
        # The fill hook through the library (no binding wrappers: it runs on every miss).
        self._fill_cb = TLB_FILL_CFUNC(self._fill)
        native.hook_add(uc, UC_HOOK_TLB_FILL,
                        ctypes.cast(self._fill_cb, ctypes.c_void_p).value, 0)
        uc.hook_add(UC_HOOK_INTR, self._intr)
        self._counter = InsnCounter(uc) if self._native is None else BlockCount(self)
        self._fault_address = FaultAddress(uc)     # the exact VA of a denied access
        self.stop = stop if stop is not None else StopControl()
        if self._native is not None:
            self.stop.bind_native(self._native)
        self._fetch_fill = False
        self._tail: tuple[int, int, int | None] | None = None    # (pc, left, stop address)
        self._done = (0, 0, False)   # the last burst: retired if PC is on / after; counted
        self.instructions = 0        # retired (counted runs only, plus completed by the hypervisor)
        self.entries = 0             # exception entries that retired no instruction
        self._fault: Fault | None = None
        self._intno: int | None = None
        self._loaded_vmid: int | None = None
        self.stats: Counter[str] = Counter()
        self._fills_since_flush = 0
        self._uc_tlb_size = 256
        self._set_growth()
        self._chunk = _GROW_CHUNK
        self._stalled = 0            # exception entries since the last retired instruction
        self._stall_mark = 0
        self.exception_observers: list[Callable[[GuestException, int, int], None]] = []
        self._breakpoints: dict[int, int] = {}
        self._skip_bp_at: int | None = None
        self._pc_t: tuple[int, bool] | None = None
        self._running = False
        self.debug_stop: str | None = None     # set by a debug hook that called emu_stop()
        self.align = AlignmentCheck(self)      # SCTLR.A (Unicorn ignores it)
        self.timer = None                      # hyp.timer.arch_timer.ArchTimer (attach_time)
        self.pmu = None                        # hyp.timer.pmu.Pmu
        self.vcounter: VirtualCounter | None = None
        self._hcr = HCR_TRAPS
        self.virq = False                      # the interrupt controller's IRQ line to us
        # fault -> bool: the hypervisor resolves a stage-2 fault during the fill (set by
        # hyp.vcpu for each run: its fast path for dirty-logging faults), or None
        self.fault_in_place: Callable[[Fault], bool] | None = None
        mmu.tlb.listeners.append(self._tlb_flushed)
        self.sync_stage1()
        self._mirror_context()

    # ---- identity, time and interrupts (the board connects them: emu.machine) -------------
    index = 0

    def set_index(self, i: int) -> None:
        """This is vCPU `i` of its VM: MPIDR (read by the guest as VMPIDR, B4.1.160) =
        0x80000000 | Aff0 = i, one cluster, as QEMU's virt numbers its CPUs."""
        self.index = i
        self.uc.reg_write(A.UC_ARM_REG_CP_REG, VMPIDR + (0x8000_0000 | i,))

    def attach_time(self, timer, pmu) -> None:
        """Give this vCPU a Generic Timer and a PMU on virtual time: their registers trap
        and are emulated (emu.timer_traps); CNTVOFF follows virtual time."""
        self.timer, self.pmu = timer, pmu
        timer_traps.enable_traps(self.uc)
        self.vcounter = VirtualCounter(self.raw, lambda: time.monotonic_ns() // 16)

    def set_virq(self, irq: bool, fiq: bool = False) -> None:
        """The interrupt controller's IRQ/FIQ lines to this vCPU: HCR.VI/VF with HCR.IMO/FMO
        (B1.8.6), which Unicorn takes as the architecture says once CPSR.I/F allow it. Only
        called between bursts."""
        self.virq = irq or fiq
        hcr = HCR_TRAPS | HCR_IMO | HCR_FMO | (HCR_VI if irq else 0) | (HCR_VF if fiq else 0)
        if hcr != self._hcr:
            self._hcr = hcr
            self.raw.cp_write(HCR, hcr)

    @property
    def progress(self) -> int:
        """Steps so far: retired instructions plus exception entries (see module doc)."""
        return self.instructions + self.entries

    # ---- the fast path's only Python: TLB misses ----------------------------------------
    def _fill(self, _uch, vaddr, access_code, entry_p, _ud) -> bool:
        """Unicorn's TLB-fill hook (uc_cb_tlbfill_t). An exception stops the run and is
        raised by the burst, as the binding's hooks do."""
        try:
            return self._fill_entry(vaddr, access_code, entry_p[0])
        except BaseException as e:
            if self.uc._hook_exception is None:
                self.uc._hook_exception = e
            uclib.uc_emu_stop(self.raw.uch)
            return False

    def _fill_entry(self, vaddr: int, access_code: int, entry) -> bool:
        access = _UC_ACCESS[access_code]
        self._fetch_fill = access == Access.FETCH
        priv = self._privilege(access) if self.mmu.s1.enabled else PL1
        result = self.mmu.fill(vaddr, access, priv)
        if type(result) is Fault and self.fault_in_place is not None and \
                self.fault_in_place(result):
            self.stats["fills"] += 1             # the refused fill, resolved in place
            self.stats["denied"] += 1
            result = self.mmu.fill(vaddr, access, priv)
        self._fetch_fill = False
        self.stats["fills"] += 1
        if isinstance(result, (Fault, S1Fault)):
            self._fault = result
            self.stats["denied"] += 1
            return False
        entry.paddr = result.pa_page
        # Never grant X on data fills: stores to X pages take Unicorn's slow path.
        if access == Access.FETCH:
            entry.perms = _FETCH_PERMS
            if self._native is not None:         # Thumb blocks are counted from their code
                self._native.code_page(vaddr, self._host + result.pa_page)
        else:
            entry.perms = _DATA_PERMS[self.mmu.effective(result, priv)]
        if self._mirror is not None:             # its refills need no Python from now on
            self._mirror.insert(result, self._host + result.pa_page)
        self._fills_since_flush += 1
        if self._native is not None and self._uc_tlb_outgrown():
            self._native.request_stop()          # let the TLB grow (at the next block start)
        return True

    def _privilege(self, access: Access) -> int:
        """PL0 in User mode, and for the unprivileged loads/stores (LDRT, STRT...) PL1 code
        makes: Unicorn caches those in its PL0 TLB, so they must get PL0's permissions.
        (Unicorn syncs PC and CPSR before calling the fill hook.)"""
        cpsr = self.raw.read(A.UC_ARM_REG_CPSR)
        if cpsr & 0x1F == MODE_USR:
            return PL0
        if access == Access.FETCH:
            return PL1
        pc = self.raw.read(A.UC_ARM_REG_PC)
        code = self.read_code(pc, 4)
        return PL0 if unprivileged(code, bool(cpsr & CPSR_T)) else PL1

    def sync_stage1(self) -> None:
        """Tell the MMU the guest's translation registers (after a trapped write, a
        restore). Unicorn's TLB, not tagged by ASID or regime, is dropped when they change;
        the model's TLB keeps its entries, stale ones included, as hardware does."""
        lpae = bool(self.cp15_read("TTBCR") >> 31 & 1)
        regime = S1Regime(
            sctlr=self.cp15_read("SCTLR"), ttbcr=self.cp15_read("TTBCR"),
            ttbr0=self.cp15_read("TTBR0_64") if lpae else self.cp15_read("TTBR0"),
            ttbr1=self.cp15_read("TTBR1_64") if lpae else self.cp15_read("TTBR1"),
            dacr=self.cp15_read("DACR"), contextidr=self.cp15_read("CONTEXTIDR"),
            mair0=self.cp15_read("PRRR"), mair1=self.cp15_read("NMRR"))
        self._regime = regime
        if regime != self.mmu.s1:
            self.mmu.set_stage1(regime)
            self.flush_unicorn_tlb()
            self._mirror_context()
        self.align.update(regime.sctlr)

    def _intr(self, uc, intno, _ud) -> None:
        self._intno = intno
        uc.emu_stop()

    def _tlb_flushed(self, op: str, vmid: int | None) -> None:
        self.flush_unicorn_tlb()

    def flush_unicorn_tlb(self) -> None:
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        if self._native is not None:
            self._native.code_flush()
        self.stats["unicorn_flushes"] += 1
        if self._uc_tlb_outgrown():
            self._uc_tlb_size *= 2
            self._set_growth()
        self._fills_since_flush = 0

    # Fills since Unicorn's TLB was flushed, Python's and the mirror's (TLB growth).
    @property
    def _fills_since_flush(self) -> int:
        return self._mirror.state.fills if self._mirror is not None else self._py_fills

    @_fills_since_flush.setter
    def _fills_since_flush(self, n: int) -> None:
        if self._mirror is not None:
            self._mirror.state.fills = n
        else:
            self._py_fills = n

    def _uc_tlb_outgrown(self) -> bool:
        """More fills since the last flush than 70% of Unicorn's TLB, and it can still grow
        (QEMU's tlb_mmu_resize_locked rule: the next flush doubles it)."""
        return self._uc_tlb_size < _UC_TLB_MAX and \
            self._fills_since_flush > _TLB_GROW_AT * self._uc_tlb_size

    def _set_growth(self) -> None:
        """Tell the native mirror when its fills outgrow the TLB (see _uc_tlb_outgrown)."""
        if self._mirror is not None:
            self._mirror.state.grow_at = int(_TLB_GROW_AT * self._uc_tlb_size) \
                if self._uc_tlb_size < _UC_TLB_MAX else native.NO_LIMIT

    @property
    def native_fills(self) -> int:
        """Unicorn refills the native mirror served (no Python)."""
        return self._mirror.hits if self._mirror is not None else 0

    def _mirror_context(self) -> None:
        if self._mirror is not None:
            s1 = self.mmu.s1
            self._mirror.context(self.mmu.vmid, s1.asid if s1.enabled else None, s1.dacr)

    def _maybe_grow_unicorn_tlb(self) -> None:
        """Unicorn's TLB starts at 256 entries and only grows when flushed while mostly used
        (QEMU's tlb_mmu_resize_locked). Our flushes are rare, so a guest sweeping more pages
        would miss on every page forever: flush at an exit when the fills since the last flush
        exceed 70% of its size. Purely a cache refill: no effect on what the guest sees."""
        if self._uc_tlb_outgrown():
            self.stats["tlb_growth_flushes"] += 1
            self.flush_unicorn_tlb()

    def load_stage2(self, hcr: int, vtcr: int, vttbr: int) -> None:
        """Enter a VM: program HCR/VTCR/VTTBR. Unicorn's TLB is not VMID-tagged, so switching
        VMID drops it (the model's TLB keeps every VMID's entries)."""
        mmu = self.mmu
        if mmu.s1 is self._regime and mmu.loaded(hcr, vtcr, vttbr) and \
                self._loaded_vmid == mmu.vmid:
            return                                   # re-entry: all as it was
        self.mmu.set_stage2(hcr, vtcr, vttbr)
        if self.mmu.s1 != self._regime:
            self.mmu.set_stage1(self._regime)        # an MMU shared with another VM's vCPU
            self.flush_unicorn_tlb()
        if self._loaded_vmid != self.mmu.vmid:
            self._loaded_vmid = self.mmu.vmid
            self.flush_unicorn_tlb()
        self._mirror_context()

    # ---- guest exceptions -----------------------------------------------------------------
    def take_exception(self, exc: GuestException, lr: int, *, retired: bool = False) -> int:
        """Enter the guest's vector for `exc`. `retired`: the instruction that caused it
        completed (SVC); otherwise the entry is a step of its own."""
        vector = enter(self, exc, lr)
        self.stats[f"exc {exc.name.lower()}"] += 1
        for fn in self.exception_observers:
            fn(exc, lr, vector)                  # at the step index before the entry
        if not retired:
            self.entries += 1
            if self.instructions == self._stall_mark:
                self._stalled += 1
            else:
                self._retired()
                self._stalled = 1
        return vector

    def _retired(self) -> None:
        self._stall_mark = self.instructions
        self._stalled = 0

    @property
    def exceptions_taken(self) -> int:
        return sum(v for k, v in self.stats.items() if k.startswith("exc "))

    # ---- running ------------------------------------------------------------------------
    def run(self, budget: int | None) -> Exit:
        """Run guest code for at most `budget` steps (None: no limit; an uncounted run
        ignores it) and return the first exit for the hypervisor."""
        if not self.icount:
            budget = None
        start = self.progress
        while True:
            reason = self.stop.poll()
            if reason is not None:
                return StopRequested(pc=self.pc, reason=reason)
            if self._stalled >= NO_PROGRESS_LIMIT:
                self._stalled = 0
                return NoProgress(pc=self.pc, entries=NO_PROGRESS_LIMIT)
            left = None if budget is None else budget - (self.progress - start)
            if left is not None and left <= 0:
                return BudgetExhausted(pc=self.pc)
            if self._native is not None:
                chunk = left                     # the block hook stops for TLB growth
            elif left is not None:
                chunk = min(left, self._chunk)
            else:
                chunk = _UNCOUNTED_CHUNK
            fills = self.stats["fills"] + self.native_fills
            exit_ = self._burst(chunk, exact=chunk == left)
            if self._uc_tlb_size < _UC_TLB_MAX and self.stats["fills"] + self.native_fills - \
                    fills > 0.35 * self._uc_tlb_size:
                self._maybe_grow_unicorn_tlb()
                self._chunk = _GROW_CHUNK
            else:
                self._chunk = min(self._chunk * 2, _MAX_CHUNK)
            if exit_ is not None:
                self._maybe_grow_unicorn_tlb()
                return exit_

    def _burst(self, budget: int | None, exact: bool = True) -> Exit | None:
        """One emu_start. Returns an exit for the hypervisor, or None when the machine dealt
        with the stop itself (budget chunk, guest exception, hint, emulated trap)."""
        begin = self.pc | (1 if self.thumb else 0)
        hook = self._native
        counting = budget is not None
        blocks = hook is not None and hook.counting
        if blocks:
            hook.start(budget)
            self._arm_tail(begin, budget if exact else None)
        self._fault = None
        self._intno = None
        self.align.pending = False
        self.stats["bursts"] += 1
        self._running = True
        self._pc_t = None
        self.stop.running = True
        uch = self.raw.uch
        uclib.uc_reg_write(uch, A.UC_ARM_REG_ESR, self._esr_arg)
        if self.vcounter is not None:
            self.vcounter.enter(self.timer.counter())
        uc = self.uc
        uc._hook_exception = None
        try:                             # the library call: a stop is a status, not a raise
            err = uclib.uc_emu_start(uch, begin, 0, 0, 0 if blocks else budget or 0)
        finally:
            self._running = False
            if self.vcounter is not None:
                self.vcounter.exit()
        hook_exc = uc._hook_exception
        if hook_exc is not None:
            uc._hook_exception = None
            self._untail()
            raise hook_exc
        pc, thumb = self.pc, self.thumb
        stopped = hook.take_stopped() if hook is not None else native.STOP_NONE
        fault = self._fault if err == UC_ERR_EXCEPTION else None
        if blocks:
            whole = stopped in (native.STOP_REQUEST, native.STOP_BUDGET,
                                native.STOP_UNKNOWN_CODE) or \
                (fault is not None and fault.access == Access.FETCH)
            done = hook.retired(pc, whole)
            if done < 0:
                raise GuestCrash(f"cannot count the instructions of the block at {pc:#x}")
            self._done = (done, done, True)
            self._untail()
        else:
            counted = self._counter.value if counting else 0
            self._done = (counted - 1, counted, counting)
        if fault is not None:
            self._settle(on_insn=fault.access != Access.FETCH, pc_after=False)
            if isinstance(fault, S1Fault):
                self._stage1_abort(fault, pc, thumb)     # the guest's own: no exit
                return None
            return self._abort_exit(fault, pc, thumb)
        if err == UC_ERR_INSN_INVALID:
            return self._invalid(pc, thumb)
        if err:
            raise GuestCrash(f"unicorn stopped at PC {pc:#x}: {UcError(err)}")
        if self._intno is not None:
            return self._interrupt(self._intno, pc, thumb)
        if blocks and stopped == native.STOP_BUDGET:
            self._settle(on_insn=True)
            if exact:
                self._tail_after(pc, thumb, budget)
            return None
        if blocks and stopped == native.STOP_UNKNOWN_CODE:
            self._settle(on_insn=True)
            self._learn_code(hook.state.pending_pc, hook.state.pending_end)
            return None
        if not blocks and counting and self._counter.value > budget:
            # Unicorn counts an instruction before running it and stops there (after a Thumb
            # IT block, which it never splits): all but the last counted one ran.
            self._settle(on_insn=True)
            return None
        if self.align.pending:
            # The SCTLR.A checker stopped before an unaligned access (emu.align).
            self._settle(on_insn=True)
            self._alignment_fault(pc, thumb)
            return None
        if self.debug_stop is not None:
            # A debug hook stopped before the instruction at PC ran (it was counted).
            self._settle(on_insn=True)
            reason, self.debug_stop = self.debug_stop, None
            return DebugStop(pc=pc, reason=reason)
        self._settle(on_insn=False)
        if stopped:
            return None              # a stop request, TLB growth, the tail: run() sees why
        return WaitForInterrupt(pc=pc)
