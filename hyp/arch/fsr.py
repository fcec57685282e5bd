"""The guest's own fault status registers, bit-exact: DFSR/IFSR (with DFAR/IFAR) as PL1 sees
them for aborts taken to its own vectors (DDI 0406C B4.1.52 DFSR, B4.1.96 IFSR, B3.13.3).

Two formats, selected by TTBCR.EAE (B3.13.3 "the format is determined by the translation
table format in use"): the short-descriptor format (FS[4] at bit 10, FS[3:0] at [3:0],
Domain [7:4], LPAE bit 9 = 0) and the long-descriptor format (STATUS [5:0], LPAE bit 9 = 1).
WnR (bit 11) is in DFSR only; ExT (bit 12) is 0 here (no external abort classification).
"""
from __future__ import annotations

import enum

from .fields import Field

FSR_FS_LO = Field(3, 0)          # short-descriptor FS[3:0]
FSR_DOMAIN = Field(7, 4)
FSR_LPAE = Field(9, 9)
FSR_FS_HI = Field(10, 10)        # short-descriptor FS[4]
FSR_WNR = Field(11, 11)
FSR_EXT = Field(12, 12)
FSR_STATUS = Field(5, 0)         # long-descriptor STATUS


class Status(enum.Enum):
    """Fault kinds, with (short-descriptor FS by level, long-descriptor STATUS base).

    For the short format the value is a dict level -> FS (level 1: section, 2: page) or a
    single FS; for the long format the STATUS, to which the level is added where it has one
    (Tables B3-23 and B3-24)."""
    ALIGNMENT = (0b00001, 0b100001, False)
    DEBUG = (0b00010, 0b100010, False)
    ACCESS_FLAG = ({1: 0b00011, 2: 0b00110}, 0b001000, True)
    TRANSLATION = ({1: 0b00101, 2: 0b00111}, 0b000100, True)
    DOMAIN = ({1: 0b01001, 2: 0b01011}, None, True)         # short-descriptor format only
    PERMISSION = ({1: 0b01101, 2: 0b01111}, 0b001100, True)
    ADDRESS_SIZE = (None, 0b000000, True)                    # long-descriptor format only
    EXTERNAL = (0b01000, 0b010000, False)                    # synchronous external abort
    EXTERNAL_WALK = ({1: 0b01100, 2: 0b01110}, 0b010100, True)
    ICACHE_MAINT = (0b00100, None, False)


def fsr(status: Status, *, lpae: bool, level: int = 0, write: bool = False,
        domain: int = 0) -> int:
    """DFSR/IFSR value. `level`: the lookup level of a translation-table fault (short format:
    1 = section/first level, 2 = page/second level; long format: 0-3). `write` sets WnR
    (DFSR only: pass False for IFSR). ValueError for a kind the format cannot express."""
    short, long_, leveled = status.value
    value = FSR_WNR.put(int(write))
    if lpae:
        if long_ is None:
            raise ValueError(f"{status.name} has no long-descriptor encoding")
        return value | FSR_LPAE.put(1) | FSR_STATUS.put(long_ | ((level & 3) if leveled else 0))
    if short is None:
        raise ValueError(f"{status.name} has no short-descriptor encoding")
    fs = short[level] if isinstance(short, dict) else short
    return value | FSR_FS_LO.put(fs & 0xF) | FSR_FS_HI.put(fs >> 4) | FSR_DOMAIN.put(domain)


def describe(value: int) -> str:
    """One line naming the fault a DFSR/IFSR value reports."""
    lpae = bool(FSR_LPAE.get(value))
    code = FSR_STATUS.get(value) if lpae else FSR_FS_HI.get(value) << 4 | FSR_FS_LO.get(value)
    for st in Status:
        short, long_, leveled = st.value
        if lpae and long_ is not None and (code & ~3 if leveled else code) == long_:
            lvl = f", level {code & 3}" if leveled else ""
            return f"{st.name.lower().replace('_', ' ')}{lvl} (LPAE STATUS {code:#04x})"
        if not lpae and short is not None:
            table = short if isinstance(short, dict) else {0: short}
            for lvl, fs in table.items():
                if fs == code:
                    where = {0: "", 1: ", section", 2: ", page"}[lvl]
                    return f"{st.name.lower().replace('_', ' ')}{where} (FS {code:#04x})"
    return f"unknown fault status {code:#x}"
