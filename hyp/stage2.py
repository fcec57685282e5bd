"""A VM's stage-2 tables in host memory (KVM's stage2_* in arch/arm/kvm/mmu.c).

One range walker, many small visitors (as Linux's kvm_pgtable). Every descriptor change goes
through `Stage2._store`, which does the TLB maintenance the architecture requires:
  invalid -> valid              no flush
  permission upgrade            no flush (a TLB never holds what faulted more permissive)
  permission downgrade, unmap   VMID flush (batched: one per operation)
  anything else valid -> valid  break-before-make: invalidate, flush, write the new one
`skip_flush` turns the flushes off so a missing flush can be observed (stale TLB).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .arch import descriptors as d
from .arch.descriptors import Prot
from .arch.regs import S2Config, make_vtcr, make_vttbr
from .arch.tlb import TLB
from .arch.walk import Translation, lookup, table_index
from .arch.fault import Fault
from .pgalloc import TablePool
from .physmem import PhysMem

U64 = np.uint64
_VALID = U64(1)
_TYPE = U64(2)
_ADDR = U64(d.ADDR_MASK)
_S2AP_W = U64(1 << 7)           # HAP[2]: write permission
_S2AP_R = U64(1 << 6)
_XN = U64(d.S2_XN.mask)
_AF = U64(d.S2_AF.mask)
_NOT_PROT = ~U64(d.PROT_BITS_MASK | d.S2_AF.mask)    # what a permission/AF change leaves alone


@dataclass(frozen=True)
class Mapping:
    """A merged run of leaves for dumps: IPA range -> PA range with one set of attributes."""
    ipa: int
    pa: int
    size: int
    level: int
    prot: Prot
    af: bool

    def describe(self) -> str:
        p = ("r" if self.prot & Prot.R else "-") + ("w" if self.prot & Prot.W else "-") + \
            ("x" if self.prot & Prot.X else "-")
        kind = {1: "1G block", 2: "2M block", 3: "4K page"}[self.level]
        return (f"IPA {self.ipa:#011x}-{self.ipa + self.size - 1:#011x} -> PA {self.pa:#012x} "
                f"{self.size >> 10:>8} KiB {p} AF={int(self.af)} XN={int(not self.prot & Prot.X)} {kind}")


# _maintenance's masks: (valid, not-prot, lost-if-cleared, XN) as numpy and as Python ints
_MASKS_NP = (_VALID, _NOT_PROT, _S2AP_W | _S2AP_R | _AF, _XN)
_MASKS_INT = tuple(int(m) for m in _MASKS_NP)
_S2AP_W_INT, _S2AP_R_INT, _XN_INT = int(_S2AP_W), int(_S2AP_R), int(_XN)
_R, _W, _X = int(Prot.R), int(Prot.W), int(Prot.X)


def _maintenance(old, new, masks=_MASKS_NP):
    """What replacing descriptor(s) `old` by `new` requires (numpy arrays; Python ints with
    masks=_MASKS_INT, the fault path, where numpy scalars would cost more than the rest):
    bbm - both valid and something besides permissions/AF changes: break-before-make (B3.10.1);
    downgrade - was valid and is now invalid, or lost write/read/AF, or gained XN: a flush.
    Permission upgrades and invalid -> valid need nothing."""
    valid, not_prot, keep, xn = masks
    diff = old ^ new
    old_valid = (old & valid) != 0
    new_valid = (new & valid) != 0
    bbm = old_valid & new_valid & ((diff & not_prot) != 0)
    lost = diff & ((old & keep) | (new & xn))
    downgrade = old_valid & (bbm == 0) & ((new_valid == 0) | (lost != 0))
    return bbm, downgrade


def _is_leaf(view: np.ndarray, level: int) -> np.ndarray:
    valid = (view & _VALID) != 0
    typ = (view & _TYPE) != 0
    return valid & typ if level == 3 else valid & ~typ


def _is_table(view: np.ndarray, level: int) -> np.ndarray:
    if level == 3:
        return np.zeros(view.shape, dtype=bool)
    return ((view & _VALID) != 0) & ((view & _TYPE) != 0)


class Stage2:
    """Stage-2 translation tables of one VM, rooted in `pool`, maintained through `tlb`."""

    def __init__(self, mem: PhysMem, pool: TablePool, tlb: TLB, vmid: Callable[[], int],
                 t0sz: int = -8, sl0: int = 1) -> None:
        self.mem, self.pool, self.tlb, self._vmid = mem, pool, tlb, vmid
        self.vtcr = make_vtcr(t0sz, sl0)
        base = S2Config.decode(self.vtcr, 0)
        if not base.valid:
            raise ValueError(f"inconsistent VTCR: T0SZ={t0sz} SL0={sl0}")
        n = base.root_tables
        self.root = pool.alloc(n, align_pages=n)
        self.root_pages = n
        self.skip_flush = False
        self.flushes = 0
        self.observers: list[Callable[..., None]] = []
        self._batch = 0
        self._pending = False
        self._cfg: S2Config | None = None
        self._cfg_vttbr = -1

    # ---- registers -------------------------------------------------------------------
    @property
    def vttbr(self) -> int:
        return make_vttbr(self.root, self._vmid())

    @property
    def cfg(self) -> S2Config:
        vttbr = self.vttbr
        if self._cfg is None or self._cfg_vttbr != vttbr:
            self._cfg, self._cfg_vttbr = S2Config.decode(self.vtcr, vttbr), vttbr
        return self._cfg

    # ---- TLB maintenance: the one place -------------------------------------------------
    def _event(self, kind: str, **info) -> None:
        for fn in self.observers:
            fn(kind, **info)

    def flush(self, reason: str) -> None:
        """kvm_tlb_flush_vmid: invalidate this VM's entries (unless flushes are disabled)."""
        if self._batch:
            self._pending = True
            return
        self._event("tlb_flush", reason=reason, skipped=self.skip_flush)
        if self.skip_flush:
            return
        self.flushes += 1
        self.tlb.flush_vmid(self._vmid())

    @contextmanager
    def batch(self, reason: str) -> Iterator[None]:
        """Coalesce the flushes of downgrades into one at the end (KVM: kvm_flush_remote_tlbs)."""
        self._batch += 1
        try:
            yield
        finally:
            self._batch -= 1
            if not self._batch and self._pending:
                self._pending = False
                self.flush(reason)

    def _store(self, table_pa: int, level: int, lo: int, new) -> None:
        """Write descriptors table[lo:lo+len(new)] (see `_store_at`)."""
        first = ((table_pa - self.mem.base) >> 3) + lo
        if len(new) == 1:
            self._store_at(first, int(new[0]))
            return
        new = np.asarray(new, dtype=U64)
        self._store_at(np.arange(first, first + new.size, dtype=np.int64), new)

    def _store_at(self, idx, new, *, unless_maintenance: bool = False) -> bool:
        """The one place stage-2 descriptors change: write host-memory descriptor slots `idx`
        (indices into the 64-bit view; an int and an int for one descriptor, arrays for many)
        with `new`, doing the TLB maintenance they need. With `unless_maintenance` (one
        descriptor) a change that needs maintenance is not made: returns whether it was."""
        q = self.mem.q
        if isinstance(idx, int):                # the fault path: one descriptor, same rule
            bbm, downgrade = _maintenance(int(q[idx]), new, _MASKS_INT)
            if unless_maintenance and (bbm or downgrade):
                return False
            if bbm:
                q[idx] = 0
                self._flush_now("break-before-make")
            q[idx] = new
            if downgrade:
                self.flush("downgrade")
            return True
        new = np.asarray(new, dtype=U64)
        old = q[idx]
        if not (old ^ new).any():
            return True
        bbm, downgrade = _maintenance(old, new)
        if bbm.any():
            q[idx[bbm]] = 0
            self._flush_now("break-before-make")
        q[idx] = new
        if downgrade.any():
            self.flush("downgrade")
        return True

    def _flush_now(self, reason: str) -> None:
        """A flush that cannot wait for the end of a batch (break-before-make)."""
        saved, self._batch = self._batch, 0
        self.flush(reason)
        self._batch = saved

    def _entries(self, table_pa: int, level: int) -> int:
        return self.root_pages * 512 if table_pa == self.root else 512

    # ---- the range walker ------------------------------------------------------------
    def _walk(self, start: int, end: int, visit: Callable, post: Callable | None = None,
              level: int | None = None, table: int | None = None, base: int = 0) -> None:
        """Visit every table overlapping [start, end): visit() before descending (returning
        False skips the subtrees below this table), post() after."""
        cfg = self.cfg
        if level is None:
            level, table = cfg.start_level, self.root
        shift = d.LEVEL_SHIFT[level]
        n = self._entries(table, level)
        lo = max(0, (start - base) >> shift)
        hi = min(n, ((end - 1 - base) >> shift) + 1)
        if lo >= hi:
            return
        view = self.mem.table(table, n)
        if visit(level, table, view, lo, hi, base) is False:
            return                                   # the visitor handled the subtrees
        if level < 3:
            for i in np.flatnonzero(_is_table(view[lo:hi], level)):
                idx = lo + int(i)
                child = int(view[idx]) & d.ADDR_MASK
                self._walk(start, end, visit, post, level + 1, child, base + (idx << shift))
        if post:
            post(level, table, view, lo, hi, base)

    # ---- visitors ----------------------------------------------------------------------
    def map(self, ipa: int, pa: int, level: int, prot: Prot) -> None:
        """Install one leaf (page at level 3, block at 1-2), making tables on the way.

        An existing block on the way is dissolved (its other pages fault in lazily: the
        cover letter's option 2); an existing table where the block goes is freed after
        break-before-make (Linux 5.1 "Fix handling of stage2 huge mappings")."""
        cfg = self.cfg
        lvl, table = cfg.start_level, self.root
        while lvl < level:
            idx = self._index(ipa, lvl)
            desc = self.mem.read64(table + 8 * idx)
            kind = d.kind(desc, lvl)
            if kind is not d.Kind.TABLE:
                new_table = self.pool.alloc()
                self._store(table, lvl, idx, [d.make_table(new_table)])
                if kind is d.Kind.BLOCK:
                    self._event("dissolve", ipa=ipa & ~(d.LEVEL_SIZE[lvl] - 1), level=lvl)
                desc = d.make_table(new_table)
            table, lvl = desc & d.ADDR_MASK, lvl + 1
        idx = self._index(ipa, level)
        old = self.mem.read64(table + 8 * idx)
        self._store(table, level, idx, [d.make_leaf(pa, level, prot)])
        if d.kind(old, level) is d.Kind.TABLE:
            self._free_subtree(old & d.ADDR_MASK, level + 1)

    def _index(self, ipa: int, level: int) -> int:
        return table_index(ipa, level, self.cfg)

    def _free_subtree(self, table_pa: int, level: int) -> None:
        view = self.mem.table(table_pa)
        if level < 3:
            for i in np.flatnonzero(_is_table(view, level)):
                self._free_subtree(int(view[int(i)]) & d.ADDR_MASK, level + 1)
        self.pool.free(table_pa)
        self._event("table_free", pa=table_pa, level=level)

    def set_prot(self, start: int, end: int, clear: Prot = Prot.NONE, add: Prot = Prot.NONE) -> None:
        """Update leaf permissions over a range (write-protect is clear=Prot.W); one flush."""
        clr = U64(0)
        if clear & Prot.W:
            clr |= _S2AP_W
        if clear & Prot.R:
            clr |= _S2AP_R
        setb = U64(0)
        if add & Prot.W:
            setb |= _S2AP_W
        if add & Prot.R:
            setb |= _S2AP_R
        xn_set = bool(clear & Prot.X)
        xn_clr = bool(add & Prot.X)

        def visit(level, table, view, lo, hi, base):
            seg = view[lo:hi]
            leaf = _is_leaf(seg, level)
            if not leaf.any():
                return
            new = (seg & ~clr) | setb
            if xn_set:
                new |= _XN
            if xn_clr:
                new &= ~_XN
            self._store(table, level, lo, np.where(leaf, new, seg))

        with self.batch("set_prot"):
            self._walk(start, end, visit)

    def wrprotect(self, start: int, end: int) -> None:
        """stage2_wp_range: make every leaf in [start, end) read-only, then one VMID flush."""
        self.wrprotect_pages(start, np.ones((end - start + 0xFFF) >> 12, dtype=bool))

    def wrprotect_pages(self, base: int, pages: np.ndarray) -> int:
        """kvm_mmu_write_protect_pt_masked: make read-only every leaf that maps a page
        base + 4096*i with pages[i] set (a block covering one is protected whole). One VMID
        flush if any descriptor lost write permission. Returns the number of leaves protected.

        Level-3 tables are not visited one by one: the walk stops at level 2 and collects them,
        then only the set pages are gathered (sparse) or the tables are edited in chunks small
        enough not to allocate large temporaries (dense)."""
        set_pages = np.flatnonzero(pages)
        if set_pages.size == 0:
            return 0
        end = base + (pages.size << 12)
        lead = (base >> 12) & 511                    # pages[] realigned to 2 MiB chunks
        padded = np.zeros(lead + pages.size + 511 & ~511, dtype=bool)
        padded[lead:lead + pages.size] = pages
        chunk_any = padded.reshape(-1, 512).any(axis=1)
        origin = base - (lead << 12)                 # IPA of chunk 0
        rows: list[np.ndarray] = []                  # level-3 table PAs ...
        chunks: list[np.ndarray] = []                # ... and the 2 MiB chunk each one maps
        protected = 0

        def visit(level, table, view, lo, hi, base_ipa):
            nonlocal protected
            seg = view[lo:hi]
            shift = d.LEVEL_SHIFT[level]
            for i in np.flatnonzero(_is_leaf(seg, level) & ((seg & _S2AP_W) != 0)):
                ipa = base_ipa + ((lo + int(i)) << shift)
                a, b = max(0, (ipa - base) >> 12), min(pages.size, (ipa + (1 << shift) - base) >> 12)
                if a < b and pages[a:b].any():           # a block: protected whole
                    self._store(table, level, lo + int(i), [int(seg[int(i)]) & ~int(_S2AP_W)])
                    protected += 1
            if level == 2:
                sub = np.flatnonzero(_is_table(seg, 2))
                chunk = ((base_ipa - origin) >> 21) + lo + sub.astype(np.int64)
                keep = (chunk >= 0) & (chunk < chunk_any.size)
                keep[keep] = chunk_any[chunk[keep]]
                rows.append((seg[sub[keep]] & _ADDR).astype(np.int64))
                chunks.append(chunk[keep])
                return False                             # level-3 tables: handled below
            return None

        with self.batch("wrprotect"):
            self._walk(base, end, visit)
            if rows:
                row = (np.concatenate(rows) - self.mem.base) >> 3     # 64-bit index of entry 0
                chunk = np.concatenate(chunks)
                if set_pages.size * 8 < chunk.size * 512:
                    protected += self._wrprotect_sparse(row, chunk, set_pages + lead)
                else:
                    protected += self._wrprotect_dense(row, chunk, padded)
        return protected

    def _wrprotect_sparse(self, row: np.ndarray, chunk: np.ndarray, page: np.ndarray) -> int:
        """Few pages: gather exactly their descriptors (padded page numbers -> table entries)."""
        order = np.argsort(chunk)
        pos = np.searchsorted(chunk[order], page >> 9)
        pos = np.minimum(pos, order.size - 1)
        mapped = chunk[order][pos] == (page >> 9)        # pages whose chunk has a table
        idx = row[order][pos[mapped]] + (page[mapped] & 511)
        old = self.mem.q[idx]
        hit = _is_leaf(old, 3) & ((old & _S2AP_W) != 0)
        if hit.any():
            self._store_at(idx[hit], old[hit] & ~_S2AP_W)
        return int(hit.sum())

    def _wrprotect_dense(self, row: np.ndarray, chunk: np.ndarray, padded: np.ndarray) -> int:
        """Many pages: 16 tables (64 KiB of temporaries) at a time."""
        cols = np.arange(512, dtype=np.int64)
        want_all = padded.reshape(-1, 512)
        done = 0
        for k in range(0, row.size, 16):
            idx = row[k:k + 16, None] + cols[None, :]
            old = self.mem.q[idx]
            hit = want_all[chunk[k:k + 16]] & _is_leaf(old, 3) & ((old & _S2AP_W) != 0)
            if hit.any():
                self._store_at(idx[hit], old[hit] & ~_S2AP_W)
                done += int(hit.sum())
        return done

    def unmap(self, start: int, end: int) -> None:
        """unmap_stage2_range: clear leaves (whole blocks) and free tables left empty."""
        def visit(level, table, view, lo, hi, base):
            seg = view[lo:hi]
            leaf = _is_leaf(seg, level)
            if leaf.any():
                self._store(table, level, lo, np.where(leaf, U64(0), seg))

        def post(level, table, view, lo, hi, base):
            if level == 3:
                return
            seg = view[lo:hi]
            for i in np.flatnonzero(_is_table(seg, level)):
                idx = lo + int(i)
                child = int(view[idx]) & d.ADDR_MASK
                if not self.mem.table(child).any():
                    self._store(table, level, idx, [0])
                    self.pool.free(child)
                    self._event("table_free", pa=child, level=level + 1)

        with self.batch("unmap"):
            self._walk(start, end, visit, post)

    def split_blocks(self, start: int, end: int) -> int:
        """Eager split (arm64's eager page splitting): replace every block in range by a
        table of leaves with the same attributes, recursively down to 4 KiB pages. The blocks
        of one table are replaced together: one break-before-make (a single VMID flush) for
        all of them, as kvm_pgtable's split does per walk."""
        count = 0

        def visit(level, table, view, lo, hi, base):
            nonlocal count
            if level == 3:
                return
            blocks = lo + np.flatnonzero(_is_leaf(view[lo:hi], level))
            if blocks.size == 0:
                return
            step = d.LEVEL_SIZE[level + 1]
            low = 0b11 if level + 1 == 3 else 0b01
            new = []
            for idx in blocks:
                desc = int(view[int(idx)])
                child = self.pool.alloc()
                attrs = desc & ~d.ADDR_MASK & ~0b11
                oas = d.out_addr(desc, level) + step * np.arange(512, dtype=U64)
                self.mem.table(child)[:] = oas | U64(attrs | low)
                new.append(d.make_table(child))
            first = (table - self.mem.base) >> 3
            self._store_at(first + blocks.astype(np.int64), np.asarray(new, dtype=U64))
            for idx in blocks:
                self._event("split", ipa=base + (int(idx) << d.LEVEL_SHIFT[level]), level=level)
            count += blocks.size

        self._walk(start, end, visit)
        return count

    def collapse(self, start: int, end: int) -> int:
        """Rebuild huge mappings: a table of 512 present, contiguous, same-attribute leaves
        becomes one block; the table page is freed after break-before-make."""
        count = 0

        def post(level, table, view, lo, hi, base):
            nonlocal count
            if level == 3:
                return
            for i in np.flatnonzero(_is_table(view[lo:hi], level)):
                idx = lo + int(i)
                child = int(view[idx]) & d.ADDR_MASK
                cv = self.mem.table(child)
                if not _is_leaf(cv, level + 1).all():
                    continue
                attrs = cv & ~_ADDR & ~U64(0b11)
                oas = cv & _ADDR
                step = d.LEVEL_SIZE[level + 1]
                first = int(oas[0])
                if first % d.LEVEL_SIZE[level] or not (attrs == attrs[0]).all() or \
                        not (oas == U64(first) + U64(step) * np.arange(512, dtype=U64)).all():
                    continue
                block = first | int(attrs[0]) | 0b01
                self._store(table, level, idx, [block])
                self.pool.free(child)
                self._event("collapse", ipa=base + (idx << d.LEVEL_SHIFT[level]), level=level)
                self._event("table_free", pa=child, level=level + 1)
                count += 1

        self._walk(start, end, lambda *a: None, post)
        return count

    def set_af(self, ipa: int) -> bool:
        """handle_access_fault: set AF on the leaf mapping `ipa` (an upgrade: no flush)."""
        done = False

        def visit(level, table, view, lo, hi, base):
            nonlocal done
            seg = view[lo:hi]
            leaf = _is_leaf(seg, level)
            if leaf.any():
                self._store(table, level, lo, np.where(leaf, seg | _AF, seg))
                done = True

        self._walk(ipa, ipa + 1, visit)
        return done

    def _relaxed(self, desc_pa: int, add: Prot) -> tuple[int, int, int]:
        """(index, old, new) of the leaf at host PA `desc_pa` with permissions `add`."""
        idx = (desc_pa - self.mem.base) >> 3
        old = int(self.mem.q[idx])
        if not old & 1:
            raise ValueError(f"descriptor at {desc_pa:#x} is not valid")
        add = int(add)                    # ints: the fault path (enum flags cost more)
        new = old | (_S2AP_W_INT if add & _W else 0) | (_S2AP_R_INT if add & _R else 0)
        if add & _X:
            new &= ~_XN_INT
        return int(idx), old, new

    def relax(self, desc_pa: int, add: Prot) -> None:
        """Add permissions to the leaf at host PA `desc_pa` (found by the faulting walk): an
        upgrade, so no TLB maintenance (KVM: stage2_set_pte on the PTE its walk returned)."""
        idx, _old, new = self._relaxed(desc_pa, add)
        self._store_at(idx, new)

    def relax_in_place(self, desc_pa: int, add: Prot) -> bool:
        """`relax`, for the fault fast path, which cannot flush mid-fill: done (True) only if
        the change needs no TLB maintenance - always, for a valid leaf; False: nothing
        changed (not a valid leaf in host memory, or maintenance would be needed)."""
        q = self.mem.q
        idx = (desc_pa - self.mem.base) >> 3
        if not (0 <= idx < len(q)) or not int(q[idx]) & 1:
            return False
        idx, _old, new = self._relaxed(desc_pa, add)
        return self._store_at(idx, new, unless_maintenance=True)

    def has_table_at(self, ipa: int, level: int) -> bool:
        """Is the level-`level` entry for `ipa` a table (i.e. not a block or invalid)?"""
        lvl, table = self.cfg.start_level, self.root
        while True:
            desc = self.mem.read64(table + 8 * self._index(ipa, lvl))
            if d.kind(desc, lvl) is not d.Kind.TABLE:
                return False
            if lvl == level:
                return True
            table, lvl = desc & d.ADDR_MASK, lvl + 1

    # ---- read-only views ---------------------------------------------------------------
    def leaves(self, start: int = 0, end: int = 1 << 40) -> Iterator[tuple[int, int, int]]:
        """(ipa, level, descriptor) of every leaf overlapping [start, end), in IPA order."""
        out: list[tuple[int, int, int]] = []

        def visit(level, table, view, lo, hi, base):
            shift = d.LEVEL_SHIFT[level]
            for i in np.flatnonzero(_is_leaf(view[lo:hi], level)):
                out.append((base + ((lo + int(i)) << shift), level, int(view[lo + int(i)])))

        self._walk(start, end, visit)
        return iter(sorted(out))

    def dump(self, start: int = 0, end: int = 1 << 40) -> list[Mapping]:
        """Leaves merged into maximal runs of contiguous IPA/PA with equal attributes."""
        runs: list[Mapping] = []
        for ipa, level, desc in self.leaves(start, end):
            m = Mapping(ipa, d.out_addr(desc, level), d.LEVEL_SIZE[level], level,
                        d.bits_to_prot(desc), bool(d.S2_AF.get(desc)))
            if runs:
                r = runs[-1]
                if (r.ipa + r.size == m.ipa and r.pa + r.size == m.pa and r.level == m.level
                        and r.prot == m.prot and r.af == m.af):
                    runs[-1] = Mapping(r.ipa, r.pa, r.size + m.size, r.level, r.prot, r.af)
                    continue
            runs.append(m)
        return runs

    def lookup(self, ipa: int) -> Translation | Fault:
        """Side-effect-free walk for debuggers (no TLB fill, nothing marked)."""
        return lookup(self.mem, self.cfg, ipa)

    def table_pages(self) -> int:
        """Table pages reachable from the root (the root included): for leak checks."""
        count = self.root_pages

        def visit(level, table, view, lo, hi, base):
            nonlocal count
            count += int(_is_table(view[lo:hi], level).sum())

        self._walk(0, 1 << self.cfg.input_bits, visit)
        return count
