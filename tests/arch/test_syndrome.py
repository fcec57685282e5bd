"""HSR/HPFAR against values assembled by hand from the DDI 0406C bit layouts.

HSR (B4.1.61): EC [31:26], IL [25], ISS [24:0]. Data abort ISS (B3.13.6): ISV [24],
SAS [23:22], SSE [21], SRT [19:16], EA [9], CM [8], S1PTW [7], WnR [6], DFSC [5:0].
HPFAR (B4.1.66): [31:4] = IPA[39:12]. IL is 0 when not valid (prefetch aborts, ISV=0), as
QEMU 7.2 writes it for a v7 CPU.
"""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from hyp.arch.fault import Access, Fault, FaultType
from hyp.arch.syndrome import (AccessInfo, Syndrome, decode_hsr, describe_hsr, hpfar,
                               hsr_data_abort, hsr_hvc, hsr_prefetch_abort)

AS, TR, AF, PE = (FaultType.ADDRESS_SIZE, FaultType.TRANSLATION, FaultType.ACCESS_FLAG,
                  FaultType.PERMISSION)
RD, WR, FE = Access.READ, Access.WRITE, Access.FETCH


def insn(size: int, rt: int, *, write: bool = False, sse: bool = False, il32: bool = True,
         isv: bool = True, mnemonic: str = "ldr") -> AccessInfo:
    return AccessInfo(isv=isv, size=size, sign_extend=sse, rt=rt, write=write,
                      addr=0x8000, length=size, il32=il32, mnemonic=mnemonic)


def fault(type_: FaultType, level: int, access: Access, s1ptw: bool = False,
          ipa: int = 0x4000_0000, va: int | None = 0x8000) -> Fault:
    return Fault(type_, level, access, ipa, s1ptw=s1ptw, va=va)


DATA_ABORTS = [
    # EC=100100 IL=1 ISV=1 SAS=10 SSE=0 SRT=0000 S1PTW=0 WnR=0 DFSC=000101
    pytest.param(fault(TR, 1, RD), insn(4, 0), 0x9380_0005, id="translation L1 ldr r0"),
    # EC=100100 IL=1 ISV=1 SAS=01 SSE=0 SRT=1001 S1PTW=0 WnR=0 DFSC=000110
    pytest.param(fault(TR, 2, RD), insn(2, 9), 0x9349_0006, id="translation L2 ldrh r9"),
    # EC=100100 IL=0 ISV=1 SAS=01 SSE=0 SRT=0011 S1PTW=0 WnR=1 DFSC=000110
    pytest.param(fault(TR, 2, WR), insn(2, 3, write=True, il32=False), 0x9143_0046,
                 id="translation L2 16-bit strh r3"),
    # EC=100100 IL=1 ISV=1 SAS=00 SSE=1 SRT=1100 S1PTW=0 WnR=0 DFSC=000111
    pytest.param(fault(TR, 3, RD), insn(1, 12, sse=True), 0x932C_0007,
                 id="translation L3 ldrsb r12"),
    # EC=100100 IL=0 ISV=1 SAS=01 SSE=1 SRT=0111 S1PTW=0 WnR=0 DFSC=000111
    pytest.param(fault(TR, 3, RD), insn(2, 7, sse=True, il32=False), 0x9167_0007,
                 id="translation L3 16-bit ldrsh r7"),
    # EC=100100 IL=1 ISV=1 SAS=10 SSE=0 SRT=1110 S1PTW=0 WnR=1 DFSC=000101
    pytest.param(fault(TR, 1, WR), insn(4, 14, write=True), 0x938E_0045,
                 id="translation L1 str lr"),
    # EC=100100 IL=1 ISV=1 SAS=00 SSE=0 SRT=0001 S1PTW=0 WnR=1 DFSC=001111
    pytest.param(fault(PE, 3, WR), insn(1, 1, write=True), 0x9301_004F,
                 id="permission L3 strb r1"),
    # EC=100100 IL=0 ISV=1 SAS=10 SSE=0 SRT=0101 S1PTW=0 WnR=1 DFSC=001111
    pytest.param(fault(PE, 3, WR), insn(4, 5, write=True, il32=False), 0x9185_004F,
                 id="permission L3 16-bit str r5"),
    # EC=100100 IL=1 ISV=1 SAS=10 SSE=0 SRT=1110 S1PTW=0 WnR=0 DFSC=001010
    pytest.param(fault(AF, 2, RD), insn(4, 14), 0x938E_000A, id="access flag L2 ldr lr"),
    # EC=100100 IL=1 ISV=1 SAS=10 SSE=0 SRT=0010 S1PTW=0 WnR=0 DFSC=000000
    pytest.param(fault(AS, 0, RD), insn(4, 2), 0x9382_0000, id="address size L0 ldr r2"),
    # EC=100100 IL=0 ISV=0 SAS=00 SSE=0 SRT=0000 S1PTW=0 WnR=0 DFSC=000111
    pytest.param(fault(TR, 3, RD), insn(4, 2, isv=False, mnemonic="ldm"), 0x9000_0007,
                 id="translation L3 ldm (ISV=0)"),
    # EC=100100 IL=0 ISV=0 ... S1PTW=0 WnR=1 DFSC=000111
    pytest.param(fault(TR, 3, WR), insn(4, 4, write=True, isv=False, mnemonic="push"),
                 0x9000_0047, id="translation L3 push (ISV=0)"),
    # EC=100100 IL=0 ISV=0 ... S1PTW=0 WnR=0 DFSC=000110
    pytest.param(fault(TR, 2, RD), insn(8, 0, isv=False, mnemonic="ldrd"), 0x9000_0006,
                 id="translation L2 ldrd (ISV=0)"),
    # EC=100100 IL=0 ISV=0 ... S1PTW=0 WnR=1 DFSC=001110
    pytest.param(fault(PE, 2, WR), None, 0x9000_004E, id="permission L2, instruction unknown"),
    # EC=100100 IL=0 ISV=0 ... S1PTW=1 WnR=0 DFSC=000110: a walk fault never has a valid ISS
    pytest.param(fault(TR, 2, RD, s1ptw=True), insn(4, 3), 0x9000_0086,
                 id="S1PTW translation L2 under ldr r3"),
    # EC=100100 IL=0 ISV=0 ... S1PTW=1 WnR=1 DFSC=001001: WnR is the instruction's access
    pytest.param(fault(AF, 1, WR, s1ptw=True), insn(4, 3, write=True), 0x9000_00C9,
                 id="S1PTW access flag L1 under str r3"),
]


