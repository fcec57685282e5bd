"""The native fast path (optional C extension `_fastpath`, built at install by setup.py).

Native code runs only on the hardware's fast path, never for a hypervisor decision. Every
feature here has a pure-Python fallback that gives identical results; `S2EMU_NATIVE=0` in the
environment selects the fallback even when the extension is built (CI runs both).

- `BlockHook`: a native UC_HOOK_BLOCK callback that stops the run at the start of a
  translation block when `request_stop()` was called - from any thread, or from a Python hook.
  This is the only safe way to stop a run that has no instruction budget: Unicorn's own
  `timeout=` and `emu_stop()` from outside can stop after a load or store and execute it again.
"""
from __future__ import annotations

import ctypes
import os

from unicorn import UC_HOOK_BLOCK, UcError
from unicorn.unicorn_py3.unicorn import uclib

try:
    if os.environ.get("S2EMU_NATIVE", "1") == "0":
        raise ImportError("disabled by S2EMU_NATIVE=0")
    from . import _fastpath
    _CALLBACKS = _fastpath.callbacks()
except ImportError:
    _fastpath = None
    _CALLBACKS = {}

AVAILABLE = _fastpath is not None


class _BlockState(ctypes.Structure):
    """struct s2_block_state in _fastpath.c."""
    _fields_ = [("stop", ctypes.c_int32), ("stopped", ctypes.c_int32),
                ("emu_stop", ctypes.c_void_p), ("blocks", ctypes.c_uint64)]


class BlockHook:
    """The native block hook on one Unicorn engine: `request_stop()` makes the run stop before
    the next translation block executes; `take_stopped()` says whether it did."""

    def __init__(self, uc) -> None:
        if not AVAILABLE:
            raise RuntimeError("the native fast path is not built")
        if ctypes.sizeof(_BlockState) != _CALLBACKS["block_state_size"]:
            raise RuntimeError("emu/native/_fastpath.c and its ctypes mirror disagree")
        self.state = _BlockState()
        self.state.emu_stop = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
        handle = ctypes.c_size_t()
        err = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_BLOCK,
                                ctypes.c_void_p(_CALLBACKS["block_hook"]),
                                ctypes.cast(ctypes.pointer(self.state), ctypes.c_void_p),
                                ctypes.c_uint64(1), ctypes.c_uint64(0))
        if err:
            raise UcError(err)
        self.handle = handle.value

    def request_stop(self) -> None:
        self.state.stop = 1

    def take_stopped(self) -> bool:
        """Did the hook stop the last run? Clears the request either way."""
        stopped = bool(self.state.stopped)
        self.state.stop = 0
        self.state.stopped = 0
        return stopped

    @property
    def blocks(self) -> int:
        return self.state.blocks
