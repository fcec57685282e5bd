"""Random guest code for test_fuzz_guest.py: A32 words and T32 halfwords, purely random or
drawn from the families a machine gets wrong (memory accesses at interesting addresses,
exclusives, CP15 traffic, exception-generating and exception-returning instructions, hints,
mode changes, VFP/NEON with the FPU off, IT blocks), plus the registers, vectors and layout of
one case. Everything comes from one `random.Random` (hypothesis' `st.randoms()` or a seeded
one), so case i of seed S is `make_case(random.Random(f"{S}:{i}"))`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from emu.machine import FLASH0, FLASH1, FLASH_SIZE, RAM_BASE, UART0

RAM_SIZE = 16 << 20
RAM_END = RAM_BASE + RAM_SIZE
VEC = RAM_BASE + 0x8000                     # default vector table (sane handlers)
MODES = (0x10, 0x11, 0x12, 0x13, 0x17, 0x1B, 0x1F)
PSCI = (0x84000000, 0x84000002, 0x84000008, 0x84000009, 0x8400000A, 0x86000001, 0x86000002,
        0x86000010, 0x84000001, 0xC4000003)
# p15 (CRn, opc1, CRm, opc2): the TVM-trapped VMSA registers, VBAR, caches/TLB/ATS ops,
# thread IDs, generic timer, PMU, ID registers and PL2-only Hyp registers (UNDEF at PL1).
P15 = ((1, 0, 0, 0), (1, 0, 0, 1), (1, 0, 0, 2), (2, 0, 0, 0), (2, 0, 0, 1), (2, 0, 0, 2),
       (3, 0, 0, 0), (5, 0, 0, 0), (5, 0, 0, 1), (5, 0, 1, 0), (5, 0, 1, 1), (6, 0, 0, 0),
       (6, 0, 0, 2), (7, 0, 5, 0), (7, 0, 5, 6), (7, 0, 10, 1), (7, 0, 8, 0), (7, 0, 8, 3),
       (7, 0, 4, 0), (8, 0, 7, 0), (8, 0, 7, 1), (8, 0, 3, 0), (10, 0, 2, 0), (10, 0, 2, 1),
       (10, 0, 3, 0), (12, 0, 0, 0), (12, 0, 0, 1), (12, 0, 1, 0), (13, 0, 0, 1), (13, 0, 0, 2),
       (13, 0, 0, 4), (14, 0, 0, 0), (14, 0, 1, 0), (14, 0, 2, 1), (14, 0, 3, 1), (9, 0, 12, 0),
       (0, 0, 0, 0), (0, 0, 0, 5), (0, 1, 0, 0), (0, 2, 0, 0), (1, 4, 1, 0), (1, 4, 0, 0),
       (12, 4, 0, 0), (2, 4, 1, 2), (5, 4, 2, 0), (6, 4, 0, 4), (6, 4, 0, 0), (1, 0, 1, 0),
       (1, 4, 1, 1), (1, 4, 1, 2))
P15_64 = ((0, 2), (1, 2), (0, 7), (2, 14), (3, 14), (4, 2), (6, 2), (4, 14))   # (opc1, CRm)
CLOCK_64 = ((0, 14), (1, 14))               # CNTPCT, CNTVCT: host clock (never generated)
SYSM = tuple(range(32))


def value(rng) -> int:
    """An interesting register value: RAM, flash, the UART, unmapped IPAs, the top of the
    4 GiB space, small numbers, PSCI IDs, anything."""
    k = rng.randrange(12)
    if k == 0:
        return RAM_BASE + rng.randrange(RAM_SIZE)
    if k == 1:
        return RAM_BASE + rng.randrange(0x10000) & ~rng.choice((0, 3))
    if k == 2:
        return RAM_END - rng.randrange(1, 0x40)
    if k == 3:
        return rng.choice((FLASH0, FLASH1)) + rng.randrange(FLASH_SIZE)
    if k == 4:
        return UART0 + rng.choice((0, 4, 0x18, 0xFE0, rng.randrange(0x1000)))
    if k == 5:
        return rng.choice((0x0800_0000, 0x0900_1000, RAM_END, 0x8000_0000, 0x3FFF_F000,
                           0xC000_0000)) + rng.randrange(0x2000)
    if k == 6:
        return 0xFFFF_FFFF - rng.randrange(0x40)
    if k == 7:
        return rng.randrange(64)
    if k == 8:
        return rng.choice(PSCI)
    return rng.getrandbits(32)


def reg(rng) -> int:
    return rng.randrange(16) if rng.random() < 0.2 else rng.randrange(13)


# ---- A32 -----------------------------------------------------------------------------------
def _cond(rng) -> int:
    return 0xE if rng.random() < 0.85 else rng.randrange(15)


def _imm16(op: int, rd: int, imm: int, c: int = 0xE) -> int:
    return c << 28 | op | (imm >> 12 & 15) << 16 | rd << 12 | imm & 0xFFF


def a32_load_value(rd: int, v: int) -> list[int]:
    """MOVW rd, #lo; MOVT rd, #hi."""
    return [_imm16(0x0300_0000, rd, v & 0xFFFF), _imm16(0x0340_0000, rd, v >> 16 & 0xFFFF)]


