"""An independent reference for the stage-2 walk (DDI 0406C B3.6.5-B3.6.6, B3.7.2, B4.1.159-160),
written from the ARM ARM with no code of hyp/, and random stage-2 tables for
test_fuzz_stage2.py.

What the reference implements, all from the raw VTCR/VTTBR and descriptor bits:
- VTCR.T0SZ is a signed 4-bit field, input size 32 - T0SZ; SL0 = 0b00 starts at level 2
  (T0SZ -2..7), 0b01 at level 1 (T0SZ -8..1). SL0 = 0b1x, T0SZ outside the range for SL0
  and VTCR.S != T0SZ[3] are UNPREDICTABLE or a Translation fault in the ARM ARM; the model
  documents (hyp.arch.regs.S2Config) a level-1 Translation fault for all of them, so does
  this reference.
- An IPA with bits set at or above the input size: Translation fault, level 1.
- VTTBR[47:40] != 0: Address size fault, level 0. BADDR is VTTBR[39:x] with
  x = input size - (30 or 21) + 3, the size of the (possibly concatenated: up to 16 tables)
  root; the bits below x are ignored.
- Levels 1-3, 512 entries per table (the root: 2^(input size - level shift)); the root index
  takes every input bit above the level's shift. Descriptor bit 0 clear: Translation fault;
  0b01 at level 3: Translation fault (reserved); 0b11 at levels 1-2: table, next level at
  desc[39:12]; 0b01 at levels 1-2: block, 0b11 at level 3: page. Bits [47:40] of a valid
  descriptor set: Address size fault at that level. A descriptor outside host memory:
  synchronous external abort on the walk at that level.
- Leaves: output address desc[39:shift] : IPA[shift-1:0]; AF (bit 10) clear: Access flag
  fault; S2AP = HAP[2:1] (bits 7:6: 01 read, 10 write, 11 both); XN bit 54; an instruction
  fetch needs read permission and XN clear; AF before permissions.
- For the machine (`ref_cpu`): a leaf whose output page is outside host memory makes the
  access itself a synchronous external abort (the level of the leaf).
"""
from __future__ import annotations

from typing import NamedTuple

READ, WRITE, FETCH = "read", "write", "fetch"
SHIFT = {1: 30, 2: 21, 3: 12}
OA_MASK = ((1 << 40) - 1) & ~0xFFF          # desc[39:12]


class Verdict(NamedTuple):
    kind: str                   # ok, translation, access_flag, permission, address_size,
    level: int                  #   external_walk, external (ref_cpu only)
    pa: int | None = None
    r: bool = False
    w: bool = False
    x: bool = False
    desc: int | None = None
    desc_pa: int | None = None  # the leaf's address (ok, access_flag, permission)

    @property
    def fsc(self) -> int:
        codes = {"address_size": 0, "translation": 1, "access_flag": 2, "permission": 3,
                 "external_walk": 5}
        return 0b010000 if self.kind == "external" else codes[self.kind] << 2 | self.level


def config(vtcr: int, vttbr: int):
    """(start level, input size, root base) or None for a configuration that faults."""
    t0sz = vtcr & 0xF
    t0sz = t0sz - 16 if t0sz & 8 else t0sz
    sl0 = vtcr >> 6 & 3
    if vtcr >> 4 & 1 != vtcr >> 3 & 1:
        return None
    if sl0 == 0 and -2 <= t0sz <= 7:
        start = 2
    elif sl0 == 1 and -8 <= t0sz <= 1:
        start = 1
    else:
        return None
    inputsize = 32 - t0sz
    x = inputsize - SHIFT[start] + 3
    return start, inputsize, vttbr & ((1 << 40) - 1) & ~((1 << x) - 1)


