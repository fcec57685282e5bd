"""Boards: `Machine` (QEMU-virt-like board running one VM under our hypervisor) and
`BareMachine` (host memory + CPU only: the low-level entry point for test harnesses)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from hyp.arch.mmu import MMU
from hyp.host import TABLE_POOL, Host
from hyp.timer.arch_timer import ArchTimer
from hyp.timer.pmu import Pmu
from hyp.psci import PowerState
from hyp.smp import Scheduler
from hyp.vcpu import RunResult, Vcpu
from hyp.vm import VM

from . import cpu_state
from .boot import loader
from .cpu import VCPU
from .devices import gic
from .devices.flash import Flash
from .devices.pl011 import PL011
from .stop import StopControl

# QEMU virt memory map (hw/arm/virt.c), DESIGN 2a.
FLASH0 = 0x0000_0000
FLASH1 = 0x0400_0000
FLASH_SIZE = 0x0400_0000
UART0 = 0x0900_0000
RAM_BASE = 0x4000_0000
DEFAULT_RAM = 128 << 20
MAX_RAM = 255 << 30          # virt: RAM up to 256 GiB below the 40-bit limit
MAX_SMP = 8                  # one GICv2 serves at most 8 CPU interfaces


def host_memory() -> int:
    """What this host can back with memory: RAM plus swap (the kernel's overcommit heuristic
    refuses one allocation larger than that)."""
    try:
        with open("/proc/meminfo") as f:
            info = {k: int(v.split()[0]) * 1024 for k, v in
                    (line.split(":", 1) for line in f if ":" in line)}
        return info["MemTotal"] + info.get("SwapTotal", 0)
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_ram_size(size: int, text: str | None = None) -> None:
    """ValueError unless `size` bytes of guest RAM fit the board and this host."""
    what = text or f"{size >> 20}M"
    if size > MAX_RAM:
        raise ValueError(f"--mem {what}: the board has room for at most {MAX_RAM >> 30} GiB "
                         f"of RAM")
    overhead = Host.size_for([size, FLASH_SIZE, FLASH_SIZE]) - size + TABLE_POOL
    limit = host_memory() - overhead
    if size > limit:
        raise ValueError(f"--mem {what} is more than this host can back: at most "
                         f"{max(0, limit) >> 20} MiB (host RAM + swap "
                         f"{host_memory() / (1 << 30):.1f} GiB, less "
                         f"{overhead >> 20} MiB for flash and stage-2 tables)")


def parse_size(text: str) -> int:
    """'128M', '1G', '4096K', '65536' -> bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "KMG" else t
    try:
        value = int(num, 0) * mult
    except ValueError:
        raise ValueError(f"bad size {text!r} (use e.g. 128M, 1G)") from None
    if value <= 0 or value % 4096:
        raise ValueError(f"size {text!r} must be a positive multiple of 4 KiB")
    return value


def board_slots(ram: int) -> list[int]:
    """The sizes of the memslots one `Machine` allocates from its host."""
    return [ram, FLASH_SIZE, FLASH_SIZE]


class BareMachine:
    """Host memory and a CPU with no hypervisor: the caller writes stage-2 tables and code into
    `mem`, sets HCR/VTCR/VTTBR with `cpu.load_stage2`, and gets every exit from `cpu.run`."""

    def __init__(self, host_size: int = 64 << 20, *, icount: bool = True) -> None:
        self.host = Host(host_size)
        self.mem = self.host.mem
        self.mmu = MMU(self.mem, self.host.tlb)
        self.cpu = VCPU(self.mem, self.mmu, icount=icount)

    def skip(self, exit_) -> None:
        """Step over the instruction that caused a stage-2 abort exit (HSR.IL is only valid
        with ISV=1 on v7, so the length comes from the instruction itself)."""
        self.cpu.set_pc(exit_.pc + self.cpu.insn_length(exit_.pc, exit_.thumb), exit_.thumb)


