"""LogBench: the board the dirty-logging rows (bench/dirty_rows.py) run on, with counters,
checked guest passes (`touch` / `peek`), and the slot's stage-2 descriptors read straight
from the tables."""
from __future__ import annotations

import numpy as np

from bench.common import MASK32, BenchError, check_eq, timed
from bench.programs import CODE, ENTRY, EXIT_INSNS
from emu.machine import RAM_BASE, Extra, Machine
from hyp.arch import descriptors as d
from hyp.arch.walk import table_index
from hyp.exits import Hypercall

LOG_IPA = 0x8000_0000
PAGE = 4 << 10
BLOCK = 2 << 20
GIB = 1 << 30
_U64 = np.uint64
_DESC_W = _U64(d.S2_S2AP.set(0, 0b10))      # S2AP[1] (HAP[2]): write permission
_DESC_ADDR = _U64(d.ADDR_MASK)


class LogBench:
    """emu.machine.Machine (icount off, split policy `split`) with 2 MiB of RAM holding the
    code at RAM_BASE and a memslot of `size` bytes at LOG_IPA whose largest leaf is
    `max_level`; both pre-faulted with their largest leaves (flash stays unmapped: unused)."""

    def __init__(self, size: int, max_level: int, split: str = "lazy") -> None:
        if size % BLOCK:
            raise ValueError("dirty-logging slots are whole 2 MiB blocks")
        m = Machine(ram=2 << 20, icount=False, split=split, max_level=2,
                    extra=[Extra(LOG_IPA, size, max_level, "log")])
        m.vm.write_guest(RAM_BASE, CODE)
        m.vm.update_vmid()
        self.m, self.vm = m, m.vm
        self.slot = m.vm.memslot(LOG_IPA)
        for slot in (m.ram, self.slot):
            self.vm.map_slot(slot)
        self.tables0 = m.host.pool.in_use

    # -- counters ------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        st, cs = self.vm.stats, self.m.cpu.stats
        other = sum(v for k, v in st.items() if k.startswith("s2 ") and
                    k not in ("s2 permission", "s2 translation"))
        return {"exits": st["exits"], "dirty": st["dirty faults"], "perm": st["s2 permission"],
                "trans": st["s2 translation"],
                "other": other + st["mmio read"] + st["mmio write"] + st["inject pabt"],
                "denied": cs["denied"], "fills": cs["fills"],
                "in_place": st["dirty faults in place"],
                "flushes": self.m.host.tlb.stats["flush_vmid"],
                "tables": self.m.host.pool.in_use}

    @staticmethod
    def expect(what: str, got: dict[str, int], **want: int) -> None:
        bad = [f"{k} {got[k]} (expected {v})" for k, v in want.items() if got[k] != v]
        if bad:
            raise BenchError(f"{what}: " + ", ".join(bad))

    def cold(self) -> None:
        """Empty both TLBs (model and Unicorn) so the next pass starts as a faulting one did."""
        self.vm.stage2.flush("bench: cold TLB")

    # -- guest passes ----------------------------------------------------------------------
    def _run(self, prog: str, regs: dict[int, int]) -> tuple[float, dict[str, int]]:
        entry, until = ENTRY[prog]
        cpu = self.m.cpu
        for n, v in regs.items():
            cpu.set_reg(n, v)
        cpu.set_pc(entry, False)
        before = self.counts()
        dt, res = timed(self.m.run)
        if res.reason != "off" or not isinstance(res.exit, Hypercall) or \
                res.exit.pc != until + 4 * EXIT_INSNS:
            raise BenchError(f"{prog} pass did not power off at the exit HVC: {res}")
        after = self.counts()
        return dt, {k: after[k] - before[k] for k in after}

    def _words(self, ipa: int, n: int, stride: int) -> np.ndarray:
        """The word at ipa + i*stride for i < n, straight from host memory (a live view)."""
        first = (self.slot.pa_of(ipa) - self.m.host.mem.base) >> 2
        return self.m.host.mem.w[first:first + n * (stride >> 2):stride >> 2]

    def touch(self, ipa: int, n: int, stride: int, value: int) -> tuple[float, dict[str, int]]:
        """The guest stores value + i at ipa + i*stride for i < n."""
        dt, c = self._run("touch", {0: n, 2: value, 4: ipa, 6: stride})
        check_eq("touch r4", self.m.cpu.reg(4), ipa + n * stride)
        want = ((value + np.arange(n, dtype=np.uint64)) & MASK32).astype("<u4")
        if not np.array_equal(self._words(ipa, n, stride), want):
            raise BenchError("touch: guest memory does not hold what the guest stored")
        return dt, c

    def peek(self, ipa: int, n: int, stride: int, seed: int) -> tuple[float, dict[str, int]]:
        """The guest sums the words at ipa + i*stride for i < n into seed."""
        total = int(self._words(ipa, n, stride).sum(dtype=np.uint64))
        dt, c = self._run("peek", {0: n, 4: ipa, 5: seed, 6: stride})
        check_eq("peek r5", self.m.cpu.reg(5), (seed + total) & MASK32)
        return dt, c

    # -- stage-2 state of the slot, read straight from the tables ---------------------------
    def descriptors(self) -> tuple[np.ndarray, np.ndarray]:
        """(l2, l3): the level-2 descriptor of every 2 MiB of the slot, and where it is a
        table the 512 level-3 descriptors under it (zeros elsewhere)."""
        s2, mem, slot = self.vm.stage2, self.m.host.mem, self.slot
        cfg = s2.cfg
        n = slot.size // BLOCK
        l2 = np.zeros(n, dtype=_U64)
        l3 = np.zeros((n, 512), dtype=_U64)
        for k in range(n):
            ipa = slot.ipa + k * BLOCK
            table, level = s2.root, cfg.start_level
            desc = mem.read64(table + 8 * table_index(ipa, level, cfg))
            while level < 2:
                if d.kind(desc, level) is not d.Kind.TABLE:
                    raise BenchError(f"IPA {ipa:#x}: no level-2 table under level {level}")
                table, level = desc & d.ADDR_MASK, level + 1
                desc = mem.read64(table + 8 * table_index(ipa, level, cfg))
            l2[k] = desc
            if d.kind(desc, 2) is d.Kind.TABLE:
                l3[k] = mem.table(desc & d.ADDR_MASK)
        return l2, l3

    def check_pages(self, what: str, writable: np.ndarray | None = None) -> None:
        """Every page of the slot is a level-3 page of its own PA, writable exactly where
        `writable` is set (nowhere if None)."""
        l2, l3 = self.descriptors()
        if not (l2 & _U64(3) == _U64(3)).all():
            raise BenchError(f"{what}: not every 2 MiB of the slot is a level-3 table")
        pages = l3.reshape(-1)
        pa = _U64(self.slot.pa) + (np.arange(pages.size, dtype=_U64) << _U64(12))
        if not ((pages & _U64(3) == _U64(3)) & (pages & _DESC_ADDR == pa)).all():
            raise BenchError(f"{what}: a page of the slot is unmapped or maps the wrong PA")
        self._check_w(what, (pages & _DESC_W) != 0, writable, "pages")

    def check_blocks(self, what: str, writable: bool | np.ndarray) -> None:
        """Every 2 MiB of the slot is one block of its own PA, writable exactly where
        `writable` (one bool per block, or one for all) says."""
        l2, _ = self.descriptors()
        pa = _U64(self.slot.pa) + (np.arange(l2.size, dtype=_U64) << _U64(21))
        if not ((l2 & _U64(3) == _U64(1)) & (l2 & _DESC_ADDR == pa)).all():
            raise BenchError(f"{what}: the slot is not mapped by 2 MiB blocks of its PA")
        self._check_w(what, (l2 & _DESC_W) != 0,
                      np.broadcast_to(np.asarray(writable, dtype=bool), l2.size), "blocks")

    @staticmethod
    def _check_w(what: str, w: np.ndarray, want: np.ndarray | None, unit: str) -> None:
        want = np.zeros(w.size, dtype=bool) if want is None else want
        if not np.array_equal(w, want):
            raise BenchError(f"{what}: {int((w & ~want).sum())} {unit} writable that should be "
                             f"read-only, {int((~w & want).sum())} read-only that should be "
                             f"writable")

