"""The short-descriptor stage-1 walk (DDI 0406C B3.5) and the access-time domain and
permission checks (B3.7): every mapping size, TTBR0/TTBR1 selection, domains, AP[2:0] with
and without the access flag model, XN/PXN, WXN/UWXN, nG, and every fault at both levels.

Expected DFSR/IFSR values are literals from Table B3-23 and B4.1.52 / B4.1.96: FS[4] at bit
10, FS[3:0] at [3:0], Domain [7:4], LPAE bit 9 = 0, WnR bit 11 (DFSR only), ExT bit 12 = 0.
  translation: section 0x005, page 0x007 (domain valid for the page form only)
  access flag: section 0x003, page 0x006
  domain:      section 0x009, page 0x00B
  permission:  section 0x00D, page 0x00F
The domain check comes after the access flag check and after both descriptors are read, as in
the ARM ARM pseudo-code (TranslationTableWalkSD faults, then TranslateAddressV calls
CheckDomain). QEMU 7.2 differs twice: it checks the domain before reading the second-level
descriptor, and skips the access flag check in a Manager domain.
"""
from __future__ import annotations

import pytest

from hyp.arch import s1short
from hyp.arch.fault import Access
from hyp.arch.s1 import PL0, PL1, S1Regime
from s1tables import (SCTLR_AFE, SCTLR_M, SCTLR_UWXN, SCTLR_WXN, TTBCR_PD0, TTBCR_PD1, Abort,
                      memory, outcome, sd_large, sd_section, sd_small, sd_supersection,
                      sd_table)

RD, WR, FE = Access.READ, Access.WRITE, Access.FETCH
VA = 0x1234_5678              # first-level index 0x123, second-level index 0x45
TTB = 0x0000_4000
L1_AT = 0x0000_448C           # TTB + 4 * 0x123
L2T = 0x0000_8400
L2_AT = 0x0000_8514           # L2T + 4 * 0x45
DACR = 0x5555_558D            # D0 client, D1 manager, D2 no access, D3 reserved, D4-15 client
SEC_PA = 0x8004_5678          # VA through sd_section(0x8000_0000)
PAGE_PA = 0x9100_0678         # VA through sd_small(0x9100_0000)


def translate(regime, va, access, priv, read):
    return outcome(s1short.walk, regime, va, access, priv, read)


def case(id_, expect, l1, l2=None, access=RD, priv=PL1, sctlr=0, dacr=DACR):
    return pytest.param(l1, l2, access, priv, sctlr, dacr, expect, id=id_)


