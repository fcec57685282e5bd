"""The long-descriptor (LPAE) stage-1 walk (DDI 0406C B3.6) and the access-time permission
check (B3.7): TTBR0/TTBR1 split by T0SZ/T1SZ with its gaps, EPD0/EPD1, 1 GiB / 2 MiB blocks and
4 KiB pages, AP[2:1], APTable/XNTable/PXNTable, XN, PXN, AF, nG and the ASID per TTBCR.A1.

Expected DFSR/IFSR values are literals from Table B3-24 and B4.1.52 / B4.1.96: LPAE bit 9 = 1,
STATUS [5:0] = 0bTTTTLL, WnR bit 11 (DFSR only), ExT bit 12 = 0.
  address size 0x200-0x203, translation 0x205-0x207, access flag 0x209-0x20B,
  permission 0x20D-0x20F (level 1, 2, 3)
A VA outside both TTBR regions, or in a region disabled by EPDn, is a level-1 translation
fault (ARM ARM pseudo-code TranslationTableWalkLD: "if !basefound || disabled ... level = 1").
"""
from __future__ import annotations

import pytest

from hyp.arch import s1long
from hyp.arch.fault import Access
from hyp.arch.s1 import PL0, PL1, S1Regime
from s1tables import (SCTLR_M, SCTLR_UWXN, SCTLR_WXN, TTBCR_A1, TTBCR_EPD0, TTBCR_EPD1, Abort,
                      ld_block, ld_page, ld_table, memory, outcome, ttbcr_ld)

RD, WR, FE = Access.READ, Access.WRITE, Access.FETCH
VA = 0x5234_5678              # L1 index VA[31:30] = 1, L2 index 0x091, L3 index 0x145
TTB = 0x0000_1000
L1_AT = 0x0000_1008           # TTB + 8 * 1
L2T = 0x0000_2000
L2_AT = 0x0000_2488           # L2T + 8 * 0x091
L3T = 0x0000_3000
L3_AT = 0x0000_3A28           # L3T + 8 * 0x145
GIB_PA = 0x80_5234_5678       # VA through ld_block(0x80_4000_0000) at level 1
MIB_PA = 0x1_0074_5678        # VA through ld_block(0x1_0060_0000) at level 2
PAGE_PA = 0x5_0000_7678       # VA through ld_page(0x5_0000_7000)
T1, T2 = ld_table(L2T), ld_table(L3T)


def translate(regime, va, access, priv, read):
    return outcome(s1long.walk, regime, va, access, priv, read)


def case(id_, expect, *descs, access=RD, priv=PL1, sctlr=0, ttbr0=TTB):
    return pytest.param(descs, access, priv, sctlr, ttbr0, expect, id=id_)


