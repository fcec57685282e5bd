"""What the CPU does with the guest's own events, end to end on the machine: hints complete,
guest exceptions enter the guest's vectors with the architecture's LR and fault registers,
trapped CP15 writes are emulated, limits always end a run, nothing is reserved.

Encodings are given as words with their assembly (arm-none-eabi-as, -march=armv7-a)."""
import pytest

from emu.cpu import GuestCrash
from emu.machine import Machine
from hyp.vcpu import RunResult

from snippet import CODE, DATA, NO_VECTOR, OFF, VECTORS, Snippet, arm, thumb

UND, SVC, PABT, DABT = 0x04, 0x08, 0x0C, 0x10
T_OFF = (0xF240, 0x0008, 0xF2C8, 0x4000, 0xF7E0, 0x8000)   # movw r0,#8; movt r0,#0x8400; hvc #0


@pytest.mark.parametrize("code,is_thumb,n", [
    pytest.param(arm(0xE320F002, 0xE320F001, 0x0320F002, 0x1320F001, *OFF), False, 7,
                 id="arm wfe yield wfeeq yieldne"),
    pytest.param(thumb(0xBF20, 0xBF10, 0xF3AF, 0x8002, 0xF3AF, 0x8001, *T_OFF), True, 7,
                 id="thumb wfe yield wfe.w yield.w"),
])
def test_wfe_and_yield_are_hints_that_complete(code, is_thumb, n):
    """QEMU treats both as a yield (a NOP for one vCPU); Unicorn stops after them."""
    s = Snippet(code, is_thumb=is_thumb)
    r = s.run()
    assert r.reason == "off" and s.vector() == NO_VECTOR
    assert s.cpu.instructions == n and s.cpu.entries == 0
    assert s.cpu.stats["wfe"] + s.cpu.stats["yield"] >= 2


@pytest.mark.parametrize("code,is_thumb", [
    pytest.param(arm(0xE5912000, 0xE320F002, *OFF), False, id="arm ldr r2,[r1]; wfe"),
    pytest.param(arm(0xE5812000, 0xE320F001, *OFF), False, id="arm str r2,[r1]; yield"),
    pytest.param(thumb(0x680A, 0xBF20, *T_OFF), True, id="thumb ldr r2,[r1]; wfe"),
])
def test_a_hint_after_a_tlb_miss_completes(code, is_thumb):
    """A load's TLB fill leaves its data-abort syndrome template in ESR (QEMU restores it
    with the instruction's state); a WFE after it in the same burst is still a hint (it was
    taken for an UNDEF once: found migrating the irq guest, whose WFE loop met a flush)."""
    s = Snippet(code, is_thumb=is_thumb, regs={1: DATA})
    r = s.run()
    assert r.reason == "off" and s.vector() == NO_VECTOR
    assert s.cpu.stats["wfe"] + s.cpu.stats["yield"] == 1


@pytest.mark.parametrize("icount", [True, False], ids=["counted", "uncounted"])
def test_an_undefined_instruction_after_a_hint_is_blamed_on_itself(icount):
    s = Snippet(arm(0xE320F002, 0xE7F000F0), icount=icount)        # wfe; udf #0
    s.run(**({} if icount else {"max_insns": None}))
    assert s.vector() == UND
    assert s.cpu.reg(14) == CODE + 4 + 4          # LR_und = the UDF's address + 4


@pytest.mark.parametrize("code,is_thumb,vector,lr,regs", [
    pytest.param(arm(0xE7F000F0), False, UND, CODE + 4, {}, id="udf arm"),
    pytest.param(thumb(0xDE00), True, UND, CODE + 2, {}, id="udf thumb"),
    pytest.param(arm(0xE1600070), False, UND, CODE + 4, {}, id="smc arm: undefined, no EL3"),
    pytest.param(thumb(0xF7F0, 0x8000), True, UND, CODE + 2, {}, id="smc thumb"),
    pytest.param(arm(0xE1200071), False, PABT, CODE + 4, {}, id="bkpt arm"),
    pytest.param(thumb(0xBE01), True, PABT, CODE + 4, {}, id="bkpt thumb"),
    pytest.param(arm(0xE1912F9F), False, DABT, CODE + 8, {1: DATA + 1}, id="unaligned ldrex"),
    # QEMU checks a STREX's address against the monitor first: arm it with an aligned LDREXH
    pytest.param(arm(0xE1F12F9F, 0xE1813F92), False, DABT, CODE + 12, {1: DATA + 2},
                 id="unaligned strex"),
    pytest.param(arm(0xE1F12F9F), False, DABT, CODE + 8, {1: DATA + 1}, id="unaligned ldrexh"),
    pytest.param(arm(0xE1B12F9F), False, DABT, CODE + 8, {1: DATA + 4}, id="unaligned ldrexd"),
    pytest.param(arm(0xE1007091), False, DABT, CODE + 8, {0: DATA + 1},
                 id="unaligned swp (found by fuzzing)"),
])
def test_guest_exceptions_enter_the_guests_vectors(code, is_thumb, vector, lr, regs):
    """Preferred return + offset (B1.8.3, Table B1-7): UNDEF +4 ARM / +2 Thumb, prefetch
    abort +4, data abort +8; the exception entry is one step of its own."""
    s = Snippet(code, is_thumb=is_thumb, regs=regs)
    r = s.run()
    assert r.reason == "off"
    assert s.vector() == vector and s.cpu.reg(14) == lr
    assert s.cpu.entries == 1 and s.cpu.exceptions_taken == 1


