"""End to end: the bundled guest ELFs under the hypervisor - console, exits, syndromes."""
import os
import shutil
import subprocess
import sys

import pytest

from emu.machine import Machine
from hyp.exits import Stage2Abort

from conftest import GUESTS, ROOT

EXPECTED = {
    "hello": "Hello from an ARMv7 guest under a Python hypervisor!\nhello: done\n",
    "thumb": ("thumb: start, 256-entry table, seed 2545f491\n"
              "thumb: sum c8751ebe max ff0f0922 min 00174626\n"
              "thumb: records 00000004 odd 919d6310 even 352a4776\n"
              "thumb: halves 007b1ebe bytes 00007a9c\n"
              "thumb: asm and C agree\nthumb: done\n"),
    "faults": ("faults: start\nram: read 00000000\nram: wrote deadbeef\n"
               "flash: read 00000000 00000000\nflash: write ignored, read 00000000\n"
               "svc: imm 00000042\nund: at {udf:08x}\npabt: ifsr 00000008 ifar 04000000\n"
               "faults: done\n"),
    # the guest's own stage 1, both formats (guests/README.md); also QEMU's output, verbatim
    "mmu": open(os.path.join(os.path.dirname(__file__), "golden", "mmu_console.txt")).read(),
}


def run_guest(name, **kw):
    m = Machine(**kw)
    img = m.load(os.path.join(GUESTS, f"{name}.elf"))
    aborts = []
    def seen(kind, ex, outcome):
        if kind == "exit" and isinstance(ex, Stage2Abort):
            ex.syndrome                     # decode while handling (before the vCPU resumes)
        if kind == "handled" and isinstance(ex, Stage2Abort):
            aborts.append((outcome, ex))
    m.vcpu.observers.append(seen)
    result = m.run(max_insns=50_000_000)
    return m, img, result, aborts


@pytest.mark.parametrize("name", ["hello", "thumb", "faults", "mmu"])
def test_guest_console_and_power_off(name):
    m, img, result, _ = run_guest(name)
    assert result.reason == "off", result
    want = EXPECTED[name]
    if name == "faults":
        want = want.format(udf=img.symbol("faults_udf_insn"))
    assert m.uart.text == want


def syndromes(aborts):
    return {(outcome, ex.syndrome.hsr, ex.syndrome.hpfar, ex.syndrome.far) for outcome, ex in aborts}


def test_hello_exits_and_syndromes():
    _, _, _, aborts = run_guest("hello")
    s = syndromes(aborts)
    # First fetch: stage-2 translation fault level 1 (empty root). EC=0x20, IL=0 (v7: UNK/SBZP
    # for prefetch aborts, QEMU writes 0), IFSC=0b000101. HPFAR = IPA[39:12] << 4.
    assert ("map", 0x80000005, 0x00400000, 0x40000000) in s
    # UART strb r1 -> 0x09000000: EC=0x24 IL=1 ISV=1 SAS=00 SRT=1 WnR=1 DFSC=0b000101.
    assert ("mmio", 0x93010045, 0x00090000, 0x09000000) in s
    # UART ldr r3 <- FR (0x18): ISV=1 SAS=10 (word) SRT=3 WnR=0.
    assert ("mmio", 0x93830005, 0x00090000, 0x09000018) in s


def test_faults_guest_provokes_every_kind():
    m, img, _, aborts = run_guest("faults")
    s = syndromes(aborts)
    # RAM + 100 MiB, 2 MiB block region not yet mapped: translation fault level 2.
    assert ("map", 0x93810006, 0x00464000, 0x46400000) in s
    # flash0 first read: level 1 (its GiB has no table yet); second page: level 3.
    assert ("map", 0x93860005, 0x00000000, 0x00000000) in s
    assert ("map", 0x93850007, 0x00000010, 0x00001000) in s
    # str to the read-only memslot: permission fault level 3 (DFSC 0b001111), WnR=1 -> MMIO.
    assert ("mmio", 0x9383004F, 0x00000000, 0x00000000) in s
    # fetch from flash1: translation level 2, then XN permission fault level 3 -> injected PABT.
    assert ("map", 0x80000006, 0x00040000, 0x04000000) in s
    assert ("inject", 0x8000000F, 0x00040000, 0x04000000) in s
    assert m.vm.stats["inject pabt"] == 1
    assert m.cpu.stats["exc svc"] == 1 and m.cpu.stats["exc undefined"] == 1
    assert m.cpu.stats["exc prefetch_abort"] == 1 and m.cpu.exceptions_taken == 3


