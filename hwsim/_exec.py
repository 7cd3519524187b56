"""The execution core: real x86-64 code on Unicorn, with our own page tables.

Shared by SGX enclaves (:mod:`hwsim.sgx._run`) and SEV guests (:mod:`hwsim.sev.guest`).
The CPU runs in
Unicorn's virtual-TLB mode: every TLB miss asks the owner's :data:`Translator` for the
physical page and its permissions, so access rules (EPCM, abort pages, the C-bit) are
enforced per page mapping when the TLB is filled, never by per-instruction or
per-access hooks (``shared/reference/sim.md`` 5.2, 5.3). A change of mode or of page
rights must be followed by :meth:`Cpu.flush_tlb`: Unicorn keeps filled entries across
runs until told otherwise (sim.md 5.3, issues #1845 and #2369).

Traps reach the owner three ways, none on the fast path: an invalid opcode (ENCLU and
ENCLS are invalid to Unicorn's decoder, sim.md 5.1), an interrupt or exception vector,
and the few instructions Unicorn can hook (CPUID, SYSCALL, RDTSC, ...). Exceptions raised
inside a hook are kept and re-raised after ``emu_start`` because Unicorn would otherwise
replace them with a generic error (sim.md 5.1, "exceptions are masked").
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unicorn import (
    UC_ARCH_X86,
    UC_ERR_INSN_INVALID,
    UC_HOOK_INSN,
    UC_HOOK_INSN_INVALID,
    UC_HOOK_INTR,
    UC_HOOK_TLB_FILL,
    UC_MEM_FETCH,
    UC_MEM_READ,
    UC_MEM_WRITE,
    UC_MODE_64,
    UC_PROT_ALL,
    UC_PROT_READ,
    UC_PROT_WRITE,
    UC_TLB_VIRTUAL,
)
from unicorn import x86_const as x86

from hwsim.arch import PAGE_SIZE
from hwsim.errors import HwsimError

# The binding's classes are untyped (and mypy finds its Python 2 flavour): use them as Any.
_unicorn: Any = importlib.import_module("unicorn")
Uc: Any = _unicorn.Uc
UcError: Any = _unicorn.UcError

__all__ = [
    "FETCH",
    "GP",
    "PAGE",
    "PF",
    "READ",
    "RW",
    "RWX",
    "UD",
    "WATCHDOG_TICK",
    "WRITE",
    "Cpu",
    "ExecError",
    "Fault",
    "PageDenied",
    "Stop",
    "Translator",
    "pf_error_code",
]

READ, WRITE, FETCH = UC_MEM_READ, UC_MEM_WRITE, UC_MEM_FETCH
PAGE = PAGE_SIZE
# Unicorn stops when RIP reaches `until`. It must be 0: with any other value Unicorn
# fetches from the page below `until` when the instruction count runs out (probed on
# 2.1.4). So code can never run at address 0; a jump there is reported as a #GP.
_UNTIL = 0
_MASK64 = (1 << 64) - 1
_UC_TLB_FLUSH = 11  # UC_CTL_TLB_FLUSH; the 2.1.4 binding has no wrapper (sim.md 5.3)
_UC_CTL_IO_WRITE = 1

# Exception vectors (SDM vol. 3A 6.3.1).
UD, GP, PF = 6, 13, 14
VECTOR_NAMES = {0: "#DE", 1: "#DB", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 13: "#GP",
                14: "#PF", 16: "#MF", 17: "#AC", 19: "#XM"}  # fmt: skip

# Instructions the Python binding of Unicorn 2.1.4 lets us hook (unicorn_py3/arch/intel.py;
# RDTSC is hookable in C only, so it is not made #UD on SGX1 parts here).
HOOKABLE = {
    "cpuid": x86.UC_X86_INS_CPUID,
    "syscall": x86.UC_X86_INS_SYSCALL,
    "sysenter": x86.UC_X86_INS_SYSENTER,
    "in": x86.UC_X86_INS_IN,
    "out": x86.UC_X86_INS_OUT,
}

REGS = {
    name: getattr(x86, f"UC_X86_REG_{name.upper()}")
    for name in (
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "rflags", "fs_base", "gs_base",
    )
}  # fmt: skip
XMM = [getattr(x86, f"UC_X86_REG_XMM{i}") for i in range(16)]


def pf_error_code(access: int, *, present: bool, sgx: bool = False) -> int:
    """#PF error code (SDM vol. 3A 4.7): P, W/R, U/S (enclaves run at CPL 3), I/D, SGX."""
    code = 0x4 | (0x1 if present else 0)
    code |= 0x2 if access == WRITE else 0
    code |= 0x10 if access == FETCH else 0
    return code | (0x8000 if sgx else 0)