def walk(read64, lo: int, hi: int, vtcr: int, vttbr: int, ipa: int, access: str,
         check_perm: bool = True) -> Verdict:
    """The stage-2 walk of `ipa` for `access`; host memory is [lo, hi), read64(pa) reads it."""
    cfg = config(vtcr, vttbr)
    if cfg is None or ipa >> cfg[1]:
        return Verdict("translation", 1)
    if vttbr >> 40 & 0xFF:
        return Verdict("address_size", 0)
    level, inputsize, table = cfg
    index = ipa >> SHIFT[level] & ((1 << (inputsize - SHIFT[level])) - 1)
    while True:
        addr = table + 8 * index
        if addr < lo or addr + 8 > hi:
            return Verdict("external_walk", level)
        desc = read64(addr)
        if not desc & 1 or (level == 3 and not desc & 2):
            return Verdict("translation", level)
        if desc >> 40 & 0xFF:
            return Verdict("address_size", level)
        if level < 3 and desc & 2:
            table, level = desc & OA_MASK, level + 1
            index = ipa >> SHIFT[level] & 511
            continue
        hap, xn = desc >> 6 & 3, desc >> 54 & 1
        r, w, x = bool(hap & 1), bool(hap & 2), bool(hap & 1) and not xn
        if not desc >> 10 & 1:
            return Verdict("access_flag", level, desc=desc, desc_pa=addr)
        if check_perm and not {READ: r, WRITE: w, FETCH: x}[access]:
            return Verdict("permission", level, desc=desc, desc_pa=addr)
        size = 1 << SHIFT[level]
        pa = desc & OA_MASK & ~(size - 1) | ipa & (size - 1)
        return Verdict("ok", level, pa, r, w, not xn, desc, addr)


def ref_cpu(mem, vtcr: int, vttbr: int, ipa: int, access: str) -> Verdict:
    """What an access by the CPU gets: the walk, then an external abort for a leaf that maps
    a page outside host memory."""
    v = walk(mem.read64, mem.base, mem.end, vtcr, vttbr, ipa, access)
    if v.kind == "ok" and not mem.base <= (v.pa & ~0xFFF) <= mem.end - 0x1000:
        return v._replace(kind="external")
    return v


