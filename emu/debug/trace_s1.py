"""The `s1` trace kind: each stage-1 walk the MMU makes on a TLB miss (DDI 0406C B3.6 short
descriptors, B3.6.5 long descriptors), with every descriptor it read and where stage 2 put
that descriptor - the stage-2 walk of its IPA, or `cached` when the walk cache served it.

Text (one line per walk; wrapped here):

  [      1234] s1    walk W va=0x00401000 asid=1 short
                     L1 ipa=0x40004004 pa=0x108004004 =0x40005c01 s2[cached]
                     L2 ipa=0x40005c04 pa=0x108005c04 =0x40123032 s2[L1 @0x100000008=...]
                     -> ipa=0x40123000 4K pl1=rw- pl0=r-- nG
  ... -> fault translation L2 FSR=0x807
  ... -> s2 fault translation L2 on descriptor ipa=0x40005c04 (S1PTW)

JSON Lines: event:"walk" access:"R"|"W"|"X" va:int asid:int|null format:"short"|"long"
reads:[{level:int|null ipa:int pa:int|null desc:int|null s2:"cached"|[{level desc_pa
desc}]}] result:"ok"|"fault"|"s2-fault"; ok adds ipa:int size:int pl1:str pl0:str
global:bool; fault adds fault:str level:int fsr:int; s2-fault adds fault:str level:int
desc_ipa:int.
"""
from __future__ import annotations

from hyp.arch.descriptors import Prot
from hyp.arch.fault import Fault
from hyp.arch.s1 import S1Fault, S1Leaf

_SIZES = {1 << 12: "4K", 1 << 16: "64K", 1 << 20: "1M", 1 << 21: "2M", 1 << 24: "16M",
          1 << 30: "1G"}


def _prot(p: Prot) -> str:
    return "".join(c if p & bit else "-" for c, bit in (("r", Prot.R), ("w", Prot.W),
                                                       ("x", Prot.X)))


def s1_fields(va: int, access_name: str, leaf, reads, regime, fault_names: dict) -> dict:
    """The event's fields for a walk of `va` that ended in `leaf` (S1Leaf, S1Fault or a
    stage-2 Fault on a descriptor) after the descriptor `reads` (hyp.arch.mmu.DescriptorRead)."""
    data: dict = {
        "event": "walk", "access": access_name, "va": va,
        "asid": regime.asid, "format": "long" if regime.lpae else "short",
        "reads": [{"level": r.level, "ipa": r.ipa, "pa": r.pa, "desc": r.desc,
                   "s2": "cached" if r.s2steps is None else
                   [{"level": s.level, "desc_pa": s.desc_pa, "desc": s.desc}
                    for s in r.s2steps]} for r in reads]}
    if isinstance(leaf, S1Leaf):
        data.update(result="ok", ipa=leaf.ipa | (va & 0xFFF), size=leaf.size,
                    pl1=_prot(leaf.pl1), pl0=_prot(leaf.pl0), **{"global": leaf.global_})
    elif isinstance(leaf, S1Fault):
        data.update(result="fault", fault=leaf.status.name.lower().replace("_", "-"),
                    level=leaf.level, fsr=leaf.fsr())
    elif isinstance(leaf, Fault):
        data.update(result="s2-fault", fault=fault_names[leaf.type], level=leaf.level,
                    desc_ipa=leaf.ipa)
    return data


def _read_text(r: dict) -> str:
    lvl = f"L{r['level']}" if r["level"] is not None else "L?"
    pa = f"{r['pa']:#x}" if r["pa"] is not None else "-"
    desc = f"={r['desc']:#x} " if r["desc"] is not None else " "
    if r["s2"] == "cached":
        s2 = "s2[cached]"
    else:
        s2 = "s2[" + " ".join(f"L{s['level']} @{s['desc_pa']:#x}={s['desc']:#x}"
                              for s in r["s2"]) + "]"
    return f"{lvl} ipa={r['ipa']:#x} pa={pa} {desc}{s2}"


def text_s1(f: dict) -> str:
    asid = f" asid={f['asid']}" if f["asid"] is not None else ""
    head = f"walk {f['access']} va={f['va']:#010x}{asid} {f['format']}"
    reads = " ".join(_read_text(r) for r in f["reads"])
    if f["result"] == "ok":
        tail = (f"-> ipa={f['ipa'] & ~0xFFF:#x} {_SIZES.get(f['size'], hex(f['size']))} "
                f"pl1={f['pl1']} pl0={f['pl0']}{'' if f['global'] else ' nG'}")
    elif f["result"] == "fault":
        tail = f"-> fault {f['fault']} L{f['level']} FSR={f['fsr']:#05x}"
    else:
        tail = (f"-> s2 fault {f['fault']} L{f['level']} on descriptor "
                f"ipa={f['desc_ipa']:#x} (S1PTW)")
    return " ".join(p for p in (head, reads, tail) if p)