class PageDenied(Exception):
    """Raised by a translator: this access faults with ``vector`` and ``error_code``."""

    def __init__(self, vector: int, error_code: int, detail: str) -> None:
        super().__init__(detail)
        self.vector = vector
        self.error_code = error_code
        self.detail = detail


@dataclass(frozen=True)
class Fault:
    """An exception raised by code running on the CPU (not yet delivered)."""

    vector: int
    error_code: int
    rip: int
    address: int | None = None  # the linear address of a #PF (page granular)
    detail: str = ""

    @property
    def name(self) -> str:
        return VECTOR_NAMES.get(self.vector, f"vector {self.vector}")


@dataclass(frozen=True)
class Stop:
    """Why a run ended: a handler left (``trap``), a ``fault``, the ``budget`` of
    instructions ran out, or the wall-clock deadline passed (``timeout``)."""

    kind: str
    fault: Fault | None = None


_TRAP = Stop("trap")

# (vaddr, access) -> (paddr, UC_PROT_* permissions), or raise PageDenied.
Translator = Callable[[int, int], tuple[int, int]]


class Cpu:
    """One x86-64 logical processor with software-defined address translation."""

    def __init__(self) -> None:
        self.uc: Any = Uc(UC_ARCH_X86, UC_MODE_64)  # the binding is untyped
        self.uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        self.translate: Translator = _no_memory
        # (rip, rax, *trap_regs): the invalid instruction's address, RAX (the leaf of
        # ENCLS/ENCLU/...) and the registers named in trap_regs, all read in one transfer.
        self.on_invalid: Callable[..., None] = self._undefined
        self._trap_ids: tuple[int, ...] = _RIP_RAX
        self.illegal: frozenset[str] = frozenset()  # hookable instructions that #UD now
        # Hookable instructions the owner emulates (a VM exit, for a guest): called with
        # the hook's arguments (IN: port, size -> value; OUT: port, size, value; CPUID:
        # none -> 1 to skip the instruction after setting the registers).
        self.emulate: dict[str, Callable[..., int]] = {}
        self._stop: Stop | None = None
        self._error: BaseException | None = None
        self._denied: tuple[PageDenied, int] | None = None
        self._native = _Native(self.uc)
        self._buffers: list[ctypes.Array[ctypes.c_ubyte]] = []
        self.uc.hook_add(UC_HOOK_TLB_FILL, self._fill)
        self._native.hook_invalid(self._invalid)
        self.uc.hook_add(UC_HOOK_INTR, self._interrupt)
        for name, insn in HOOKABLE.items():
            self.uc.hook_add(UC_HOOK_INSN, self._insn_hook(name), aux1=insn)

    # -- physical memory --------------------------------------------------------------
    def map_ram(self, paddr: int, size: int) -> None:
        """Physical RAM (zero-filled, backed lazily by the host OS)."""
        self.uc.mem_map(paddr, size)

    def map_buffer(self, paddr: int, size: int) -> memoryview:
        """Physical RAM backed by a host buffer the caller can read without a Unicorn call.

        Writes must still go through :meth:`write_phys`, which invalidates code Unicorn
        translated from the page."""
        buf = (ctypes.c_ubyte * size)()
        self.uc.mem_map_ptr(paddr, size, UC_PROT_ALL, ctypes.addressof(buf))
        self._buffers.append(buf)
        return memoryview(buf).cast("B")

    def map_abort_page(self, paddr: int) -> None:
        """A physical page whose loads read all ones and whose stores are dropped."""
        self.uc.mmio_map(paddr, PAGE, _abort_read, None, _abort_write, None)

    def read_phys(self, paddr: int, size: int) -> bytes:
        return bytes(self.uc.mem_read(paddr, size))

    def write_phys(self, paddr: int, data: bytes) -> None:
        self.uc.mem_write(paddr, data)

    def read_at_trap(self, *names: str) -> None:
        """Pass the registers ``names`` to :attr:`on_invalid` after RIP and RAX: a handler
        that needs them anyway saves a register transfer per trap."""
        self._trap_ids = _RIP_RAX + _reg_ids(names)

    def flush_tlb(self) -> None:
        """Drop every cached translation; required after any mode or permission change."""
        self.uc.ctl(_UC_TLB_FLUSH, _UC_CTL_IO_WRITE)

    def flush_code(self) -> None:
        """Drop all translated code. Needed when memory that held code is refilled from
        outside the CPU (EDBGWR, ELDU into a reused slot): a store through Unicorn's
        memory API made while no code runs does not reliably invalidate it (probed on 2.1.4).
        Call it between runs only, never from a hook."""
        self.uc.ctl_flush_tb()

    # -- registers --------------------------------------------------------------------
    def reg(self, name: str) -> int:
        return self._native.read(_reg_ids((name,)))[0]

    def set_regs(self, **values: int) -> None:
        """Write 64-bit registers (not MXCSR or vector registers) in one call."""
        self._native.write(_reg_ids(tuple(values)), [v & _MASK64 for v in values.values()])

    def regs(self, *names: str) -> dict[str, int]:
        return dict(zip(names, self._native.read(_reg_ids(names)), strict=True))

    def mxcsr(self) -> int:
        return int(self.uc.reg_read(x86.UC_X86_REG_MXCSR))

    def set_mxcsr(self, value: int) -> None:
        self.uc.reg_write(x86.UC_X86_REG_MXCSR, value)

    def xmm(self) -> list[int]:
        return [int(self.uc.reg_read(r)) for r in XMM]

    def set_xmm(self, values: list[int]) -> None:
        for reg, value in zip(XMM, values, strict=True):
            self.uc.reg_write(reg, value)

    # -- running ----------------------------------------------------------------------
    def run(self, rip: int, budget: int = 0, deadline: float | None = None) -> Stop:
        """Execute from ``rip`` until a handler stops, a fault, ``budget`` instructions
        (0: no count) or the ``time.monotonic()`` ``deadline`` (checked by a watchdog
        thread every :data:`WATCHDOG_TICK` seconds, so it costs nothing per instruction;
        Unicorn's exact count costs a call per instruction, 4-14x on tight loops)."""
        while True:
            stop = self._run_once(rip, budget, deadline)
            if stop is not None:
                return stop
            # Stopped by nobody we know of: a watchdog stop meant for an earlier run that
            # landed in this one. Without a count to lose, carry on where it stopped.
            rip = self.reg("rip")

    def _run_once(self, rip: int, budget: int, deadline: float | None) -> Stop | None:
        self._stop = self._error = self._denied = None
        if deadline is not None:
            _WATCHDOG.watch(self, deadline)
        try:
            self._native.emu_start(rip, _UNTIL, budget)
        except UcError as exc:
            if self._error is None and self._stop is None:
                self._stop = Stop("fault", self._fault_from(exc))
        finally:
            if deadline is not None:
                _WATCHDOG.unwatch(self)
        if self._error is not None:
            raise self._error
        if self._stop is not None:
            return self._stop
        if self.reg("rip") == _UNTIL:
            return Stop("fault", Fault(GP, 0, _UNTIL, None, "jump to address 0"))
        if deadline is not None and time.monotonic() >= deadline:
            return Stop("timeout")
        return Stop("budget") if budget else None

    def trap_done(self) -> None:
        """Called by a handler that has left the code (EEXIT): end this run."""
        self._stop = _TRAP
        self._native.emu_stop()

    def fault(self, fault: Fault) -> None:
        """Called by a handler: the current instruction raised ``fault``; end this run."""
        self._stop = Stop("fault", fault)
        self._native.emu_stop()

    def _fault_from(self, exc: UcError) -> Fault:
        rip = self.reg("rip")
        if self._denied is not None:
            denied, vaddr = self._denied
            return Fault(denied.vector, denied.error_code, rip, vaddr, denied.detail)
        if exc.errno == UC_ERR_INSN_INVALID:
            return Fault(UD, 0, rip, None, "invalid instruction")
        return Fault(GP, 0, rip, None, f"the CPU stopped: {exc}")

    # -- hooks (each catches everything: see the module docstring) ------------------
    def _fill(self, uc: Any, vaddr: int, access: int, entry: Any, _data: object) -> bool:
        try:
            paddr, perms = self.translate(vaddr, access)
        except PageDenied as denied:
            if self._denied is None:  # the first denial is the fault
                self._denied = (denied, vaddr)
            return False
        except BaseException as exc:
            self._error = exc
            uc.emu_stop()
            return False
        entry.paddr = paddr
        entry.perms = perms
        return True

    def _invalid(self, _engine: int | None, _data: int | None) -> bool:
        try:
            self.on_invalid(*self._native.read(self._trap_ids))
        except BaseException as exc:
            self._error = exc
            self.uc.emu_stop()
        return True

    def _undefined(self, rip: int, *_regs: int) -> None:
        self.fault(Fault(UD, 0, rip, None, "invalid instruction"))

    def _interrupt(self, uc: Any, intno: int, _data: object) -> None:
        try:
            self.fault(Fault(intno, 0, self.reg("rip"), None, "exception"))
        except BaseException as exc:
            self._error = exc
            uc.emu_stop()

    def _insn_hook(self, name: str) -> Callable[..., int]:
        def hook(uc: Any, *args: Any) -> int:
            if name not in self.illegal:
                handler = self.emulate.get(name)
                if handler is None:
                    return 0
                try:
                    return handler(*args[:-1])  # the last argument is the hook's user data
                except BaseException as exc:
                    self._error = exc
                    uc.emu_stop()
                    return 0
            self.fault(Fault(UD, 0, self.reg("rip"), None, f"{name.upper()} is illegal here"))
            return 1  # skip the instruction (CPUID/RDTSC hooks, misc_helper.c)

        return hook


