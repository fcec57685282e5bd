"""decode_access against Unicorn: each row runs once in a fresh Unicorn that records its accesses.

Ground truth for addr/length/size/write is what Unicorn (QEMU TCG) actually accesses; isv, rt,
sign_extend and il32 are written by hand per row (il32 by section: A32 and T32 True, T16 False).
The ISV column follows QEMU 7.2: single LDR/STR family, no writeback, Rt != PC; the T32
unprivileged forms (LDRT...) have no writeback and so report ISV=1, the A32 ones do not.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from unicorn import (UC_ARCH_ARM, UC_HOOK_MEM_READ, UC_HOOK_MEM_UNMAPPED, UC_HOOK_MEM_WRITE,
                     UC_MEM_WRITE, UC_MODE_ARM, UC_MODE_THUMB, Uc, UcError)
from unicorn import arm_const as U

from emu.decode import DecodeError, decode_access, fault_address
from hyp.arch.syndrome import AccessInfo

CODE = 0x7654_3000                  # the code page, far from every address the rows touch
TOP_PAGE = 0xFFFF_F000              # Unicorn cannot map the last page of the 32-bit space
REGS = {n: 0x4000_0800 + 0x1000 * n for n in range(15)}    # r0..r14 unless a row overrides
UC_REGS = [getattr(U, f"UC_ARM_REG_R{n}") for n in range(13)] + [U.UC_ARM_REG_SP,
                                                                  U.UC_ARM_REG_LR]
CPSR_C = 1 << 29


def encode(word: int, thumb: bool) -> bytes:
    """A32 word, T16 halfword, or T32 hw1:hw2 (as objdump prints them) to instruction bytes."""
    if thumb and word > 0xFFFF:
        return (word >> 16).to_bytes(2, "little") + (word & 0xFFFF).to_bytes(2, "little")
    return word.to_bytes(4 if not thumb else 2, "little")


def _map_page(uc: Uc, kind: int, addr: int, size: int, value: int, data: object) -> bool:
    if addr & ~0xFFF == TOP_PAGE:
        return False
    uc.mem_map(addr & ~0xFFF, 0x1000)
    return True


def run(code: bytes, thumb: bool, pc: int, regs: dict[int, int], setup: bytes = b"",
        carry: bool = False) -> tuple[list[tuple[int, int, bool]], list[int], int]:
    """Execute `code` at `pc` once; the (address, size, write) accesses, r0..r14 and CPSR."""
    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB if thumb else UC_MODE_ARM)
    uc.ctl_set_page_size(4096)
    uc.mem_map(CODE, 0x1000)
    uc.mem_write(pc - len(setup), setup + code)
    uc.hook_add(UC_HOOK_MEM_UNMAPPED, _map_page)
    for n, value in regs.items():
        uc.reg_write(UC_REGS[n], value)
    uc.reg_write(U.UC_ARM_REG_C1_C0_2, 0xF << 20)           # CPACR: VFP (cp10, cp11) enabled
    uc.reg_write(U.UC_ARM_REG_FPEXC, 1 << 30)               # FPEXC.EN
    if carry:
        uc.reg_write(U.UC_ARM_REG_CPSR, uc.reg_read(U.UC_ARM_REG_CPSR) | CPSR_C)
    if setup:                                               # LDREX arms the monitor for STREX
        uc.emu_start((pc - len(setup)) | thumb, pc)
    before = [uc.reg_read(r) for r in UC_REGS]
    cpsr = uc.reg_read(U.UC_ARM_REG_CPSR)
    accesses: list[tuple[int, int, bool]] = []
    uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE,
                lambda uc, kind, addr, size, value, data:
                accesses.append((addr, size, kind == UC_MEM_WRITE)))
    uc.emu_start(pc | thumb, pc + len(code), count=1)
    return accesses, before, cpsr


def check_against(info: AccessInfo, accesses: list[tuple[int, int, bool]]) -> None:
    """addr/length/size/write agree with what Unicorn accessed.

    QEMU splits LDRD/STRD into two word accesses (size 8 is what the ISS means); STREX is a
    compare-and-swap, so it also reads the location it writes.
    """
    assert accesses, "the instruction accessed no memory"
    lo = min(addr for addr, _, _ in accesses)
    hi = max(addr + size for addr, size, _ in accesses)
    assert (info.addr, info.length) == (lo, hi - lo)
    assert info.write == any(write for _, _, write in accesses)
    split = 2 if info.mnemonic in ("ldrd", "strd") else 1
    assert {size for _, size, _ in accesses} == {info.size // split}


def decode_run(code: bytes, thumb: bool, pc: int, regs: dict[int, int], setup: bytes = b"",
               carry: bool = False) -> tuple[AccessInfo, list[tuple[int, int, bool]]]:
    accesses, before, cpsr = run(code, thumb, pc, regs, setup, carry)
    return decode_access(code, pc, thumb, before.__getitem__, cpsr=cpsr), accesses


def _row(word: int, asm: str, isv: int, rt: int, *, il32: bool, thumb: bool, sse: int = 0,
         regs: dict[int, int] | None = None, setup: int | None = None, pc: int = 0x100,
         carry: int = 0) -> object:
    kind = "A32" if not thumb else "T32" if il32 else "T16"
    return pytest.param(encode(word, thumb), thumb, CODE + pc, {**REGS, **(regs or {})},
                        b"" if setup is None else encode(setup, thumb), bool(carry),
                        (bool(isv), rt, bool(sse), il32), id=f"{kind} {asm}")


def a32(*args: object, **kw: object) -> object:
    return _row(*args, il32=True, thumb=False, **kw)


def t16(*args: object, **kw: object) -> object:
    return _row(*args, il32=False, thumb=True, **kw)


def t32(*args: object, **kw: object) -> object:
    return _row(*args, il32=True, thumb=True, **kw)


# word (objdump order), asm, ISV, Rt [, sign-extends, register overrides, setup, pc offset]
ROWS = [
    # A32
    a32(0xE5910000, "ldr r0, [r1]", 1, 0),
    a32(0xE5910004, "ldr r0, [r1, #4]", 1, 0),
    a32(0xE5110004, "ldr r0, [r1, #-4]", 1, 0),
    a32(0xE5B10004, "ldr r0, [r1, #4]!", 0, 0),
    a32(0xE4910004, "ldr r0, [r1], #4", 0, 0),
    a32(0xE4110004, "ldr r0, [r1], #-4", 0, 0),
    a32(0xE7910002, "ldr r0, [r1, r2]", 1, 0, regs={2: 0x24}),
    a32(0xE7110002, "ldr r0, [r1, -r2]", 1, 0, regs={2: 0x24}),
    a32(0xE7910102, "ldr r0, [r1, r2, lsl #2]", 1, 0, regs={2: 0x24}),
    a32(0xE71101C2, "ldr r0, [r1, -r2, asr #3]", 1, 0, regs={2: 0xFFFFFF00}),
    a32(0xE7910022, "ldr r0, [r1, r2, lsr #32]", 1, 0, regs={2: 0x80000000}),
    a32(0xE7910262, "ldr r0, [r1, r2, ror #4]", 1, 0, regs={2: 0x101}),
    a32(0xE7910062, "ldr r0, [r1, r2, rrx]", 1, 0, regs={2: 0x20}, carry=1),
    a32(0xE7B10002, "ldr r0, [r1, r2]!", 0, 0, regs={2: 0x24}),
    a32(0xE6110182, "ldr r0, [r1], -r2, lsl #3", 0, 0, regs={2: 0x24}),
    a32(0xE59F0008, "ldr r0, [pc, #8]", 1, 0),
    a32(0xE51F0008, "ldr r0, [pc, #-8]", 1, 0),
    a32(0xE591F004, "ldr pc, [r1, #4]", 0, 15),
    a32(0xE581C008, "str r12, [r1, #8]", 1, 12),
    a32(0xE5413001, "strb r3, [r1, #-1]", 1, 3),
    a32(0xE6C13002, "strb r3, [r1], r2", 0, 3, regs={2: 0x24}),
    a32(0xE7D14002, "ldrb r4, [r1, r2]", 1, 4, regs={2: 0x24}),
    a32(0xE1D150D3, "ldrsb r5, [r1, #3]", 1, 5, sse=1),
    a32(0xE15160B2, "ldrh r6, [r1, #-2]", 1, 6),
    a32(0xE11170F2, "ldrsh r7, [r1, -r2]", 1, 7, sse=1, regs={2: 0x24}),
    a32(0xE0C180B2, "strh r8, [r1], #2", 0, 8),
    a32(0xE18190B2, "strh r9, [r1, r2]", 1, 9, regs={2: 0x24}),
    a32(0xE17100F2, "ldrsh r0, [r1, #-2]!", 0, 0, sse=1),
    a32(0xE15F00B4, "ldrh r0, [pc, #-4]", 1, 0),
    a32(0xE1C200D8, "ldrd r0, r1, [r2, #8]", 0, 0),
    a32(0xE10120D4, "ldrd r2, r3, [r1, -r4]", 0, 2, regs={4: 0x24}),
    a32(0xE04140F8, "strd r4, r5, [r1], #-8", 0, 4),
    a32(0xE16140F8, "strd r4, r5, [r1, #-8]!", 0, 4),
    a32(0xE14F01D0, "ldrd r0, r1, [pc, #-16]", 0, 0),
    a32(0xE4B10004, "ldrt r0, [r1], #4", 0, 0),
    a32(0xE6610002, "strbt r0, [r1], -r2", 0, 0, regs={2: 0x24}),
    a32(0xE07100F2, "ldrsht r0, [r1], #-2", 0, 0, sse=1),
    a32(0xE0E100B2, "strht r0, [r1], #2", 0, 0),
    a32(0xE1910F9F, "ldrex r0, [r1]", 0, 0),
    a32(0xE1D10F9F, "ldrexb r0, [r1]", 0, 0),
    a32(0xE1F10F9F, "ldrexh r0, [r1]", 0, 0),
    a32(0xE1B12F9F, "ldrexd r2, r3, [r1]", 0, 2),
    a32(0xE1812F90, "strex r2, r0, [r1]", 0, 0, setup=0xE1913F9F),
    a32(0xE1C12F90, "strexb r2, r0, [r1]", 0, 0, setup=0xE1D13F9F),
    a32(0xE1E12F90, "strexh r2, r0, [r1]", 0, 0, setup=0xE1F13F9F),
    a32(0xE1A16F92, "strexd r6, r2, r3, [r1]", 0, 2, setup=0xE1B14F9F),
    a32(0xE891003C, "ldm r1, {r2-r5}", 0, 2),
    a32(0xE9B1000C, "ldmib r1!, {r2, r3}", 0, 2),
    a32(0xE811001C, "ldmda r1, {r2-r4}", 0, 2),
    a32(0xE911000C, "ldmdb r1, {r2, r3}", 0, 2),
    a32(0xE8A1000C, "stmia r1!, {r2, r3}", 0, 2),
    a32(0xE9810011, "stmib r1, {r0, r4}", 0, 0),
    a32(0xE8210038, "stmda r1!, {r3-r5}", 0, 3),
    a32(0xE921007C, "stmdb r1!, {r2-r6}", 0, 2),
    a32(0xE92D4010, "push {r4, lr}", 0, 4),
    a32(0xE8BD0030, "pop {r4, r5}", 0, 4),
    a32(0xE8BD8010, "pop {r4, pc}", 0, 4),
    a32(0xE52D4004, "push {r4}", 0, 4),
    a32(0xE49D4004, "pop {r4}", 0, 4),
    a32(0xED910B02, "vldr d0, [r1, #8]", 0, 0),
    a32(0xED011A01, "vstr s2, [r1, #-4]", 0, 0),
    a32(0xED9F0A02, "vldr s0, [pc, #8]", 0, 0),
    a32(0xECB10B06, "vldmia r1!, {d0-d2}", 0, 0),
    a32(0xED210A04, "vstmdb r1!, {s0-s3}", 0, 0),
    a32(0xED2D8B04, "vpush {d8-d9}", 0, 0),
    a32(0xECBD0A02, "vpop {s0-s1}", 0, 0),
    # T16
    t16(0x6848, "ldr r0, [r1, #4]", 1, 0),
    t16(0x67CA, "str r2, [r1, #124]", 1, 2),
    t16(0x7FCB, "ldrb r3, [r1, #31]", 1, 3),
    t16(0x704C, "strb r4, [r1, #1]", 1, 4),
    t16(0x8FCD, "ldrh r5, [r1, #62]", 1, 5),
    t16(0x804E, "strh r6, [r1, #2]", 1, 6),
    t16(0x5888, "ldr r0, [r1, r2]", 1, 0, regs={2: 0x24}),
    t16(0x5088, "str r0, [r1, r2]", 1, 0, regs={2: 0x24}),
    t16(0x5C8F, "ldrb r7, [r1, r2]", 1, 7, regs={2: 0x24}),
    t16(0x548F, "strb r7, [r1, r2]", 1, 7, regs={2: 0x24}),
    t16(0x5A8B, "ldrh r3, [r1, r2]", 1, 3, regs={2: 0x24}),
    t16(0x528B, "strh r3, [r1, r2]", 1, 3, regs={2: 0x24}),
    t16(0x5688, "ldrsb r0, [r1, r2]", 1, 0, sse=1, regs={2: 0x24}),
    t16(0x5E88, "ldrsh r0, [r1, r2]", 1, 0, sse=1, regs={2: 0x24}),
    t16(0x4802, "ldr r0, [pc, #8]", 1, 0),
    t16(0x4802, "ldr r0, [pc, #8]", 1, 0, pc=0x102),         # Align(PC, 4) drops the 2
    t16(0x98FF, "ldr r0, [sp, #1020]", 1, 0),
    t16(0x9702, "str r7, [sp, #8]", 1, 7),
    t16(0xB510, "push {r4, lr}", 0, 4),
    t16(0xB500, "push {lr}", 0, 14),
    t16(0xBD10, "pop {r4, pc}", 0, 4),
    t16(0xBCFF, "pop {r0-r7}", 0, 0),
    t16(0xC90C, "ldm r1!, {r2, r3}", 0, 2),
    t16(0xC906, "ldm r1, {r1, r2}", 0, 1),
    t16(0xC11C, "stm r1!, {r2-r4}", 0, 2),
    # T32
    t32(0xF8D10004, "ldr.w r0, [r1, #4]", 1, 0),
    t32(0xF8D10FFF, "ldr.w r0, [r1, #4095]", 1, 0),
    t32(0xF8510C04, "ldr r0, [r1, #-4]", 1, 0),
    t32(0xF8510F04, "ldr r0, [r1, #4]!", 0, 0),
    t32(0xF8510904, "ldr r0, [r1], #-4", 0, 0),
    t32(0xF8510032, "ldr.w r0, [r1, r2, lsl #3]", 1, 0, regs={2: 0x24}),
    t32(0xF85F0008, "ldr.w r0, [pc, #-8]", 1, 0, pc=0x102),
    t32(0xF8DF0008, "ldr.w r0, [pc, #8]", 1, 0),
    t32(0xF8D1F004, "ldr.w pc, [r1, #4]", 0, 15),
    t32(0xF8C18008, "str.w r8, [r1, #8]", 1, 8),
    t32(0xF8019C01, "strb.w r9, [r1, #-1]", 1, 9),
    t32(0xF821A012, "strh.w r10, [r1, r2, lsl #1]", 1, 10, regs={2: 0x24}),
    t32(0xF891BFFF, "ldrb.w r11, [r1, #4095]", 1, 11),
    t32(0xF911CCFF, "ldrsb.w r12, [r1, #-255]", 1, 12, sse=1),
    t32(0xF8B1E002, "ldrh.w lr, [r1, #2]", 1, 14),
    t32(0xF9310D02, "ldrsh.w r0, [r1, #-2]!", 0, 0, sse=1),
    t32(0xF93F0002, "ldrsh.w r0, [pc, #-2]", 1, 0, sse=1),
    # the unprivileged T32 forms have no writeback, so QEMU reports ISV=1 (A32 LDRT writes back)
    t32(0xF8510E04, "ldrt r0, [r1, #4]", 1, 0),
    t32(0xF8010E04, "strbt r0, [r1, #4]", 1, 0),
    t32(0xF9310E06, "ldrsht r0, [r1, #6]", 1, 0, sse=1),
    t32(0xF8213E00, "strht r3, [r1]", 1, 3),
    t32(0xE9D20102, "ldrd r0, r1, [r2, #8]", 0, 0),
    t32(0xE8720102, "ldrd r0, r1, [r2], #-8", 0, 0),
    t32(0xE9620102, "strd r0, r1, [r2, #-8]!", 0, 0),
    t32(0xE9DF4502, "ldrd r4, r5, [pc, #8]", 0, 4, pc=0x102),
    t32(0xE8510F02, "ldrex r0, [r1, #8]", 0, 0),
    t32(0xE8410201, "strex r2, r0, [r1, #4]", 0, 0, setup=0xE8513F01),
    t32(0xE8D10F4F, "ldrexb r0, [r1]", 0, 0),
    t32(0xE8D10F5F, "ldrexh r0, [r1]", 0, 0),
    t32(0xE8C10F42, "strexb r2, r0, [r1]", 0, 0, setup=0xE8D13F4F),
    t32(0xE8C10F52, "strexh r2, r0, [r1]", 0, 0, setup=0xE8D13F5F),
    t32(0xE8D1237F, "ldrexd r2, r3, [r1]", 0, 2),
    t32(0xE8C12376, "strexd r6, r2, r3, [r1]", 0, 2, setup=0xE8D1457F),
    t32(0xE891001C, "ldm.w r1, {r2-r4}", 0, 2),
    t32(0xE931000C, "ldmdb r1!, {r2, r3}", 0, 2),
    t32(0xE921003C, "stmdb r1!, {r2-r5}", 0, 2),
    t32(0xE8A10104, "stm.w r1!, {r2, r8}", 0, 2),
    t32(0xE92D4FF0, "push.w {r4-r11, lr}", 0, 4),
    t32(0xE8BD0FF0, "pop.w {r4-r11}", 0, 4),
    t32(0xF84D4D04, "push.w {r4}", 0, 4),
    t32(0xF85D4B04, "pop.w {r4}", 0, 4),
    t32(0xE8D0F001, "tbb [r0, r1]", 0, 0, regs={1: 3}),
    t32(0xE8D0F011, "tbh [r0, r1, lsl #1]", 0, 0, regs={1: 3}),
    t32(0xE8DFF001, "tbb [pc, r1]", 0, 0, regs={1: 5}, pc=0x102),    # PC, not aligned
    t32(0xED910B02, "vldr d0, [r1, #8]", 0, 0),
    t32(0xED011B02, "vstr d1, [r1, #-8]", 0, 0),
    t32(0xED1F0A01, "vldr s0, [pc, #-4]", 0, 0, pc=0x102),
    t32(0xECA10B04, "vstmia r1!, {d0-d1}", 0, 0),
    t32(0xED2D8A04, "vpush {s16-s19}", 0, 0),
    t32(0xECBD8B02, "vpop {d8}", 0, 0),
]


@pytest.mark.parametrize("code, thumb, pc, regs, setup, carry, expect", ROWS)
def test_decode_matches_unicorn(code: bytes, thumb: bool, pc: int, regs: dict[int, int],
                                setup: bytes, carry: bool,
                                expect: tuple[bool, int, bool, bool]) -> None:
    info, accesses = decode_run(code, thumb, pc, regs, setup, carry)
    check_against(info, accesses)
    assert (info.isv, info.rt, info.sign_extend, info.il32) == expect


# Random base/offset registers for a few forms: every address is mod 2**32 (Unicorn, like
# QEMU, does not enforce LDM/LDRD alignment, so any base works).
FORMS = [
    pytest.param(0xE7110102, False, id="A32 ldr r0, [r1, -r2, lsl #2]"),
    pytest.param(0xE1A100B2, False, id="A32 strh r0, [r1, r2]!"),
    pytest.param(0xE6110062, False, id="A32 ldr r0, [r1], -r2, rrx"),
    pytest.param(0xE10140D2, False, id="A32 ldrd r4, r5, [r1, -r2]"),
    pytest.param(0xE911003C, False, id="A32 ldmdb r1, {r2-r5}"),
    pytest.param(0x5888, True, id="T16 ldr r0, [r1, r2]"),
    pytest.param(0xF8510032, True, id="T32 ldr.w r0, [r1, r2, lsl #3]"),
    pytest.param(0xE9612302, True, id="T32 strd r2, r3, [r1, #-8]!"),
]


@pytest.mark.parametrize("word, thumb", FORMS)
@settings(deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(base=st.integers(0, 0xFFFF_FFFF), offset=st.integers(0, 0xFFFF_FFFF), carry=st.booleans())
def test_decode_random_registers(word: int, thumb: bool, base: int, offset: int,
                                 carry: bool) -> None:
    code = encode(word, thumb)
    try:
        info, accesses = decode_run(code, thumb, CODE + 0x100, {**REGS, 1: base, 2: offset},
                                    carry=carry)
    except UcError:
        assume(False)   # the access reaches the last page, which Unicorn cannot map
    check_against(info, accesses)


NOT_MODELLED = "a memory access this decoder does not model"


@pytest.mark.parametrize("code, thumb, message", [
    pytest.param(encode(0xE0810002, False), False, "not a load", id="A32 add r0, r1, r2"),
    pytest.param(encode(0xE1400070, False), False, "not a load", id="A32 hvc #0"),
    pytest.param(encode(0x2001, True), True, "not a load", id="T16 movs r0, #1"),
    pytest.param(encode(0xF421070F, False), False, NOT_MODELLED, id="A32 vld1.8 {d0}, [r1]"),
    pytest.param(encode(0xED915E01, False), False, NOT_MODELLED, id="A32 ldc p14, c5, [r1, #4]"),
    pytest.param(b"\xff\xff\xff\xff", False, "undecodable", id="A32 bytes ffffffff"),
    pytest.param(b"\xd1\xf8", True, "undecodable", id="T32 ldr.w cut after hw1"),
])
def test_other_instructions_raise(code: bytes, thumb: bool, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_access(code, CODE, thumb, REGS.__getitem__)


def test_swp_is_decoded_by_its_read() -> None:
    """SWP r0, r1, [r2] (A8.8.229): the address is r2, a word, no valid ISS."""
    info = decode_access(encode(0xE1020091, False), CODE, False, REGS.__getitem__)
    assert (info.addr, info.size, info.write, info.isv, info.rt) == (REGS[2], 4, False, False, 0)


def test_rrx_offset_needs_cpsr() -> None:
    with pytest.raises(DecodeError, match="carry"):
        decode_access(encode(0xE7910062, False), CODE, False, REGS.__getitem__)  # [r1, r2, rrx]


@pytest.mark.parametrize("word, thumb, regs, lowest, length", [
    # ldr r0, [r1]: an unaligned word over the boundary
    pytest.param(0xE5910000, False, {1: 0x4000_0FFE}, 0x4000_0FFE, 4, id="A32 ldr r0, [r1]"),
    # push {r4-r7, lr} with SP just above the boundary: stores run downwards from SP
    pytest.param(0xB5F0, True, {13: 0x4000_1008}, 0x4000_0FF4, 20, id="T16 push {r4-r7, lr}"),
    # ldrd r4, r5, [r1, -r2]
    pytest.param(0xE10140D2, False, {1: 0x4000_1004, 2: 8}, 0x4000_0FFC, 8,
                 id="A32 ldrd r4, r5, [r1, -r2]"),
])
def test_page_crossing_access(word: int, thumb: bool, regs: dict[int, int], lowest: int,
                              length: int) -> None:
    code, regs = encode(word, thumb), {**REGS, **regs}
    info, accesses = decode_run(code, thumb, CODE + 0x100, regs)
    check_against(info, accesses)
    assert (info.addr, info.length) == (lowest, length)
    for page, far in ((0x4000_0000, lowest), (0x4000_1000, 0x4000_1000)):
        assert decode_access(code, CODE + 0x100, thumb, regs.__getitem__, fault_page=page) == info
        assert fault_address(info, page) == far
    with pytest.raises(DecodeError, match="not the faulting page"):
        decode_access(code, CODE + 0x100, thumb, regs.__getitem__, fault_page=0x4000_2000)
    with pytest.raises(ValueError, match="does not touch"):
        fault_address(info, 0x4000_2000)


def test_range_wrapping_past_4gib() -> None:
    # ldm r1, {r2-r5} from 0xfffffff8 reads 0xfffffff8..0xffffffff then 0x0..0x7
    regs = {**REGS, 1: 0xFFFF_FFF8}
    info = decode_access(encode(0xE891003C, False), CODE, False, regs.__getitem__, fault_page=0)
    assert (info.addr, info.length) == (0xFFFF_FFF8, 16)
    assert fault_address(info, 0) == 0
    assert fault_address(info, 0xFFFF_F000) == 0xFFFF_FFF8


# ---- the plain loads and stores are identified without capstone: exactly as capstone does ----
_A32_LDST = st.integers(0, (1 << 32) - 1).map(lambda w: (w & ~(3 << 26)) | (1 << 26))
_T16_LDST = st.one_of(st.integers(0x5000, 0x5FFF), st.integers(0x6000, 0x9FFF),
                      st.integers(0x4800, 0x4FFF))


def _by_capstone(code: bytes, thumb: bool):
    from emu.decode import _identify_cs
    size, op, raw, mnemonic, _text = _identify_cs(code, thumb)
    return size, op, raw, mnemonic


@settings(max_examples=3000, deadline=None)
@given(_A32_LDST)
def test_a32_loads_and_stores_are_identified_as_capstone_does(word):
    from emu.decode import _quick
    code = word.to_bytes(4, "little")
    quick = _quick(code, False)
    if quick is not None:
        assert quick[:4] == _by_capstone(code, False)


@settings(max_examples=3000, deadline=None)
@given(_T16_LDST)
def test_t16_loads_and_stores_are_identified_as_capstone_does(hw):
    from emu.decode import _quick
    code = hw.to_bytes(2, "little") + b"\x00\xbf"
    quick = _quick(code, True)
    if quick is not None:
        assert quick[:4] == _by_capstone(code, True)


@pytest.mark.parametrize("code, thumb, quick", [
    pytest.param(0xE5801000, False, True, id="str-r1-[r0]"),
    pytest.param(0x15D01000, False, True, id="ldrbne"),
    pytest.param(0xE4A01004, False, True, id="strt"),
    pytest.param(0xE52D1004, False, False, id="push-alias-via-capstone"),
    pytest.param(0xE7F000F0, False, False, id="udf-media-space"),
    pytest.param(0xF5D0F000, False, False, id="pld-unconditional"),
    pytest.param(0x6001, True, True, id="t16-str-imm"),
    pytest.param(0x5C08, True, True, id="t16-ldrb-reg"),
    pytest.param(0xB500, True, False, id="t16-push-via-capstone"),
])
def test_what_is_identified_without_capstone(code, thumb, quick):
    from emu.decode import _quick
    raw = code.to_bytes(2 if thumb else 4, "little") + (b"\x00\xbf" if thumb else b"")
    assert (_quick(raw, thumb) is not None) == quick