@pytest.mark.parametrize("flt, info, hsr", DATA_ABORTS)
def test_data_abort_hsr(flt: Fault, info: AccessInfo | None, hsr: int) -> None:
    assert hsr_data_abort(flt, info) == hsr


@pytest.mark.parametrize("flt, hsr", [
    # EC=100000 IL=0 S1PTW=0 IFSC=000101
    pytest.param(fault(TR, 1, FE), 0x8000_0005, id="translation L1"),
    # EC=100000 IL=0 S1PTW=0 IFSC=001111: stage-2 XN
    pytest.param(fault(PE, 3, FE), 0x8000_000F, id="permission L3 (XN)"),
    # EC=100000 IL=0 S1PTW=1 IFSC=000110
    pytest.param(fault(TR, 2, FE, s1ptw=True), 0x8000_0086, id="S1PTW translation L2"),
])
def test_prefetch_abort_hsr(flt: Fault, hsr: int) -> None:
    assert hsr_prefetch_abort(flt) == hsr


@pytest.mark.parametrize("imm16, hsr", [
    pytest.param(0x0000, 0x4A00_0000, id="hvc #0"),     # EC=010010 IL=1 imm16=0x0000
    pytest.param(0x1234, 0x4A00_1234, id="hvc #0x1234"),
    pytest.param(0xFFFF, 0x4A00_FFFF, id="hvc #0xffff"),
])
def test_hvc_hsr(imm16: int, hsr: int) -> None:
    assert hsr_hvc(imm16) == hsr


@pytest.mark.parametrize("ipa, value", [
    pytest.param(0x4000_0000, 0x0040_0000, id="RAM base"),
    pytest.param(0x4000_1FFF, 0x0040_0010, id="page offset dropped"),
    pytest.param(0x1_2345_6000, 0x0123_4560, id="above 4 GiB"),
    pytest.param(0xFF_FFFF_F000, 0xFFFF_FFF0, id="top of 40 bits"),
])
def test_hpfar(ipa: int, value: int) -> None:
    assert hpfar(ipa) == value


def test_decode_hsr_fields() -> None:
    assert decode_hsr(0x932C_0007) == {"EC": 0x24, "IL": 1, "ISV": 1, "SAS": 0, "SSE": 1,
                                       "SRT": 12, "EA": 0, "CM": 0, "S1PTW": 0, "WnR": 0,
                                       "DFSC": 0x07}
    assert decode_hsr(0x8000_0086) == {"EC": 0x20, "IL": 0, "EA": 0, "S1PTW": 1, "IFSC": 0x06}
    assert decode_hsr(0x4A00_1234) == {"EC": 0x12, "IL": 1, "imm16": 0x1234}
    assert decode_hsr(0x0600_0001) == {"EC": 0x01, "IL": 1, "ISS": 0x0000_0001}