CASES = [
    # ---- mappings ----
    case("section", SEC_PA, sd_section(0x8000_0000)),
    case("supersection-40bit-pa", 0x12_3034_5678, sd_supersection(0x12_3000_0000)),
    case("large-page", 0x9000_5678, sd_table(L2T, 4), sd_large(0x9000_0000)),
    case("large-page-fetch", 0x9000_5678, sd_table(L2T, 4), sd_large(0x9000_0000), access=FE),
    case("small-page-fetch", PAGE_PA, sd_table(L2T, 4), sd_small(0x9100_0000), access=FE),
    case("small-page", PAGE_PA, sd_table(L2T, 4), sd_small(0x9100_0000)),
    case("section-pxn-type-0b11-maps", SEC_PA, sd_section(0x8000_0000, pxn=1)),
    # ---- translation faults ----
    case("trans-section-read", Abort(0x005), 0),
    case("trans-section-write", Abort(0x805), 0, access=WR),
    case("trans-section-fetch", Abort(0x005), 0, access=FE),
    case("trans-section-pl0", Abort(0x005), 0, priv=PL0),
    case("trans-page-read-d4", Abort(0x047), sd_table(L2T, 4), 0),
    case("trans-page-write-d4", Abort(0x847), sd_table(L2T, 4), 0, access=WR),
    case("trans-page-d15", Abort(0x0F7), sd_table(L2T, 15), 0),
    case("trans-page-before-domain", Abort(0x027), sd_table(L2T, 2), 0),
    # ---- access flag (SCTLR.AFE = 1, AP[0] = 0) ----
    case("af-section", Abort(0x003), sd_section(0x8000_0000, 0b010), sctlr=SCTLR_AFE),
    case("af-section-write-d6", Abort(0x863), sd_section(0x8000_0000, 0b010, 6), access=WR,
         sctlr=SCTLR_AFE),
    case("af-supersection", Abort(0x003), sd_supersection(0x3000_0000, 0b110), sctlr=SCTLR_AFE),
    case("af-small-page", Abort(0x046), sd_table(L2T, 4), sd_small(0x9100_0000, 0b000),
         sctlr=SCTLR_AFE),
    case("af-large-page-write", Abort(0x846), sd_table(L2T, 4), sd_large(0x9000_0000, 0b110),
         access=WR, sctlr=SCTLR_AFE),
    case("af-fetch", Abort(0x003), sd_section(0x8000_0000, 0b100), access=FE, sctlr=SCTLR_AFE),
    case("af-before-domain", Abort(0x023), sd_section(0x8000_0000, 0b010, 2), sctlr=SCTLR_AFE),
    case("af-in-manager-domain", Abort(0x013), sd_section(0x8000_0000, 0b010, 1),
         sctlr=SCTLR_AFE),
    case("af-set-maps", SEC_PA, sd_section(0x8000_0000, 0b011), sctlr=SCTLR_AFE),
    case("afe-off-ap0-clear-maps", SEC_PA, sd_section(0x8000_0000, 0b010)),
    # ---- domains ----
    case("domain-section-noaccess", Abort(0x029), sd_section(0x8000_0000, domain=2)),
    case("domain-section-write", Abort(0x829), sd_section(0x8000_0000, domain=2), access=WR),
    case("domain-section-reserved", Abort(0x039), sd_section(0x8000_0000, domain=3)),
    case("domain-section-pl0", Abort(0x029), sd_section(0x8000_0000, domain=2), priv=PL0),
    case("domain-page-noaccess", Abort(0x02B), sd_table(L2T, 2), sd_small(0x9100_0000)),
    case("domain-page-write", Abort(0x82B), sd_table(L2T, 2), sd_small(0x9100_0000),
         access=WR),
    case("domain-page-reserved", Abort(0x03B), sd_table(L2T, 3), sd_large(0x9000_0000)),
    case("domain-all-noaccess", Abort(0x009), sd_section(0x8000_0000), dacr=0),
    case("domain-d15-client-dacr", SEC_PA, sd_section(0x8000_0000, domain=15), dacr=1 << 30),
    case("domain-d15-noaccess", Abort(0x0F9), sd_section(0x8000_0000, domain=15),
         dacr=0x3FFF_FFFF),
    case("supersection-is-domain-0", Abort(0x009), sd_supersection(0xF0_3000_0000),
         dacr=0xFFFF_FFFC),                   # PA[39:36] = 0xF sits where a domain would
    case("manager-ignores-ap-pl0-write", SEC_PA, sd_section(0x8000_0000, 0b000, 1),
         access=WR, priv=PL0),
    case("manager-ignores-xn", SEC_PA, sd_section(0x8000_0000, 0b101, 1, xn=1), access=FE),
    case("manager-page-ignores-ap", PAGE_PA, sd_table(L2T, 1), sd_small(0x9100_0000, 0b111),
         access=WR),
    # ---- permission: AP, XN, PXN ----
    case("perm-section-ro-write", Abort(0x80D), sd_section(0x8000_0000, 0b101), access=WR),
    case("perm-page-ro-write", Abort(0x84F), sd_table(L2T, 4), sd_small(0x9100_0000, 0b101),
         access=WR),
    case("perm-large-pl0-read", Abort(0x04F), sd_table(L2T, 4), sd_large(0x9000_0000, 0b001),
         priv=PL0),
    case("perm-supersection-write", Abort(0x80D), sd_supersection(0x3000_0000, 0b111),
         access=WR),
    case("xn-section-fetch", Abort(0x00D), sd_section(0x8000_0000, xn=1), access=FE),
    case("xn-section-read-ok", SEC_PA, sd_section(0x8000_0000, xn=1)),
    case("xn-section-fetch-pl0", Abort(0x00D), sd_section(0x8000_0000, xn=1), access=FE,
         priv=PL0),
    case("xn-small-page-bit0", Abort(0x00F), sd_table(L2T, 0), sd_small(0x9100_0000, xn=1),
         access=FE),
    case("xn-large-page-bit15", Abort(0x00F), sd_table(L2T, 0), sd_large(0x9000_0000, xn=1),
         access=FE),
    # IFSR[7:4] are UNK/SBZP (B4.1.96); like QEMU the model writes the domain there
    case("xn-page-fetch-d4", Abort(0x04F), sd_table(L2T, 4), sd_small(0x9100_0000, xn=1),
         access=FE),
    case("pxn-section-fetch-pl1", Abort(0x00D), sd_section(0x8000_0000, pxn=1), access=FE),
    case("pxn-section-fetch-pl0-ok", SEC_PA, sd_section(0x8000_0000, pxn=1), access=FE,
         priv=PL0),
    case("pxn-table-fetch-pl1", Abort(0x00F), sd_table(L2T, 0, pxn=1), sd_small(0x9100_0000),
         access=FE),
    case("pxn-table-fetch-pl0-ok", PAGE_PA, sd_table(L2T, 0, pxn=1), sd_small(0x9100_0000),
         access=FE, priv=PL0),
    case("pxn-table-read-ok", PAGE_PA, sd_table(L2T, 0, pxn=1), sd_small(0x9100_0000)),
    # ---- SCTLR.WXN / UWXN (B3.7.3) ----
    case("wxn-rw-fetch-pl1", Abort(0x00D), sd_section(0x8000_0000, 0b011), access=FE,
         sctlr=SCTLR_WXN),
    case("wxn-rw-fetch-pl0", Abort(0x00D), sd_section(0x8000_0000, 0b011), access=FE,
         priv=PL0, sctlr=SCTLR_WXN),
    case("wxn-pl1rw-pl0ro-fetch-pl0-ok", SEC_PA, sd_section(0x8000_0000, 0b010), access=FE,
         priv=PL0, sctlr=SCTLR_WXN),
    case("wxn-ro-fetch-ok", SEC_PA, sd_section(0x8000_0000, 0b111), access=FE,
         sctlr=SCTLR_WXN),
    case("wxn-rw-read-ok", SEC_PA, sd_section(0x8000_0000, 0b011), sctlr=SCTLR_WXN),
    case("uwxn-pl0-writable-fetch-pl1", Abort(0x00F), sd_table(L2T, 0),
         sd_small(0x9100_0000, 0b011), access=FE, sctlr=SCTLR_UWXN),
    case("uwxn-pl0-writable-fetch-pl0-ok", PAGE_PA, sd_table(L2T, 0),
         sd_small(0x9100_0000, 0b011), access=FE, priv=PL0, sctlr=SCTLR_UWXN),
    case("uwxn-pl1-only-writable-fetch-ok", PAGE_PA, sd_table(L2T, 0),
         sd_small(0x9100_0000, 0b001), access=FE, sctlr=SCTLR_UWXN),
]


