"""Stage-2 abort handling: KVM's kvm_handle_guest_abort / user_mem_abort (arch/arm/kvm/mmu.c)."""
from __future__ import annotations

from .arch import fsr
from .arch.descriptors import Prot
from .arch.exception import GuestException
from .arch.fault import FaultType
from .dirty import mark_dirty
from .exits import Stage2Abort
from .mmio import MmioError, emulate

TTBCR_EAE = 1 << 31
_STAT = {t: f"s2 {t.name.lower()}" for t in FaultType}     # vm.stats key per fault kind


class HypervisorError(Exception):
    """The hypervisor cannot continue this guest (reported with the abort's syndrome)."""


def inject_pabt(vcpu, va: int) -> None:
    """kvm_inject_pabt (inject_abt32): a synchronous external abort taken to the guest's
    prefetch abort vector, IFSR in the format the guest's TTBCR.EAE selects (0x8, or 0x210)."""
    lpae = bool(vcpu.cp15_read("TTBCR") & TTBCR_EAE)
    vcpu.cp15_write("IFAR", va)
    vcpu.cp15_write("IFSR", fsr.fsr(fsr.Status.EXTERNAL, lpae=lpae))
    vcpu.take_exception(GuestException.PREFETCH_ABORT, vcpu.pc + 4)


def resolve_in_place(vm, f) -> bool:
    """The fast path for the dirty-logging fault (KVM x86's fast_page_fault, arm64's
    permission-only relax in user_mem_abort): a write to a write-protected 4 KiB page of a
    logged slot is marked dirty and its leaf made writable right where the walk refused it,
    without the vCPU leaving its run. `f` is the walk's page-level fault. False (nothing
    done): any other case, a dirty ring (a full one must exit to userspace), or a change
    that would need TLB maintenance - the vCPU then exits as usual. The outcome, the
    statistics and the dirty log are exactly those of `handle`."""
    if f.type is not FaultType.PERMISSION or f.level != 3 or not f.write or \
            f.desc_pa is None or vm.dirty_ring is not None:
        return False
    slot = vm.memslot(f.ipa)
    if slot is None or slot.readonly or not slot.log_dirty or \
            not vm.stage2.relax_in_place(f.desc_pa, Prot.W):
        return False
    vm.stats["exits"] += 1
    vm.stats["s2 permission"] += 1
    mark_dirty(vm, slot, slot.gfn(f.ipa))
    vm.stats["dirty faults"] += 1
    vm.stats["dirty faults in place"] += 1
    return True


def handle(vm, vcpu, ex: Stage2Abort) -> str:
    """Resolve one stage-2 abort; returns what was done: map, dirty, mmio, inject, af.
    Decisions use the page-level fault from the walk; only MMIO emulation, injection and
    error messages need the decoded instruction (ex.fault / ex.syndrome)."""
    f = ex.page_fault
    vm.stats[_STAT[f.type]] += 1
    if f.type in (FaultType.ADDRESS_SIZE, FaultType.EXTERNAL_WALK):
        raise HypervisorError(f"{ex.fault.describe()}: stage-2 tables are broken")
    if f.type is FaultType.EXTERNAL:
        where = f" by the descriptor at PA {f.desc_pa:#x}" if f.desc_pa is not None else ""
        raise HypervisorError(f"{ex.fault.describe()}: the level-{f.level} stage-2 leaf for "
                              f"IPA {f.ipa & ~0xFFF:#x}{where} maps a PA outside host memory")
    slot = vm.memslot(f.ipa)
    if slot is None or (f.write and slot.readonly):
        if f.fetch:
            vm.stats["inject pabt"] += 1
            inject_pabt(vcpu, ex.fault.va)
            return "inject"
        try:
            acc = emulate(vm.bus, ex.syndrome.hsr, ex.fault.ipa, vcpu)
        except MmioError as e:
            raise HypervisorError(f"{e} (PC {ex.pc:#x})") from None
        vm.stats["mmio write" if acc.write else "mmio read"] += 1
        vm.last_mmio = acc
        return "mmio"
    if f.type is FaultType.ACCESS_FLAG:
        vm.stage2.set_af(f.ipa)
        return "af"
    if f.type is FaultType.PERMISSION and f.fetch:
        vm.stats["inject pabt"] += 1
        inject_pabt(vcpu, ex.fault.va)          # execute-never memslot
        return "inject"
    if f.type is FaultType.PERMISSION and not f.write:
        raise HypervisorError(f"{ex.fault.describe()}: read permission fault on a readable "
                              f"memslot")
    gfn = slot.gfn(f.ipa)
    if slot.log_dirty and f.write:
        mark_dirty(vm, slot, gfn)
        if f.type is FaultType.PERMISSION and f.level == 3 and f.desc_pa is not None:
            vm.stage2.relax(f.desc_pa, Prot.W)          # the write-protected 4 KiB page
        else:
            vm.map_fault(slot, f.ipa, writable=True)    # unmapped, or a block to dissolve
        vm.stats["dirty faults"] += 1
        return "dirty"
    vm.map_fault(slot, f.ipa, writable=not slot.log_dirty)
    return "map"