def test_thumb_16bit_mmio_store_has_il0():
    _, _, _, aborts = run_guest("thumb")
    hsrs = {ex.syndrome.hsr for outcome, ex in aborts if outcome == "mmio"}
    # 16-bit Thumb strb r3 to the UART: IL=0, ISV=1, SAS=byte, SRT=3, WnR=1.
    assert 0x91030045 in hsrs


def test_runs_are_deterministic():
    a = run_guest("faults")
    b = run_guest("faults")
    assert a[0].cpu.instructions == b[0].cpu.instructions
    assert dict(a[0].vm.stats) == dict(b[0].vm.stats)
    assert [(o, e.syndrome) for o, e in a[3]] == [(o, e.syndrome) for o, e in b[3]]


@pytest.mark.parametrize("name", ["hello", "faults", "thumb"])
@pytest.mark.parametrize("slice_insns", [1, 7, 97])
def test_time_slicing_does_not_change_the_guest(name, slice_insns):
    def go(**kw):
        m = Machine()
        m.load(os.path.join(GUESTS, f"{name}.elf"))
        r = m.vcpu.run(**kw)
        return m, r
    (m1, r1), (m2, r2) = go(slice_insns=slice_insns), go()
    assert (r1.reason, m1.uart.text, m1.cpu.regs()) == (r2.reason, m2.uart.text, m2.cpu.regs())
    if name != "thumb":          # exact for ARM code; Thumb IT blocks: README limitations
        assert m1.cpu.instructions == m2.cpu.instructions


