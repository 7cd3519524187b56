"""Host side of enclaves built with the memcrypt SDK: load, call ECALLs, serve OCALLs.

    with sgxtool.Enclave.load("hello.signed.elf", machine=machine) as enclave:
        enclave.call("hello", b"world")            # b"Hello, world!"

Loading goes through the ``/dev/sgx_enclave``-shaped device (the launch policy decides
about tokens), so the host holds no enclave secret and sees enclave pages only as the
hardware lets it: abort-page reads, EPC ciphertext. The register protocol with the SDK's
entry stub is documented in ``sgxtool/sdk/entry.S``; buffers live in untrusted host memory
and the stub copies them in and out after checking they lie outside the enclave.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TextIO

from hwsim.sgx.arch import PAGE_SIZE, Sigstruct
from hwsim.sgx.device import HOST_BASE, HOST_SIZE
from sgxtool.elffile import ElfFile
from sgxtool.errors import ElfError, ImageError, SgxToolError, UsageError
from sgxtool.layout import EnclaveLayout

if TYPE_CHECKING:
    from types import TracebackType

    from hwsim.machine import Machine
    from hwsim.sgx.device import Exit, SgxEnclaveDevice

__all__ = [
    "DEFAULT_TIMEOUT",
    "CallResult",
    "Enclave",
    "EnclaveCallError",
    "EnclaveCrashed",
    "EnclaveStopped",
    "read_ecalls",
    "run_ecall",
]

DEFAULT_TIMEOUT = 60.0  # seconds a call may take, in and out of the enclave
DEFAULT_OUT = 64 << 10
_SCRATCH = (0x1000, 0x10000)  # OCALL requests and replies: offset and size in host memory
_BUFFERS = 0x11000  # input, then output buffer
_OCALL_RETURN = (1 << 64) - 1
# The OCALL scratch buffer, in the registers the entry stub takes it in; the host stack.
_SCRATCH_REGS = {"r10": HOST_BASE + _SCRATCH[0], "r11": _SCRATCH[1]}
_HOST_STACK = {"rsp": HOST_BASE + _SCRATCH[0] - 64, "rbp": 0}
_BP = 3  # int3's exception vector, #BP (SDM vol. 3A 6.3.1)
_ERRORS = {
    -1: "no such ECALL index",
    -2: "a host buffer overlaps the enclave",
    -3: "the enclave heap is exhausted",
    -4: "the result does not fit the output buffer",
    -5: "the entry stub refused the entry (the thread is in an OCALL or crashed)",
    -6: "unsealing failed: the data was altered, or sealed by another enclave or machine",
    -7: "EGETKEY refused the key request",
    -8: "the enclave rejected its input",
    -9: "an OCALL failed",
}
_MAX_ECALL_TABLE = 1 << 20  # 16384 entries: far more than any enclave exports
_ECALL_ENTRY = 64

HostCall = Callable[[bytes], bytes]


class EnclaveCallError(SgxToolError):
    """An ECALL returned an error code."""

    def __init__(self, name: str, code: int) -> None:
        text = _ERRORS.get(code, "enclave-defined error")
        super().__init__(f"ECALL {name} failed with {code}: {text}")
        self.code = code


class EnclaveCrashed(SgxToolError):
    """The enclave faulted, or a call ran past its budget or timeout; it cannot be called
    again (its thread was stopped in the middle)."""


class EnclaveStopped(EnclaveCrashed):
    """A thread hit an int3 (#BP), or ended a step, while
    :attr:`Enclave.stop_at_breakpoints` was set: the call is suspended, its thread
    resumable with :meth:`Enclave.resume`."""

    def __init__(self, message: str, tcs: int, rip: int, *, int3: bool) -> None:
        super().__init__(message)
        self.tcs = tcs
        self.rip = rip  # linear address the AEX saved: after the int3, or the next one
        self.int3 = int3


class _Pending(NamedTuple):
    """What a suspended call still needs to finish: its thread and output buffer."""

    name: str
    tcs: int
    out: int
    out_size: int


@dataclass
class Allowance:
    """What one call (with the calls its OCALL handlers make) may still spend."""

    budget: int | None  # instructions left; None: not counted
    deadline: float | None  # time.monotonic() by which the call must be done


def read_ecalls(path: str | Path, limit: int | None = None) -> tuple[str, ...]:
    """The ECALL names in an SDK enclave's ``.sgx_ecalls`` table, in index order."""
    try:
        with open(path, "rb") as f:
            elf = ElfFile(f, limit)
            section = elf.section(".sgx_ecalls")
            # Section headers are not measured: bound the size before reading.
            if section is not None and section.sh_size > _MAX_ECALL_TABLE:
                raise ImageError(f"{path}: .sgx_ecalls claims {section.sh_size} bytes")
            raw = b"" if section is None else elf.data(section)
    except (OSError, ElfError) as exc:  # section headers are unmeasured: anything goes
        raise ImageError(f"cannot read the ECALL table of {path}: {exc}") from exc
    if section is None:
        raise ImageError(
            f"{path} has no .sgx_ecalls table", hint="build it with the SDK: sgxtool sdk --help"
        )
    names = []
    for at in range(0, len(raw) - _ECALL_ENTRY + 1, _ECALL_ENTRY):
        field = raw[at + 8 : at + _ECALL_ENTRY].split(b"\0", 1)[0]
        try:
            names.append(field.decode("ascii"))
        except UnicodeDecodeError as exc:
            raise ImageError(f"{path}: ECALL {len(names)} has a name that is not ASCII") from exc
    return tuple(names)


class Enclave:
    """A loaded, initialized enclave and one CPU to run its threads."""

    def __init__(
        self,
        device: SgxEnclaveDevice,
        layout: EnclaveLayout,
        ecalls: tuple[str, ...],
        *,
        ocalls: Mapping[str, HostCall] | None = None,
        console: TextIO | None = None,
        budget: int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        owned_machine: Machine | None = None,
    ) -> None:
        self.device = device
        self.layout = layout
        self.ecalls = ecalls
        self.ocalls = dict(ocalls or {})
        self.console = console
        self.budget = budget
        self.timeout = timeout
        self.base = device.elrange[0]
        self.tcs = [self.base + t.tcs for t in layout.threads]
        self.crashed: str | None = None
        self._owned_machine = owned_machine
        self._lock = threading.RLock()
        self._busy: set[int] = set()
        self._allowance: Allowance | None = None  # of the call in progress
        # A debugger's choice: an int3 suspends the call (EnclaveStopped) instead of
        # crashing the enclave; the suspended call is kept in ``stopped``.
        self.stop_at_breakpoints = False
        self.stopped: _Pending | None = None

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        image: str | Path,
        *,
        machine: Machine | None = None,
        token: bytes | None = None,
        ocalls: Mapping[str, HostCall] | None = None,
        console: TextIO | None = None,
        budget: int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        edl: str | Path | None = None,
    ) -> Enclave:
        """Load a signed image (``sgxtool sign -o``) on ``machine`` (default: the default).

        Each :meth:`call` may run ``budget`` enclave instructions (None: not counted;
        counting costs 4-14x on tight loops) and take ``timeout`` seconds (None: no limit).
        An enclave signed by Intel's ``sgx_sign`` loads as an
        :class:`~sgxtool.intelrt.IntelEnclave` (Intel's calling convention), described by
        its ``edl``; its OCALL handlers go to ``IntelEnclave.load``.
        """
        from sgxtool.image import read_image
        from sgxtool.intelso import has_metadata

        if has_metadata(image):
            from sgxtool.intelrt import IntelEnclave

            if edl is None or ocalls:
                raise UsageError(
                    f"{image} is an Intel SDK enclave: load it with its EDL (edl=...); "
                    "OCALL handlers go to IntelEnclave.load(ocalls=...)",
                )
            return IntelEnclave.load(image, edl=edl, machine=machine, token=token,
                                     console=console, budget=budget, timeout=timeout)  # fmt: skip
        signed = read_image(image)
        ecalls = read_ecalls(image)
        return cls.from_layout(
            signed.layout(), signed.sigstruct, machine=machine, token=token, ecalls=ecalls,
            ocalls=ocalls, console=console, budget=budget, timeout=timeout,
        )  # fmt: skip

    @classmethod
    def from_layout(
        cls,
        layout: EnclaveLayout,
        sigstruct: Sigstruct,
        *,
        machine: Machine | None = None,
        token: bytes | None = None,
        ecalls: tuple[str, ...] = (),
        ocalls: Mapping[str, HostCall] | None = None,
        console: TextIO | None = None,
        budget: int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> Enclave:
        """Load any layout (an SGXS import, say) with its SIGSTRUCT."""
        from hwsim.machine import Machine
        from hwsim.sgx.device import SgxEnclaveDevice
        from sgxtool.loader import load_enclave

        owned = Machine.default() if machine is None else None
        device = SgxEnclaveDevice(machine or owned)  # type: ignore[arg-type]
        try:
            load_enclave(device, layout, sigstruct, token)
        except BaseException:
            device.close()
            if owned is not None:
                owned.close()
            raise
        return cls(device, layout, ecalls, ocalls=ocalls, console=console, budget=budget,
                   timeout=timeout, owned_machine=owned)  # fmt: skip

    def close(self) -> None:
        """Tear the enclave down (EREMOVE every page)."""
        self.device.close()
        if self._owned_machine is not None:
            self._owned_machine.close()
            self._owned_machine = None

    def __enter__(self) -> Enclave:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- identity ---------------------------------------------------------------------
    @property
    def mrenclave(self) -> bytes:
        return self.device.identity.mrenclave

    @property
    def mrsigner(self) -> bytes:
        return self.device.identity.mrsigner

    # -- calls ------------------------------------------------------------------------
    def call(self, name: str, data: bytes = b"", *, out_size: int = DEFAULT_OUT) -> bytes:
        """Run ECALL ``name`` with ``data``; its output bytes, or an error naming the code."""
        index = self._index(name)
        room = HOST_SIZE - _BUFFERS
        if len(data) + out_size > room:
            raise SgxToolError(f"input plus output ({len(data) + out_size} bytes) exceed {room}")
        with self._lock:  # one CPU: host threads take turns; an OCALL handler may nest
            if self.stopped is not None and self._allowance is None:
                raise SgxToolError(f"ECALL {self.stopped.name} is stopped at a breakpoint: "
                                   "resume it first")  # fmt: skip
            tcs = self._free_thread()
            src = HOST_BASE + _BUFFERS
            out = src + -(-len(data) // PAGE_SIZE) * PAGE_SIZE
            if data:  # a host copy costs a few microseconds even when empty
                self.device.host_write(src, data)
            regs = dict(rdi=index, rsi=src, rdx=len(data), r8=out, r9=out_size, **_SCRATCH_REGS)
            return self._run_call(name, tcs, out, out_size, lambda: self.enter(regs, tcs))

    def resume(self, *, step: bool = False) -> bytes:
        """ERESUME the call an int3 suspended (:class:`EnclaveStopped`); its output. With
        ``step``, one instruction runs and the call stops again (unless it left)."""
        with self._lock:
            pending = self.stopped
            if pending is None:
                raise SgxToolError("no call is stopped at a breakpoint")
            self.stopped = None
            self._busy.discard(pending.tcs)
            return self._run_call(
                *pending, lambda: self.enter({}, pending.tcs, resume=True, step=step)
            )

    def _run_call(
        self, name: str, tcs: int, out: int, out_size: int, first: Callable[[], Exit]
    ) -> bytes:
        """Run a call from its first (re)entry to its result, serving its OCALLs. Its
        :class:`_Pending` is made only when it stops: building one for every call was a
        third of what the runtime added to an empty ECALL."""
        self._busy.add(tcs)
        outermost = self._allowance is None
        if outermost:
            self._allowance = self._new_allowance()
        suspended = False
        try:
            result = self._serve(first(), tcs)
            if result < 0:
                raise EnclaveCallError(name, result)
            if result > out_size:  # RSI at EEXIT is the enclave's word: never trust it
                raise SgxToolError(
                    f"ECALL {name} claims {result} bytes of output, more than the "
                    f"{out_size}-byte output buffer"
                )
            return self.device.host_read(out, result) if result else b""
        except EnclaveStopped:
            if not outermost:  # the outer call's frames are gone: it cannot be resumed
                self._crash("stopped at a breakpoint inside a nested call")
            self.stopped = _Pending(name, tcs, out, out_size)
            suspended = True
            raise
        finally:
            if not suspended:
                self._busy.discard(tcs)
            if outermost:
                self._allowance = None

    def _index(self, name: str) -> int:
        """The ECALL index of ``name``; an enclave loaded without names (an SGXS stream)
        takes the index itself."""
        if name in self.ecalls:
            return self.ecalls.index(name)
        if not self.ecalls and name.isdigit():
            return int(name)
        known = ", ".join(self.ecalls) or "none: give the ECALL index"
        raise SgxToolError(f"the enclave has no ECALL named {name!r} (it has: {known})")

    def _new_allowance(self) -> Allowance:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        return Allowance(self.budget, deadline)

    def _free_thread(self) -> int:
        for tcs in self.tcs:
            if tcs not in self._busy:
                return tcs
        raise SgxToolError(
            f"all {len(self.tcs)} enclave threads are busy: an OCALL handler that calls "
            "back into the enclave needs a thread of its own",
            hint="raise memory.threads in enclave.toml",
        )

    def _serve(self, ex: Exit, tcs: int) -> int:
        """Serve a call's OCALLs from exit ``ex`` on thread ``tcs``; the ECALL's result. A
        nested call reuses the host buffers: the outer call's input is already inside and
        its output not yet out."""
        failure: Exception | None = None
        while ex.regs["rdi"] == 1:
            try:
                reply = self._ocall(ex.regs["rsi"], ex.regs["rdx"])
            except Exception as exc:  # the handler's bug: let the enclave unwind first
                failure, reply = failure or exc, -1
            ex = self.enter(dict(rdi=_OCALL_RETURN, rsi=reply, **_SCRATCH_REGS), tcs)
        if failure is not None:
            raise failure
        if ex.regs["rdi"] != 0:
            raise EnclaveCrashed(f"the enclave left with an unknown exit code {ex.regs['rdi']}")
        return _signed(ex.regs["rsi"])

    def enter(
        self, regs: dict[str, int], tcs: int | None = None, *, resume: bool = False,
        step: bool = False,
    ) -> Exit:  # fmt: skip
        """EENTER (ERESUME with ``resume``) a thread with ``regs``; the exit, or
        :class:`EnclaveCrashed` on an AEX or when the call in progress has spent its
        budget or time. With :attr:`stop_at_breakpoints`, an int3, or the end of a
        ``step`` (a budget of one instruction), is :class:`EnclaveStopped` instead."""
        allow = self._allowance or self._new_allowance()
        tcs = self.tcs[0] if tcs is None else tcs
        ex = self._device_enter(allow, tcs, regs, resume=resume, step=step)
        trapped = ex.fault is not None and ex.fault.vector == _BP
        stepped = step and ex.budget_exhausted
        if ex.kind == "aex" and self.stop_at_breakpoints and (trapped or stepped):
            why = f"the enclave stopped: {ex.describe()}"
            raise EnclaveStopped(why, tcs, ex.regs["rip"], int3=trapped)
        if ex.kind == "aex":
            self._crash(self._runaway(ex) or f"fault {ex.describe()}")
        return ex

    def _device_enter(
        self, allow: Allowance, tcs: int, regs: dict[str, int], *, resume: bool = False,
        step: bool = False,
    ) -> Exit:  # fmt: skip
        """EENTER (ERESUME with ``resume``) thread ``tcs`` within what ``allow`` has left
        (one instruction with ``step``); the exit as the device reports it, AEX included."""
        if self.crashed:
            raise EnclaveCrashed(f"the enclave crashed earlier ({self.crashed}); load it again")
        self._check_allowance(allow, "between two entries (an OCALL round trip)")
        budget = 1 if step else allow.budget or 0
        ex = self.device.enter(tcs, _HOST_STACK | regs, budget, resume=resume,
                               deadline=allow.deadline)  # fmt: skip
        if allow.budget is not None:
            allow.budget -= ex.instructions
        return ex

    def _runaway(self, ex: Exit) -> str | None:
        """Why an AEX was the runtime's own stop (budget or time spent), if it was."""
        if ex.budget_exhausted:
            return self._stopped(ex.describe())
        if ex.timed_out:
            return self._late(ex.describe())
        return None

    def _check_allowance(self, allow: Allowance, where: str) -> None:
        """Between entries (OCALL round trips): the call's budget and time still hold."""
        if allow.budget is not None and allow.budget <= 0:
            self._crash(self._stopped(where))
        if allow.deadline is not None and time.monotonic() >= allow.deadline:
            self._crash(self._late(where))

    def _stopped(self, where: str) -> str:
        return (
            f"ran {self.budget} instructions (its budget for one call) without finishing, "
            f"{where}; an endless loop? (raise the budget if the work is real)"
        )

    def _late(self, where: str) -> str:
        return f"ran out of time: the call took more than {self.timeout:g} s, {where}"

    def _crash(self, why: str) -> None:
        self.crashed = why
        raise EnclaveCrashed(f"the enclave {why}")

    def _ocall(self, number: int, length: int) -> int:
        scratch = HOST_BASE + _SCRATCH[0]
        request = self.device.host_read(scratch, min(length, _SCRATCH[1]))
        if number == 0:
            out = self.console or sys.stdout
            out.write(request.decode("utf-8", "replace"))
            out.flush()
            return len(request)
        if number != 1 or b"\0" not in request:
            return -1
        name, payload = request.split(b"\0", 1)
        handler = self.ocalls.get(name.decode("utf-8", "replace"))
        if handler is None:
            return -1
        reply = handler(payload)
        if len(reply) > _SCRATCH[1]:
            return -1
        self.device.host_write(scratch, reply)
        return len(reply)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


@dataclass(frozen=True)
class CallResult:
    """What ``sgxtool run`` reports: the ECALL's output and who produced it."""

    entry: str
    output: bytes
    mrenclave: bytes
    mrsigner: bytes

    def as_json(self) -> dict[str, object]:
        try:
            text: str | None = self.output.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return {
            "entry": self.entry,
            "length": len(self.output),
            "output_hex": self.output.hex(),
            "output_text": text,
            "mrenclave": self.mrenclave.hex(),
            "mrsigner": self.mrsigner.hex(),
        }


def run_ecall(
    image: str | Path,
    entry: str,
    data: bytes,
    *,
    machine: Machine | None = None,
    console: TextIO | None = None,
    out_size: int = DEFAULT_OUT,
    budget: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    token: bytes | None = None,
    sig: str | Path | None = None,
    after: Callable[[Enclave], None] | None = None,
) -> CallResult:
    """Load ``image``, call ECALL ``entry`` once with ``data``, tear the enclave down
    (``after`` sees the enclave between the call and the teardown).

    With ``sig`` (a SIGSTRUCT file), ``image`` is an SGXS stream whose TCS pages are
    found from its EADD records; ``entry`` is then the ECALL's index. ``token`` is an
    EINITTOKEN for a machine whose launch policy uses one.
    """
    if sig is not None:
        from sgxtool.sgxs import read_sgxs
        from sgxtool.token import load_sigstruct

        sigstruct = load_sigstruct(sig)
        loaded = Enclave.from_layout(read_sgxs(image), sigstruct, machine=machine, token=token,
                                     console=console, budget=budget, timeout=timeout)  # fmt: skip
    else:
        loaded = Enclave.load(image, machine=machine, token=token, console=console,
                              budget=budget, timeout=timeout)  # fmt: skip
    with loaded as enclave:
        output = enclave.call(entry, data, out_size=out_size)
        if after is not None:
            after(enclave)
        return CallResult(entry, output, enclave.mrenclave, enclave.mrsigner)
