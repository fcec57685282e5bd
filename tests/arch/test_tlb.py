"""The VMID-tagged TLB against a dict reference model, and its maintenance operations."""
from hypothesis import given, settings, strategies as st

from hyp.arch.descriptors import Prot
from hyp.arch.tlb import TLB, TLBEntry


def entry(vmid, page, pa=0x1000):
    return TLBEntry(vmid, page << 12, page << 12, pa, Prot.RW, 3)


def test_flush_vmid_leaves_other_vmids():
    tlb = TLB()
    tlb.insert(entry(1, 5))
    tlb.insert(entry(2, 5))
    tlb.flush_vmid(1)
    assert tlb.lookup(1, 5 << 12) is None
    assert tlb.lookup(2, 5 << 12) is not None


def test_flush_vmid_ipa_flushes_whole_vmid_on_armv7():
    tlb = TLB()
    tlb.insert(entry(1, 5))
    tlb.insert(entry(1, 9))
    tlb.flush_vmid_ipa(1, 5 << 12)
    assert len(tlb) == 0 and tlb.stats["flush_vmid_ipa"] == 1


def test_flush_all_nsnh_and_listeners():
    tlb = TLB()
    seen = []
    tlb.listeners.append(lambda op, vmid: seen.append((op, vmid)))
    tlb.insert(entry(1, 1))
    tlb.insert(entry(7, 1))
    tlb.flush_all_nsnh()
    assert len(tlb) == 0 and seen == [("flush_all_nsnh", None)]


ops = st.lists(st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 3), st.integers(0, 7), st.integers(0, 99)),
    st.tuples(st.just("flush"), st.integers(0, 3)),
    st.tuples(st.just("all"))), max_size=40)


@settings(max_examples=100, deadline=None)
@given(ops)
def test_tlb_matches_reference(seq):
    tlb, ref = TLB(), {}
    for op in seq:
        if op[0] == "insert":
            _, vmid, page, pa = op
            tlb.insert(entry(vmid, page, pa << 12))
            ref[(vmid, page)] = pa << 12
        elif op[0] == "flush":
            tlb.flush_vmid(op[1])
            ref = {k: v for k, v in ref.items() if k[0] != op[1]}
        else:
            tlb.flush_all_nsnh()
            ref = {}
        for vmid in range(4):
            for page in range(8):
                e = tlb.lookup(vmid, page << 12)
                assert (e.pa_page if e else None) == ref.get((vmid, page))