def s2emu(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "emu", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_hello():
    p = s2emu("run", "guests/hello.elf")
    assert p.returncode == 0, p.stderr
    assert p.stdout == EXPECTED["hello"]
    summary = p.stderr.strip().splitlines()[-1]
    assert summary.startswith("[s2emu] off: instructions ")
    assert "hypercalls 1" in summary and "MMIO 130" in summary


@pytest.mark.parametrize("args,code,message", [
    pytest.param(["run", "guests/nope.elf"], 1, "cannot open guests/nope.elf", id="missing-file"),
    pytest.param(["run", "pyproject.toml"], 1, "not an ELF file", id="not-elf"),
    pytest.param(["run", sys.executable], 1, "64-bit ELF for", id="not-arm"),
    pytest.param(["run", "guests/dirtycheck.elf", "--max-insns", "200000"], 3,
                 "did not stop within 200000 instructions", id="max-insns"),
    pytest.param(["run", "guests/dirtycheck.elf", "--timeout", "0.5"], 3,
                 "did not stop within 0.5 s", id="timeout"),
    pytest.param(["run", "guests/faults.elf", "--mem", "64M"], 1,
                 "outside RAM and devices", id="outside-ram"),
    pytest.param(["run", "guests/hello.elf", "--mem", "12x"], 2, "bad size", id="bad-size"),
    pytest.param(["run", "guests/hello.elf", "--mem", "16K"], 1, "segment", id="ram-too-small"),
])
def test_cli_errors_are_one_line(args, code, message):
    p = s2emu(*args)
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    assert message in p.stderr


# ---- mmubench: the bench guest of bench/mmu_rows.py, MMU off and on (guests/README.md) ----------
MB_REGION, MASK = 0x40200000, 0xFFFFFFFF


def mmubench_result(work, size, passes, reps):
    """The checksum mmubench prints, from its documented definition."""
    n_reps = reps + 1
    if work == "alu":
        return (0x12345678 + n_reps * passes * size * (size + 1) // 2) & MASK
    words = size // 4
    if work == "load":
        total = sum((i * 2654435761 + 12345) & MASK for i in range(words))
        return (0x12345678 + n_reps * passes * total) & MASK
    if work == "store":
        first = 0x9ABCDEF0 + (n_reps * passes - 1) * words
        return (words * first + words * (words - 1) // 2) & MASK
    acc = 0x12345678                                # touch: cold + `passes` warm sweeps
    for _ in range(n_reps * (1 + passes)):
        for i in range(size):
            acc = (((acc << 1 | acc >> 31) & MASK) + (0x9E3779B9 * i & MASK)) & MASK
    return acc


def run_mmubench(args):
    m = Machine(ram=8 << 20, icount=False)
    m.load(os.path.join(GUESTS, "mmubench.elf"), args)
    return m, m.run(max_insns=50_000_000)


MODES = [("off", None), ("short", "section"), ("long", "section"), ("short", "page"),
         ("long", "page")]


@pytest.mark.parametrize("work,size,passes", [("alu", 1000, 3), ("load", 65536, 2),
                                              ("store", 65536, 2), ("touch", 64, 2)])
@pytest.mark.parametrize("mmu,mapping", MODES, ids=[" ".join(filter(None, m)) for m in MODES])
def test_mmubench_mmu_off_and_on(work, size, passes, mmu, mapping):
    """Same console (the checksum of every word loaded or stored) whatever the MMU does, and
    the MMU really translated: the TLB holds stage-1 entries of the mapping size asked for."""
    args = f"{work} {size} {passes} 2 {mmu}" + (f" {mapping}" if mapping else "")
    m, result = run_mmubench(args)
    assert result.reason == "off", result
    assert m.uart.text == (f"mmubench: {args}\nmmubench: result "
                           f"{mmubench_result(work, size, passes, 2):08x}\nmmubench: done\n")
    s1 = m.mmu.s1
    assert s1.enabled == (mmu != "off") and s1.lpae == (mmu == "long")
    marks = 3 if work == "touch" else 2             # per rep, 3 reps (the warm-up + 2)
    assert m.vm.stats["hvc S2EMU_TIME_NS"] == 3 * marks
    if mmu == "off" or work == "alu":
        return
    region = [e for e in m.mmu.tlb.entries(m.mmu.vmid) if e.va_page >= MB_REGION]
    assert region and all(e.s1 is not None and e.ipa_page == e.va_page for e in region)
    want = 4096 if mapping == "page" else (1 << 21 if mmu == "long" else 1 << 20)
    assert {e.s1.size for e in region} == {want}


@pytest.mark.parametrize("args,message", [
    ("foo 1 1 1 off", "unknown workload 'foo'"),
    ("load 65536 1 1 both", "unknown MMU mode 'both'"),
    ("load 65536 1 1 short huge", "unknown mapping 'huge'"),
    ("load 1000 1 1 off", "bad size (the region must be whole pages, at most 128 MiB) '1000'"),
    ("touch 32769 1 1 off", "bad size (the region must be whole pages, at most 128 MiB) '32769'"),
    ("alu 10 0 1 off", "bad passes '0'"),
    ("alu 10 1 1", "wrong number of arguments"),
])
def test_mmubench_bad_arguments(args, message):
    m, result = run_mmubench(args)
    assert result.reason == "off"
    assert m.uart.text == (f"mmubench: {message}\nmmubench: usage: mmubench "
                           "<alu|load|store|touch> <size> <passes> <reps> <off|short|long> "
                           "[section|page]\n")


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm not installed")
def test_mmubench_default_same_on_qemu():
    """Without arguments (QEMU has no GET_ARGS) it runs touch 256 1 1 long page: QEMU's own
    MMU reads the same words through the guest's LPAE tables as our stage-1 model does."""
    m, result = run_mmubench("")
    assert result.reason == "off"
    want = (f"mmubench: touch 256 1 1 long page\nmmubench: result "
            f"{mmubench_result('touch', 256, 1, 1):08x}\nmmubench: done\n")
    assert m.uart.text == want
    p = subprocess.run(["qemu-system-arm", "-M", "virt", "-cpu", "cortex-a15", "-nographic",
                        "-monitor", "none", "-no-reboot", "-kernel",
                        os.path.join(GUESTS, "mmubench.elf")],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0
    assert p.stdout.decode().replace("\r\n", "\n") == want
