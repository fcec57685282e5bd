"""The s2emu program: `python -m emu` and the `s2emu` script call `run()`, in a process that
ends right after it. (emu.cli.main.main is the command line itself, which tests and other
programs call in-process, any number of times.)"""
from __future__ import annotations

import gc
import os


def run() -> int:
    """main() on this process's command line; returns the exit status.

    numpy's OpenBLAS starts a worker thread for every further core when numpy is imported,
    and the workers busy-wait for work: s2emu does no linear algebra, and on a small machine
    they take a core from the guest (a hello run on 2 cores: ~120 ms of CPU, ~20 ms of wall).
    So unless the environment says otherwise, OpenBLAS runs on the calling thread alone (set
    here, before numpy is imported; s2emu starts no other process that would inherit it).

    Then the run's garbage is collected, so what it left behind is finalized as before
    (`__del__`, weakref finalizers), and what remains - mostly the imported modules, which
    vanish with the process - is frozen (gc.freeze): the interpreter's shutdown then skips
    tearing down their ~30000 objects one by one (about 35 ms of a hello run's 0.3 s). The
    atexit handlers still run and the standard streams are still flushed."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .cli.main import main
    status = main()
    gc.collect()
    gc.freeze()
    return status
