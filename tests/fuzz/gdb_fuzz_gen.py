"""Packets for fuzzing the GDB stub (gdb_fuzz.py): structured, seed, mutated and random
ones, drawn from any `random.Random` (hypothesis' `st.randoms()` or a seeded one).
"""
from __future__ import annotations

import re

from emu.debug.gdb_breakpoints import MAX_WATCH
from emu.debug.gdb_memory import MAX_READ
from emu.debug.gdb_packets import PACKET_SIZE

H = "[0-9a-fA-F]+"
GUEST_MODES = (0x10, 0x11, 0x12, 0x13, 0x17, 0x1B, 0x1F)

# ---- generation --------------------------------------------------------------------------
ADDRS = [0, 1, 2, 3, 4, 0xFFC, 0x1000, 0x3FFFFFC, 0x4000000, 0x7FFFFFF, 0x8000000, 0x9000000,
         0x9000FFF, 0x3FFFFFFF, 0x40000000, 0x40000001, 0x40000FFE, 0x40001000, 0x40300000,
         0x47FFFFF0, 0x47FFFFFC, 0x47FFFFFF, 0x48000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF8,
         0xFFFFFFFC, 0xFFFFFFFE, 0xFFFFFFFF, 1 << 32, (1 << 32) + 0x40000000, 1 << 40,
         1 << 64, (1 << 64) - 1]
LENGTHS = [0, 1, 2, 3, 4, 5, 8, 16, 0x100, MAX_READ - 1, MAX_READ, MAX_READ + 1, 0x4000,
           MAX_WATCH, MAX_WATCH + 1, 0xFFFFFFFF, 1 << 32, 1 << 64]
JUNK = ["", "-1", " 1", "1 ", "+1", "0x10", "1_0", "zz", "g", "-", ",", ":", ";", "=",
        "\x00", "\xa0", "\xff", "}", "*", "#", "$", "1" * 40, "f" * 17]
MONITOR = ["help", "s2 walk 0x40000000", "s2 walk 0xffffffffffffffff", "s2 dump",
           "s2 dump 0x40000000 0x40200000", "s2 dump 5 1", "dirty", "dirty ram", "dirty 7",
           "tlb", "stats", "fault-stop", "fault-stop on", "fault-stop on 0x1 0x0",
           "fault-stop off", "s2 walk", "s2 walk -1", "'", "s2 walk 1e3", "x" * 300]
SEEDS = ["?", "g", "p0", "pf", "p10", "P0=78563412", "Pf=00100040", "P10=d3010040",
         "P10=10000000", "G" + "00" * 64 + "d3010040", "m40000000,4", "m47fffff0,20",
         "m0,10", "m4000000,10", "m9000000,4", "M40001000,4:01020304", "M0,2:abcd",
         "X40002000,3:abc", "X40002000,0:", "Z0,40000000,4", "z0,40000000,4",
         "Z1,40000010,2", "z1,40000010,2", "Z2,40003000,4", "z2,40003000,4", "Z3,40003000,8",
         "Z4,47fffffc,4", "z4,47fffffc,4", "qXfer:features:read:target.xml:0,3fff",
         "qXfer:features:read:target.xml:100,80", "qSupported:multiprocess+;swbreak+",
         "QStartNoAckMode", "qC", "qAttached", "qAttached:1", "qfThreadInfo",
         "qsThreadInfo", "qThreadExtraInfo,1", "Hg0", "Hc-1", "Hg1", "T1", "qSymbol::",
         "qOffsets", "vCont?", "vMustReplyEmpty", "qTStatus", "c", "s40000000", "C05",
         "S05;40000000", "vCont;c", "vCont;s:1;c", "k", "D", "vKill;1", "!", "qRcmd,"]
SEEDS += ["qRcmd," + c.encode().hex() for c in MONITOR]
# threads (one per vCPU: 1..N; a two-vCPU fuzzer has thread 2)
SEEDS += ["Hg2", "Hc2", "Hg3", "Hc0", "T2", "T3", "T0", "T-1", "qThreadExtraInfo,2",
          "qThreadExtraInfo,3", "qThreadExtraInfo,0", "vCont;s:2;c", "vCont;s:3", "vCont;c:2",
          "Hg02", "Hgp1.2", "qC"]