A32_OFF = a32_load_value(0, 0x84000008) + [0xE1400070, 0xEAFFFFFE]     # PSCI SYSTEM_OFF


def a32_sweep(rng) -> list[int]:
    """A loop of 1-31 stores to RAM, r9 advancing by a random stride (a few pages dirtied)."""
    store = rng.choice((0xE489_B000 | rng.randrange(4, 0x1000, 4),         # str r11, [r9], #s
                        0xE4C9_B000 | rng.randrange(1, 0x1000),            # strb r11, [r9], #s
                        0xE8A9_1800))                                      # stmia r9!, {r11, r12}
    return (a32_load_value(9, RAM_BASE + rng.randrange(RAM_SIZE - 0x40000) & ~3)
            + a32_load_value(10, rng.randrange(1, 32)) + a32_load_value(11, value(rng))
            + [store, 0xE25A_A001, 0x1AFF_FFFC])                           # subs r10; bne


def a32(rng) -> list[int]:
    """One A32 instruction (or a short sequence) from a random family."""
    c, r = _cond(rng), rng.random
    b = rng.getrandbits
    k = rng.randrange(24)
    if k < 4:
        return [b(32) if k < 2 else 0xE000_0000 | b(28)]
    if k == 4:                                      # LDR/STR(B) immediate or register
        w = c << 28 | 0x0400_0000 | b(5) << 20 | reg(rng) << 16 | reg(rng) << 12
        return [w | (1 << 25 | b(7) << 5 | rng.randrange(16) if r() < 0.4 else b(12))]
    if k == 5:                                      # LDRH/STRH/LDRSB/LDRSH/LDRD/STRD
        return [c << 28 | b(5) << 20 | reg(rng) << 16 | reg(rng) << 12 | b(4) << 8
                | 1 << 7 | rng.randrange(1, 4) << 5 | 1 << 4 | b(4)]
    if k == 6:                                      # LDM/STM, sometimes ^
        return [c << 28 | 0x0800_0000 | b(5) << 20 | (b(1) & b(1)) << 22 | reg(rng) << 16
                | b(16)]
    if k == 7:                                      # LDREX/STREX{B,H,D}, CLREX, SWP
        op = b(2) << 21
        return [rng.choice((c << 28 | 0x0190_0F9F | op | reg(rng) << 16 | reg(rng) << 12,
                            c << 28 | 0x0180_0F90 | op | reg(rng) << 16 | reg(rng) << 12
                            | reg(rng), 0xF57F_F01F,
                            c << 28 | 0x0100_0090 | b(1) << 22 | reg(rng) << 16
                            | reg(rng) << 12 | reg(rng)))]
    if k == 8:                                      # MCR/MRC p15 (sometimes p14/p10/any)
        crn, opc1, crm, opc2 = rng.choice(P15) if r() < 0.9 else (b(4), b(3), b(4), b(3))
        cp = 15 if r() < 0.85 else rng.choice((14, 10, 11, b(4)))
        load = [] if r() < 0.5 else a32_load_value(rt := reg(rng) % 13, value(rng))
        rt = rt if load else reg(rng)
        if crn == 1 and opc1 == 0 and r() < 0.8 and load:       # SCTLR: mostly M=0
            load = a32_load_value(rt, value(rng) & ~1)
        return load + [c << 28 | 0x0E00_0010 | opc1 << 21 | b(1) << 20 | crn << 16 | rt << 12
                       | cp << 8 | opc2 << 5 | crm]
    if k == 9:                                      # MCRR/MRRC p15
        opc1, crm = rng.choice(P15_64) if r() < 0.9 else (b(4), b(4))
        if (opc1, crm) in CLOCK_64:
            crm = 2
        return [c << 28 | 0x0C40_0000 | b(1) << 20 | reg(rng) << 16 | reg(rng) << 12
                | (15 if r() < 0.9 else b(4)) << 8 | opc1 << 4 | crm]
    if k == 10:                                     # SVC HVC SMC BKPT UDF
        imm = b(16)
        return [rng.choice((c << 28 | 0x0F00_0000 | b(24),
                            0xE140_0070 | (imm >> 4) << 8 | imm & 15 if r() < 0.7 else
                            0xE140_0070,
                            c << 28 | 0x0160_0070 | b(4),
                            0xE120_0070 | (imm >> 4) << 8 | imm & 15,
                            0xE7F0_00F0 | (imm >> 4) << 8 | imm & 15))]
    if k == 11:                                     # hints and barriers
        return [rng.choice((c << 28 | 0x0320_F000 | rng.randrange(5), c << 28 | 0x0320_F0F0
                            | b(4), 0xF57F_F04F, 0xF57F_F05F, 0xF57F_F06F))]
    if k == 12:                                     # B/BL/BLX(imm), BX/BLX(reg), MOV PC
        off = rng.randrange(-8, 9) & 0xFF_FFFF
        return [rng.choice((c << 28 | 0x0A00_0000 | off, c << 28 | 0x0B00_0000 | off,
                            0xFA00_0000 | b(1) << 24 | off, c << 28 | 0x012F_FF10 | reg(rng),
                            c << 28 | 0x012F_FF30 | reg(rng), c << 28 | 0x01A0_F000
                            | reg(rng)))]
    if k == 13:                                     # CPS
        return [0xF100_0000 | rng.choice((0, 2, 3)) << 18 | b(1) << 17 | b(3) << 6
                | (rng.choice(MODES + (0x16, 0x1A)) if r() < 0.8 else b(5))]
    if k == 14:                                     # MRS/MSR (CPSR/SPSR, immediate, banked)
        sysm = rng.choice(SYSM)
        return [rng.choice((c << 28 | 0x010F_0000 | b(1) << 22 | reg(rng) << 12,
                            c << 28 | 0x0120_F000 | b(1) << 22 | b(4) << 16 | reg(rng),
                            c << 28 | 0x0320_F000 | b(1) << 22 | rng.randrange(1, 16) << 16
                            | b(12),
                            c << 28 | 0x0120_F200 | b(1) << 22 | (sysm & 15) << 16
                            | (sysm >> 4) << 8 | reg(rng),
                            c << 28 | 0x0100_0200 | b(1) << 22 | (sysm & 15) << 16
                            | reg(rng) << 12 | (sysm >> 4) << 8))]
    if k == 15:                                     # SRS/RFE, exception returns
        puw = b(1) << 24 | b(1) << 23 | b(1) << 21
        return [rng.choice((0xF84D_0500 | puw | rng.choice(MODES + (0x1A,)),
                            0xF810_0A00 | puw | reg(rng) << 16, 0xE1B0_F00E, 0xE25E_F004,
                            0xE8FD_8000 | b(15)))]
    if k == 16:                                     # VFP / NEON: UNDEF with the FPU off
        return [rng.choice((c << 28 | 0x0D10_0A00 | b(1) << 23 | b(1) << 22 | b(1) << 20
                            | reg(rng) << 16 | b(4) << 12 | b(1) << 8 | b(8),
                            c << 28 | 0x0E30_0B00 | b(16) & 0xF0EF,
                            c << 28 | 0x0EF1_0A10 | b(4) << 12, 0xEEE8_0A10 | b(4) << 12,
                            0xF200_0000 | b(25), 0xF400_0000 | b(24)))]
    if k == 17:                                     # a PSCI / vendor call
        fid = rng.choice(PSCI)
        return (a32_load_value(0, fid) + a32_load_value(1, value(rng))
                + a32_load_value(2, rng.choice((0, 1, 8, 0x100, b(32)))) + [0xE140_0070])
    if k == 18:
        return a32_sweep(rng)
    if k < 21:                                      # point a register somewhere interesting
        return a32_load_value(rng.randrange(13), value(rng))
    return [c << 28 | b(25) & 0x01FF_FFFF]         # data processing and friends


