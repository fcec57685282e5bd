"""LPAE stage-2 descriptor encoding (DDI 0406C B3.6.1/B3.6.2), with literal expected values."""
import pytest
from hypothesis import given, strategies as st

from hyp.arch import descriptors as d
from hyp.arch.descriptors import Kind, Prot


@pytest.mark.parametrize("pa,level,prot,af,want", [
    # page: [1:0]=0b11, MemAttr=0b1111 [5:2], S2AP [7:6], SH=0b11 [9:8], AF [10], XN [54]
    pytest.param(0x1_2345_6000, 3, Prot.RW, True, 0x0040_0001_2345_67FF, id="page-rw-xn"),
    pytest.param(0x1_2345_6000, 3, Prot.RWX, True, 0x0000_0001_2345_67FF, id="page-rwx"),
    pytest.param(0x1_2345_6000, 3, Prot.R | Prot.X, True, 0x0000_0001_2345_677F, id="page-rx"),
    pytest.param(0x1_2345_6000, 3, Prot.W, False, 0x0040_0001_2345_63BF, id="page-wo-noaf"),
    # blocks: [1:0]=0b01
    pytest.param(0x80_0020_0000, 2, Prot.NONE, True, 0x0040_0080_0020_073D, id="2M-none"),
    pytest.param(0x40_4000_0000, 1, Prot.RWX, True, 0x0000_0040_4000_07FD, id="1G-rwx"),
])
def test_make_leaf_exact(pa, level, prot, af, want):
    desc = d.make_leaf(pa, level, prot, af=af)
    assert desc == want
    assert d.bits_to_prot(desc) == prot
    assert d.out_addr(desc, level) == pa
    assert d.kind(desc, level) is (Kind.PAGE if level == 3 else Kind.BLOCK)


@pytest.mark.parametrize("desc,level,kind", [
    pytest.param(0x0, 1, Kind.INVALID, id="zero"),
    pytest.param(0x2, 2, Kind.INVALID, id="bit0-clear"),
    pytest.param(0x1000_0003, 1, Kind.TABLE, id="table-L1"),
    pytest.param(0x1000_0003, 2, Kind.TABLE, id="table-L2"),
    pytest.param(0x1000_0003, 3, Kind.PAGE, id="page-L3"),
    pytest.param(0x4000_0001, 1, Kind.BLOCK, id="block-L1"),
    pytest.param(0x20_0001, 2, Kind.BLOCK, id="block-L2"),
    pytest.param(0x1001, 3, Kind.INVALID, id="0b01-at-L3-reserved"),
])
def test_kind_per_level(desc, level, kind):
    assert d.kind(desc, level) is kind


def test_misaligned_leaf_rejected():
    with pytest.raises(ValueError):
        d.make_leaf(0x1000, 2, Prot.RW)


@given(st.sampled_from(list(Prot)), st.sampled_from(list(Prot)))
def test_with_prot_changes_only_permissions(p1, p2):
    desc = d.make_leaf(0x5_0000_0000, 2, p1)
    new = d.with_prot(desc, p2)
    assert d.bits_to_prot(new) == p2
    assert new & ~d.PROT_BITS_MASK == desc & ~d.PROT_BITS_MASK


def test_table_descriptor_and_describe():
    t = d.make_table(0x1_0000_3000)
    assert t == 0x1_0000_3003 and d.kind(t, 1) is Kind.TABLE
    assert d.describe(t, 1) == "0x0000000100003003 table -> 0x100003000"
    assert d.describe(0x0040_0001_2345_67FF, 3).endswith("page -> 0x123456000 S2AP=11 rw- AF=1 "
                                                        "XN=1 MemAttr=1111")
