"""Dirty-logging rows (DESIGN 3, 6): the cost of dirty page logging (faults, enable,
get_dirty_log, eager vs lazy block splitting), on a LogBench: a Machine with an extra memslot
at LOG_IPA (0x80000000).

  guest rows    a real guest loop (`touch`: one store per page; `peek`: one load per page) under
                Machine.run, minus the same pass over pages that no longer fault, both from
                cold TLBs: what remains is the fault path end to end (denied TLB fill, exit,
                syndrome, hypervisor, resume). Fault, exit, flush and table-page counts, the
                stored/loaded values, the dirty bitmap and the slot's descriptors are checked.
  hypervisor    hyp.dirty.enable_logging / get_dirty_log timed directly on a 1 GiB slot that
                is fully mapped first (--quick: 64 MiB, value scaled to 1 GiB), then checked
                against the slot's descriptors read straight from the tables.
These rows run the hypervisor's dirty-logging paths (hyp/dirty.py, hyp/stage2.py).
"""
from __future__ import annotations

import statistics

import numpy as np

from bench.common import MASK32, BenchError, Context, Result, Rows, check_eq, timed
from bench.logbench import BLOCK, GIB, LOG_IPA, PAGE, LogBench
from bench.raw_unicorn import RawFloor
from emu import native as emu_native
from hyp import dirty
from hyp.arch.descriptors import Prot

ROWS = Rows()
DIRTY_ROWS: set[str] = set()                 # every row name in ROWS (for the table header)


def register_dirty(*names: str):
    DIRTY_ROWS.update(names)
    return ROWS.register(*names)


def header_lines(ctx: Context) -> list[str]:
    """How these rows are measured, for the table's header."""
    s = ctx.sizes
    return [
        "dirty-logging rows: Machine (icount off) + a memslot at "
        f"{LOG_IPA:#x}; guest rows (us) = (best pass that faults - best same pass on "
        f"writable pages, both from cold TLBs) / faults or blocks, 1 warm-up + best of "
        f"{s.reps} ('dirty fault') / {s.policy_reps} (policy rows); hypervisor rows (ms) = "
        f"best of {s.log_reps} (get_dirty_log 50%: {s.half_reps}) direct calls; every pass "
        "checked (fault/exit/flush/table counts, memory, bitmap, descriptors); noise = "
        "(median - best) / value",
        "  round-trip floor: the 'dirty fault' passes on raw Unicorn (bench/raw_unicorn.py "
        "RawFloor), interleaved with them in the same run; model tlb refill: cold minus warm "
        f"Unicorn TLB over {s.dirty_pages} pages the model TLB holds ("
        f"{'native fill mirror' if emu_native.AVAILABLE else 'Python fill hook'})",
    ]


def _seed(rep: int) -> int:
    return (0x1234_5678 + 0x9E37_79B9 * rep) & MASK32


def _spread(times: list[float]) -> float:
    return statistics.median(times) / min(times) - 1


def _fault_cost(with_faults: list[float], without: list[float], n: int) -> tuple[float, float]:
    """(us per fault, noise): best pass with faults minus best pass without, over n faults;
    noise = both sides' (median - best) relative to that difference."""
    diff = min(with_faults) - min(without)
    spread = (statistics.median(with_faults) - min(with_faults) +
              statistics.median(without) - min(without))
    return diff / n * 1e6, spread / diff if diff > 0 else float("inf")


def _scale_note(ctx: Context) -> tuple[float, str]:
    """Rows named per GiB / 1GiB: --quick measures a smaller slot and scales linearly."""
    size = ctx.sizes.big_slot
    if size == GIB:
        return 1.0, ""
    return GIB / size, f" [measured on {size >> 20} MiB, scaled x{GIB // size} to 1 GiB]"


@register_dirty("dirty fault", "round-trip floor", "dirty fault vs floor",
                "round-trip floor (raw calls)", "dirty fault via exit")