def test_syndrome_for_data_abort() -> None:
    s = Syndrome.for_fault(fault(TR, 2, RD, va=0x4000_0010), insn(4, 12))
    assert s == Syndrome(hsr=0x938C_0006, hpfar=0x0040_0000, far=0x4000_0010)
    assert s.describe() == (
        "HSR 0x938c0006 EC=0x24 (data abort, lower EL) IL=1 ISV=1 SAS=word SSE=0 SRT=r12 "
        "WnR=0 S1PTW=0 DFSC=0x06 (translation, level 2) HPFAR 0x00400000 (IPA 0x40000000) "
        "HDFAR 0x40000010")


def test_syndrome_for_prefetch_abort() -> None:
    s = Syndrome.for_fault(fault(PE, 3, FE, ipa=0x4000_1000, va=0x8000))
    assert s == Syndrome(hsr=0x8000_000F, hpfar=0x0040_0010, far=0x8000)
    assert s.describe() == (
        "HSR 0x8000000f EC=0x20 (prefetch abort, lower EL) IL=0 S1PTW=0 IFSC=0x0f "
        "(permission, level 3) HPFAR 0x00400010 (IPA 0x40001000) HIFAR 0x00008000")


def test_describe_hsr() -> None:
    assert describe_hsr(0x9000_0047) == ("HSR 0x90000047 EC=0x24 (data abort, lower EL) IL=0 "
                                         "ISV=0 WnR=1 S1PTW=0 DFSC=0x07 (translation, level 3)")
    assert describe_hsr(0x4A00_1234) == "HSR 0x4a001234 EC=0x12 (HVC) IL=1 imm16=0x1234"


@pytest.mark.parametrize("call", [
    pytest.param(lambda: hpfar(1 << 40), id="IPA beyond 40 bits"),
    pytest.param(lambda: hsr_hvc(0x1_0000), id="imm16 too wide"),
    pytest.param(lambda: hsr_data_abort(fault(TR, 1, FE), None), id="fetch as data abort"),
    pytest.param(lambda: hsr_prefetch_abort(fault(TR, 1, RD)), id="read as prefetch abort"),
    pytest.param(lambda: hsr_data_abort(Fault(TR, 1, RD, 0x1000, stage=1), None),
                 id="stage-1 fault"),
    pytest.param(lambda: hsr_data_abort(fault(TR, 1, WR), insn(4, 0)), id="ldr but a write"),
    pytest.param(lambda: Syndrome.for_fault(fault(TR, 1, RD, va=None)), id="no VA"),
])
def test_rejects_inconsistent_input(call: object) -> None:
    with pytest.raises(ValueError):
        call()


def _fsc(type_: FaultType, level: int) -> int:
    """Table B3-24: 0bTTTTLL, except a synchronous external abort not on a walk: 0b010000."""
    return 0b010000 if type_ is FaultType.EXTERNAL else type_.value << 2 | level


@given(type_=st.sampled_from(FaultType), level=st.integers(0, 3), write=st.booleans(),
       s1ptw=st.booleans(), isv=st.booleans(), size=st.sampled_from([1, 2, 4]),
       sse=st.booleans(), rt=st.integers(0, 14), il32=st.booleans())
def test_data_abort_round_trip(type_: FaultType, level: int, write: bool, s1ptw: bool,
                               isv: bool, size: int, sse: bool, rt: int, il32: bool) -> None:
    info = insn(size, rt, write=write, sse=sse, il32=il32, isv=isv)
    fields = decode_hsr(hsr_data_abort(fault(type_, level, WR if write else RD, s1ptw), info))
    valid = isv and not s1ptw
    sas = {1: 0b00, 2: 0b01, 4: 0b10}[size]
    assert fields == {"EC": 0x24, "IL": int(valid and il32), "ISV": int(valid),
                      "SAS": sas if valid else 0, "SSE": int(valid and sse),
                      "SRT": rt if valid else 0, "EA": 0, "CM": 0, "S1PTW": int(s1ptw),
                      "WnR": int(write), "DFSC": _fsc(type_, level)}


@given(type_=st.sampled_from(FaultType), level=st.integers(0, 3), s1ptw=st.booleans(),
       imm16=st.integers(0, 0xFFFF), ipa=st.integers(0, (1 << 40) - 1))
def test_prefetch_hvc_hpfar_round_trip(type_: FaultType, level: int, s1ptw: bool, imm16: int,
                                       ipa: int) -> None:
    assert decode_hsr(hsr_prefetch_abort(fault(type_, level, FE, s1ptw))) == {
        "EC": 0x20, "IL": 0, "EA": 0, "S1PTW": int(s1ptw), "IFSC": _fsc(type_, level)}
    assert decode_hsr(hsr_hvc(imm16)) == {"EC": 0x12, "IL": 1, "imm16": imm16}
    assert hpfar(ipa) == (ipa >> 12) << 4
