"""Hyp syndromes, bit-exact: HSR, HPFAR and HDFAR/HIFAR for aborts taken to Hyp mode.

DDI 0406C B3.12 (Hyp mode), B3.13.6 (HSR use and ISS encodings), B4.1.61 (HSR), B4.1.66
(HPFAR). The values are those QEMU 7.2 TCG writes for a cortex-a15, a v7 CPU:

- ISV=1 only for a single LDR/STR/LDRB/STRB/LDRH/STRH/LDRSB/LDRSH (including the T32
  unprivileged forms, which have no writeback) without writeback and with Rt != PC, and never
  for a fault on a stage-1 table walk (QEMU translate.c make_issinfo / disas_set_da_iss,
  tlb_helper.c merge_syn_data_abort).
- IL is the instruction length only when it is valid; for prefetch aborts and ISV=0 data
  aborts the v7 HSR.IL is UNK/SBZP and QEMU clears it (helper.c
  arm_cpu_do_interrupt_aarch32_hyp, "squash the IL bit" for !ARM_FEATURE_V8).
- WnR is the access kind of the faulting instruction, also for a stage-1 walk fault
  (QEMU passes access_type == MMU_DATA_STORE there too). EA and CM are always 0 here.
"""
from __future__ import annotations

from dataclasses import dataclass

from hyp.arch.fault import Fault, FaultType
from hyp.arch.fields import Field


# HSR (B4.1.61) and the data/prefetch abort ISS (B3.13.6).
HSR_EC = Field(31, 26)
HSR_IL = Field(25, 25)
HSR_ISS = Field(24, 0)
HSR_ISV = Field(24, 24)
HSR_SAS = Field(23, 22)
HSR_SSE = Field(21, 21)
HSR_SRT = Field(19, 16)
HSR_EA = Field(9, 9)
HSR_CM = Field(8, 8)
HSR_S1PTW = Field(7, 7)
HSR_WNR = Field(6, 6)
HSR_DFSC = Field(5, 0)
HSR_IFSC = Field(5, 0)
HSR_IMM16 = Field(15, 0)
# HPFAR (B4.1.66): FIPA[39:12] of the faulting IPA in bits [31:4].
HPFAR_FIPA = Field(31, 4)

EC_HVC = 0x12
EC_IABT_LOW = 0x20
EC_DABT_LOW = 0x24

_SAS = {1: 0b00, 2: 0b01, 4: 0b10, 8: 0b11}
_SAS_NAMES = ("byte", "halfword", "word", "doubleword")
_EC_NAMES = {EC_DABT_LOW: "data abort, lower EL", EC_IABT_LOW: "prefetch abort, lower EL",
             EC_HVC: "HVC"}
_ISS_LAYOUT: dict[int, tuple[tuple[str, Field], ...]] = {
    EC_DABT_LOW: (("ISV", HSR_ISV), ("SAS", HSR_SAS), ("SSE", HSR_SSE), ("SRT", HSR_SRT),
                  ("EA", HSR_EA), ("CM", HSR_CM), ("S1PTW", HSR_S1PTW), ("WnR", HSR_WNR),
                  ("DFSC", HSR_DFSC)),
    EC_IABT_LOW: (("EA", HSR_EA), ("S1PTW", HSR_S1PTW), ("IFSC", HSR_IFSC)),
    EC_HVC: (("imm16", HSR_IMM16),),
}


@dataclass(frozen=True)
class AccessInfo:
    """What the faulting instruction does, as the data-abort syndrome needs it.

    isv: the instruction can report a valid ISS (see the module docstring). size: bytes of
    one access (1, 2, 4; 8 for LDRD/STRD/LDREXD and D-register VFP transfers). rt: the
    first core register transferred (0 if none: VFP, TBB/TBH). addr: lowest guest VA
    accessed; length: total bytes. il32: a 32-bit encoding (False for 16-bit Thumb).
    mnemonic: for messages.
    """
    isv: bool
    size: int
    sign_extend: bool
    rt: int
    write: bool
    addr: int
    length: int
    il32: bool
    mnemonic: str


def _stage2(fault: Fault) -> None:
    if fault.stage != 2:
        raise ValueError(f"a stage-{fault.stage} fault is the guest's own abort, not a Hyp trap")