# ---- T32 -----------------------------------------------------------------------------------
def t32_load_value(rd: int, v: int) -> list[int]:
    """MOVW/MOVT rd (T3/T1 encodings) as four halfwords."""
    out = []
    for op, imm in ((0xF240, v & 0xFFFF), (0xF2C0, v >> 16 & 0xFFFF)):
        out += [op | (imm >> 11 & 1) << 10 | imm >> 12 & 15,
                (imm >> 8 & 7) << 12 | rd << 8 | imm & 0xFF]
    return out


T32_OFF = t32_load_value(0, 0x84000008) + [0xF7E0, 0x8000, 0xE7FE]


def _lo(rng) -> int:
    return rng.randrange(8)


def t32_sweep(rng) -> list[int]:
    """A32 `a32_sweep` in Thumb: str.w r11, [r9], #s; subs.w r10, r10, #1; bne."""
    return (t32_load_value(9, RAM_BASE + rng.randrange(RAM_SIZE - 0x40000) & ~3)
            + t32_load_value(10, rng.randrange(1, 32)) + t32_load_value(11, value(rng))
            + [0xF849, 0xBB00 | rng.randrange(1, 256), 0xF1BA, 0x0A01, 0xD1FA])


def t32(rng) -> list[int]:
    """One Thumb instruction (16 or 32 bits) or a short sequence, as halfwords."""
    r, b = rng.random, rng.getrandbits
    k = rng.randrange(24)
    if k < 3:
        return [b(16)] if k < 2 else [0xE800 | b(11), b(16)]
    if k == 3:                                      # LDR/STR{B,H} imm5, register, SP, literal
        return [rng.choice((rng.choice((0x6000, 0x7000, 0x8000)) | b(12),
                            0x5000 | b(12), 0x9000 | b(12), 0x4800 | b(11)))]
    if k == 4:                                      # PUSH/POP, LDM/STM
        return [rng.choice((0xB400 | b(9), 0xBC00 | b(9), 0xC000 | b(12)))]
    if k == 5:                                      # LDR.W/STR.W, imm8 P/U/W, LDRD/STRD
        rn, rt = reg(rng), reg(rng)
        return rng.choice(([0xF800 | b(3) << 4 | 0x80 | rn, rt << 12 | b(12)],
                           [0xF800 | b(3) << 4 | rn, rt << 12 | 1 << 11 | b(11)],
                           [0xE840 | b(1) << 8 | b(1) << 7 | b(1) << 5 | b(1) << 4 | rn,
                            rt << 12 | b(12)]))
    if k == 6:                                      # LDM.W/STM.W IA/DB
        return [rng.choice((0xE880, 0xE900)) | b(1) << 5 | b(1) << 4 | reg(rng),
                b(16) & ~0x2000]
    if k == 7:                                      # LDREX/STREX family, TBB/TBH
        rn, rt = reg(rng), reg(rng)
        return rng.choice(([0xE850 | rn, rt << 12 | 0xF00 | b(8)],
                           [0xE840 | rn, rt << 12 | reg(rng) << 8 | b(8)],
                           [0xE8D0 | rn, rt << 12 | 0xF0F | rng.choice((4, 5, 7)) << 4],
                           [0xE8C0 | rn, rt << 12 | 0xF00 | rng.choice((4, 5, 7)) << 4
                            | reg(rng)],
                           [0xE8D0 | rn, 0xF000 | b(1) << 4 | reg(rng)]))
    if k == 8:                                      # MCR/MRC T1
        crn, opc1, crm, opc2 = rng.choice(P15) if r() < 0.9 else (b(4), b(3), b(4), b(3))
        rt = rng.randrange(13)
        v = value(rng) & ~1 if (crn, opc1) == (1, 0) and r() < 0.8 else value(rng)
        return t32_load_value(rt, v) + [0xEE00 | opc1 << 5 | b(1) << 4 | crn,
                                        rt << 12 | (15 if r() < 0.9 else b(4)) << 8
                                        | opc2 << 5 | 0x10 | crm]
    if k == 9:                                      # MCRR/MRRC T1
        opc1, crm = rng.choice(P15_64)
        if (opc1, crm) in CLOCK_64:
            crm = 2
        return [0xEC40 | b(1) << 4 | reg(rng), reg(rng) << 12 | 0xF00 | opc1 << 4 | crm]
    if k == 10:                                     # SVC BKPT UDF HVC SMC UDF.W
        return rng.choice(([0xDF00 | b(8)], [0xBE00 | b(8)], [0xDE00 | b(8)],
                           [0xF7E0 | b(4), 0x8000 | b(12)] if r() < 0.3 else [0xF7E0, 0x8000],
                           [0xF7F0 | b(4), 0x8000], [0xF7F0 | b(4), 0xA000 | b(12)]))
    if k == 11:                                     # hints (16- and 32-bit)
        return rng.choice(([0xBF00 | rng.randrange(5) << 4], [0xF3AF, 0x8000
                           | rng.randrange(5)], [0xF3BF, 0x8F4F], [0xF3BF, 0x8F6F]))
    if k == 12:                                     # IT blocks (then 1-4 instructions)
        body = [h for _ in range(rng.randrange(1, 5)) for h in t32(rng)]
        return [0xBF00 | rng.randrange(15) << 4 | rng.randrange(1, 16)] + body
    if k == 13:                                     # B<c>, B, BX/BLX, CBZ, B.W, BL, BLX
        s = b(1)
        return rng.choice(([0xD000 | rng.randrange(14) << 8 | b(8) & 0x87],
                           [0xE000 | (rng.randrange(-8, 9) & 0x7FF)],
                           [0x4700 | b(1) << 7 | reg(rng) << 3],
                           [0xB100 | b(1) << 11 | b(1) << 9 | b(5) << 3 | _lo(rng)],
                           [0xF000 | s * 0x7FF, 0x9000 | (s * 0x2800) | rng.randrange(8)],
                           [0xF000 | s * 0x7FF, 0xD000 | (s * 0x2800) | rng.randrange(8)],
                           [0xF000 | s * 0x7FF, 0xC000 | (s * 0x2800)
                            | rng.randrange(8) * 2]))
    if k == 14:                                     # CPS (16/32), MSR/MRS (banked too)
        sysm = rng.choice(SYSM)
        return rng.choice(([0xB660 | b(1) << 4 | b(3)],
                           [0xF3AF, 0x8000 | rng.choice((0, 2, 3)) << 9 | b(1) << 8
                            | b(3) << 5 | rng.choice(MODES + (0x1A, b(5)))],
                           [0xF380 | b(1) << 4 | reg(rng), 0x8000 | b(4) << 8],
                           [0xF3EF | b(1) << 4, 0x8000 | reg(rng) << 8],
                           [0xF380 | b(1) << 4 | reg(rng), 0x8020 | (sysm & 15) << 8
                            | (sysm >> 4) << 4],
                           [0xF3E0 | b(1) << 4 | (sysm & 15), 0x8020 | reg(rng) << 8
                            | (sysm >> 4) << 4]))
    if k == 15:                                     # SRS/RFE, SUBS PC, LR
        return rng.choice(([rng.choice((0xE80D, 0xE98D)) | b(1) << 5,
                            0xC000 | rng.choice(MODES)],
                           [rng.choice((0xE810, 0xE990)) | b(1) << 5 | reg(rng), 0xC000],
                           [0xF3DE, 0x8F00 | b(8)]))
    if k == 16:                                     # VFP / NEON
        return rng.choice(([0xED10 | b(1) << 7 | b(1) << 6 | b(1) << 4 | reg(rng),
                            b(4) << 12 | 0xA00 | b(1) << 8 | b(8)],
                           [0xEE30 | b(4), 0x0B00 | b(16) & 0xF0EF],
                           [0xEEF1, 0x0A10 | b(4) << 12], [0xEF00 | b(8), b(16)],
                           [0xF900 | b(8), b(16)], [0xFF00 | b(8), b(16)]))
    if k == 17:                                     # a PSCI / vendor call
        return (t32_load_value(0, rng.choice(PSCI)) + t32_load_value(1, value(rng))
                + t32_load_value(2, rng.choice((0, 1, 8, b(32)))) + [0xF7E0, 0x8000])
    if k == 18:
        return t32_sweep(rng)
    if k < 21:
        return t32_load_value(rng.randrange(13), value(rng))
    return [rng.randrange(0x4000)]                  # shifts, ALU, hi-register ops


