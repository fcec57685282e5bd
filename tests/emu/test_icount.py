"""Exact instruction counts: the native block hook (emu.native.BlockHook, counting per
translation block) against Unicorn's own per-instruction counter (count=, the pure-Python
fallback) on every bundled guest - the same exits at the same PCs and instruction counts,
the same console and RAM - with free-running runs and with budgets that end in the middle of
blocks (ARM, Thumb with IT blocks, faults, SVC, MMIO)."""
import ctypes
import glob
import hashlib
import os
import struct

import pytest

from unicorn import UC_HOOK_CODE

from emu import native
from emu.icount import tail_stop
from emu.machine import Machine

from conftest import GUESTS
from snippet import CODE, Snippet, it_skipped, thumb

needs_native = pytest.mark.skipif(not native.AVAILABLE, reason="native fast path not built")
ELVES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(GUESTS, "*.elf")))
LIMIT = 1_000_000


def record(name, use_native, monkeypatch, slice_insns=5_000_000, limit=LIMIT):
    """Run a bundled guest; every exit as (kind, PC, instructions so far), and the end."""
    monkeypatch.setattr(native, "AVAILABLE", use_native)
    m = Machine()
    m.load(os.path.join(GUESTS, f"{name}.elf"))
    exits = []
    m.vcpu.observers.append(
        lambda kind, ex, outcome: exits.append((type(ex).__name__, ex.pc, m.cpu.progress))
        if kind == "exit" else None)
    result = m.vcpu.run(max_insns=limit, slice_insns=slice_insns)
    ram = m.host.mem.buf[m.ram.pa - m.host.mem.base:][:m.ram.size]
    return {"reason": result.reason, "steps": result.instructions, "exits": exits,
            "console": m.uart.text, "ram": hashlib.sha256(ram.tobytes()).hexdigest(),
            "regs": m.cpu.regs(), "native": m.cpu._native is not None}


# Unicorn's counter (count=) skips Thumb instructions inside an IT block whose condition
# fails: its counting hook is emitted after the condition's branch. They are architecturally
# executed (as NOPs) and QEMU's -icount counts them; the block hook does too. Guests whose
# counts differ for that reason only, checked by test_it_skipped_instructions_explain_*:
IT_SKIPS = {"thumb"}
# guests that store the virtual counter (CNTVCT follows the host clock): RAM differs per run
CLOCK_READERS = {"irq"}


def same(ours, theirs, name):
    keys = ["reason", "console", "regs"]
    keys += [] if name in CLOCK_READERS else ["ram"]
    keys += [] if name in IT_SKIPS else ["steps", "exits"]
    for key in keys:
        assert ours[key] == theirs[key], key


@needs_native
@pytest.mark.parametrize("name", ELVES)
def test_block_counts_equal_unicorns_counter(name, monkeypatch):
    ours = record(name, True, monkeypatch)
    theirs = record(name, False, monkeypatch)
    assert ours["native"] and not theirs["native"]
    assert ours["steps"] > 10_000
    same(ours, theirs, name)


def _hooked(cpu) -> list[int]:
    """Add a Python code hook: the addresses of the instructions Unicorn's hooks see."""
    seq: list[int] = []
    cpu.uc.hook_add(UC_HOOK_CODE, lambda uc, a, size, _: seq.append(a))
    cpu.flush_translations()
    return seq


@pytest.mark.parametrize("use_native", [pytest.param(True, marks=needs_native), False],
                         ids=["blocks", "unicorn-counter"])
def test_it_skipped_instructions_explain_the_thumb_difference(use_native, monkeypatch):
    """thumb guest: Unicorn's counter = the instructions its code hook saw; the block count
    = those plus the IT-block instructions whose condition failed."""
    monkeypatch.setattr(native, "AVAILABLE", use_native)
    m = Machine()
    m.load(os.path.join(GUESTS, "thumb.elf"))
    seq = _hooked(m.cpu)
    assert m.run(max_insns=LIMIT).reason == "off"
    n = it_skipped(seq, m.cpu.read_code)
    assert n > 100
    assert m.cpu.instructions == len(seq) + (n if use_native else 0)


@needs_native
@pytest.mark.parametrize("name,slice_insns", [("hello", 13), ("faults", 29), ("mmu", 997),
                                              ("irq", 101), ("counter", 7)])
def test_budgets_stop_where_count_stops(name, slice_insns, monkeypatch):
    """Slices that end inside blocks (and inside IT blocks): every slice ends at the same PC
    with the same count as Unicorn's count=, so the whole run is identical."""
    limit = 400_000
    ours = record(name, True, monkeypatch, slice_insns, limit)
    theirs = record(name, False, monkeypatch, slice_insns, limit)
    same(ours, theirs, name)


