"""gdb threads of the GDB stub (emu.debug.gdbstub): one thread per vCPU, thread id N + 1 for
vCPU N, in gdb's all-stop mode.

- qfThreadInfo / qsThreadInfo list every vCPU, those PSCI has off included, so gdb's thread
  list never changes under it; T says each is alive; qThreadExtraInfo says what it does:
  "vCPU 0 (running)", "vCPU 1 (wfi)" (waits for an interrupt), "vCPU 1 (off)", "vCPU 1
  (on-pending)" (CPU_ON accepted, not run yet). With one vCPU the text is just "vCPU 0".
- Hg selects the thread whose registers g/G/p/P read and write and whose stage 1 (each vCPU
  has its own MMU) translates the addresses of m/M/X, watchpoints and `monitor s1`. A stop
  reply names the vCPU that stopped and selects it, as gdb assumes (remote.c,
  record_currthread). qC answers the selected thread. Hg0 / Hg-1 keep the selection.
- Hc selects the thread s/S step; 0 and -1 (any, all) mean the Hg thread. c/C and vCont's
  continue actions run every vCPU (emu.debug.gdb_run).
"""
from __future__ import annotations

from . import vcpus
from .gdb_packets import THREAD_ID, hex_bytes, parse_thread


class Threads:
    """The threads of one machine and the debugger's selection among them."""

    def __init__(self, machine) -> None:
        self.machine = machine
        self.cpus = vcpus.cpus(machine)
        self.count = len(self.cpus)
        self.g = 0                     # vCPU of Hg (registers, memory)
        self.c: int | None = None      # vCPU of Hc (s/S), None: that of Hg

    @property
    def cpu(self):
        """The selected vCPU (Hg)."""
        return self.cpus[self.g]

    def stopped(self, i: int) -> None:
        """A stop reply named vCPU i: gdb now takes it as the selected thread."""
        self.g = i

    def step_target(self) -> int:
        """The vCPU an s/S packet steps."""
        return self.g if self.c is None else self.c

    def reset(self, i: int) -> None:
        """A new debugger: vCPU i (where the guest stopped) selected, no Hc."""
        self.g, self.c = i, None

    def extra_info(self, i: int) -> str:
        if self.count == 1:
            return "vCPU 0"
        return f"vCPU {i} ({vcpus.state(self.machine, i)})"

    def packet(self, text: str) -> str:
        """Answer qC, qfThreadInfo, qsThreadInfo, qThreadExtraInfo, H and T."""
        try:
            if text == "qC":
                return f"QC{self.g + THREAD_ID:x}"
            if text == "qfThreadInfo":
                return "m" + ",".join(f"{i + THREAD_ID:x}" for i in range(self.count))
            if text == "qsThreadInfo":
                return "l"
            if text.startswith("qThreadExtraInfo,"):
                tid = parse_thread(text[len("qThreadExtraInfo,"):], self.count)
                return hex_bytes(self.extra_info(tid - THREAD_ID).encode())
            if text[:1] == "T":
                parse_thread(text[1:], self.count)
                return "OK"
            if text[:1] == "H" and text[1:2] in ("c", "g"):
                tid = parse_thread(text[2:], self.count, any_ok=True)
                i = tid - THREAD_ID if tid > 0 else None
                if text[1] == "g" and i is not None:
                    self.g = i
                elif text[1] == "c":
                    self.c = i
                return "OK"
        except ValueError:
            pass
        return "E01"
