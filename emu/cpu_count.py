"""How a vCPU counts retired instructions (a mixin of emu.cpu.VCPU): what each burst retired
- from the native block hook's per-block count (emu.native.BlockHook) or from Unicorn's own
per-instruction counter (the fallback) - the tail of an exact budget, and the exact step index
from inside a hook during a run."""
from __future__ import annotations

from .cpu_events import GuestCrash
from .icount import tail_stop


class CpuCount:
    """Mixin of emu.cpu.VCPU (needs uc, icount, _native, _counter, _done, _tail, instructions,
    progress, _running, _retired, read_code, debug_translate, get_cpsr)."""

    def _tail_after(self, pc: int, thumb: bool, budget: int) -> None:
        """The block hook held back the block at PC, longer than what is left of an exact
        budget: the next burst runs exactly its head (to an instruction boundary outside
        any IT block, as count= stops)."""
        left = budget - self._done[0]
        if left > 0:
            code = self.read_code(pc, self._native.state.pending_end - pc)
            self._tail = (pc, left, tail_stop(code, pc, thumb, self.get_cpsr(), left))

    def _arm_tail(self, begin: int, budget: int | None) -> None:
        tail, self._tail = self._tail, None
        if tail is not None and tail[:2] == (begin & ~1, budget):
            self._native.arm_tail(tail[0], tail[2])
            if tail[2] is not None:              # its translations must call the tail hook
                self.uc.ctl_remove_cache(tail[2], tail[2] + 1)

    def _untail(self) -> None:
        """Drop the tail hook of the last burst, and the translations that call it."""
        addr = self._native.disarm_tail() if self._native is not None else None
        if addr is not None:
            self.uc.ctl_remove_cache(addr, addr + 1)

    def _learn_code(self, start: int, end: int) -> None:
        """The block hook met Thumb code on a page it does not know (the code-page table
        forgot it): tell it where those pages are."""
        for page in range(start & ~0xFFF, end, 0x1000):
            pa = self.debug_translate(page)
            if pa is None:
                raise GuestCrash(f"cannot count the instructions of the block at {start:#x}")
            self._native.code_page(page, self._host + (pa & ~0xFFF))

    def _settle(self, on_insn: bool, pc_after: bool | None = None) -> None:
        """Account the last burst's retired instructions: PC is on an instruction that did
        not run (`on_insn`) or after one that did (SMC: after one that did not)."""
        on, after, counting = self._done
        if pc_after is None:
            pc_after = not on_insn
        if self._native is not None and self._native.counting:
            n = on - 1 if on_insn and pc_after else on      # block counts end at PC
        else:
            n = on if on_insn else after
        self._account(n, counting)

    def _account(self, n: int, counting: bool = True) -> None:
        """`n` instructions retired in the burst (known only when the burst was counted)."""
        if counting and n > 0:
            self._skip_bp_at = None              # the resumed instruction has run
            self.instructions += n
            self._retired()

    def insn_index(self) -> int:
        """Steps completed so far, exact even from inside a hook during a run."""
        if self._running and self.icount:
            return self.progress + max(0, self._counter.value - 1)
        return self.progress