class _PowerDevice:
    """The vCPUs' PSCI power states and which of them wait in WFI or WFE, for migration."""
    name = "vcpu-power"
    state_version = 2

    def __init__(self, m: "Machine") -> None:
        self.m = m

    def save(self) -> dict:
        sched = self.m.vcpu if isinstance(self.m.vcpu, Scheduler) else None
        return {"power": self.m.vm.power.save(),
                "halted": list(sched.halted) if sched else [False],
                "waiting": list(sched.waiting) if sched else [False]}

    def load(self, state) -> None:
        if not isinstance(state, dict) or set(state) != {"power", "halted", "waiting"}:
            raise ValueError(f"vCPU power state {state!r:.60}")
        flags = {}
        for name in ("halted", "waiting"):
            f = state[name]
            if not isinstance(f, list) or len(f) != len(self.m.cpus) or \
                    any(not isinstance(h, bool) for h in f):
                raise ValueError(f"vCPU {name} flags {f!r:.60}")
            flags[name] = list(f)
        self.m.vm.power.load(state["power"])
        if isinstance(self.m.vcpu, Scheduler):
            self.m.vcpu.halted, self.m.vcpu.waiting = flags["halted"], flags["waiting"]


@dataclass
class Extra:
    """An extra RAM memslot (e.g. a test region for dirty logging)."""
    ipa: int
    size: int
    max_level: int = 1
    name: str = "extra"