def hsr_data_abort(fault: Fault, info: AccessInfo | None) -> int:
    """HSR for a stage-2 data abort (B3.13.6): ISS valid only for ISV-capable, non-S1PTW faults."""
    _stage2(fault)
    if fault.fetch:
        raise ValueError("an instruction fetch fault is a prefetch abort")
    hsr = (HSR_EC.put(EC_DABT_LOW) | HSR_S1PTW.put(fault.s1ptw) | HSR_WNR.put(fault.write)
           | HSR_DFSC.put(fault.fsc))
    if info is None or not info.isv or fault.s1ptw:
        return hsr
    if info.write != fault.write:
        raise ValueError(f"{info.mnemonic} decoded as {'store' if info.write else 'load'} "
                         f"but the fault is a {fault.access.name.lower()}")
    return (hsr | HSR_IL.put(info.il32) | HSR_ISV.put(1) | HSR_SAS.put(_SAS[info.size])
            | HSR_SSE.put(info.sign_extend) | HSR_SRT.put(info.rt))


def hsr_prefetch_abort(fault: Fault) -> int:
    """HSR for a stage-2 prefetch abort (B3.13.6): IL is UNK/SBZP on v7, written as 0."""
    _stage2(fault)
    if not fault.fetch:
        raise ValueError("only an instruction fetch fault is a prefetch abort")
    return HSR_EC.put(EC_IABT_LOW) | HSR_S1PTW.put(fault.s1ptw) | HSR_IFSC.put(fault.fsc)


def hsr_hvc(imm16: int) -> int:
    """HSR for HVC (B3.13.6): IL=1, HVC has only 32-bit encodings; ISS = imm16."""
    return HSR_EC.put(EC_HVC) | HSR_IL.put(1) | HSR_IMM16.put(imm16)


def hpfar(ipa: int) -> int:
    """HPFAR (B4.1.66): bits [31:4] = IPA[39:12]; ValueError for an IPA beyond 40 bits."""
    if ipa < 0:
        raise ValueError(f"negative IPA {ipa}")
    return HPFAR_FIPA.put(ipa >> 12)


def decode_hsr(hsr: int) -> dict[str, int]:
    """The HSR fields by their ARM ARM names: EC, IL, then the ISS fields of that class."""
    ec = HSR_EC.get(hsr)
    fields = {"EC": ec, "IL": HSR_IL.get(hsr)}
    for name, field in _ISS_LAYOUT.get(ec, (("ISS", HSR_ISS),)):
        fields[name] = field.get(hsr)
    return fields


def _fsc_text(fsc: int) -> str:
    if fsc >> 2 in {t.value for t in FaultType}:
        return f"{FaultType(fsc >> 2).name.lower().replace('_', ' ')}, level {fsc & 3}"
    return "other"


def describe_hsr(hsr: int) -> str:
    """One line decoding every field of an HSR for humans."""
    f = decode_hsr(hsr)
    ec = f.pop("EC")
    parts = [f"HSR {hsr:#010x} EC={ec:#04x} ({_EC_NAMES.get(ec, 'unknown')}) IL={f.pop('IL')}"]
    if ec == EC_DABT_LOW:
        parts.append(f"ISV={f['ISV']}")
        if f["ISV"]:
            parts.append(f"SAS={_SAS_NAMES[f['SAS']]} SSE={f['SSE']} SRT=r{f['SRT']}")
        parts += [f"{name}=1" for name in ("EA", "CM") if f[name]]
        parts.append(f"WnR={f['WnR']} S1PTW={f['S1PTW']} "
                     f"DFSC={f['DFSC']:#04x} ({_fsc_text(f['DFSC'])})")
    elif ec == EC_IABT_LOW:
        parts += [f"{name}=1" for name in ("EA",) if f[name]]
        parts.append(f"S1PTW={f['S1PTW']} IFSC={f['IFSC']:#04x} ({_fsc_text(f['IFSC'])})")
    else:
        parts += [f"{name}={value:#x}" for name, value in f.items()]
    return " ".join(parts)


@dataclass(frozen=True)
class Syndrome:
    """What Hyp mode sees for a stage-2 abort: HSR, HPFAR and HDFAR (data) or HIFAR (fetch)."""
    hsr: int
    hpfar: int
    far: int

    @classmethod
    def for_fault(cls, fault: Fault, info: AccessInfo | None = None) -> Syndrome:
        """The registers for `fault`; fault.va (filled by the machine) becomes HDFAR/HIFAR."""
        if fault.va is None:
            raise ValueError("Fault.va must hold the faulting VA (HDFAR/HIFAR)")
        hsr = hsr_prefetch_abort(fault) if fault.fetch else hsr_data_abort(fault, info)
        return cls(hsr=hsr, hpfar=hpfar(fault.ipa), far=fault.va)

    def describe(self) -> str:
        far = "HIFAR" if HSR_EC.get(self.hsr) == EC_IABT_LOW else "HDFAR"
        ipa = HPFAR_FIPA.get(self.hpfar) << 12
        return (f"{describe_hsr(self.hsr)} HPFAR {self.hpfar:#010x} (IPA {ipa:#x}) "
                f"{far} {self.far:#010x}")
