"""SCTLR.A (DDI 0406C A3.2.1, Table A3-1): with A=1 unaligned single halfword/word loads and
stores take the guest's Alignment fault before anything is accessed; byte accesses, aligned
ones, condition-failed ones and everything with A=0 run (emu/align.py: Unicorn ignores A)."""
import pytest

from snippet import DATA, NO_VECTOR, OFF, Snippet, arm, thumb

DABT = 0x10
T_OFF = (0xF240, 0x0008, 0xF2C8, 0x4000, 0xF7E0, 0x8000)
SET_A = (0xEE110F10, 0xE3800002, 0xEE010F10, 0xF57FF06F)   # mrc sctlr; orr #2; mcr; isb
T_SET_A = (0xEE11, 0x0F10, 0xF040, 0x0002, 0xEE01, 0x0F10, 0xF3BF, 0x8F6F)
CMP_EQ = 0xE1500000                                        # cmp r0, r0: Z = 1
OLD = 0x5A5A5A5A


@pytest.mark.parametrize("code,is_thumb,addr,fault,dfsr", [
    pytest.param(arm(*SET_A, 0xE5912000, *OFF), False, DATA + 2, True, 0x001, id="ldr+2"),
    pytest.param(arm(*SET_A, 0xE5912000, *OFF), False, DATA + 4, False, None, id="ldr aligned"),
    pytest.param(arm(*SET_A, 0xE1D120B0, *OFF), False, DATA + 1, True, 0x001, id="ldrh+1"),
    pytest.param(arm(*SET_A, 0xE1D120B0, *OFF), False, DATA + 2, False, None, id="ldrh+2 ok"),
    pytest.param(arm(*SET_A, 0xE1D120F0, *OFF), False, DATA + 3, True, 0x001, id="ldrsh+3"),
    pytest.param(arm(*SET_A, 0xE5812000, *OFF), False, DATA + 1, True, 0x801, id="str WnR"),
    pytest.param(arm(*SET_A, 0xE1C120B0, *OFF), False, DATA + 1, True, 0x801, id="strh WnR"),
    pytest.param(arm(*SET_A, 0xE4B12000, *OFF), False, DATA + 2, True, 0x001, id="ldrt"),
    pytest.param(arm(*SET_A, 0xE5D12000, *OFF), False, DATA + 1, False, None, id="ldrb never"),
    pytest.param(arm(*SET_A, CMP_EQ, 0x15912000, *OFF), False, DATA + 2, False, None,
                 id="ldrne not executed"),
    pytest.param(arm(*SET_A, CMP_EQ, 0x05912000, *OFF), False, DATA + 2, True, 0x001,
                 id="ldreq executed"),
    pytest.param(arm(0xE5912000, *OFF), False, DATA + 2, False, None, id="A=0 ldr+2 loads"),
    pytest.param(thumb(*T_SET_A, 0x680A, *T_OFF), True, DATA + 2, True, 0x001, id="thumb ldr"),
    pytest.param(thumb(*T_SET_A, 0x800A, *T_OFF), True, DATA + 1, True, 0x801,
                 id="thumb strh"),
    pytest.param(thumb(*T_SET_A, 0x680A, *T_OFF), True, DATA + 8, False, None,
                 id="thumb aligned"),
])
def test_sctlr_a_alignment(code, is_thumb, addr, fault, dfsr):
    s = Snippet(code, is_thumb=is_thumb, regs={1: addr, 2: OLD})
    s.m.host.mem.write(s.m.ram.pa + (DATA - 0x40000000), bytes(range(16)))
    r = s.run()
    assert r.reason == "off", r
    if fault:
        assert s.vector() == DABT
        assert (s.cpu.cp15_read("DFSR"), s.cpu.cp15_read("DFAR")) == (dfsr, addr)
        # Nothing happened: no register loaded, no base written back, no memory stored.
        assert s.cpu.reg(2) == OLD and s.cpu.reg(1) == addr
        assert s.m.vm.read_guest(DATA, 16) == bytes(range(16))
    else:
        assert s.vector() == NO_VECTOR
        assert s.cpu.reg(2) != OLD or s.m.vm.read_guest(DATA, 16) == bytes(range(16))


def test_the_hook_goes_when_the_guest_clears_a():
    clear_a = (0xEE110F10, 0xE3C00002, 0xEE010F10, 0xF57FF06F)   # bic r0, r0, #2
    s = Snippet(arm(*SET_A, *clear_a, 0xE5912000, *OFF), regs={1: DATA + 2, 2: OLD})
    r = s.run()
    assert r.reason == "off" and s.vector() == NO_VECTOR and not s.cpu.align.active
    assert s.cpu.reg(2) != OLD