def dirty_fault(ctx: Context) -> list[Result]:
    n = ctx.sizes.dirty_pages
    b = LogBench(2 * n * PAGE, max_level=3)             # n stores to every other page
    bx = LogBench(2 * n * PAGE, max_level=3)            # ... every fault taken as an exit
    bx.m.vcpu.fast_faults = False
    floor = RawFloor(LOG_IPA, 2 * n * PAGE)              # the same stores on raw Unicorn
    raw_floor = RawFloor(LOG_IPA, 2 * n * PAGE, raw=True)   # ... through the library calls
    want_bitmap = np.zeros(b.slot.npages, dtype=bool)
    want_bitmap[::2] = True
    for bench in (b, bx):
        dirty.enable_logging(bench.vm, bench.slot)
        bench.check_pages("after enable_logging")
    times: dict[str, list[float]] = {k: [] for k in ("f", "w", "xf", "xw", "ff", "fw", "rf",
                                                      "rw")}
    fills = (0, 0)

    def floors(seed: int) -> list[float]:
        return [*floor.passes(n, 2 * PAGE, seed), *raw_floor.passes(n, 2 * PAGE, seed)]

    for rep in range(ctx.sizes.reps + 1):
        seed = _seed(rep)
        got = {}
        if rep % 2:                                      # interleaved, alternating order
            got.update(zip(("ff", "fw", "rf", "rw"), floors(seed)))
        got["f"], got["w"], ca, cb = _dirty_pass(b, n, seed, want_bitmap, in_place=n)
        got["xf"], got["xw"], _, _ = _dirty_pass(bx, n, seed, want_bitmap, in_place=0)
        if rep % 2 == 0:
            got.update(zip(("ff", "fw", "rf", "rw"), floors(seed)))
        if rep:
            for k, v in got.items():
                times[k].append(v)
            fills = (ca["fills"], cb["fills"])
    us, noise = _fault_cost(times["f"], times["w"], n)
    exit_us, exit_noise = _fault_cost(times["xf"], times["xw"], n)
    floor_us, floor_noise = _fault_cost(times["ff"], times["fw"], n)
    raw_us, raw_noise = _fault_cost(times["rf"], times["rw"], n)

    def per(k: str) -> str:
        return f"{min(times[k]) / n * 1e6:.1f}"
    note = (f"{n} stores, one to every other page of a {b.slot.size >> 20} MiB 4K-mapped "
            f"logging slot, minus the same pass on writable pages: {per('f')} vs {per('w')} "
            f"us/store ({fills[0]} vs {fills[1]} Python TLB fills); resolved in the fill path "
            f"(hyp.abort.resolve_in_place, KVM's fast_page_fault): 0 emu_start round trips, "
            f"0 flushes per fault")
    floor_note = (f"the same {n} stores on raw Unicorn (virtual TLB, a Python fill hook through "
                  f"the same binding) denied, emu_start raises, Python marks the page writable "
                  f"and resumes at PC; minus the pass on writable pages: "
                  f"{per('ff')} vs {per('fw')} us/store")
    return [Result("dirty fault", round(us, 3), "us", "<= 10", note=note, noise=noise),
            Result("dirty fault via exit", round(exit_us, 3), "us", None,
                   note=f"the same, every fault an exit (Vcpu.fast_faults off: what a tracer "
                        f"or gdb attached gets): {per('xf')} vs {per('xw')} us/store; "
                        f"{exit_us / floor_us:.2f}x the round-trip floor",
                   noise=exit_noise),
            Result("round-trip floor", round(floor_us, 3), "us", None, note=floor_note,
                   noise=floor_noise),
            Result("dirty fault vs floor", round(us / floor_us, 3), "x", "<= 3",
                   note=f"dirty fault {us:.1f} us / round-trip floor {floor_us:.1f} us, "
                        f"measured in the same run, interleaved (via exit: "
                        f"{exit_us / floor_us:.2f}x; {us / raw_us:.2f}x and "
                        f"{exit_us / raw_us:.2f}x the floor through raw library calls, "
                        f"{raw_us:.1f} us)",
                   noise=noise + floor_noise),
            Result("round-trip floor (raw calls)", round(raw_us, 3), "us", None,
                   note="the same floor through the library as emu.cpu calls it: "
                        "uc_hook_add of a ctypes fill callback, uc_emu_start's status, "
                        "uc_reg_read (the least a Python hypervisor on Unicorn pays): "
                        f"{per('rf')} vs {per('rw')} us/store",
                   noise=raw_noise)]