# ---- whole cases ---------------------------------------------------------------------------
def arm(words) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)


def thumb(halfwords) -> bytes:
    return struct.pack(f"<{len(halfwords)}H", *halfwords)


def _b(at: int, to: int) -> int:
    return 0xEA00_0000 | ((to - at - 8) >> 2 & 0xFF_FFFF)


def sane_vectors(resume: bool) -> bytes:
    """At VBAR: 'off' - every vector records its offset in r7 and powers off; 'resume' -
    undefined/SVC return past the instruction (MOVS PC, LR), data aborts too (SUBS PC, LR,
    #4), the rest power off. Layout: 8 vectors, 8 stubs (mov r7, #offset; b off), off."""
    words = [_b(4 * i, 0x20 + 8 * i) for i in range(8)]
    if resume:
        words[1] = words[2] = 0xE1B0_F00E
        words[4] = 0xE25E_F004
    for i in range(8):
        words += [0xE3A0_7000 | 4 * i, _b(0x24 + 8 * i, 0x60)]
    return arm(words + A32_OFF)


@dataclass
class Case:
    thumb: bool
    code_at: int                 # IPA of the first instruction
    code: bytes
    vectors: str                 # off / resume / random / wild
    vbar: int
    vector_code: bytes           # what is placed at VBAR (empty: nothing)
    cpsr: int
    regs: list[int]              # r0-r14 in the starting mode
    banked: dict[int, tuple[int, int]] = field(default_factory=dict)   # mode -> (SP, LR)
    budget: int = 1000           # max_insns (steps); a few cases can reach NoProgress
    args: str = ""               # what S2EMU_GET_ARGS writes
    split: str = "lazy"
    dirty: str | None = None     # dirty logging of RAM: bitmap, manual, ring
    pre: int = 0                 # steps run before logging starts
    every: int = 0               # steps between harvests

    def describe(self) -> str:
        unit = 2 if self.thumb else 4
        ws = [int.from_bytes(self.code[i:i + unit], "little")
              for i in range(0, len(self.code), unit)]
        return (f"{'T32' if self.thumb else 'A32'} code at {self.code_at:#x}: "
                f"{' '.join(f'{w:0{2 * unit}x}' for w in ws)}; vectors {self.vectors} at "
                f"{self.vbar:#x}; budget {self.budget}; split {self.split}; dirty log "
                f"{self.dirty} (after {self.pre}, harvest every {self.every}); args "
                f"{self.args!r}; CPSR {self.cpsr:#x}; regs "
                f"{' '.join(f'{v:#x}' for v in self.regs)}")