INTERESTING = b",:;=#$}*-+ \x00\x03\x7f\xff0123456789abcdefABCDEFxXlm"


def number(rng) -> str:
    """A field: an interesting or random number in some spelling, or junk."""
    r = rng.random()
    if r < 0.1:
        return rng.choice(JUNK)
    value = rng.choice(ADDRS + LENGTHS) if r < 0.7 else rng.randrange(1 << 33)
    if rng.random() < 0.2:
        value += rng.choice([-1, 1])
    text = f"{max(value, 0):x}"
    if rng.random() < 0.1:
        text = text.upper()
    if rng.random() < 0.05:
        text = "0" * rng.randrange(1, 20) + text
    return text


def hexdata(rng, n: int) -> str:
    n = max(0, min(n, 64) + rng.choice([0, 0, 0, -1, 1]))
    return bytes(rng.randrange(256) for _ in range(n)).hex()


def structured(rng) -> bytes:
    c = rng.choice("mMXZzpPGgqHTcCsSv")
    a, n = number(rng), number(rng)
    if c == "m":
        return f"m{a},{n}".encode()
    if c in "MX":
        length = int(n, 16) if re.fullmatch(H, n) else 4
        body = hexdata(rng, length)
        if c == "X":
            data = bytes.fromhex(body)
            return f"X{a},{n}:".encode() + data.replace(b"}", b"}]").replace(b"#", b"}\x03")
        return f"M{a},{n}:{body}".encode()
    if c in "Zz":
        return f"{c}{rng.choice(['0', '1', '2', '3', '4', '5', number(rng)])},{a},{n}".encode()
    if c in "pP":
        reg = rng.choice([f"{rng.randrange(18):x}", number(rng)])
        if c == "p":
            return f"p{reg}".encode()
        mode = rng.choice(GUEST_MODES + (0, 0x16, 0x1A, rng.randrange(32)))
        return f"P{reg}={hexdata(rng, 3)}{mode | rng.randrange(8) << 5:02x}".encode()
    if c == "G":
        cpsr = (0x400001C0 | rng.choice(GUEST_MODES + (0x1A, 0x16, 0))).to_bytes(4, "little")
        return ("G" + hexdata(rng, 64) + cpsr.hex()).encode()
    if c == "q":
        return f"qXfer:features:read:{rng.choice(['target.xml', '', 'x'])}:{a},{n}".encode()
    if c in "HT":
        return f"{c}{rng.choice(['g', 'c', 'x', ''])}{number(rng)}".encode()
    if c == "v":
        return f"vCont;{rng.choice('cCsStr')}{number(rng)[:3]}:{number(rng)}".encode()
    return f"{c}{a}" .encode() if c in "cs" else f"{c}{n[:3]};{a}".encode()


def mutate(rng, pkt: bytes) -> bytes:
    data = bytearray(pkt)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
        op = rng.randrange(7)
        i = rng.randrange(len(data) + 1)
        byte = rng.choice(INTERESTING) if rng.random() < 0.7 else rng.randrange(256)
        if op == 0:
            data.insert(i, byte)
        elif op == 1 and data:
            del data[min(i, len(data) - 1)]
        elif op == 2 and data:
            data[min(i, len(data) - 1)] = byte
        elif op == 3:
            del data[i:]
        elif op == 4 and data:
            j = rng.randrange(len(data))
            data[i:i] = data[j:j + rng.randrange(1, 12)]
        elif op == 5:
            data[i:i] = number(rng).encode("latin-1")
        else:
            data[i:i] = data[i:i + rng.randrange(1, 4)] * rng.randrange(2, 6)
    return bytes(data)


def packet(rng) -> bytes:
    r = rng.random()
    if r < 0.35:
        pkt = structured(rng)
    elif r < 0.5:
        pkt = rng.choice(SEEDS).encode()
    elif r < 0.9:
        pkt = rng.choice(SEEDS).encode() if rng.random() < 0.6 else structured(rng)
        pkt = mutate(rng, pkt)
    else:
        pkt = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    return pkt[:PACKET_SIZE]
