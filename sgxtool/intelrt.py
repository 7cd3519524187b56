"""Host side of enclaves built with Intel's SGX SDK: the uRTS's half of the tRTS convention.

    with IntelEnclave.load("enclave.signed.so", edl="Enclave.edl") as enclave:
        enclave.ecall("ecall_test", message="Hello Enclave.", message_len=14).retval

The enclave is loaded from sgx_sign's metadata (:mod:`sgxtool.intelso`, the copy a
loader without EDMM runs) through the same device as memcrypt's own images, launched as a
debug enclave when its SIGSTRUCT allows it (as Intel's loader does with ``debug=1``), and
initialised with ECMD_INIT_ENCLAVE. Then each ECALL is an EENTER with RDI = its edger8r
index and RSI = its ``ms_<fn>_t`` in host memory (:mod:`sgxtool.marshal`); the enclave
leaves with RDI = OCMD_ERET and the status in RSI, or with RDI = an OCALL index and RSI =
the OCALL's ``ms`` on the untrusted stack, served here by name and resumed with
ECMD_ORET (the SDK's own OCALLs: :mod:`sgxtool.intelocalls`). ECALLs may run at once on
several TCSs (:mod:`sgxtool.intelthreads`), and an exception inside the enclave goes to
its own handlers through ECMD_EXCEPT (:mod:`sgxtool.intelexcept`). Facts: linux-sgx
``common/inc/internal/rts_cmd.h``, ``psw/urts/enclave.cpp``, ``sdk/trts/trts_ecall.cpp``/
``trts_ocall.cpp`` (``shared/reference/intel-sdk.md`` 2-4).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from hwsim.sgx.arch import AttributeFlag, Sigstruct
from hwsim.sgx.device import HOST_BASE, HOST_SIZE
from sgxtool.edl import Edl, Function, load_edl
from sgxtool.errors import SgxToolError, UsageError
from sgxtool.intelexcept import ExceptionRecord, recover, status_text
from sgxtool.intelocalls import BUILTIN_OCALLS
from sgxtool.intelso import intel_layout, read_metadata, runnable_copy
from sgxtool.intelthreads import Scheduler, Task, ThreadCall, ThreadResult, run_threads
from sgxtool.marshal import (
    EcallResult,
    OcallCall,
    OcallHandler,
    Value,
    marshal_ecall,
    serve_ocall,
    unmarshal_ecall,
)
from sgxtool.runtime import DEFAULT_TIMEOUT, Enclave, EnclaveCrashed

if TYPE_CHECKING:
    from hwsim.machine import Machine
    from hwsim.sgx.device import Exit, SgxEnclaveDevice
    from sgxtool.layout import EnclaveLayout

__all__ = [
    "ECMD_INIT_ENCLAVE",
    "ECMD_ORET",
    "OCMD_ERET",
    "IntelCallError",
    "IntelCallResult",
    "IntelEnclave",
    "OcallRefused",
    "system_features",
]

# rts_cmd.h: commands in RDI at EENTER, and the code in RDI at EEXIT for a return.
ECMD_INIT_ENCLAVE = -1
ECMD_ORET = -2
OCMD_ERET = -1
_U64 = (1 << 64) - 1
# system_features_t (rts.h): the tRTS copies sizeof its own version; 176 covers all (3.2).
SYSTEM_FEATURES_SIZE = 176
_FEATURE_SET_LAST = 1 << 63  # bit 63 marks the last element of system_feature_set
# se_cpu_feature_defs.h bits of what the simulated CPU executes: GENERIC_IA32 up to
# SSE4.1 (0x3FF, the tRTS's minimum), SSE4.2, POPCNT, MOVBE, PCLMULQDQ, AES, RDRND. IPP's
# dispatcher (tlibcrypto) needs SSE4.2 for its only non-AVX2 code path, so SHA-256 in
# sgx_tcrypto fails with 0x3FF alone.
CPU_FEATURES = 0x3FF | 0x400 | 0x800 | 0x1000 | 0x2000 | 0x4000 | 0x20000
_CPUINFO_LEAVES = (0, 1, 4, 7)  # cpuinfo_table row n = CPUID leaf n (cpu_features.cpp)
# Host window: system_features_t, then ECALL ms and buffers, then one untrusted stack per
# TCS (the OCALLs of concurrent threads live on their own stacks).
_FEATURES_AT = HOST_BASE
_ARENA = (HOST_BASE + 0x1000, HOST_BASE + HOST_SIZE // 2)
_STACKS = (HOST_BASE + HOST_SIZE // 2, HOST_BASE + HOST_SIZE)
_RED_ZONE = 256  # the uRTS's own frames between an OCALL's ms and its ORET entry
# sgx_error.h
SGX_SUCCESS = 0
SGX_ERROR_UNEXPECTED = 0x1
SGX_ERROR_INVALID_FUNCTION = 0x1001


class IntelCallError(SgxToolError):
    """An ECALL came back with a status other than SGX_SUCCESS."""

    def __init__(self, name: str, status: int) -> None:
        text = status_text(status)
        hint = None
        if status == 0x1007:
            hint = "a private ECALL runs only from an OCALL that allows it (EDL allow(...))"
        super().__init__(f"ECALL {name} failed with status {status:#x} ({text})", hint=hint)
        self.status = status


class OcallRefused(SgxToolError):
    """The enclave made an OCALL no handler serves."""


@dataclass(frozen=True)
class IntelCallResult:
    """What one ECALL returned: its return value and ``[out]`` buffers by name."""

    entry: str
    retval: object
    outputs: dict[str, object]
    mrenclave: bytes
    mrsigner: bytes

    def as_json(self) -> dict[str, object]:
        return {
            "entry": self.entry,
            "retval": _jsonable(self.retval),
            "outputs": {k: _jsonable(v) for k, v in self.outputs.items()},
            "mrenclave": self.mrenclave.hex(),
            "mrsigner": self.mrsigner.hex(),
        }


def _jsonable(value: object) -> object:
    if isinstance(value, (bytes, bytearray)):
        return {"hex": bytes(value).hex()}
    return value


def system_features(sdk_2_0: bool, cpuid: Callable[[int, int], tuple[int, ...]]) -> bytes:
    """ECMD_INIT_ENCLAVE's ``system_features_t``, 176 bytes zero-padded (rts.h, 3.2):
    version 0 (SDK_VERSION_1_5: no EDMM), feature set 1<<63, the CPU features above,
    and CPUID leaves 0, 1, 4, 7 in the cpuinfo table (SDK 2.2 and later, packed)."""
    raw = bytearray(SYSTEM_FEATURES_SIZE)
    if sdk_2_0:  # natural alignment: cpu_features @0, version @8, feature_set @16
        struct.pack_into("<QI4xQ", raw, 0, CPU_FEATURES, 0, _FEATURE_SET_LAST)
        return bytes(raw)
    struct.pack_into("<QIQ", raw, 0, CPU_FEATURES, 0, _FEATURE_SET_LAST)  # pack(1)
    for leaf in _CPUINFO_LEAVES:
        struct.pack_into("<4I", raw, 20 + 16 * leaf, *cpuid(leaf, 0))
    struct.pack_into("<Q", raw, 156, SYSTEM_FEATURES_SIZE)
    struct.pack_into("<I", raw, 172, 1)  # cpu_core_num: the simulator runs one CPU
    return bytes(raw)


class _Arena:
    """Untrusted host memory for ECALL ``ms`` structures and buffers, shared by the enclave
    threads: first fit in 64-byte units; reads and writes are the host's loads and stores."""

    def __init__(self, device: SgxEnclaveDevice) -> None:
        self.device = device
        self.blocks: dict[int, int] = {}  # start -> end of each block in use

    def alloc(self, n: int) -> int:
        at = _ARENA[0]
        for start, end in sorted(self.blocks.items()):
            if at + n <= start:
                break
            at = end
        if at + n > _ARENA[1]:
            raise SgxToolError(
                f"ECALL arguments exceed the {_ARENA[1] - _ARENA[0]}-byte host area "
                "(with those of the other threads' calls in progress)"
            )
        self.blocks[at] = -(-(at + max(n, 1)) // 64) * 64
        return at

    def free(self, addresses: list[int]) -> None:
        for at in addresses:
            del self.blocks[at]

    def read(self, address: int, n: int) -> bytes:
        return self.device.host_read(address, n)

    def write(self, address: int, data: bytes) -> None:
        self.device.host_write(address, data)


class _CallMemory:
    """The host memory of one ECALL (the marshaller's view): freed when the call returns."""

    def __init__(self, arena: _Arena) -> None:
        self.arena = arena
        self.owned: list[int] = []

    def alloc(self, n: int) -> int:
        self.owned.append(self.arena.alloc(n))
        return self.owned[-1]

    def read(self, address: int, n: int) -> bytes:
        return self.arena.read(address, n)

    def write(self, address: int, data: bytes) -> None:
        self.arena.write(address, data)

    def free(self) -> None:
        self.arena.free(self.owned)
        self.owned.clear()


class IntelEnclave(Enclave):
    """A loaded, initialised Intel SDK enclave whose ECALLs are called by EDL name."""

    def __init__(
        self,
        device: SgxEnclaveDevice,
        layout: EnclaveLayout,
        edl: Edl,
        *,
        string_len: bool,
        ocalls: Mapping[str, OcallHandler] | None = None,
        console: TextIO | None = None,
        budget: int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        owned_machine: Machine | None = None,
    ) -> None:
        super().__init__(device, layout, tuple(f.name for f in edl.ecalls), console=console,
                         budget=budget, timeout=timeout, owned_machine=owned_machine)  # fmt: skip
        self.edl = edl
        self.string_len = string_len
        self.handlers = dict(ocalls or {})
        self.scheduler = Scheduler(lambda tcs: f"{tcs - self.base:#x}")
        self.exceptions: list[ExceptionRecord] = []  # each ECMD_EXCEPT made, in order
        self._arena = _Arena(device)

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def load(  # type: ignore[override]
        cls,
        image: str | Path,
        *,
        edl: Edl | str | Path,
        typedefs: Mapping[str, str] | None = None,
        edl_path: tuple[Path, ...] = (),
        machine: Machine | None = None,
        token: bytes | None = None,
        ocalls: Mapping[str, OcallHandler] | None = None,
        console: TextIO | None = None,
        budget: int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        debug: bool = True,
    ) -> IntelEnclave:
        """Load ``image`` (signed by sgx_sign), described by its EDL, and initialise it.

        ``debug`` launches it as a debug enclave where its SIGSTRUCT leaves DEBUG out of
        ATTRIBUTEMASK (otherwise it is launched as signed).
        """
        if not isinstance(edl, Edl):
            edl = load_edl(edl, typedefs=dict(typedefs or {}), search=edl_path)
        copies = read_metadata(image)
        meta = runnable_copy(copies)
        newest = max(c.version for c in copies)
        return cls.from_layout(
            intel_layout(image, meta), meta.sigstruct, edl=edl, string_len=newest >= (2, 2),
            sdk_2_0=newest < (2, 2), machine=machine, token=token, ocalls=ocalls,
            console=console, budget=budget, timeout=timeout, debug=debug,
        )  # fmt: skip

    @classmethod
    def from_layout(  # type: ignore[override]
        cls,
        layout: EnclaveLayout,
        sigstruct: Sigstruct,
        *,
        edl: Edl,
        string_len: bool = True,
        sdk_2_0: bool = False,
        machine: Machine | None = None,
        token: bytes | None = None,
        ocalls: Mapping[str, OcallHandler] | None = None,
        console: TextIO | None = None,
        budget: int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        debug: bool = True,
    ) -> IntelEnclave:
        """Load any layout built by Intel's SDK (an SGXS import, say) with its SIGSTRUCT;
        ``string_len`` and ``sdk_2_0`` say which SDK built it (see :func:`system_features`)."""
        from hwsim.machine import Machine
        from hwsim.sgx.device import SgxEnclaveDevice
        from sgxtool.loader import load_enclave

        owned = Machine.default() if machine is None else None
        device = SgxEnclaveDevice(machine or owned)  # type: ignore[arg-type]
        try:
            load_enclave(device, layout, sigstruct, token,
                         debug=debug and _debug_allowed(sigstruct))  # fmt: skip
            enclave = cls(device, layout, edl, string_len=string_len, ocalls=ocalls,
                          console=console, budget=budget, timeout=timeout,
                          owned_machine=owned)  # fmt: skip
            enclave._initialize(sdk_2_0=sdk_2_0)
        except BaseException:
            device.close()
            if owned is not None:
                owned.close()
            raise
        return enclave

    def __enter__(self) -> IntelEnclave:
        return self

    def _initialize(self, *, sdk_2_0: bool) -> None:
        """ECMD_INIT_ENCLAVE on the first TCS (urts_com.h, after EINIT)."""
        machine = self.device.machine
        with self.scheduler.turn("ECMD_INIT_ENCLAVE") as task:
            self.device.host_write(_FEATURES_AT, system_features(sdk_2_0, machine.cpuid))
            task.allowance = self._new_allowance()
            status = self._run(task, self.tcs[0], ECMD_INIT_ENCLAVE, _FEATURES_AT,
                               self._stack(self.tcs[0])[1])  # fmt: skip
        if status != SGX_SUCCESS:
            raise IntelCallError("ECMD_INIT_ENCLAVE", status)

    # -- calls ------------------------------------------------------------------------
    def call(self, name: str, data: bytes = b"", *, out_size: int = 0) -> bytes:
        """memcrypt SDK images only: Intel SDK ECALLs take named values (:meth:`ecall`)."""
        raise UsageError(
            f"ECALL {name}: an Intel SDK enclave takes its EDL parameters by name",
            hint="call enclave.ecall(name, param=value, ...)",
        )

    def ecall(self, name: str, /, **args: Value) -> IntelCallResult:
        """Run ECALL ``name`` with its parameters by name; its return value and outputs.
        Host threads may call at once: they take turns on the CPU (:attr:`scheduler`)."""
        index, f = self.edl.ecall(name)
        with self.scheduler.turn(name) as task:
            task.allowance = task.allowance or self._new_allowance()
            memory = _CallMemory(self._arena)
            try:
                result = self._ecall(task, index, f, args, memory)
            finally:
                memory.free()
        return IntelCallResult(name, result.retval, result.outputs, self.mrenclave,
                               self.mrsigner)  # fmt: skip

    def run_threads(self, calls: Sequence[ThreadCall]) -> list[ThreadResult]:
        """Run ``calls`` as concurrent ECALLs, each on its own TCS and host thread, as an
        application's threads do (:func:`~sgxtool.intelthreads.run_threads`)."""
        return run_threads(self, calls)

    def _ecall(
        self, task: Task, index: int, f: Function, args: dict[str, Value], memory: _CallMemory
    ) -> EcallResult:
        frame = marshal_ecall(f, args, memory, string_len=self.string_len)
        ms = frame.ms_address if frame.ms_size else 0  # void f(void): the bridge wants NULL
        if task.in_ocall:  # a nested ECALL runs on the thread that made the OCALL
            tcs, sp = task.in_ocall[-1]
            status = self._run(task, tcs, index, ms, sp)
        else:
            tcs = task.tcs = self._free_thread()
            self._busy.add(tcs)
            try:
                status = self._run(task, tcs, index, ms, self._stack(tcs)[1])
            finally:
                self._busy.discard(tcs)
        if status != SGX_SUCCESS:
            raise IntelCallError(f.name, status)
        return unmarshal_ecall(frame, memory)

    def _free_thread(self) -> int:
        """A TCS no ECALL in progress holds (the uRTS's SGX_ERROR_OUT_OF_TCS otherwise)."""
        for tcs in self.tcs:
            if tcs not in self._busy:
                return tcs
        raise SgxToolError(
            f"all {len(self.tcs)} TCSs of the enclave are held by ECALLs in progress "
            "(SGX_ERROR_OUT_OF_TCS)",
            hint="TCSNum in Enclave.config.xml sets how many threads can be in the enclave",
        )

    def _stack(self, tcs: int) -> tuple[int, int]:
        """The untrusted stack of the host thread on ``tcs``: its lowest and top address."""
        size = (_STACKS[1] - _STACKS[0]) // len(self.tcs) & ~0xFFF
        low = _STACKS[0] + self.tcs.index(tcs) * size
        return low, low + size - 64

    def _run(self, task: Task, tcs: int, command: int, arg: int, sp: int) -> int:
        """EENTER with ``command``/``arg``, serving OCALLs until OCMD_ERET; the status."""
        ex = self._step(task, tcs, dict(rdi=command & _U64, rsi=arg, rsp=sp, rbp=sp))
        failure: Exception | None = None
        while (code := _signed(ex.regs["rdi"])) >= 0:
            if failure is not None:  # it calls out again rather than return: stop it here
                self.crashed = f"it kept making OCALLs after one failed ({failure})"
                raise failure
            below = self._ocall_stack(tcs)
            status = SGX_ERROR_UNEXPECTED
            task.in_ocall.append((tcs, below))
            try:
                status = self._ocall(code, ex.regs["rsi"])
            except EnclaveCrashed as exc:  # a deadlock: the thread stays stopped inside
                if self.crashed and self.crashed != str(exc):  # another thread's crash did it
                    raise EnclaveCrashed(
                        f"the enclave crashed earlier ({self.crashed}); load it again"
                    ) from exc
                self.crashed = str(exc)
                raise
            except Exception as exc:  # the handler's failure: the enclave may unwind first
                failure = exc
            finally:
                task.in_ocall.pop()
            ex = self._step(task, tcs, dict(rdi=ECMD_ORET & _U64, rsi=status, rsp=below,
                                            rbp=below))  # fmt: skip
        if failure is not None:
            raise failure
        if code != OCMD_ERET:
            raise EnclaveCrashed(f"the enclave left with an unknown exit code {code}")
        return ex.regs["rsi"] & 0xFFFFFFFF

    def _step(self, task: Task, tcs: int, regs: dict[str, int]) -> Exit:
        """One entry of thread ``tcs``, through the exceptions it takes, to its next EEXIT."""
        assert task.allowance is not None
        ex = self._device_enter(task.allowance, tcs, regs)
        return recover(self, task, tcs, ex) if ex.kind == "aex" else ex

    def _ocall_stack(self, tcs: int) -> int:
        """Where the uRTS's frames for an OCALL end: below the enclave's ``sgx_ocalloc``
        block, which must lie on this thread's own untrusted stack."""
        rsp = self.device.host_regs("rsp")["rsp"]
        low, top = self._stack(tcs)
        if not low + _RED_ZONE <= rsp <= top:
            self.crashed = f"its untrusted stack pointer {rsp:#x} left the thread's stack"
            raise EnclaveCrashed(
                f"an OCALL's untrusted stack at {rsp:#x} is outside the {top - low}-byte "
                f"stack of its thread ({low:#x}-{top:#x}): OCALL data too large?"
            )
        return (rsp - _RED_ZONE) & ~0xF

    def _ocall(self, index: int, ms: int) -> int:
        """Serve OCALL ``index`` (uRTS CEnclave::ocall): the bridge's status."""
        if index >= len(self.edl.ocalls):
            return SGX_ERROR_INVALID_FUNCTION
        f = self.edl.ocalls[index]
        handler = self.handlers.get(f.name)
        if handler is not None:
            serve_ocall(f, ms, self._arena, handler)
            return SGX_SUCCESS
        builtin = BUILTIN_OCALLS.get(f.name)
        if builtin is None:
            serve_ocall(f, ms, self._arena, _refuse)
            return SGX_ERROR_UNEXPECTED  # not reached: _refuse raises
        serve_ocall(f, ms, self._arena, lambda call: builtin(self, call))
        return SGX_SUCCESS

    def write(self, text: str) -> None:
        """What the enclave prints through its print OCALLs."""
        out = self.console or sys.stdout
        out.write(text)
        out.flush()


def _debug_allowed(sig: Sigstruct) -> bool:
    """Whether EINIT accepts DEBUG in the SECS for this SIGSTRUCT (not in its mask)."""
    return not sig.attributemask_flags & int(AttributeFlag.DEBUG)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def _refuse(call: OcallCall) -> object:
    args = ", ".join(f"{k}={_shown(v)}" for k, v in call.values.items())
    raise OcallRefused(
        f"the enclave made OCALL {call.function.name}({args}), which no handler serves",
        hint="serve it with a Python handler: IntelEnclave.load(..., ocalls={name: handler})",
    )


def _shown(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[:32]).hex() + ("..." if len(value) > 32 else "")
    return repr(value)