def _dirty_pass(b: LogBench, n: int, seed: int, want_bitmap: np.ndarray,
                in_place: int) -> tuple[float, float, dict, dict]:
    """One checked rep on `b`: the pass whose n stores each fault once (`in_place` of them
    resolved in the fill path), the same pass on the now writable pages from a cold TLB, and
    get_dirty_log (exactly the n pages, one flush). Returns both times and both counts."""
    dt_a, ca = b.touch(LOG_IPA, n, 2 * PAGE, seed)
    b.expect("dirty pass", ca, dirty=n, perm=n, trans=0, other=0, denied=n, exits=n + 1,
             flushes=0, tables=0, in_place=in_place)
    b.cold()
    dt_b, cb = b.touch(LOG_IPA, n, 2 * PAGE, seed ^ 0xFFFF)
    b.expect("writable pass", cb, dirty=0, perm=0, trans=0, other=0, denied=0, exits=1,
             flushes=0, tables=0, in_place=0)
    b.check_pages("after the dirty pass", want_bitmap)
    f0 = b.counts()["flushes"]
    bitmap = dirty.get_dirty_log(b.vm, b.slot)          # re-protects exactly those pages
    if not np.array_equal(bitmap, want_bitmap):
        raise BenchError(f"dirty bitmap has {int(bitmap.sum())} pages, expected exactly "
                         f"the {n} the guest stored to")
    b.expect("get_dirty_log", b.counts(), flushes=f0 + 1)
    b.check_pages("after get_dirty_log")
    return dt_a, dt_b, ca, cb


@register_dirty("model tlb refill")
def model_tlb_refill(ctx: Context) -> list[Result]:
    """A load from each of n pages of a writable slot after Unicorn's TLB was flushed while the
    model TLB still holds every page, minus the same pass with Unicorn's TLB warm; per page."""
    n = ctx.sizes.dirty_pages
    b = LogBench(max(BLOCK, n * PAGE), max_level=2)      # writable, no logging
    cpu, tlb = b.m.cpu, b.m.host.tlb
    native = emu_native.AVAILABLE

    def fills() -> tuple[int, int, int]:               # Python's, the mirror's, model inserts
        return cpu.stats["fills"], cpu.native_fills, tlb.stats["fill"]
    for _ in range(12):               # until Unicorn's TLB has grown to hold the whole sweep
        f0 = fills()
        b.peek(LOG_IPA, n, PAGE, 0)
        if fills() == f0:
            break
    else:
        raise BenchError(f"model tlb refill: Unicorn's TLB never held {n} pages")
    cold, warm = [], []
    for rep in range(ctx.sizes.reps + 1):
        seed = _seed(rep)
        cpu.flush_unicorn_tlb()                          # Unicorn's TLB only
        f0 = fills()
        dt_c, c = b.peek(LOG_IPA, n, PAGE, seed)
        b.expect("cold pass", c, exits=1, denied=0, dirty=0, perm=0, trans=0, other=0)
        py, nat, inserts = (x - y for x, y in zip(fills(), f0))
        if inserts or not n <= py + nat <= n + 2 or (native and py) or (not native and nat):
            raise BenchError(f"cold pass: {py} Python fills, {nat} native fills, {inserts} new "
                             f"model TLB entries (expected {n}-{n + 2} "
                             f"{'native' if native else 'Python'} fills, no new entry)")
        f0 = fills()
        dt_w, c = b.peek(LOG_IPA, n, PAGE, seed ^ 0xFFFF)
        b.expect("warm pass", c, exits=1, denied=0)
        if fills() != f0:
            raise BenchError(f"warm pass refilled: {[x - y for x, y in zip(fills(), f0)]}")
        if rep:
            cold.append(dt_c)
            warm.append(dt_w)
    us, noise = _fault_cost(cold, warm, n)
    how = ("served by the native fill mirror (no Python)" if native else
           "through the Python fill hook: MMU.fill hits the model TLB (S2EMU_NATIVE=0 or "
           "emu/native not built)")
    note = (f"{n} loads, one per page, after cpu.flush_unicorn_tlb() (the model TLB keeps every "
            f"page) minus the same pass with Unicorn's TLB warm: {min(cold) / n * 1e6:.3f} vs "
            f"{min(warm) / n * 1e6:.3f} us/load; refills {how}")
    return [Result("model tlb refill", round(us, 3), "us", "<= 0.5", note=note, noise=noise)]