CASES = [
    # ---- mappings ----
    case("1g-block", GIB_PA, ld_block(0x80_4000_0000)),
    case("2m-block", MIB_PA, T1, ld_block(0x1_0060_0000)),
    case("4k-page", PAGE_PA, T1, T2, ld_page(0x5_0000_7000)),
    case("block-low-bits-ignored", GIB_PA, ld_block(0x80_4000_0000 | 0x3FFF_F000)),
    # ---- translation ----
    case("trans-l1", Abort(0x205), 0),
    case("trans-l1-write", Abort(0xA05), 0, access=WR),
    case("trans-l1-fetch", Abort(0x205), 0, access=FE),
    case("trans-l2", Abort(0x206), T1, 0),
    case("trans-l2-write-pl0", Abort(0xA06), T1, 0, access=WR, priv=PL0),
    case("trans-l3", Abort(0x207), T1, T2, 0),
    case("trans-l3-block-encoding", Abort(0x207), T1, T2, ld_block(0x5_0000_7000)),
    case("trans-l3-fetch", Abort(0x207), T1, T2, ld_page(0x5_0000_7000) & ~1, access=FE),
    # ---- access flag ----
    case("af-l1", Abort(0x209), ld_block(0x80_4000_0000, af=0)),
    case("af-l2", Abort(0x20A), T1, ld_block(0x1_0060_0000, af=0)),
    case("af-l3", Abort(0x20B), T1, T2, ld_page(0x5_0000_7000, af=0)),
    case("af-l3-write", Abort(0xA0B), T1, T2, ld_page(0x5_0000_7000, af=0), access=WR),
    case("af-l3-fetch", Abort(0x20B), T1, T2, ld_page(0x5_0000_7000, af=0), access=FE),
    case("af-before-permission", Abort(0xA0B), T1, T2, ld_page(0x5_0000_7000, 0b11, af=0),
         access=WR),
    # ---- permission ----
    case("perm-l1-ro-write", Abort(0xA0D), ld_block(0x80_4000_0000, 0b10), access=WR),
    case("perm-l2-ro-write", Abort(0xA0E), T1, ld_block(0x1_0060_0000, 0b10), access=WR),
    case("perm-l3-ro-write", Abort(0xA0F), T1, T2, ld_page(0x5_0000_7000, 0b10), access=WR),
    case("perm-l3-pl0-read", Abort(0x20F), T1, T2, ld_page(0x5_0000_7000, 0b00), priv=PL0),
    case("xn-l1-fetch", Abort(0x20D), ld_block(0x80_4000_0000, xn=1), access=FE),
    case("xn-l3-fetch-pl0", Abort(0x20F), T1, T2, ld_page(0x5_0000_7000, 0b01, xn=1),
         access=FE, priv=PL0),
    case("xn-read-ok", PAGE_PA, T1, T2, ld_page(0x5_0000_7000, xn=1)),
    case("pxn-fetch-pl1", Abort(0x20E), T1, ld_block(0x1_0060_0000, 0b01, pxn=1), access=FE),
    case("pxn-fetch-pl0-ok", MIB_PA, T1, ld_block(0x1_0060_0000, 0b01, pxn=1), access=FE,
         priv=PL0),
    # hierarchical limits from table descriptors (B3.6.1, Table B3-15 / B3-16)
    case("xntable-fetch-pl1", Abort(0x20F), ld_table(L2T, xntable=1), T2,
         ld_page(0x5_0000_7000), access=FE),
    case("xntable-fetch-pl0", Abort(0x20F), T1, ld_table(L3T, xntable=1),
         ld_page(0x5_0000_7000, 0b01), access=FE, priv=PL0),
    case("pxntable-fetch-pl1", Abort(0x20F), ld_table(L2T, pxntable=1), T2,
         ld_page(0x5_0000_7000), access=FE),
    case("pxntable-fetch-pl0-ok", PAGE_PA, ld_table(L2T, pxntable=1), T2,
         ld_page(0x5_0000_7000, 0b01), access=FE, priv=PL0),
    case("aptable0-no-pl0", Abort(0x20F), ld_table(L2T, aptable=0b01), T2,
         ld_page(0x5_0000_7000, 0b01), priv=PL0),
    case("aptable0-pl1-write-ok", PAGE_PA, ld_table(L2T, aptable=0b01), T2,
         ld_page(0x5_0000_7000, 0b01), access=WR),
    case("aptable1-no-write-pl1", Abort(0xA0E), ld_table(L2T, aptable=0b10),
         ld_block(0x1_0060_0000, 0b01), access=WR),
    case("aptable1-no-write-pl0", Abort(0xA0F), T1, ld_table(L3T, aptable=0b10),
         ld_page(0x5_0000_7000, 0b01), access=WR, priv=PL0),
    case("aptable1-read-pl0-ok", PAGE_PA, T1, ld_table(L3T, aptable=0b10),
         ld_page(0x5_0000_7000, 0b01), priv=PL0),
    # SCTLR.WXN / UWXN (B3.7.3)
    case("wxn-rw-fetch", Abort(0x20F), T1, T2, ld_page(0x5_0000_7000, 0b00), access=FE,
         sctlr=SCTLR_WXN),
    case("wxn-ro-fetch-ok", PAGE_PA, T1, T2, ld_page(0x5_0000_7000, 0b10), access=FE,
         sctlr=SCTLR_WXN),
    case("uwxn-pl0-writable-fetch-pl1", Abort(0x20F), T1, T2, ld_page(0x5_0000_7000, 0b01),
         access=FE, sctlr=SCTLR_UWXN),
    case("uwxn-pl0-writable-fetch-pl0-ok", PAGE_PA, T1, T2, ld_page(0x5_0000_7000, 0b01),
         access=FE, priv=PL0, sctlr=SCTLR_UWXN),
    case("uwxn-pl1-writable-fetch-ok", PAGE_PA, T1, T2, ld_page(0x5_0000_7000, 0b00),
         access=FE, sctlr=SCTLR_UWXN),
    # ---- address size: TTBR or descriptor output address bits [47:40] non-zero ----
    case("addrsize-ttbr-l0", Abort(0x200), ttbr0=TTB | 1 << 40),
    case("addrsize-ttbr-l0-write", Abort(0xA00), access=WR, ttbr0=TTB | 1 << 47),
    case("addrsize-l1-table", Abort(0x201), T1 | 1 << 40),
    case("addrsize-l2-block", Abort(0x202), T1, ld_block(0x1_0060_0000) | 1 << 41),
    case("addrsize-l3-page", Abort(0x203), T1, T2, ld_page(0x5_0000_7000) | 1 << 47),
]


