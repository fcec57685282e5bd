"""The native fast path (optional C extension `_fastpath`, built at install by setup.py).

Native code runs only on the hardware's fast path, never for a hypervisor decision. Every
feature here has a pure-Python fallback that gives identical results; `S2EMU_NATIVE=0` in the
environment selects the fallback even when the extension is built (CI runs both).

- `BlockHook`: a native UC_HOOK_BLOCK callback, at the start of every translation block:
  - stops the run there when `request_stop()` was called - from any thread, or from a Python
    hook. The only safe way to stop a run early: Unicorn's own `timeout=` and `emu_stop()`
    from outside can stop after a load or store and execute it again (DESIGN 5b);
  - counts instructions exactly per block (`counting`), ARM and Thumb, and enforces a budget:
    a block that would cross it does not start; `arm_tail` then lets the run execute exactly
    up to the budget's instruction boundary (never inside an IT block, as Unicorn's count=).
- `FillMirror`: a native UC_HOOK_TLB_FILL callback serving Unicorn's refills from a mirror of
  the model TLB (hyp.arch.tlb), kept coherent through the TLB's removal listeners; a miss or
  a missing permission falls through to the Python fill hook (emu/native/mirror.c).
"""
from __future__ import annotations

import ctypes
import os
import weakref

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_TLB_FILL, UcError
from unicorn.unicorn_py3.unicorn import uclib

from .. import icount
from ..icount import IcountUnavailable, env_address, hook_bounds_offset

try:
    if os.environ.get("S2EMU_NATIVE", "1") == "0":
        raise ImportError("disabled by S2EMU_NATIVE=0")
    from . import _fastpath
    _CALLBACKS = _fastpath.callbacks()
except ImportError:
    _fastpath = None
    _CALLBACKS = {}

AVAILABLE = _fastpath is not None
NO_LIMIT = (1 << 64) - 1
_PARKED = (1 << 64) - 2          # a code hook's bounds that no 32-bit PC matches
# why the block hook stopped a run (STOP_* in _fastpath.c)
STOP_NONE, STOP_REQUEST, STOP_BUDGET, STOP_TAIL, STOP_UNKNOWN_CODE = range(5)


class _CodePage(ctypes.Structure):
    _fields_ = [("va", ctypes.c_uint64), ("host", ctypes.c_uint64)]


class _BlockState(ctypes.Structure):
    """struct s2_block_state in _fastpath.c."""
    _fields_ = [("stop", ctypes.c_int32), ("stopped", ctypes.c_int32),
                ("emu_stop", ctypes.c_void_p), ("reg_read", ctypes.c_void_p),
                ("thumb_flag", ctypes.c_void_p),
                ("counting", ctypes.c_int32),
                ("thumb", ctypes.c_int32), ("count", ctypes.c_uint64),
                ("limit", ctypes.c_uint64), ("base", ctypes.c_uint64),
                ("block_pc", ctypes.c_uint64), ("block_end", ctypes.c_uint64),
                ("pending_pc", ctypes.c_uint64), ("pending_end", ctypes.c_uint64),
                ("pending_n", ctypes.c_uint64),
                ("allow_pc", ctypes.c_uint64),
                ("code", _CodePage * _CALLBACKS.get("code_slots", 1))]


def hook_add(uc, kind: int, callback: int, user_data: int, begin: int = 1,
             end: int = 0) -> int:
    """uc_hook_add of a C function pointer (ours, or a ctypes callback's): no binding layer
    between Unicorn and the callback. Returns the hook handle."""
    handle = ctypes.c_size_t()
    err = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), kind, ctypes.c_void_p(callback),
                            ctypes.c_void_p(user_data), ctypes.c_uint64(begin),
                            ctypes.c_uint64(end))
    if err:
        raise UcError(err)
    return handle.value


def identity_fill(uc) -> None:
    """Benchmarks' fastest raw configuration: a native TLB-fill hook mapping VA = PA (R/W on
    data fills, R/X on fetch fills) on an engine in UC_TLB_VIRTUAL mode."""
    hook_add(uc, UC_HOOK_TLB_FILL, _CALLBACKS["identity_fill"], 0)