# ---- random tables -------------------------------------------------------------------------
class Tables:
    """Random VTCR/VTTBR, a random root and next-level tables in host memory `mem`; `written`
    maps each table's host PA to the indices it was given descriptors at."""

    def __init__(self, rng, mem, window: range, valid_bias: float = 0.85):
        self.rng, self.mem, self.window = rng, mem, window
        b = rng.getrandbits
        if rng.random() < valid_bias:
            start = rng.choice((1, 2))
            t0sz = rng.randrange(-8, 2) if start == 1 else rng.randrange(-2, 8)
            vtcr = b(32) & ~0xFF | (0 if start == 2 else 1) << 6 | (t0sz & 8) << 1 | t0sz & 15
            if rng.random() < 0.05:
                vtcr ^= 1 << 4                                  # S != T0SZ[3]
        else:
            vtcr = b(32)
        self.vtcr = vtcr
        root_log2 = 12
        if config(vtcr, 0) is not None:
            start, inputsize, _ = config(vtcr, 0)
            root_log2 = max(12, inputsize - SHIFT[start] + 3)
        root_pages = 1 << (root_log2 - 12)
        pages = [p for p in window if p % root_pages == 0]
        root_page = rng.choice(pages)
        used = set(range(root_page, root_page + root_pages))
        free = [p for p in window if p not in used]
        start = config(vtcr, 0)[0] if config(vtcr, 0) else 1
        self.tables = [mem.base + 4096 * p for p in rng.sample(free, rng.randrange(1, 7))]
        self.level = {t: rng.randrange(start + 1, 4) if start < 3 else 3 for t in self.tables}
        self.root = mem.base + 4096 * root_page
        self.level[self.root] = start
        self.pages = {mem.base + 4096 * p for p in used} | set(self.tables)
        baddr = self.root | (b(root_log2) if rng.random() < 0.2 else 0)
        r = rng.random()
        if r < 0.05:
            baddr = b(40)
        elif r < 0.08:
            baddr = mem.end - 4096 * rng.randrange(1, 3)           # root runs off memory
        self.vttbr = baddr | b(8) << 48 | (rng.randrange(1, 256) << 40 if rng.random() < 0.06
                                           else 0) | (b(8) << 56 if rng.random() < 0.1 else 0)
        self.written: dict[int, list[int]] = {}
        cfg = config(vtcr, 0)
        entries = 1 << (cfg[1] - SHIFT[cfg[0]]) if cfg else 512
        for table, n in [(self.root, entries)] + [(t, 512) for t in self.tables]:
            idx = sorted(rng.sample(range(n), min(n, rng.randrange(1, 48))))
            self.written[table] = idx
            for i in idx:
                mem.write64(table + 8 * i, self.descriptor(self.level[table]))

    def address(self) -> int:
        """A page-aligned output/table address: mostly in the window, sometimes anywhere in
        host memory, past its end, anywhere in 40 bits or with bits [47:40] set."""
        rng, mem = self.rng, self.mem
        r = rng.random()
        if r < 0.6:
            return mem.base + 4096 * rng.choice(self.window)
        if r < 0.7:
            return mem.base + 4096 * rng.randrange(mem.size // 4096)
        if r < 0.8:
            return mem.end + 4096 * rng.randrange(0, 1 << 16)
        if r < 0.95:
            return rng.getrandbits(40) & ~0xFFF
        return rng.getrandbits(48) & ~0xFFF

    def descriptor(self, level: int) -> int:
        """Mostly what suits `level` (a table to a next-level table, a block, a page)."""
        rng, b = self.rng, self.rng.getrandbits
        r = rng.random()
        if r < 0.08:
            return b(64) & ~1                                   # invalid
        if r < 0.12:
            return b(64)
        ignored = (b(12) << 52 if rng.random() < 0.3 else 0)
        if level < 3 and r < 0.5 or rng.random() < 0.03:       # table
            below = [t for t in self.tables if self.level[t] == level + 1]
            to = rng.choice(below or self.tables) if rng.random() < 0.85 else self.address()
            return to & ((1 << 48) - 1) | 3 | ignored
        kind = 1 if level < 3 else (3 if rng.random() < 0.9 else 1)
        desc = self.address() & ((1 << 48) - 1) | kind
        if rng.random() < 0.2:
            desc |= b(30) & 0x3FFFF000                          # bits below a block's size
        desc |= b(4) << 2 | b(2) << 6 | b(2) << 8 | (rng.random() < 0.8) << 10 | b(1) << 11
        return desc | (1 << 54 if rng.random() < 0.4 else 0) | ignored

    def ipa(self, bits: int = 42) -> int:
        """An IPA: mostly one whose walk follows written entries, else anything."""
        rng = self.rng
        r = rng.random()
        if r < 0.05:
            return rng.getrandbits(32)
        if r < 0.1:
            return rng.getrandbits(bits)
        cfg = config(self.vtcr, self.vttbr)
        if cfg is None:
            return rng.getrandbits(rng.choice((32, 40)))
        level, inputsize, table = cfg
        if r < 0.13:
            return (1 << inputsize) + rng.getrandbits(inputsize)    # beyond the input size
        ipa, top = 0, inputsize
        while level <= 3:
            shift = SHIFT[level]
            idx = self.written.get(table)
            i = rng.choice(idx) if idx and rng.random() < 0.85 else rng.getrandbits(top - shift)
            ipa |= (i & ((1 << (top - shift)) - 1)) << shift
            addr = table + 8 * i
            desc = self.mem.read64(addr) if self.mem.contains(addr, 8) else 0
            if level == 3 or desc & 3 != 3:
                break
            table, level, top = desc & OA_MASK, level + 1, shift
        return ipa | rng.getrandbits(SHIFT[level])