@pytest.mark.parametrize("l1, l2, access, priv, sctlr, dacr, expect", CASES)
def test_short_descriptor(l1, l2, access, priv, sctlr, dacr, expect):
    regime = S1Regime(sctlr=SCTLR_M | sctlr, ttbcr=0, ttbr0=TTB, dacr=dacr)
    descs = {L1_AT: l1} if l2 is None else {L1_AT: l1, L2_AT: l2}
    assert translate(regime, VA, access, priv, memory(descs)) == expect


# AP[2:0] -> (PL1, PL0), Table B3-8 (SCTLR.AFE = 0); fetch needs read and XN clear.
AP_TABLE = {0b000: ("---", "---"), 0b001: ("rwx", "---"), 0b010: ("rwx", "r-x"),
            0b011: ("rwx", "rwx"), 0b100: ("---", "---"),     # reserved: the model denies
            0b101: ("r-x", "---"), 0b110: ("r-x", "r-x"), 0b111: ("r-x", "r-x")}
# AP[2:1] -> (PL1, PL0) with AP[0] = 1 as the access flag, Table B3-9 (SCTLR.AFE = 1).
AP_TABLE_AFE = {0b00: ("rwx", "---"), 0b01: ("rwx", "rwx"), 0b10: ("r-x", "---"),
                0b11: ("r-x", "r-x")}