@pytest.mark.parametrize("descs, access, priv, sctlr, ttbr0, expect", CASES)
def test_long_descriptor(descs, access, priv, sctlr, ttbr0, expect):
    regime = S1Regime(sctlr=SCTLR_M | sctlr, ttbcr=ttbcr_ld(), ttbr0=ttbr0)
    mem = dict(zip((L1_AT, L2_AT, L3_AT), descs))
    assert translate(regime, VA, access, priv, memory(mem)) == expect


# AP[2:1] -> (PL1, PL0), Table B3-9; fetch needs read and XN/PXN clear.
AP_TABLE = {0b00: ("rwx", "---"), 0b01: ("rwx", "rwx"), 0b10: ("r-x", "---"),
            0b11: ("r-x", "r-x")}
PAGE_FSR = {RD: 0x20F, WR: 0xA0F, FE: 0x20F}
BLOCK_L1_FSR = {RD: 0x20D, WR: 0xA0D, FE: 0x20D}


@pytest.mark.parametrize("ap, priv, access, ok", [
    pytest.param(ap, priv, access, letter in perm, id=f"ap{ap:02b}-pl{priv}-{access.name.lower()}")
    for ap, perms in AP_TABLE.items() for priv, perm in zip((PL1, PL0), perms)
    for access, letter in zip((RD, WR, FE), "rwx")])
def test_access_permissions(ap, priv, access, ok):
    regime = S1Regime(sctlr=SCTLR_M, ttbcr=ttbcr_ld(), ttbr0=TTB)
    page = memory({L1_AT: T1, L2_AT: T2, L3_AT: ld_page(0x5_0000_7000, ap)})
    block = memory({L1_AT: ld_block(0x80_4000_0000, ap)})
    assert translate(regime, VA, access, priv, page) == (PAGE_PA if ok else
                                                        Abort(PAGE_FSR[access]))
    assert translate(regime, VA, access, priv, block) == (GIB_PA if ok else
                                                         Abort(BLOCK_L1_FSR[access]))


ANY_BLOCK = 0x0000_0000_0000_0401     # a block at PA 0, AF = 1, AP = 0b00: valid at L1 and L2
R0, R1 = 0x1000, 0x2000               # TTBR0 / TTBR1 table bases


@pytest.mark.parametrize("t0sz, t1sz, epd, va, reads", [
    # T0SZ = T1SZ = 0: TTBR0 for everything, from level 1 (4 entries, VA[31:30])
    pytest.param(0, 0, 0, 0xFFFF_F000, [(R0 + 0x18, 1)], id="0-0-top"),
    pytest.param(0, 0, TTBCR_EPD1, 0xFFFF_F000, [(R0 + 0x18, 1)], id="0-0-epd1-unused"),
    # T0SZ = 1, T1SZ = 0: TTBR0 below 2 GiB (2 entries, VA[30]), TTBR1 the rest (VA[31:30])
    pytest.param(1, 0, 0, 0x7000_0000, [(R0 + 0x08, 1)], id="1-0-ttbr0"),
    pytest.param(1, 0, 0, 0x8000_0000, [(R1 + 0x10, 1)], id="1-0-ttbr1"),
    # T0SZ = 1, T1SZ = 1: no gap, each region from level 1, index VA[30]
    pytest.param(1, 1, 0, 0x7FFF_FFFF, [(R0 + 0x08, 1)], id="1-1-ttbr0"),
    pytest.param(1, 1, 0, 0xC000_0000, [(R1 + 0x08, 1)], id="1-1-ttbr1"),
    # T0SZ = 2, T1SZ = 2: TTBR0 below 1 GiB, TTBR1 from 3 GiB, both from level 2 (VA[29:21])
    pytest.param(2, 2, 0, 0x3FE0_0000, [(R0 + 0xFF8, 2)], id="2-2-ttbr0-last"),
    pytest.param(2, 2, 0, 0x4000_0000, [], id="2-2-gap-first"),
    pytest.param(2, 2, 0, 0x8765_4321, [], id="2-2-gap"),
    pytest.param(2, 2, 0, 0xBFFF_FFFF, [], id="2-2-gap-last"),
    pytest.param(2, 2, 0, 0xC000_0000, [(R1, 2)], id="2-2-ttbr1-first"),
    pytest.param(2, 2, 0, 0xFFE0_0000, [(R1 + 0xFF8, 2)], id="2-2-ttbr1-last"),
    # T0SZ = 0, T1SZ = 2: TTBR0 below 3 GiB from level 1, TTBR1 above from level 2
    pytest.param(0, 2, 0, 0xBFFF_F000, [(R0 + 0x10, 1)], id="0-2-ttbr0"),
    pytest.param(0, 2, 0, 0xC000_0000, [(R1, 2)], id="0-2-ttbr1"),
    # T0SZ = 3: a 2 KiB first table (256 entries, VA[28:21]); TTBR1 covers from 512 MiB
    pytest.param(3, 0, 0, 0x1FE0_0000, [(0x1800 + 0x7F8, 2)], id="3-0-ttbr0"),
    pytest.param(3, 0, 0, 0x2000_0000, [(R1, 1)], id="3-0-ttbr1"),
    # T0SZ = T1SZ = 7: 32 MiB regions, 16-entry first tables (VA[24:21])
    pytest.param(7, 7, 0, 0x01E0_0000, [(0x1080 + 0x78, 2)], id="7-7-ttbr0"),
    pytest.param(7, 7, 0, 0x0200_0000, [], id="7-7-gap-first"),
    pytest.param(7, 7, 0, 0xFDFF_FFFF, [], id="7-7-gap-last"),
    pytest.param(7, 7, 0, 0xFE00_0000, [(R1, 2)], id="7-7-ttbr1"),
    # EPD0 / EPD1: that region's walks are disabled
    pytest.param(2, 2, TTBCR_EPD0, 0x1000_0000, [], id="epd0"),
    pytest.param(2, 2, TTBCR_EPD0, 0xC000_0000, [(R1, 2)], id="epd0-ttbr1-walks"),
    pytest.param(2, 2, TTBCR_EPD1, 0xC000_0000, [], id="epd1"),
    pytest.param(2, 2, TTBCR_EPD1, 0x0020_0000, [(R0 + 0x8, 2)], id="epd1-ttbr0-walks"),
    pytest.param(0, 0, TTBCR_EPD0, 0x0000_0000, [], id="epd0-everything"),
])
@pytest.mark.parametrize("access, fault", [pytest.param(RD, 0x205, id="read"),
                                           pytest.param(WR, 0xA05, id="write")])