@pytest.mark.parametrize("eae,write,dfsr", [
    pytest.param(False, False, 0x001, id="short-descriptor read"),
    pytest.param(False, True, 0x801, id="short-descriptor write: WnR"),
    pytest.param(True, False, 0x221, id="LPAE read: bit 9, STATUS 0b100001"),
    pytest.param(True, True, 0xA21, id="LPAE write"),
])
def test_alignment_fault_dfsr_and_dfar(eae, write, dfsr):
    """DFSR alignment fault (Tables B3-23/B3-24) in the format TTBCR.EAE selects; DFAR is the
    unaligned address."""
    # ldrexh r2,[r1]; strex r3,r2,[r1] (QEMU faults a STREX only when the monitor matches) /
    # ldrex r2,[r1]
    code = arm(0xE1F12F9F, 0xE1813F92) if write else arm(0xE1912F9F)
    s = Snippet(code, regs={1: DATA + 2})
    if eae:
        s.cpu.cp15_write("TTBCR", 1 << 31)
    s.run()
    assert s.vector() == DABT
    assert (s.cpu.cp15_read("DFSR"), s.cpu.cp15_read("DFAR")) == (dfsr, DATA + 2)


@pytest.mark.parametrize("eae,ifsr", [pytest.param(False, 0x2, id="short"),
                                      pytest.param(True, 0x222, id="LPAE")])
def test_bkpt_reports_a_debug_event(eae, ifsr):
    """B1.9.7: a BKPT is a Prefetch Abort with IFSR "debug event"; IFAR is UNKNOWN (QEMU: 0)."""
    s = Snippet(arm(0xE1200071))
    if eae:
        s.cpu.cp15_write("TTBCR", 1 << 31)
    s.cpu.cp15_write("IFAR", 0x1234)
    s.run()
    assert (s.cpu.cp15_read("IFSR"), s.cpu.cp15_read("IFAR")) == (ifsr, 0)


@pytest.mark.parametrize("code,is_thumb,reg,value", [
    pytest.param(arm(0xEE031F10, *OFF), False, "DACR", 0x55555555, id="dacr arm"),
    pytest.param(thumb(0xEE03, 0x1F10, *T_OFF), True, "DACR", 0x55555555, id="dacr thumb"),
    pytest.param(arm(0xEE0D1F30, *OFF), False, "CONTEXTIDR", 0x42, id="contextidr"),
    pytest.param(arm(0xEC421F02, *OFF), False, "TTBR0_64", 0x1_2345_6000, id="mcrr ttbr0"),
])
def test_translation_register_writes_trap_and_are_emulated(code, is_thumb, reg, value):
    """HCR.TVM traps the write (Unicorn stops on it); the machine writes the register, the
    instruction retires and the guest goes on."""
    s = Snippet(code, is_thumb=is_thumb, regs={1: value & 0xFFFFFFFF, 2: value >> 32})
    r = s.run()
    assert r.reason == "off" and s.vector() == NO_VECTOR
    assert s.cpu.cp15_read(reg) == value
    assert s.cpu.stats["trap tvm"] == 1 and s.cpu.instructions == 4


def test_enabling_the_mmu_with_empty_tables_faults_at_the_next_fetch():
    """The write to SCTLR is trapped and takes effect at once: the next fetch walks the
    guest's (empty) tables - a section translation fault (IFSR 0x5), and so does the
    prefetch-abort vector: the guest can never progress."""
    s = Snippet(arm(0xEE011F10, 0xE5912000), regs={1: 0x00C50079})   # mcr SCTLR; ldr
    s.cpu.cp15_write("TTBR0", CODE + 0x10000)          # 16 KiB aligned, zeroed: all faults
    r = s.run(max_insns=None)
    assert r.reason == "error" and r.error.startswith("no progress")
    assert s.cpu.cp15_read("IFSR") == 0x5
    assert s.cpu.cp15_read("IFAR") == VECTORS + PABT
    assert s.cpu.stats["trap tvm"] == 1 and s.cpu.stats["s1 prefetch abort"] >= 2