def make_case(rng) -> Case:
    is_thumb = rng.random() < 0.45
    n = rng.randrange(4, 48)
    logged = rng.choice(("bitmap", "manual", "ring")) if rng.random() < 0.25 else None
    if is_thumb:
        hws = [h for _ in range(n) for h in (t32_sweep if logged and rng.random() < 0.3
                                              else t32)(rng)]
        code = thumb((t32_sweep(rng) if logged else []) + hws + T32_OFF)
    else:
        ws = [w for _ in range(n) for w in (a32_sweep if logged and rng.random() < 0.3
                                             else a32)(rng)]
        code = arm((a32_sweep(rng) if logged else []) + ws + A32_OFF)
    where = rng.random()
    if where < 0.75:
        code_at = RAM_BASE + rng.randrange(0, 0x4000, 2 if is_thumb else 4)
    elif where < 0.85:                              # runs off the end of a page / of RAM
        code_at = rng.choice((RAM_BASE + 0x5000, RAM_END)) - rng.randrange(2, 64, 2)
    elif where < 0.95:
        code_at = FLASH0 + rng.randrange(0, 0x4000, 4)       # boot from flash
    else:
        code_at = rng.choice((FLASH1, UART0, 0x0800_0000, 0xFFFF_FF00))
    if not is_thumb:
        code_at &= ~3
    kind = rng.choice(("off", "off", "resume", "resume", "resume", "random", "random", "wild"))
    vbar, vcode = VEC, b""
    if kind in ("off", "resume"):
        vcode = sane_vectors(kind == "resume")
    elif kind == "random":
        vbar = rng.choice((VEC, RAM_BASE + rng.randrange(0x100000) & ~0x1F))
        vcode = arm([a32(rng)[0] for _ in range(8)] + [rng.getrandbits(32) for _ in range(8)])
    else:
        vbar = value(rng) & ~0x1F
    mode = rng.choice(MODES) if rng.random() < 0.3 else 0x13
    cpsr = mode | 0x1C0 | (rng.getrandbits(4) << 28 if rng.random() < 0.3 else 0)
    if is_thumb:
        cpsr |= 1 << 5
    regs = [value(rng) for _ in range(15)]
    banked = {m: (value(rng), value(rng)) for m in MODES if rng.random() < 0.5}
    budget = 1000 if kind in ("off", "resume") else 300    # random vectors: ~1 exit per step
    if kind == "wild" and rng.random() < 0.04:
        budget = 11_000                             # an exception loop reaches NoProgress
    args = "".join(chr(rng.randrange(32, 127)) for _ in range(rng.choice((0, 3, 40, 200))))
    split = rng.choice(("lazy", "eager"))
    pre, every = rng.randrange(0, 60), rng.randrange(budget // 5, budget // 2)
    return Case(is_thumb, code_at, code, kind, vbar, vcode, cpsr, regs, banked, budget, args,
                split, logged, pre, every)