class Machine:
    """The `virt`-like board: RAM at 0x40000000, flash0 (read-only) and flash1 (read-only,
    execute-never) memslots, a PL011 at 0x09000000, a GICv2 at 0x08000000/0x08010000, the
    Generic Timer and PMU on virtual time, PSCI over HVC."""

    def __init__(self, ram: int = DEFAULT_RAM, *, split: str = "lazy", icount: bool = True,
                 max_level: int = 1, console: Callable[[bytes], None] | None = None,
                 extra: list[Extra] | None = None, host: Host | None = None,
                 mmu: MMU | None = None, name: str = "vm", stop=None, smp: int = 1) -> None:
        """`host`/`mmu`/`stop`: share one host (memory, table pool, VMIDs, TLB), one physical
        CPU's MMU and its stop requests with other VMs (emu.host_machine); by default the
        board has its own."""
        if not 0 < ram <= MAX_RAM:
            raise ValueError(f"RAM size must be between 4 KiB and {MAX_RAM >> 30} GiB")
        extra = extra or []
        if host is None:
            check_ram_size(ram)
            host = Host(Host.size_for(board_slots(ram) + [e.size for e in extra]))
        self.host = host
        self.vm = VM(self.host, name, split=split)
        self.ram = self.vm.add_memslot(RAM_BASE, ram, name="ram", max_level=max_level)
        self.vm.add_memslot(FLASH0, FLASH_SIZE, name="flash0", readonly=True, max_level=3)
        self.vm.add_memslot(FLASH1, FLASH_SIZE, name="flash1", readonly=True, noexec=True,
                            max_level=3)
        for e in extra:
            self.vm.add_memslot(e.ipa, e.size, name=e.name, max_level=e.max_level)
        self.uart = PL011(console)
        self.vm.attach(UART0, self.uart)
        self.vm.attach(FLASH0, Flash("flash0", FLASH_SIZE))
        self.vm.attach(FLASH1, Flash("flash1", FLASH_SIZE))
        if not 1 <= smp <= MAX_SMP:
            raise ValueError(f"--smp {smp}: this board has 1 to {MAX_SMP} vCPUs")
        if smp > 1 and mmu is not None:
            raise ValueError("several vCPUs each need their own MMU")
        self.stop = stop if stop is not None else StopControl()
        self.mmu = mmu if mmu is not None else MMU(self.host.mem, self.host.tlb)
        self.cpus = [VCPU(self.host.mem, self.mmu if i == 0 else
                          MMU(self.host.mem, self.host.tlb), icount=icount, stop=self.stop)
                     for i in range(smp)]
        self.cpu = self.cpus[0]
        self.current = 0                           # the vCPU running now (banked GIC access)
        self.gic = gic.attach(self.vm, smp, lambda: self.current, self.cpus)
        self.uart.connect(lambda level: self.gic.set_line(gic.UART_SPI, level))
        for i, cpu in enumerate(self.cpus):
            cpu.set_index(i)
            self._give_time(i, cpu)
        self._reset_state = [cpu_state.save(cpu) for cpu in self.cpus]
        self.vm.power = PowerState(smp, self._power_on)
        self.vcpus = [Vcpu(self.vm, cpu) for cpu in self.cpus]
        self.vcpu = self.vcpus[0] if smp == 1 else \
            Scheduler(self.vm, self.vcpus, self.vm.power, self._switch)
        self.vm.bus.internal.append(_PowerDevice(self))
        self.image: loader.Image | None = None

    def _switch(self, i: int) -> None:
        self.current = i

    def _power_on(self, i: int, entry: int, context: int) -> None:
        """PSCI CPU_ON: reset vCPU i and start it at `entry` in SVC mode with A/I/F masked
        and the MMU off, r0 = `context` (PSCI 5.6; what QEMU's arm_set_cpu_on does)."""
        cpu = self.cpus[i]
        cpu_state.load(cpu, self._reset_state[i])
        cpu.timer.write_ctl(0)
        cpu.set_reg(0, context)
        cpu.set_cpsr(0x1D3 | (0x20 if entry & 1 else 0))
        cpu.set_pc(entry & ~1, bool(entry & 1))
        cpu.sync_stage1()
        if isinstance(self.vcpu, Scheduler):
            self.vcpu.powered_on(i)

    def _give_time(self, i: int, cpu: VCPU) -> None:
        """vCPU i's Generic Timer (its PPI at the GIC) and PMU, on the VM's virtual time."""
        timer = ArchTimer(self.vm.clock,
                          lambda level: self.gic.set_line(gic.TIMER_PPI, level, cpu=i))
        pmu = Pmu(self.vm.clock)
        timer.name, pmu.name = f"cpu{i}.timer", f"cpu{i}.pmu"
        cpu.attach_time(timer, pmu)
        cpu.vcounter.name = f"cpu{i}.cntvct"
        self.vm.bus.internal += [timer, pmu, cpu.vcounter]

    def load(self, path: str, args: str = "") -> loader.Image:
        """Load an ELF and reset the CPU to its entry: SVC mode, MMU off, r0=0, as -kernel."""
        self.image = loader.load(path, self.vm)
        self.vm.args = args
        self.cpu.set_pc(self.image.entry, self.image.thumb)
        return self.image

    def run(self, max_insns: int | None = None, timeout: float | None = None) -> RunResult:
        return self.vcpu.run(max_insns=max_insns, timeout=timeout)

    def summary(self, result: RunResult) -> str:
        """One line: instructions, stage-2 faults by kind, MMIO, hypercalls, and the outcome."""
        st = self.vm.stats
        faults = {k[3:]: v for k, v in sorted(st.items()) if k.startswith("s2 ")}
        fault_txt = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in faults.items()) or "none"
        insns = f"{self.cpu.instructions}" if self.cpu.icount else "not counted"
        return (f"[s2emu] {result.reason}: instructions {insns}, exits {st['exits']}, "
                f"stage-2 faults {sum(faults.values())} ({fault_txt}), "
                f"MMIO {st['mmio read'] + st['mmio write']} (read {st['mmio read']}, "
                f"write {st['mmio write']}), hypercalls {st['hvc']}, "
                f"guest exceptions {self.cpu.exceptions_taken}, "
                f"TLB flushes {self.host.tlb.stats['flush_vmid'] + self.host.tlb.stats['flush_all_nsnh']}, "
                f"virtual time {self.vm.clock.now_ns() / 1e6:.3f} ms")