def test_mmio_store_in_an_it_block_advances_itstate():
    """cmp r0,r0; ite eq; strbeq r1,[r2] (to the UART: emulated); movne r3,#1 must not run."""
    code = thumb(0x4280, 0xBF0C, 0x7011, 0x2301, *T_OFF)
    s = Snippet(code, is_thumb=True, regs={1: ord("!"), 2: 0x0900_0000, 3: 0})
    assert s.run().reason == "off"
    assert s.m.uart.text == "!" and s.cpu.reg(3) == 0


@pytest.mark.parametrize("vbar,what", [
    pytest.param(VECTORS + 0x800, "undefined", id="undefined vector is itself undefined"),
    pytest.param(0x0400_0000, "execute-never", id="vectors in execute-never flash1"),
])
def test_a_guest_that_cannot_progress_is_reported(vbar, what):
    """Exception entries count as steps and toward virtual time: --max-insns ends the run,
    and without a limit the machine reports that no instruction can ever complete."""
    code = arm(0xE7F000F0)                                         # udf #0
    s = Snippet(code, vbar=vbar)
    if what == "undefined":
        s.m.host.mem.write(s.m.ram.pa + (vbar + 4 - CODE), arm(0xE7F000F0))
    r = s.run(max_insns=500)
    assert r.reason == "budget" and r.instructions == 500
    assert s.m.vm.clock.now_ns() > 0
    r = s.run(max_insns=None)
    assert r.reason == "error" and r.error.startswith("no progress")


def test_no_guest_address_is_reserved():
    """With 3 GiB of RAM, the last page below 4 GiB is ordinary guest RAM."""
    code = arm(0xE3E01000 | 0xF, 0xE5812000, 0xE5913000, *OFF)     # mvn r1,#0xf; str; ldr
    s = Snippet(code, mem=3 << 30, regs={2: 0xCAFEF00D})
    assert s.run().reason == "off"
    assert s.cpu.reg(3) == 0xCAFEF00D
    ram = s.m.ram
    assert s.m.vm.read_guest(0xFFFFFFF0, 4) == (0xCAFEF00D).to_bytes(4, "little")
    assert ram.end == 0x1_0000_0000


@pytest.mark.parametrize("target", [
    pytest.param(0xFFFFF000, id="top page (no memslot)"),
    pytest.param(0x0800_0000, id="GIC hole (no device)"),
])
def test_a_fetch_outside_ram_and_devices_is_a_prefetch_abort(target):
    """kvm_handle_guest_abort: an instruction fetch from an IPA with no memslot injects a
    prefetch abort (IFSR external abort, IFAR the address)."""
    s = Snippet(arm(0xE12FFF11), regs={1: target})                  # bx r1
    assert s.run().reason == "off"
    assert s.vector() == PABT and s.cpu.cp15_read("IFAR") == target
    assert s.cpu.cp15_read("IFSR") == 0x8


def test_a_stage2_leaf_outside_host_memory_is_an_error_naming_it():
    m = Machine(64 << 20)
    m.load("guests/hello.elf")
    m.vm.update_vmid()
    # A broken hypervisor: map IPA 0x40000000 to a PA beyond host memory.
    from hyp.arch.descriptors import Prot
    m.vm.stage2.map(0x4000_0000, m.host.mem.end + (64 << 20), 3, Prot.RWX)
    r = m.run(max_insns=1000)
    assert r.reason == "error"
    assert "external abort" in r.error and "outside host memory" in r.error
    assert "descriptor at PA 0x" in r.error


def test_budget_counts_steps_exactly():
    """Each exception entry is one step: a UDF-then-return loop advances by exactly 1 + n."""
    s = Snippet(arm(0xE320F001, 0xE7F000F0))                       # yield; udf #0
    r = s.run(max_insns=2)
    assert isinstance(r, RunResult) and r.instructions == 2
    assert (s.cpu.instructions, s.cpu.entries) == (1, 1)
    assert s.cpu.pc == VECTORS + UND


@pytest.mark.parametrize("offset,value", [
    pytest.param(0x030, 0x300, id="UARTCR: TXE|RXE"),
    pytest.param(0x034, 0x12, id="UARTIFLS"),
    pytest.param(0x018, 0x90, id="UARTFR: TXFE|RXFE"),
    pytest.param(0xFE0, 0x11, id="UARTPeriphID0"),
])
def test_pl011_reset_values(offset, value):
    """PL011 TRM (DDI 0183) 3.2: register reset values, read by the guest through MMIO."""
    code = arm(0xE5912000, *OFF)                                   # ldr r2, [r1]
    s = Snippet(code, regs={1: 0x0900_0000 + offset})
    assert s.run().reason == "off" and s.cpu.reg(2) == value