SECTION_FSR = {RD: 0x00D, WR: 0x80D, FE: 0x00D}           # permission, section, domain 0
PAGE_D4_FSR = {RD: 0x04F, WR: 0x84F, FE: 0x04F}           # permission, page, domain 4


def _ap_params(table, afe):
    for ap, perms in table.items():
        for priv, perm in zip((PL1, PL0), perms):
            for access, letter in zip((RD, WR, FE), "rwx"):
                ok = letter in perm
                yield pytest.param((ap << 1 | 1) if afe else ap, afe, priv, access, ok,
                                   id=f"{'afe-' if afe else ''}ap{ap:0{2 if afe else 3}b}-"
                                      f"pl{priv}-{access.name.lower()}")


@pytest.mark.parametrize("ap, afe, priv, access, ok",
                         [*_ap_params(AP_TABLE, False), *_ap_params(AP_TABLE_AFE, True)])
def test_access_permissions_section_and_page(ap, afe, priv, access, ok):
    regime = S1Regime(sctlr=SCTLR_M | (SCTLR_AFE if afe else 0), ttbr0=TTB, dacr=DACR)
    sec = memory({L1_AT: sd_section(0x8000_0000, ap)})
    page = memory({L1_AT: sd_table(L2T, 4), L2_AT: sd_small(0x9100_0000, ap)})
    assert translate(regime, VA, access, priv, sec) == (SEC_PA if ok else
                                                       Abort(SECTION_FSR[access]))
    assert translate(regime, VA, access, priv, page) == (PAGE_PA if ok else
                                                        Abort(PAGE_D4_FSR[access]))


SECTION_ANY = 0x8000_0C02      # section at PA 0x8000_0000, AP = 0b011, domain 0


@pytest.mark.parametrize("ttbcr, ttbr0, ttbr1, va, reads, expect", [
    # N = 0: TTBR0 for everything, 16 KiB table, index VA[31:20]; TTBR0[6:0] are attributes
    pytest.param(0, 0x4000 | 0x5B, 0x1_0000, 0xF234_5678, [0x7C8C], 0x8004_5678, id="n0-top"),
    pytest.param(0, 0x4000 | 0x5B, 0x1_0000, 0x0000_0FFF, [0x4000], 0x8000_0FFF, id="n0-zero"),
    # N = 1: TTBR0 below 2 GiB (8 KiB table, VA[30:20]), TTBR1 above (16 KiB, VA[31:20])
    pytest.param(1, 0x6000 | 0x7F, 0x1_0000, 0x7FF0_0123, [0x7FFC], 0x8000_0123, id="n1-ttbr0"),
    pytest.param(1, 0x6000, 0x1_0000 | 0x5B, 0x8000_0000, [0x1_2000], 0x8000_0000,
                 id="n1-ttbr1"),
    # N = 2: TTBR0 below 1 GiB (4 KiB table, VA[29:20])
    pytest.param(2, 0x3000 | 0x5B, 0x1_0000, 0x1234_5678, [0x348C], 0x8004_5678, id="n2-ttbr0"),
    pytest.param(2, 0x3000, 0x1_0000, 0x5234_5678, [0x1_148C], 0x8004_5678, id="n2-ttbr1"),
    pytest.param(2, 0x3000, 0x1_0000, 0x3FFF_FFFF, [0x3FFC], 0x800F_FFFF, id="n2-ttbr0-last"),
    pytest.param(2, 0x3000, 0x1_0000, 0x4000_0000, [0x1_1000], 0x8000_0000,
                 id="n2-ttbr1-first"),
    # N = 7: TTBR0 below 32 MiB (128-byte table, VA[24:20])
    pytest.param(7, 0x3080 | 0x5B, 0x1_0000, 0x0134_5678, [0x30CC], 0x8004_5678, id="n7-ttbr0"),
    pytest.param(7, 0x3080, 0x1_0000, 0x0234_5678, [0x1_008C], 0x8004_5678, id="n7-ttbr1"),
    # PD0 / PD1: no walk at all, a section translation fault
    pytest.param(TTBCR_PD0, 0x4000, 0x1_0000, 0xF234_5678, [], Abort(0x005), id="n0-pd0"),
    pytest.param(TTBCR_PD1, 0x4000, 0x1_0000, 0xF234_5678, [0x7C8C], 0x8004_5678,
                 id="n0-pd1-unused"),
    pytest.param(2 | TTBCR_PD0, 0x3000, 0x1_0000, 0x1234_5678, [], Abort(0x005), id="n2-pd0"),
    pytest.param(2 | TTBCR_PD0, 0x3000, 0x1_0000, 0x5234_5678, [0x1_148C], 0x8004_5678,
                 id="n2-pd0-ttbr1-walks"),
    pytest.param(2 | TTBCR_PD1, 0x3000, 0x1_0000, 0x5234_5678, [], Abort(0x005), id="n2-pd1"),
    pytest.param(2 | TTBCR_PD1, 0x3000, 0x1_0000, 0x1234_5678, [0x348C], 0x8004_5678,
                 id="n2-pd1-ttbr0-walks"),
])
def test_ttbr_selection(ttbcr, ttbr0, ttbr1, va, reads, expect):
    regime = S1Regime(sctlr=SCTLR_M, ttbcr=ttbcr, ttbr0=ttbr0, ttbr1=ttbr1, dacr=DACR)
    log = []
    assert translate(regime, va, RD, PL1, memory({a: SECTION_ANY for a in reads}, log)) == expect
    assert log == [(a, 1) for a in reads]