def _big_4k(ctx: Context) -> LogBench:
    return ctx.get("1 GiB-row slot mapped by 4 KiB pages",
                    lambda: LogBench(ctx.sizes.big_slot, max_level=3))


def _big_2m(ctx: Context, split: str) -> LogBench:
    return ctx.get(f"1 GiB-row slot mapped by 2 MiB blocks ({split} split)",
                    lambda: LogBench(ctx.sizes.big_slot, max_level=2, split=split))


@register_dirty("enable logging 4K per GiB", "enable logging 2M per GiB")
def enable_rows(ctx: Context) -> list[Result]:
    scale, scaled = _scale_note(ctx)
    out = []
    for name, b, leaves in (("enable logging 4K per GiB", _big_4k(ctx), "pages"),
                            ("enable logging 2M per GiB", _big_2m(ctx, "lazy"), "blocks")):
        vm, slot = b.vm, b.slot
        nleaves = slot.npages if leaves == "pages" else slot.size // BLOCK
        times = []
        for rep in range(ctx.sizes.log_reps):
            if slot.log_dirty:
                dirty.disable_logging(vm, slot)
            vm.stage2.set_prot(slot.ipa, slot.end, add=Prot.W)    # back to all writable
            if rep == 0:
                if leaves == "pages":
                    b.check_pages("before enable_logging", np.ones(slot.npages, dtype=bool))
                else:
                    b.check_blocks("before enable_logging", True)
            before = b.counts()
            dt, _ = timed(lambda: dirty.enable_logging(vm, slot))
            times.append(dt)
            b.expect("enable_logging", b.counts(), flushes=before["flushes"] + 1,
                     tables=before["tables"])
            if leaves == "pages":
                b.check_pages("after enable_logging")
            else:
                b.check_blocks("after enable_logging", False)
            if slot.dirty.any():
                raise BenchError("enable_logging left dirty bits set")
        dirty.disable_logging(vm, slot)
        vm.stage2.set_prot(slot.ipa, slot.end, add=Prot.W)
        ms = min(times) * 1e3 * scale
        out.append(Result(name, round(ms, 3), "ms", "<= 10",
                          note=f"{nleaves} {leaves} write-protected + 1 VMID flush "
                               f"({min(times) / nleaves * 1e9:.0f} ns/{leaves[:-1]}), lazy "
                               f"split, best of {len(times)}{scaled}",
                          noise=_spread(times)))
    return out


@register_dirty("get_dirty_log 1GiB 1%", "get_dirty_log 1GiB 50%")
def get_dirty_log_rows(ctx: Context) -> list[Result]:
    scale, scaled = _scale_note(ctx)
    b = _big_4k(ctx)
    vm, slot = b.vm, b.slot
    if not slot.log_dirty:
        dirty.enable_logging(vm, slot)
    dirty.get_dirty_log(vm, slot)                  # start from a clean, fully protected slot
    b.check_pages("before dirtying")
    out = []
    for pct, target, reps in ((1, "<= 5", ctx.sizes.log_reps), (50, "<= 50", ctx.sizes.half_reps)):
        k = slot.npages * pct // 100
        times = []
        for rep in range(reps):
            rng = np.random.default_rng(0xD1 + 1000 * pct + rep)
            pages = np.sort(rng.choice(slot.npages, k, replace=False))
            want = np.zeros(slot.npages, dtype=bool)
            want[pages] = True
            # What hyp.abort does on a write fault to a logging slot, page by page (untimed).
            for gfn in pages.tolist():
                dirty.mark_dirty(vm, slot, gfn)
                vm.map_fault(slot, slot.ipa + gfn * PAGE, writable=True)
            if rep == 0:
                b.check_pages("after dirtying", want)
            before = b.counts()
            dt, bitmap = timed(lambda: dirty.get_dirty_log(vm, slot))
            times.append(dt)
            if not np.array_equal(bitmap, want):
                raise BenchError(f"get_dirty_log {pct}%: bitmap has {int(bitmap.sum())} pages "
                                 f"({int((bitmap != want).sum())} differ from the {k} dirtied)")
            b.expect(f"get_dirty_log {pct}%", b.counts(), flushes=before["flushes"] + 1,
                     tables=before["tables"])
            if slot.dirty.any():
                raise BenchError("get_dirty_log left dirty bits set")
            b.check_pages(f"after get_dirty_log {pct}%")      # exactly those re-protected
        ms = min(times) * 1e3 * scale
        out.append(Result(f"get_dirty_log 1GiB {pct}%", round(ms, 3), "ms", target,
                          note=f"{k} of {slot.npages} pages dirty (random), taken, cleared and "
                               f"re-protected + 1 VMID flush; best of {len(times)}{scaled}",
                          noise=_spread(times)))
    return out


