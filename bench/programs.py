"""The benchmarks' guest code: small A32 loops laid out in one code page at RAM_BASE.

Both the guest-speed rows (bench/guest_speed.py) and the dirty-logging rows
(bench/dirty_rows.py) run these programs; `ENTRY[name]` is (entry, until), where `until` is
the address of the exit sequence that follows each loop.
"""
from __future__ import annotations

import struct

from emu.machine import RAM_BASE

# ARM (A32) encodings from arm-none-eabi-as -march=armv7-a. Every loop ends in
#     movw r0, #8 ; movt r0, #0x8400 ; hvc #0     (PSCI SYSTEM_OFF)
# raw Unicorn stops at the movw (`until`); our hypervisor powers the VM off at the HVC.
_EXIT_SEQ = [
    (0xE3000008, "movw  r0, #8"),
    (0xE3480400, "movt  r0, #0x8400"),
    (0xE1400070, "hvc   #0"),
]
EXIT_INSNS = len(_EXIT_SEQ)

PROGRAMS: dict[str, list[tuple[int, str]]] = {
    # ALU loop. In: r0 = iterations, r1, r2 = seeds. Out: r1 = r1 + n(n+1)/2, r2 mixed.
    "alu": [
        (0xE0911000, "loop: adds  r1, r1, r0"),
        (0xE02223E1, "      eor   r2, r2, r1, ror #7"),
        (0xE2500001, "      subs  r0, r0, #1"),
        (0x1AFFFFFB, "      bne   loop"),
    ],
    # Load sweep. In: r0 = passes, r4 = base, r5 = end, r6 = seed. Out: r6 += every word.
    "load": [
        (0xE1A01004, "pass: mov   r1, r4"),
        (0xE4912004, "word: ldr   r2, [r1], #4"),
        (0xE0866002, "      add   r6, r6, r2"),
        (0xE1510005, "      cmp   r1, r5"),
        (0x1AFFFFFB, "      bne   word"),
        (0xE2500001, "      subs  r0, r0, #1"),
        (0x1AFFFFF8, "      bne   pass"),
    ],
    # Store sweep. In: r0 = passes, r2 = first value, r4 = base, r5 = end.
    # Word i of pass p gets r2 + p*W + i (W = words in the sweep).
    "store": [
        (0xE1A01004, "pass: mov   r1, r4"),
        (0xE4812004, "word: str   r2, [r1], #4"),
        (0xE2822001, "      add   r2, r2, #1"),
        (0xE1510005, "      cmp   r1, r5"),
        (0x1AFFFFFB, "      bne   word"),
        (0xE2500001, "      subs  r0, r0, #1"),
        (0x1AFFFFF8, "      bne   pass"),
    ],
    # STM loop. In: r0 = passes, r10 = base, r11 = end, r2-r9 = values; r2 counts blocks.
    "stm": [
        (0xE1A0100A, "pass: mov   r1, r10"),
        (0xE8A103FC, "blk:  stmia r1!, {r2-r9}"),
        (0xE2822001, "      add   r2, r2, #1"),
        (0xE151000B, "      cmp   r1, r11"),
        (0x1AFFFFFB, "      bne   blk"),
        (0xE2500001, "      subs  r0, r0, #1"),
        (0x1AFFFFF8, "      bne   pass"),
    ],
    # One store per page (dirty-logging rows). In: r0 = stores, r2 = first value, r4 = base,
    # r6 = stride. Store i writes r2 + i at base + i*stride. Out: r2 += n, r4 = base + n*stride.
    "touch": [
        (0xE5842000, "loop: str   r2, [r4]"),
        (0xE2822001, "      add   r2, r2, #1"),
        (0xE0844006, "      add   r4, r4, r6"),
        (0xE2500001, "      subs  r0, r0, #1"),
        (0x1AFFFFFA, "      bne   loop"),
    ],
    # One load per page (dirty-logging rows). In: r0 = loads, r4 = base, r5 = seed, r6 = stride.
    # Out: r5 += the word at base + i*stride for every i, r4 = base + n*stride.
    "peek": [
        (0xE5941000, "loop: ldr   r1, [r4]"),
        (0xE0855001, "      add   r5, r5, r1"),
        (0xE0844006, "      add   r4, r4, r6"),
        (0xE2500001, "      subs  r0, r0, #1"),
        (0x1AFFFFFA, "      bne   loop"),
    ],
}


def _layout() -> tuple[bytes, dict[str, tuple[int, int]]]:
    """All programs in one code page at RAM_BASE, 64 bytes apart: name -> (entry, until)."""
    code = bytearray()
    where = {}
    for name, body in PROGRAMS.items():
        entry = RAM_BASE + len(code)
        words = [w for w, _ in body + _EXIT_SEQ]
        code += struct.pack(f"<{len(words)}I", *words)
        where[name] = (entry, entry + 4 * len(body))
        code += b"\0" * (-len(code) % 64)
    assert len(code) <= 0x1000
    return bytes(code), where


CODE, ENTRY = _layout()
DATA_OFFSET = 2 << 20            # data sweeps start at RAM_BASE + 2 MiB, away from the code
DATA = RAM_BASE + DATA_OFFSET
