"""The `insn` and `mem` trace kinds: Unicorn hooks on every vCPU's engine.

emu/debug/trace.py installs them only when one of the two kinds is asked for (tracing off costs
nothing). Unicorn hooks belong to one engine, and each vCPU has its own (emu.cpu.VCPU.uc), so
the hooks are installed on each; the vCPU is the hook's user data, which names it in the event.
Addresses are per vCPU too: each has its own stage 1 (its MMU), so the caches here (a code
page's host offset, a PA page's VA) are kept per vCPU.
"""
from __future__ import annotations

from typing import Callable

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE
from unicorn import arm_const as A

from .trace_format import Event

_CPSR_T = 1 << 5
_CPSR_IT = (0x3F << 10) | (0x3 << 25)      # IT[7:2], IT[1:0]


class UnicornHooks:
    """The code hook (`insn`) and memory hooks (`mem`) of one tracer on every vCPU of
    `machine`. `record(ev)` takes each event; `index(cpu)` and `tag(cpu)` give its count and
    its vCPU field (emu.debug.trace.Tracer); `in_range(lo)` is the address filter."""

    def __init__(self, machine, kinds: set[str], addr_range: tuple[int, int] | None,
                 record: Callable[[Event], None], index: Callable[[object], int],
                 tag: Callable[[object], int | None], in_range: Callable[[int], bool]) -> None:
        self.m = machine
        self.cpus = list(getattr(machine, "cpus", [machine.cpu]))
        self.kinds = kinds
        self.range = addr_range
        self._record, self._index, self._tag, self._in_range = record, index, tag, in_range
        self._handles: list[tuple[object, int]] = []        # (uc, hook handle)
        self._subs: list[tuple[list, Callable]] = []
        self._slots: list[tuple[int, int, int]] = []        # (pa, pa_end, ipa) per memslot
        # per vCPU (by position in self.cpus): VA page -> offset in host memory
        self._code_pages: list[dict[int, int]] = [{} for _ in self.cpus]
        self._rmap: dict[tuple[int, int, int], int] = {}    # (VMID, ASID, PA page) -> VA page
        self._buf = machine.host.mem.buf

    def install(self) -> None:
        m = self.m
        tlb_listeners = m.host.tlb.listeners
        if "insn" in self.kinds:
            self._subscribe(tlb_listeners, self._forget_code_pages)
        if "mem" in self.kinds:
            self._subscribe(tlb_listeners, self._forget_rmap)
            # In Unicorn's virtual-TLB mode memory hooks report the *physical* address:
            # bound them to the host PAs that back the VA (= IPA) range.
            self._slots = sorted((s.pa, s.pa + s.size, s.ipa) for s in m.vm.memslots)
        # Unicorn calls a hook for begin <= address <= end; begin > end means everywhere.
        for pages, cpu in zip(self._code_pages, self.cpus):
            uc, tag = cpu.uc, self._tag(cpu)
            if "insn" in self.kinds:
                lo, hi = self.range if self.range else (1, 1)
                self._handles.append((uc, uc.hook_add(UC_HOOK_CODE, self._on_code,
                                                      (pages, cpu, tag), begin=lo, end=hi - 1)))
            if "mem" in self.kinds:
                for pa_lo, pa_hi in self._pa_ranges():
                    self._handles.append((uc, uc.hook_add(
                        UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, self._on_mem, (cpu, tag),
                        begin=pa_lo, end=pa_hi - 1)))
            if self._handles:
                uc.ctl_flush_tb()    # blocks translated before now must call the hooks

    def remove(self) -> None:
        for lst, fn in self._subs:
            lst.remove(fn)
        self._subs = []
        engines = []
        for uc, h in self._handles:
            uc.hook_del(h)
            if uc not in engines:
                engines.append(uc)
        self._handles = []
        for uc in engines:
            uc.ctl_flush_tb()        # drop the blocks that call the hooks: full speed again

    def _subscribe(self, lst: list, fn: Callable) -> None:
        lst.append(fn)
        self._subs.append((lst, fn))

    def _pa_ranges(self) -> list[tuple[int, int]]:
        if self.range is None:
            return [(1, 1)]            # hook begin 1 > end 0: every address
        lo, hi = self.range
        out = []
        for pa, pa_end, ipa in self._slots:
            a, b = max(lo, ipa), min(hi, ipa + (pa_end - pa))
            if a < b:
                out.append((pa + a - ipa, pa + b - ipa))
        return out

    def _pa_to_ipa(self, pa: int) -> int | None:
        for s_pa, s_end, ipa in self._slots:
            if s_pa <= pa < s_end:
                return ipa + (pa - s_pa)
        return None

    def _pa_to_va(self, mmu, pa: int) -> int:
        """The VA of an access Unicorn reports by PA, with the guest's MMU on: the model TLB
        entry of this VMID and ASID (or global) for that PA page - the access just filled or
        hit it. An aliased page gives the most recently filled VA."""
        key = (mmu.vmid, mmu.s1.asid, pa & ~0xFFF)
        va_page = self._rmap.get(key)
        if va_page is None:
            for e in mmu.tlb.entries(mmu.vmid):
                if e.tag in (-1, mmu.s1.asid):             # GLOBAL or this ASID
                    self._rmap[(mmu.vmid, mmu.s1.asid, e.pa_page)] = e.va_page
            va_page = self._rmap.get(key, pa & ~0xFFF)
        return va_page | (pa & 0xFFF)

    def _forget_code_pages(self, op: str, vmid: int | None) -> None:
        for pages in self._code_pages:
            pages.clear()

    def _forget_rmap(self, op: str, vmid: int | None) -> None:
        self._rmap.clear()

    # ---- the hooks ----------------------------------------------------------------------
    def _on_code(self, uc, address: int, size: int, ud) -> None:
        pages, cpu, tag = ud
        thumb = size == 2 or bool(uc.reg_read(A.UC_ARM_REG_CPSR) & _CPSR_T)
        off = pages.get(address & ~0xFFF)
        if off is None or (address & 0xFFF) + size > 0x1000:
            code = self._code_bytes(cpu, pages, address, size)
        else:
            off += address & 0xFFF
            code = self._buf[off:off + size].tobytes()
        self._record(Event(self._index(cpu), "insn", {"pc": address, "thumb": thumb,
                                                      "code": code}, tag))

    def _code_bytes(self, cpu, pages: dict[int, int], address: int, size: int) -> bytes:
        """The instruction's bytes through the side-effect-free debug path, caching the
        page's host offset until the next TLB flush (the code hook fires after the fetch
        filled the TLB, so this is the page the CPU executes)."""
        pa = cpu.debug_translate(address & ~0xFFF)
        if pa is not None:
            pages[address & ~0xFFF] = pa - self.m.host.mem.base
        return cpu.read_code(address, size)

    def _on_mem(self, uc, access: int, address: int, size: int, value: int, ud) -> None:
        # Unicorn 2.1.4: calling a memory hook from inside a Thumb IT block writes the block's
        # state into CPSR and nothing clears it when the block ends, so the first instruction
        # of the next translation block runs as if it were conditional (a thumb guest then
        # computes wrong results). Translated code never reads CPSR.IT (QEMU tracks it at
        # translation time and restores it from the instruction's own record on an
        # exception), so clearing it here is always safe and restores QEMU's invariant.
        cpsr = uc.reg_read(A.UC_ARM_REG_CPSR)
        if cpsr & _CPSR_IT:
            uc.reg_write(A.UC_ARM_REG_CPSR, cpsr & ~_CPSR_IT)
        cpu, tag = ud
        pa = address                           # see install(): a host physical address
        ipa = self._pa_to_ipa(pa)
        if ipa is None:
            return                            # not guest RAM (e.g. Unicorn's exit page)
        mmu = cpu.mmu
        va = self._pa_to_va(mmu, pa) if mmu.s1.enabled else ipa
        if self.range is not None and not self._in_range(va):
            return
        if access == UC_MEM_WRITE:
            acc = "W"
            value &= (1 << (8 * size)) - 1
        else:
            acc = "R"                         # the hook runs before the load: read it here
            value = int.from_bytes(self.m.host.mem.read(pa, size), "little")
        self._record(Event(self._index(cpu), "mem", {"access": acc, "va": va, "ipa": ipa,
                                                     "pa": pa, "size": size, "value": value},
                           tag))