@register_dirty("eager split 1GiB at enable")
def eager_split_row(ctx: Context) -> list[Result]:
    scale, scaled = _scale_note(ctx)
    b = _big_2m(ctx, "eager")
    vm, slot = b.vm, b.slot
    nblocks = slot.size // BLOCK
    times, flushes = [], 0
    b.check_blocks("before enable_logging", True)
    for rep in range(ctx.sizes.log_reps):
        before, splits = b.counts(), vm.stats["eager splits"]
        dt, _ = timed(lambda: dirty.enable_logging(vm, slot))
        times.append(dt)
        after = b.counts()
        flushes = after["flushes"] - before["flushes"]
        check_eq("eager splits", vm.stats["eager splits"] - splits, nblocks)
        b.expect("eager enable_logging", after, tables=before["tables"] + nblocks)
        b.check_pages("after eager enable_logging")
        dirty.disable_logging(vm, slot)
        check_eq("rebuilt blocks", dirty.rebuild_huge(vm, slot), nblocks)
        b.expect("rebuild_huge", b.counts(), tables=b.tables0)
        b.check_blocks("after rebuild_huge", True)
    ms = min(times) * 1e3 * scale
    return [Result("eager split 1GiB at enable", round(ms, 3), "ms", None,
                   note=f"enable_logging, split='eager': {nblocks} blocks -> {nblocks} level-3 "
                        f"tables of write-protected pages ({min(times) / nblocks * 1e6:.1f} "
                        f"us/block), {flushes} VMID flushes (one break-before-make per table "
                        f"of blocks + the final one); best of {len(times)}{scaled}",
                   noise=_spread(times))]


@register_dirty("lazy dissolve per block", "dirty 2M block lazy", "dirty 2M block eager",
                "read 2M block after 1st write lazy", "read 2M block after 1st write eager")