def test_thumb_guest_counts_the_same_with_any_slice(monkeypatch):
    """README used to list this as a limitation: slices ending inside IT blocks changed the
    count. Now every slice size gives the free-running count (on both paths)."""
    free = record("thumb", native.AVAILABLE, monkeypatch)
    assert free["reason"] == "off"
    for n in (1, 3, 5, 97):
        sliced = record("thumb", native.AVAILABLE, monkeypatch, n)
        assert sliced["steps"] == free["steps"] and sliced["console"] == free["console"]


# ---- budgets one by one against count=, on a Thumb snippet with IT blocks -----------------
# movs r0,#0; cmp r0,#0; ittt eq; addeq r0,#1; addeq r0,#2; addeq r0,#4; add.w r1,r0,#1;
# it eq; moveq r2,#9; adds r3,#1; b .   (an IT block, a 32-bit insn, a 1-insn IT block;
# every condition passes, so Unicorn's counter counts them all)
IT_CODE = thumb(0x2000, 0x2800, 0xBF02, 0x3001, 0x3002, 0x3004, 0xF100, 0x0101,
                0xBF08, 0x2209, 0x3301, 0xE7FE)


@needs_native
@pytest.mark.parametrize("budget", range(1, 12))
def test_thumb_budget_matches_count(budget, monkeypatch):
    got = []
    for use_native in (True, False):
        monkeypatch.setattr(native, "AVAILABLE", use_native)
        s = Snippet(IT_CODE, is_thumb=True)
        s.run(max_insns=budget)
        got.append((s.cpu.pc, s.cpu.instructions, [s.cpu.reg(i) for i in range(4)]))
    assert got[0] == got[1]
    assert got[0][1] >= budget


@needs_native
def test_failed_it_conditions_are_counted(monkeypatch):
    """ITTE EQ with EQ true: the ADDNE does not pass and still counts (architecturally
    executed, as QEMU's -icount counts it)."""
    code = thumb(0x2000, 0x2800, 0xBF06, 0x3001, 0x3002, 0x3004, 0xE7FE)
    s = Snippet(code, is_thumb=True)
    s.run(max_insns=6)
    assert (s.cpu.pc, s.cpu.instructions, s.cpu.reg(0)) == (CODE + 12, 6, 3)


def test_tail_stop_never_splits_an_it_block():
    code = IT_CODE[:22]
    # instructions: 0 movs,1 cmp,2 itte,3-5 in the IT block,6 add.w (4 bytes),7 it,8 movne,9
    assert tail_stop(code, CODE, True, 0, 2) == CODE + 4        # before the ITTE
    assert tail_stop(code, CODE, True, 0, 3) == CODE + 12       # inside: after the block
    assert tail_stop(code, CODE, True, 0, 5) == CODE + 12
    assert tail_stop(code, CODE, True, 0, 6) == CODE + 12       # before add.w
    assert tail_stop(code, CODE, True, 0, 7) == CODE + 16       # before IT NE
    assert tail_stop(code, CODE, True, 0, 8) == CODE + 20       # inside: after movne
    assert tail_stop(code, CODE, True, 0, 10) is None           # past the code
    # starting inside an IT block (CPSR.IT = EQ, two more): no stop before both ran
    itstate = 0x0C                                  # firstcond 0000, mask 1100
    cpsr = (itstate >> 2) << 10 | (itstate & 3) << 25
    assert tail_stop(code[6:], CODE, True, cpsr, 1) == CODE + 4
    assert tail_stop(struct.pack("<3I", 0, 0, 0), CODE, False, 0, 2) == CODE + 8


# ---- where the register file is: a known layout is only used once checked -----------------
def test_the_known_register_file_layout_is_what_calibration_finds():
    import platform

    import unicorn

    from emu import icount
    known = icount._KNOWN_ENV.get((unicorn.__version__, platform.machine()))
    if known is None:
        pytest.skip("no known layout for this Unicorn: calibration is used")
    assert icount._calibrate_env() == known


@pytest.mark.parametrize("layout", [
    pytest.param((8, 0, 544), id="pointer-elsewhere"),
    pytest.param((4090, 0, 0), id="outside-uc_struct"),
])
def test_a_wrong_known_layout_falls_back_to_calibration(layout, monkeypatch):
    import platform

    import unicorn
    from unicorn import UC_ARCH_ARM, UC_MODE_ARM, Uc
    from unicorn.arm_const import UC_ARM_REG_R3

    from emu import icount
    monkeypatch.setattr(icount, "_ENV", None)
    monkeypatch.setattr(icount, "_KNOWN_ENV", {(unicorn.__version__, platform.machine()): layout})
    uc = Uc(UC_ARCH_ARM, UC_MODE_ARM)
    uc.reg_write(UC_ARM_REG_R3, 0xC0FF_EE03)
    env, _thumb = icount.env_address(uc)
    assert icount._ENV == icount._calibrate_env() != layout
    assert struct.unpack("<I", ctypes.string_at(env + 12, 4))[0] == 0xC0FF_EE03