class BlockHook:
    """The native block hook on one Unicorn engine (see the module doc)."""

    def __init__(self, uc, *, counting: bool = False) -> None:
        if not AVAILABLE:
            raise RuntimeError("the native fast path is not built")
        if ctypes.sizeof(_BlockState) != _CALLBACKS["block_state_size"]:
            raise RuntimeError("emu/native/_fastpath.c and its ctypes mirror disagree")
        self.uc = uc
        self.state = st = _BlockState()
        st.emu_stop = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
        st.reg_read = ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value
        st.counting = int(counting)
        try:
            st.thumb_flag = env_address(uc)[1]       # one load per block instead of a call
        except IcountUnavailable:
            st.thumb_flag = None
        st.limit = NO_LIMIT
        st.allow_pc = NO_LIMIT
        self.address = ctypes.addressof(st)
        self.handle = hook_add(uc, UC_HOOK_BLOCK, _CALLBACKS["block_hook"], self.address)
        # The tail hook: a code hook created now, so that it comes before any other code hook
        # (a tracer's, a breakpoint's) and stops before they see the instruction; it is parked
        # at an address no ARM code has and moved to a tail's end by rewriting its bounds.
        if icount._BOUNDS is None:             # find where a hook keeps its bounds, once
            probe = hook_add(uc, UC_HOOK_CODE, _CALLBACKS["tail_hook"], self.address,
                              0x1111_2222_3333_4444, 0x5555_6666_7777_8888)
            hook_bounds_offset(probe, 0x1111_2222_3333_4444, 0x5555_6666_7777_8888)
            uclib.uc_hook_del(uc._uch, ctypes.c_size_t(probe))
        tail = hook_add(uc, UC_HOOK_CODE, _CALLBACKS["tail_hook"], self.address,
                         _PARKED, _PARKED)
        off = hook_bounds_offset(tail, _PARKED, _PARKED)
        self._tail_bounds = (ctypes.c_uint64 * 2).from_address(tail + off)
        self._tail: int | None = None

    @property
    def counting(self) -> bool:
        return bool(self.state.counting)

    def request_stop(self) -> None:
        self.state.stop = 1

    def take_stopped(self) -> int:
        """Why the hook stopped the last run (STOP_*, 0: it did not). Clears the request."""
        st = self.state
        stopped = st.stopped
        st.stop = 0
        st.stopped = 0
        return stopped

    def start(self, limit: int | None) -> None:
        """Before a run: count from 0, stop before the block that would pass `limit`."""
        st = self.state
        st.count = 0
        st.block_pc = st.block_end = 0
        st.limit = NO_LIMIT if limit is None else limit

    @property
    def count(self) -> int:
        return self.state.count

    def retired(self, pc: int, whole: bool) -> int:
        """Instructions that completed in this run before `pc` (see _fastpath.c retired)."""
        return _fastpath.retired(self.address, pc, whole)

    # ---- code pages (for counting Thumb blocks) -------------------------------------------
    def code_page(self, va_page: int, host: int) -> None:
        _fastpath.code_page(self.address, va_page, host)

    def code_flush(self) -> None:
        _fastpath.code_flush(self.address)

    # ---- the tail of a budget ---------------------------------------------------------
    def arm_tail(self, block_pc: int, stop_at: int | None) -> None:
        """The next run starts at `block_pc`, a block longer than the budget left: let that
        block start, and stop before the instruction at `stop_at` (None: run it whole - the
        budget ends inside an IT block that reaches its end). The caller drops the
        translations of `stop_at` (they must call the tail hook) and calls `disarm_tail`."""
        self.state.allow_pc = block_pc
        if stop_at is not None:
            self._tail_bounds[0] = self._tail_bounds[1] = stop_at
            self._tail = stop_at

    def disarm_tail(self) -> int | None:
        """Park the tail hook again; returns where it was (its translations must go)."""
        self.state.allow_pc = NO_LIMIT
        addr, self._tail = self._tail, None
        if addr is not None:
            self._tail_bounds[0] = self._tail_bounds[1] = _PARKED
        return addr



# ---- the fill mirror ---------------------------------------------------------------------
TAG_FLAT, NO_S1 = -2, -2


class _MirrorState(ctypes.Structure):
    """struct s2_mirror in mirror.c."""
    _fields_ = [("blk", ctypes.c_void_p), ("table", ctypes.c_void_p),
                ("enabled", ctypes.c_int32), ("vmid", ctypes.c_int32),
                ("asid", ctypes.c_int32), ("dacr", ctypes.c_uint32),
                ("fills", ctypes.c_uint64), ("grow_at", ctypes.c_uint64),
                ("hits", ctypes.c_uint64),
                ("next_way", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class FillMirror:
    """The native fill hook and its mirror of the model TLB, on one engine. Register it
    before the Python fill hook: Unicorn asks the hooks in order until one grants."""

    def __init__(self, uc, block: BlockHook) -> None:
        if ctypes.sizeof(_MirrorState) != _CALLBACKS["mirror_size"]:
            raise RuntimeError("emu/native/mirror.c and its ctypes mirror disagree")
        self.block = block                       # keeps the code-page table alive
        self.state = st = _MirrorState()
        st.blk = block.address
        st.table = _fastpath.mirror_table_new()
        st.enabled = 1
        st.grow_at = NO_LIMIT
        weakref.finalize(self, _fastpath.mirror_table_free, st.table)
        self.address = ctypes.addressof(st)
        self._context: tuple[int, int, int] | None = None
        self.handle = hook_add(uc, UC_HOOK_TLB_FILL, _CALLBACKS["mirror_fill"], self.address)

    def context(self, vmid: int, asid: int | None, dacr: int) -> None:
        """The loaded VMID, the current ASID (None: MMU off) and DACR."""
        ctx = (vmid, TAG_FLAT if asid is None else asid, dacr)
        if ctx != self._context:
            self._context = ctx
            st = self.state
            st.vmid, st.asid, st.dacr = ctx

    def insert(self, e, host: int) -> None:
        """A model TLB entry (hyp.arch.tlb.TLBEntry) Unicorn was given; `host` its page."""
        s1 = e.s1
        if s1 is None:
            _fastpath.mirror_insert(self.address, e.vmid, e.tag, e.va_page, e.pa_page, host,
                                    int(e.prot), 0, 0, NO_S1)
        else:
            _fastpath.mirror_insert(self.address, e.vmid, e.tag, e.va_page, e.pa_page, host,
                                    int(e.prot), int(s1.pl1), int(s1.pl0),
                                    -1 if s1.domain is None else s1.domain)

    def removed(self, entries, vmid: int | None) -> None:
        """hyp.arch.tlb removal listener: drop exactly what the model TLB dropped."""
        if entries is None:
            _fastpath.mirror_clear(self.address, -1 if vmid is None else vmid)
            return
        remove, addr = _fastpath.mirror_remove, self.address
        for e in entries:
            remove(addr, e.vmid, e.tag, e.va_page)

    @property
    def hits(self) -> int:
        return self.state.hits