def policy_rows(ctx: Context) -> list[Result]:
    """The split policies on a guest: (A) write every page of K blocks, (B) write one page of
    each of N blocks (lazy: dissolve), (C) after B, read every page of K blocks."""
    nblocks, k = ctx.sizes.blocks, ctx.sizes.block_sweep
    kp = k * 512
    res: dict[str, dict[str, tuple[float, float]]] = {}
    notes: dict[str, dict[str, dict[str, int]]] = {}
    for split in ("lazy", "eager"):
        b = LogBench(nblocks * BLOCK, max_level=2, split=split)
        vm, slot = b.vm, b.slot
        lazy = split == "lazy"
        every_page = np.zeros(slot.npages, dtype=bool)
        every_page[:kp] = True
        first_pages = np.zeros(slot.npages, dtype=bool)
        first_pages[::512] = True

        def arm() -> None:
            splits = vm.stats["eager splits"]
            dirty.enable_logging(vm, slot)
            check_eq("eager splits", vm.stats["eager splits"] - splits, 0 if lazy else nblocks)

        def rearm(want: np.ndarray, dissolved: int) -> None:
            """Harvest, stop logging, rebuild the blocks that became tables, log again."""
            bitmap = dirty.get_dirty_log(vm, slot)
            if not np.array_equal(bitmap, want):
                raise BenchError(f"{split}: dirty bitmap has {int(bitmap.sum())} pages, "
                                 f"expected {int(want.sum())}")
            dirty.disable_logging(vm, slot)
            check_eq("rebuilt blocks", dirty.rebuild_huge(vm, slot), dissolved)
            b.expect("rebuild_huge", b.counts(), tables=b.tables0)
            # rebuilt blocks are writable; blocks never split stay write-protected
            b.check_blocks("after rebuild_huge", np.arange(nblocks) < dissolved)
            arm()

        arm()
        times: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in "ABC"}
        counts: dict[str, dict[str, int]] = {}
        for rep in range(ctx.sizes.policy_reps + 1):
            seed = _seed(rep)
            # A: write every page of the first k blocks.
            dt_a, ca = b.touch(LOG_IPA, kp, PAGE, seed)
            b.expect(f"{split} A", ca, dirty=kp, perm=k if lazy else kp,
                     trans=kp - k if lazy else 0, other=0, flushes=k if lazy else 0,
                     tables=k if lazy else 0)
            b.cold()
            dt_b, cb = b.touch(LOG_IPA, kp, PAGE, seed ^ 0xFFFF)
            b.expect(f"{split} A writable", cb, exits=1, denied=0)
            counts["A"] = ca
            rearm(every_page, k if lazy else nblocks)
            times["A"][0].append(dt_a)
            times["A"][1].append(dt_b)
            # B: write the first page of every block.
            dt_a, ca = b.touch(LOG_IPA, nblocks, BLOCK, seed)
            b.expect(f"{split} B", ca, dirty=nblocks, perm=nblocks, trans=0, other=0,
                     flushes=nblocks if lazy else 0, tables=nblocks if lazy else 0)
            b.cold()
            dt_b, cb = b.touch(LOG_IPA, nblocks, BLOCK, seed ^ 0xFFFF)
            b.expect(f"{split} B writable", cb, exits=1, denied=0)
            counts["B"] = ca
            times["B"][0].append(dt_a)
            times["B"][1].append(dt_b)
            # C: then read every page of the first k blocks.
            b.cold()
            dt_a, ca = b.peek(LOG_IPA, kp, PAGE, seed)
            b.expect(f"{split} C", ca, dirty=0, perm=0, trans=kp - k if lazy else 0, other=0,
                     flushes=0, tables=0)
            b.cold()
            dt_b, cb = b.peek(LOG_IPA, kp, PAGE, seed)
            b.expect(f"{split} C again", cb, exits=1, denied=0)
            counts["C"] = ca
            times["C"][0].append(dt_a)
            times["C"][1].append(dt_b)
            rearm(first_pages, nblocks)
            if rep == 0:                                   # warm-up
                times = {p: ([], []) for p in "ABC"}
        res[split] = {p: _fault_cost(t[0], t[1], 1) for p, t in times.items()}
        notes[split] = counts
        del b

    def per(split: str, p: str, n: int) -> tuple[float, float]:
        us, noise = res[split][p]
        return us / n, noise

    def faults(split: str, p: str, n: int) -> str:
        c = notes[split][p]
        return (f"{c['perm'] / n:g} permission + {c['trans'] / n:g} translation faults, "
                f"VMID flushes {c['flushes'] / n:g}, new table pages {c['tables'] / n:g}")

    out = []
    us, noise = per("lazy", "B", nblocks)
    eager_us, _ = per("eager", "B", nblocks)
    out.append(Result("lazy dissolve per block", round(us, 3), "us", None,
                      note=f"first write into each of {nblocks} write-protected 2 MiB blocks, "
                           f"guest end to end minus the writable pass: "
                           f"{faults('lazy', 'B', nblocks)} (eager: the same write is a plain "
                           f"dirty fault, {eager_us:.1f} us)",
                      noise=noise))
    for split in ("lazy", "eager"):
        us, noise = per(split, "A", k)
        extra = "" if split == "lazy" else \
            " (+ the block's split at enable: see 'eager split 1GiB at enable' / 512)"
        out.append(Result(f"dirty 2M block {split}", round(us / 1e3, 3), "ms", None,
                          note=f"write all 512 pages of {k} block(s), per block: "
                               f"{faults(split, 'A', k)}{extra}", noise=noise))
    for split in ("lazy", "eager"):
        us, noise = per(split, "C", k)
        out.append(Result(f"read 2M block after 1st write {split}", round(us / 1e3, 3), "ms", None,
                          note=f"read all 512 pages of {k} block(s) after one write into each, "
                               f"per block: {faults(split, 'C', k)}", noise=noise))
    return out