class _Native:
    """libunicorn's entry points on the entry/exit path, called without the Python
    binding's wrappers: its per-register type dispatch, typed pointers and hook
    trampolines cost microseconds per call, which would dominate an enclave entry.
    Register values go through one buffer with ``struct`` (a ctypes slice costs more
    than the call itself)."""

    _MAX = 32

    def __init__(self, uc: Any) -> None:
        from unicorn.unicorn_py3.unicorn import uclib

        self._lib = uclib
        self._write = _function(_BATCH, uclib.uc_reg_write_batch)
        self._read = _function(_BATCH, uclib.uc_reg_read_batch)
        self._start = _function(_EMU_START, uclib.uc_emu_start)
        self._stop = _function(_EMU_STOP, uclib.uc_emu_stop)
        self._uc = uc
        self._handle = uc._uch.value
        self._values = (ctypes.c_uint64 * self._MAX)()
        self._buffer = memoryview(self._values).cast("B")
        base = ctypes.addressof(self._values)
        self._ptrs = (ctypes.c_void_p * self._MAX)(*(base + 8 * i for i in range(self._MAX)))
        self._ptrs_at = ctypes.addressof(self._ptrs)
        self._hooks: list[Any] = []  # the C callbacks must outlive the engine's use

    def write(self, ids: tuple[int, ...], values: list[int]) -> None:
        _PACKERS[len(ids)].pack_into(self._buffer, 0, *values)
        self._check(self._write(self._handle, _ids(ids), self._ptrs_at, len(ids)))

    def read(self, ids: tuple[int, ...]) -> tuple[int, ...]:
        self._check(self._read(self._handle, _ids(ids), self._ptrs_at, len(ids)))
        return _PACKERS[len(ids)].unpack_from(self._buffer)

    def emu_start(self, rip: int, until: int, count: int) -> None:
        """As the binding's ``emu_start``, exceptions of its own hook wrappers included."""
        self._uc._hook_exception = None
        status = self._start(self._handle, rip, until, 0, count)
        if status:
            raise UcError(status)
        if self._uc._hook_exception is not None:
            raise self._uc._hook_exception

    def emu_stop(self) -> None:
        self._check(self._stop(self._handle))

    def hook_invalid(self, callback: Callable[[int | None, int | None], bool]) -> None:
        """``callback(engine, user_data)`` at every invalid instruction; it must not raise."""
        hook = _INVALID_HOOK(callback)
        handle = ctypes.c_size_t()
        status = self._lib.uc_hook_add(self._uc._uch, ctypes.byref(handle), UC_HOOK_INSN_INVALID,
                                       ctypes.cast(hook, ctypes.c_void_p), None, 1, 0)  # fmt: skip
        self._check(status)
        self._hooks.append(hook)

    @staticmethod
    def _check(status: int) -> None:
        if status:
            raise ExecError(f"unicorn call failed (unicorn error {status})")


