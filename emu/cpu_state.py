"""A vCPU's registers in and out of Unicorn, by name (hyp.migration.state.VcpuState).

Unicorn exposes only the current mode's banked registers: the others are read and written by
switching CPSR.M (a raw CPSR write switches banks, as an exception entry would) and back.
Nothing here touches guest memory or the TLB; the run of the vCPU after a restore is
indistinguishable from one that never stopped.
"""
from __future__ import annotations

from unicorn import arm_const as A

from hyp.migration.state import BANKED_MODES, CP15 as CP15_NAMES, REGISTERS, VcpuState

from .cp15 import CP15

MODE_USR, MODE_SYS = 0x10, 0x1F
_R = [A.UC_ARM_REG_R0 + i for i in range(13)]
_D = [getattr(A, f"UC_ARM_REG_D{i}") for i in range(32)]


def _with_mode(uc, mode: int, fn):
    cpsr = uc.reg_read(A.UC_ARM_REG_CPSR)
    uc.reg_write(A.UC_ARM_REG_CPSR, (cpsr & ~0x1F) | mode)
    try:
        return fn()
    finally:
        uc.reg_write(A.UC_ARM_REG_CPSR, cpsr)


def save(cpu) -> VcpuState:
    """Every register of the vCPU (an emu.cpu.VCPU), by name."""
    uc = cpu.uc
    regs: dict[str, int] = {}

    def user():
        for i in range(13):
            regs[f"r{i}"] = uc.reg_read(_R[i])
        regs["sp_usr"] = uc.reg_read(A.UC_ARM_REG_SP)
        regs["lr_usr"] = uc.reg_read(A.UC_ARM_REG_LR)
    _with_mode(uc, MODE_SYS, user)
    for name, mode in BANKED_MODES.items():
        def banked(name=name):
            if name == "fiq":
                for i in range(8, 13):
                    regs[f"r{i}_fiq"] = uc.reg_read(_R[i])
            regs[f"sp_{name}"] = uc.reg_read(A.UC_ARM_REG_SP)
            regs[f"lr_{name}"] = uc.reg_read(A.UC_ARM_REG_LR)
            regs[f"spsr_{name}"] = uc.reg_read(A.UC_ARM_REG_SPSR)
        _with_mode(uc, mode, banked)
    regs["cpsr"] = uc.reg_read(A.UC_ARM_REG_CPSR)
    regs["pc"] = cpu.pc | (1 if cpu.thumb else 0)
    for n in CP15_NAMES:
        regs[f"cp15.{n}"] = cpu.cp15_read(n)
    for i in range(32):
        regs[f"vfp.d{i}"] = uc.reg_read(_D[i])
    regs["vfp.fpscr"] = uc.reg_read(A.UC_ARM_REG_FPSCR)
    regs["vfp.fpexc"] = uc.reg_read(A.UC_ARM_REG_FPEXC)
    assert list(regs) == REGISTERS or set(regs) == set(REGISTERS)
    return VcpuState(regs)


def load(cpu, state: VcpuState) -> None:
    """Put every register of `state` into the vCPU."""
    uc, regs = cpu.uc, state.regs
    for n in CP15_NAMES:
        cpu.cp15_write(n, regs[f"cp15.{n}"])
    uc.reg_write(A.UC_ARM_REG_FPEXC, regs["vfp.fpexc"])
    for i in range(32):
        uc.reg_write(_D[i], regs[f"vfp.d{i}"])
    uc.reg_write(A.UC_ARM_REG_FPSCR, regs["vfp.fpscr"])

    def user():
        for i in range(13):
            uc.reg_write(_R[i], regs[f"r{i}"])
        uc.reg_write(A.UC_ARM_REG_SP, regs["sp_usr"])
        uc.reg_write(A.UC_ARM_REG_LR, regs["lr_usr"])
    _with_mode(uc, MODE_SYS, user)
    for name, mode in BANKED_MODES.items():
        def banked(name=name):
            if name == "fiq":
                for i in range(8, 13):
                    uc.reg_write(_R[i], regs[f"r{i}_fiq"])
            uc.reg_write(A.UC_ARM_REG_SP, regs[f"sp_{name}"])
            uc.reg_write(A.UC_ARM_REG_LR, regs[f"lr_{name}"])
            uc.reg_write(A.UC_ARM_REG_SPSR, regs[f"spsr_{name}"])
        _with_mode(uc, mode, banked)
    # r8-r12 of the current mode: FIQ's bank was written above, every other mode's is User's
    cpu.set_cpsr(regs["cpsr"])
    pc = regs["pc"]
    cpu.set_pc(pc & ~1, bool(pc & 1))
    cpu.flush_unicorn_tlb()
    cpu.sync_stage1()            # the MMU model follows the restored translation registers
