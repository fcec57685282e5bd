"""The guest's CP15 registers in Unicorn, and the Hyp traps the machine emulates.

Registers are UC_ARM_REG_CP_REG tuples (cp, is64, sec, crn, crm, opc1, opc2), non-secure bank
(the guest runs in Non-secure PL1, SCR.NS=1). Unicorn has no CP15 hook on 32-bit ARM
(DESIGN 5b); the Hyp trap controls make it stop on the instruction instead:

- HCR.TVM (B4.1.65): guest writes to the virtual-memory control registers - SCTLR, TTBR0,
  TTBR1, TTBCR, DACR, DFSR, IFSR, DFAR, IFAR, ADFSR, AIFSR, PRRR/MAIR0, NMRR/MAIR1,
  AMAIR0/1, CONTEXTIDR - trap, so the machine always knows the guest's translation regime the
  moment it changes. The write is emulated (the value goes into Unicorn's register) and the
  instruction completes.
"""
from __future__ import annotations

from .undef import CoprocTransfer

CP15 = {
    "SCTLR": (15, 0, 0, 1, 0, 0, 0),
    "CPACR": (15, 0, 0, 1, 0, 0, 2),
    "TTBR0": (15, 0, 0, 2, 0, 0, 0),
    "TTBR1": (15, 0, 0, 2, 0, 0, 1),
    "TTBCR": (15, 0, 0, 2, 0, 0, 2),
    "DACR": (15, 0, 0, 3, 0, 0, 0),
    "DFSR": (15, 0, 0, 5, 0, 0, 0),
    "IFSR": (15, 0, 0, 5, 0, 0, 1),
    "ADFSR": (15, 0, 0, 5, 1, 0, 0),
    "AIFSR": (15, 0, 0, 5, 1, 0, 1),
    "DFAR": (15, 0, 0, 6, 0, 0, 0),
    "IFAR": (15, 0, 0, 6, 0, 0, 2),
    "PRRR": (15, 0, 0, 10, 2, 0, 0),          # MAIR0 under LPAE
    "NMRR": (15, 0, 0, 10, 2, 0, 1),          # MAIR1 under LPAE
    "AMAIR0": (15, 0, 0, 10, 3, 0, 0),
    "AMAIR1": (15, 0, 0, 10, 3, 0, 1),
    "VBAR": (15, 0, 0, 12, 0, 0, 0),
    "CONTEXTIDR": (15, 0, 0, 13, 0, 0, 1),
    "TPIDRURW": (15, 0, 0, 13, 0, 0, 2),
    "TPIDRURO": (15, 0, 0, 13, 0, 0, 3),
    "TPIDRPRW": (15, 0, 0, 13, 0, 0, 4),
    "PAR_64": (15, 1, 0, 0, 7, 0, 0),         # MRRC p15, 0, Rt, Rt2, c7 (LPAE)
    "TTBR0_64": (15, 1, 0, 0, 2, 0, 0),       # MCRR p15, 0, Rt, Rt2, c2 (LPAE)
    "TTBR1_64": (15, 1, 0, 0, 2, 1, 0),       # MCRR p15, 1, Rt, Rt2, c2
}
SCR = (15, 0, 1, 1, 1, 0, 0)                  # secure bank
HCR = (15, 0, 0, 1, 1, 4, 0)
HSTR = (15, 0, 0, 1, 1, 4, 3)
VMPIDR = (15, 0, 0, 0, 0, 4, 5)               # what NS PL1 reads as MPIDR
SCR_HCE = 1 << 8
HCR_TVM = 1 << 26
HCR_TTLB = 1 << 25
HCR_TRAPS = HCR_TVM | HCR_TTLB
HCR_FMO, HCR_IMO, HCR_VF, HCR_VI = 1 << 3, 1 << 4, 1 << 6, 1 << 7      # virtual FIQ/IRQ
HSTR_T7 = 1 << 7                 # every CP15 c7 access: cache maintenance, ATS, barriers
HSTR_TRAPS = HSTR_T7
SCTLR_M = 1 << 0

_TVM = {"SCTLR", "TTBR0", "TTBR1", "TTBCR", "DACR", "DFSR", "IFSR", "ADFSR", "AIFSR", "DFAR",
        "IFAR", "PRRR", "NMRR", "AMAIR0", "AMAIR1", "CONTEXTIDR", "TTBR0_64", "TTBR1_64"}
_BY_ENCODING = {(t[1], t[3], t[4], t[5], t[6]): name for name, t in CP15.items()}


def register_of(t: CoprocTransfer) -> str | None:
    """The CP15 register a transfer names, if the machine knows it."""
    if t.coproc != 15:
        return None
    return _BY_ENCODING.get((int(t.is64), t.crn, t.crm, t.opc1, t.opc2))


def tvm_trapped(t: CoprocTransfer) -> str | None:
    """The register, if `t` is a write that HCR.TVM traps."""
    name = register_of(t)
    return name if name in _TVM and not t.read else None