def test_ttbr_regions(t0sz, t1sz, epd, va, reads, access, fault):
    ttbr0 = {3: 0x1800, 7: 0x1080}.get(t0sz, R0)
    regime = S1Regime(sctlr=SCTLR_M, ttbcr=ttbcr_ld(t0sz, t1sz, epd), ttbr0=ttbr0, ttbr1=R1)
    log = []
    got = translate(regime, va, access, PL1, memory({a: ANY_BLOCK for a, _ in reads}, log))
    assert log == reads
    if not reads:
        assert got == Abort(fault)
    else:
        size = 1 << {1: 30, 2: 21}[reads[-1][1]]
        assert got == va & (size - 1)


@pytest.mark.parametrize("ttbcr, asid", [
    pytest.param(ttbcr_ld(), 0x12, id="a1-0-ttbr0"),
    pytest.param(ttbcr_ld(extra=TTBCR_A1), 0x34, id="a1-1-ttbr1"),
    pytest.param(ttbcr_ld(1, 1), 0x12, id="split-a1-0"),
])
@pytest.mark.parametrize("ng", [0, 1])
def test_ng_and_asid_from_ttbr(ttbcr, asid, ng):
    # TTBR0/TTBR1.ASID [55:48] (B4.1.154/155); CONTEXTIDR does not hold it under LPAE
    regime = S1Regime(sctlr=SCTLR_M, ttbcr=ttbcr, ttbr0=0x0012_0000_0000_1000,
                      ttbr1=0x0034_0000_0000_2000, contextidr=0x77)
    assert regime.asid == asid
    leaf = s1long.walk(regime, 0x1234_5678, RD, memory({0x1000: ld_block(0, ng=ng)}))
    assert (leaf.global_, leaf.level, leaf.size, leaf.base_va) == (not ng, 1, 1 << 30, 0)


@pytest.mark.parametrize("descs, level, size, base_va", [
    pytest.param((ld_block(0x80_4000_0000),), 1, 1 << 30, 0x4000_0000, id="1g"),
    pytest.param((T1, ld_block(0x1_0060_0000)), 2, 1 << 21, 0x5220_0000, id="2m"),
    pytest.param((T1, T2, ld_page(0x5_0000_7000)), 3, 1 << 12, 0x5234_5000, id="4k"),
])
def test_leaf_extent(descs, level, size, base_va):
    regime = S1Regime(sctlr=SCTLR_M, ttbcr=ttbcr_ld(), ttbr0=TTB)
    log = []
    leaf = s1long.walk(regime, VA, RD, memory(dict(zip((L1_AT, L2_AT, L3_AT), descs)), log))
    assert (leaf.level, leaf.size, leaf.base_va, leaf.domain) == (level, size, base_va, None)
    assert log == list(zip((L1_AT, L2_AT, L3_AT), (1, 2, 3)))[:level]
