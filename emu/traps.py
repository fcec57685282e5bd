"""The Hyp traps the machine sets and what it does with each trapped CP15 access (DDI 0406C
B1.14, B4.1.65 HCR, B4.1.74 HSTR). Unicorn stops on the instruction (UC_ERR_INSN_INVALID, PC
on it); the machine completes it as the hardware would and the guest goes on.

- HCR.TVM: writes to SCTLR, TTBR0/1, TTBCR, DACR, the fault registers, PRRR/NMRR (MAIR0/1),
  AMAIR0/1, CONTEXTIDR. The value goes into the register and the MMU's view of the guest's
  translation regime is refreshed (emu.cpu.VCPU.sync_stage1).
- HCR.TTLB: TLB maintenance (c8). TLBIALL, TLBIASID, TLBIMVA, TLBIMVAA and the IS, I- and D-
  forms act on the model TLB with exactly their architectural scope, within the guest's VMID
  (and Unicorn's TLB, a cache of it, is dropped).
- HSTR.T7: every c7 access. Unicorn 2.1.4 does not implement HCR.TPU (measured: I-cache
  maintenance does not trap), so the whole of c7 traps instead: I-cache and branch-predictor
  invalidation drop Unicorn's translated code (ARM's I-cache is not coherent with data
  writes: new code runs after the guest's own maintenance, exactly); data-cache maintenance
  and the CP15 barriers complete as no-ops (memory here is coherent); ATS1C* (address
  translation) is done by the MMU model into PAR; PAR itself is read and written.
- CNTHCTL and HDCR: the physical counter and timer and the PMU, on virtual time
  (emu.timer_traps), when the board gives the vCPU a timer.
"""
from __future__ import annotations

from hyp.arch.fault import Access, Fault
from hyp.arch.s1 import PL0, PL1, S1Fault, S1Leaf

from . import timer_traps
from .cp15 import CP15, register_of, tvm_trapped
from .undef import CoprocTransfer

_TLB_OPS = {0: "all", 1: "mva", 2: "asid", 3: "mvaa"}
_ICACHE = {(1, 0), (1, 6), (5, 0), (5, 1), (5, 6), (5, 7)}      # ICIALLUIS BPIALLIS ICIALLU ...
_DCACHE = {(6, 1), (6, 2), (10, 1), (10, 2), (11, 1), (14, 1), (14, 2)}
_BARRIERS = {(5, 4), (10, 4), (10, 5), (0, 4)}                   # CP15ISB/DSB/DMB, CP15WFI
_ATS = {0: (Access.READ, PL1), 1: (Access.WRITE, PL1), 2: (Access.READ, PL0),
        3: (Access.WRITE, PL0)}


class Untrapped(Exception):
    """Not an access these traps cover: the guest gets an Undefined Instruction."""


def emulate(cpu, t: CoprocTransfer, pc: int, thumb: bool):
    """Complete the trapped access `t` at `pc`. Returns None (done: PC past it) or an exit
    for the hypervisor (a stage-2 fault on an ATS walk); Untrapped if it is none of ours."""
    if t.coproc != 15:
        raise Untrapped
    name = tvm_trapped(t)
    if name is not None:
        return _tvm_write(cpu, name, t)
    if t.crn == 8 and t.opc1 == 0 and not t.read and not t.is64 and t.crm in (3, 5, 6, 7) \
            and t.opc2 in _TLB_OPS:
        return _tlbi(cpu, _TLB_OPS[t.opc2], _value(cpu, t.rt))
    if t.crn == 7 or (t.is64 and t.crm == 7):
        return _c7(cpu, t, pc, thumb)
    if cpu.timer is not None and (t.crn in (9, 14) or (t.is64 and t.crm == 14)):
        try:
            return _done(cpu, timer_traps.emulate(cpu, t))
        except timer_traps.Untrapped:
            raise Untrapped from None
    raise Untrapped


def _value(cpu, rt: int) -> int:
    return cpu.reg(rt) if rt != 15 else 0


def _done(cpu, name: str):
    cpu.stats[f"trap {name}"] += 1
    cpu.skip_instruction(4)
    return None


def _tvm_write(cpu, name: str, t: CoprocTransfer):
    value = _value(cpu, t.rt)
    if t.is64:
        value |= _value(cpu, t.rt2) << 32
    cpu.cp15_write(name, value)
    cpu.sync_stage1()
    return _done(cpu, "tvm")


def _tlbi(cpu, op: str, value: int):
    tlb, vmid = cpu.mmu.tlb, cpu.mmu.vmid
    if op == "all":
        tlb.invalidate_all(vmid)
    elif op == "asid":
        tlb.invalidate_asid(vmid, value & 0xFF)
    elif op == "mva":
        tlb.invalidate_va(vmid, value & ~0xFFF, value & 0xFF)
    else:
        tlb.invalidate_va(vmid, value & ~0xFFF, None)
    return _done(cpu, "tlbi")


def _c7(cpu, t: CoprocTransfer, pc: int, thumb: bool):
    if t.opc1 != 0:
        raise Untrapped
    if t.crm == 4 and t.opc2 == 0 or (t.is64 and t.crm == 7):      # PAR (32- or 64-bit)
        name = "PAR_64" if t.is64 else None
        if t.read:
            value = cpu.cp15_read("PAR_64") if t.is64 else cpu.cp15_read("PAR_64") & 0xFFFFFFFF
            cpu.set_reg(t.rt, value & 0xFFFFFFFF)
            if t.is64:
                cpu.set_reg(t.rt2, value >> 32)
        else:
            value = _value(cpu, t.rt) | ((_value(cpu, t.rt2) << 32) if t.is64 else 0)
            cpu.cp15_write("PAR_64", value if name else value & 0xFFFFFFFF)
        return _done(cpu, "par")
    if t.read:
        raise Untrapped
    key = (t.crm, t.opc2)
    if key in _ICACHE:
        cpu.flush_translations()                   # the I-cache: translated code goes
        return _done(cpu, "icache")
    if key in _DCACHE or key in _BARRIERS:
        return _done(cpu, "cache")
    if t.crm == 8 and t.opc2 in _ATS:
        return _ats(cpu, _value(cpu, t.rt), *_ATS[t.opc2], pc, thumb)
    raise Untrapped


def _ats(cpu, va: int, access: Access, priv: int, pc: int, thumb: bool):
    """ATS1C{P,U}{R,W}: stage-1 translation of `va` into PAR (B4.2.6). A stage-2 fault on
    the walk goes to the hypervisor first (S1PTW); the instruction then runs again."""
    mmu = cpu.mmu
    regime = mmu.s1
    result = mmu.at(va, access, priv)
    if isinstance(result, Fault):
        return cpu._abort_exit(result, pc, thumb)
    lpae = regime.lpae
    if isinstance(result, S1Fault):
        fs = result.fsr()
        if lpae:
            par = 1 << 11 | (fs & 0x3F) << 1 | 1
        else:
            par = (fs >> 10 & 1) << 5 | (fs & 0xF) << 1 | 1
    else:
        ipa = result.ipa if isinstance(result, S1Leaf) else va & ~0xFFF
        par = (ipa & ((1 << 40) - 1) & ~0xFFF) | (1 << 11 if lpae else 0)
        if not lpae:
            par &= 0xFFFFFFFF
    cpu.cp15_write("PAR_64", par)
    return _done(cpu, "ats")


__all__ = ["emulate", "Untrapped", "register_of", "CP15"]