def _function(prototype: Any, binding_function: Any) -> Any:
    return prototype(ctypes.cast(binding_function, ctypes.c_void_p).value)


_PACKERS = [struct.Struct(f"<{n}Q") for n in range(_Native._MAX + 1)]
_BATCH = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                          ctypes.c_int)  # fmt: skip
_EMU_START = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64,
                              ctypes.c_uint64, ctypes.c_size_t)  # fmt: skip
_EMU_STOP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_INVALID_HOOK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p)


@functools.lru_cache(maxsize=256)
def _reg_ids(names: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(REGS[n] for n in names)


_RIP_RAX = (x86.UC_X86_REG_RIP, x86.UC_X86_REG_RAX)


@functools.lru_cache(maxsize=256)
def _ids(ids: tuple[int, ...]) -> ctypes.Array[ctypes.c_int]:
    return (ctypes.c_int * len(ids))(*ids)


def _no_memory(vaddr: int, access: int) -> tuple[int, int]:
    raise PageDenied(PF, pf_error_code(access, present=False), f"nothing mapped at {vaddr:#x}")


def _abort_read(_uc: Any, _offset: int, size: int, _data: object) -> int:
    return (1 << (8 * size)) - 1


def _abort_write(_uc: Any, _offset: int, _size: int, _value: int, _data: object) -> None:
    return None


RW = UC_PROT_READ | UC_PROT_WRITE
RWX = UC_PROT_ALL
WATCHDOG_TICK = 0.01  # seconds: how late a deadline may stop a run


class _Watchdog:
    """One daemon thread that stops runs past their deadline.

    ``emu_start`` releases the GIL, so the thread runs beside the emulation and stops it
    with ``emu_stop`` (Unicorn's own timeout would start a thread per run: 0.1 ms each).
    Watching costs a dict store per run; the lock makes sure a stop only ever reaches a
    run that is still watched with the deadline that passed."""

    def __init__(self) -> None:
        self._runs: dict[int, tuple[Cpu, float]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, cpu: Cpu, deadline: float) -> None:
        with self._lock:
            self._runs[id(cpu)] = (cpu, deadline)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="hwsim-watchdog", daemon=True)
            self._thread.start()

    def unwatch(self, cpu: Cpu) -> None:
        with self._lock:
            self._runs.pop(id(cpu), None)

    def _loop(self) -> None:
        while True:
            time.sleep(WATCHDOG_TICK)
            now = time.monotonic()
            with self._lock:
                late = [cpu for cpu, deadline in self._runs.values() if now >= deadline]
                for cpu in late:
                    # Repeated every tick until the run ends, so a failed stop is retried;
                    # this thread must outlive any error.
                    with contextlib.suppress(UcError):
                        cpu.uc.emu_stop()


_WATCHDOG = _Watchdog()


class ExecError(HwsimError):
    """The execution core could not run the code it was given."""