def test_second_level_address_and_leaf_fields():
    regime = S1Regime(sctlr=SCTLR_M, ttbr0=TTB, dacr=DACR)
    log = []
    # page-table base [31:10] only: the low bits of the first-level descriptor are attributes
    read = memory({L1_AT: sd_table(L2T, 4) | 1 << 9 | 1 << 3, L2_AT: sd_small(0x9100_0000)}, log)
    leaf = s1short.walk(regime, VA, RD, read)
    assert log == [(L1_AT, 1), (L2_AT, 2)]
    assert (leaf.ipa, leaf.base_va, leaf.size, leaf.level, leaf.domain) == \
        (0x9100_0000, 0x1234_5000, 0x1000, 2, 4)


@pytest.mark.parametrize("l1, l2, size, base_va, level", [
    pytest.param(sd_section(0x8000_0000), None, 1 << 20, 0x1230_0000, 1, id="section"),
    pytest.param(sd_supersection(0x3000_0000), None, 1 << 24, 0x1200_0000, 1, id="super"),
    pytest.param(sd_table(L2T), sd_large(0x9000_0000), 1 << 16, 0x1234_0000, 2, id="large"),
    pytest.param(sd_table(L2T), sd_small(0x9100_0000), 1 << 12, 0x1234_5000, 2, id="small"),
])
@pytest.mark.parametrize("ng", [0, 1])
def test_extent_and_ng(l1, l2, size, base_va, level, ng):
    regime = S1Regime(sctlr=SCTLR_M, ttbr0=TTB, dacr=DACR, contextidr=0xAB56)
    if l2 is None:
        l1 |= ng << 17                      # nG of a section / supersection
    else:
        l2 |= ng << 11                      # nG of a large / small page
    leaf = s1short.walk(regime, VA, RD, memory({L1_AT: l1, L2_AT: l2}))
    assert (leaf.size, leaf.base_va, leaf.level, leaf.global_) == (size, base_va, level, not ng)
    assert regime.asid == 0x56              # CONTEXTIDR[7:0] (B4.1.36)


def test_stage2_fault_on_a_descriptor_read_is_returned_as_is():
    from hyp.arch.fault import Fault, FaultType
    s2 = Fault(FaultType.TRANSLATION, 3, RD, L2_AT, s1ptw=True, va=VA)
    regime = S1Regime(sctlr=SCTLR_M, ttbr0=TTB, dacr=DACR)
    reads = {L1_AT: sd_table(L2T, 4)}
    assert s1short.walk(regime, VA, RD, lambda a, lvl: reads.get(a, s2)) is s2
