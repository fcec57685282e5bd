"""vCPU and device state as explicit, named, versioned data (never an emulator's opaque blob:
a snapshot can be read, diffed and restored by another build).

The vCPU's registers (ARMv7-A with the Virtualization and Security Extensions, as a Non-secure
PL1 guest sees them; DDI 0406C B1.3.2, B9.1):

- core: r0-r12, sp, lr of User/System mode; the banked r8-r12 of FIQ mode; sp, lr and SPSR of
  each of FIQ, IRQ, SVC, ABT and UND mode; CPSR and PC;
- cp15: the system registers the machine models (translation, fault, vector, thread-ID,
  access-control registers; the list is `CP15`);
- vfp: D0-D31, FPSCR and FPEXC.

Device state is whatever a device's `save()` returns (JSON-able), with the device's own
version; adding a device adds one small save/load pair to it, nothing here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

VCPU_STATE_VERSION = 1
BANKED_MODES = {"fiq": 0x11, "irq": 0x12, "svc": 0x13, "abt": 0x17, "und": 0x1B}
CORE = ([f"r{i}" for i in range(13)] + ["sp_usr", "lr_usr"]
        + [f"r{i}_fiq" for i in range(8, 13)]
        + [f"{r}_{m}" for m in BANKED_MODES for r in ("sp", "lr", "spsr")]
        + ["cpsr", "pc"])
CP15 = ["SCTLR", "CPACR", "TTBR0_64", "TTBR1_64", "TTBCR", "DACR", "DFSR", "IFSR", "ADFSR",
        "AIFSR", "DFAR", "IFAR", "PAR_64", "PRRR", "NMRR", "AMAIR0", "AMAIR1", "VBAR",
        "CONTEXTIDR", "TPIDRURW", "TPIDRURO", "TPIDRPRW"]
VFP = [f"d{i}" for i in range(32)] + ["fpscr", "fpexc"]
REGISTERS = CORE + [f"cp15.{n}" for n in CP15] + [f"vfp.{n}" for n in VFP]
_WIDTH = {**{f"vfp.d{i}": 64 for i in range(32)}, "cp15.TTBR0_64": 64, "cp15.TTBR1_64": 64,
          "cp15.PAR_64": 64}


class StateError(ValueError):
    """A saved state this build cannot restore (names the problem)."""


@dataclass
class VcpuState:
    """Every register of `REGISTERS`, by name."""
    regs: dict[str, int] = field(default_factory=dict)
    version: int = VCPU_STATE_VERSION

    def to_json(self) -> dict:
        return {"version": self.version, "regs": {n: self.regs[n] for n in REGISTERS}}

    @classmethod
    def from_json(cls, obj) -> VcpuState:
        """Validate a saved vCPU: the right version, every register, nothing else, each
        value an integer that fits its register."""
        if not isinstance(obj, dict) or obj.get("version") != VCPU_STATE_VERSION:
            raise StateError(f"vCPU state version {obj.get('version') if isinstance(obj, dict) else '?'}"
                             f"; this s2emu restores version {VCPU_STATE_VERSION}")
        regs = obj.get("regs")
        if not isinstance(regs, dict):
            raise StateError("vCPU state without registers")
        missing = [n for n in REGISTERS if n not in regs]
        extra = [n for n in regs if n not in REGISTERS]
        if missing or extra:
            raise StateError(f"vCPU state registers differ: missing {missing[:3]}, "
                             f"unknown {extra[:3]}")
        for n in REGISTERS:
            v = regs[n]
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << _WIDTH.get(n, 32):
                raise StateError(f"vCPU register {n} holds {v!r}")
        return cls(dict(regs))

    def diff(self, other: VcpuState) -> dict[str, tuple[int, int]]:
        """Registers whose values differ: name -> (self, other)."""
        return {n: (self.regs[n], other.regs[n]) for n in REGISTERS
                if self.regs.get(n) != other.regs.get(n)}


def save_devices(bus) -> list[dict]:
    """Every device on the bus that has state: [{"name", "version", "state"}]."""
    out = []
    for dev in _stateful(bus):
        out.append({"name": dev.name, "version": dev.state_version, "state": dev.save()})
    return out


def _stateful(bus) -> list:
    return [r.device for r in bus.regions if hasattr(r.device, "save")] + \
        list(getattr(bus, "internal", []))


def load_devices(bus, saved: list[dict]) -> None:
    """Restore the devices `save_devices` described; StateError if they do not match."""
    devices = {dev.name: dev for dev in _stateful(bus)}
    names = [d.get("name") for d in saved if isinstance(d, dict)]
    if sorted(names) != sorted(devices) or len(names) != len(saved):
        raise StateError(f"device state for {sorted(map(str, names))}; this board has "
                         f"{sorted(devices)}")
    for d in saved:
        dev = devices[d["name"]]
        if d.get("version") != dev.state_version:
            raise StateError(f"device {dev.name} state version {d.get('version')}; this "
                             f"s2emu restores version {dev.state_version}")
        dev.load(d.get("state"))
