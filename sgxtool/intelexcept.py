"""Hardware exceptions inside an Intel SDK enclave: the uRTS's half of the tRTS's handling.

An exception in enclave mode (#UD, #DE, #PF on a bad address, an int3 no debugger takes)
is an AEX: the CPU saves the thread's state in SSA[0] with EXITINFO, CSSA becomes 1, and
the host sees the AEP. Intel's uRTS (``psw/urts/linux/sig_handler.cpp``, its signal and
vDSO handlers) then ECALLs ECMD_EXCEPT on the same TCS; the tRTS's
``trts_handle_exception`` (``sdk/trts/trts_veh.cpp``) copies SSA[0] into an
``sgx_exception_info_t`` on the trusted stack and points SSA[0].RIP at
``internal_handle_exception``, or refuses. On SGX_SUCCESS the uRTS ERESUMEs: the enclave
runs the handlers registered with ``sgx_register_exception_handler``, and continues where
one says so (or retries the instruction once with none, marking a second fault fatal). On
any other status the tRTS has marked itself crashed and the ECALL fails with that status.
``shared/reference/intel-sdk.md`` 3.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sgxtool.runtime import EnclaveCrashed

if TYPE_CHECKING:
    from hwsim.sgx.device import Exit
    from sgxtool.intelrt import IntelEnclave
    from sgxtool.intelthreads import Task

__all__ = [
    "ECMD_EXCEPT", "SGX_STATUS", "EnclaveException", "ExceptionRecord", "recover", "status_text",
]  # fmt: skip

ECMD_EXCEPT = -3  # rts_cmd.h
SGX_SUCCESS = 0
_RED_ZONE = 256  # the uRTS's own frames below the interrupted host stack
# sgx_error.h
SGX_STATUS = {
    0x1: "SGX_ERROR_UNEXPECTED", 0x2: "SGX_ERROR_INVALID_PARAMETER",
    0x3: "SGX_ERROR_OUT_OF_MEMORY", 0x4: "SGX_ERROR_ENCLAVE_LOST",
    0x5: "SGX_ERROR_INVALID_STATE", 0x1001: "SGX_ERROR_INVALID_FUNCTION",
    0x1003: "SGX_ERROR_OUT_OF_TCS", 0x1006: "SGX_ERROR_ENCLAVE_CRASHED",
    0x1007: "SGX_ERROR_ECALL_NOT_ALLOWED", 0x1008: "SGX_ERROR_OCALL_NOT_ALLOWED",
    0x1009: "SGX_ERROR_STACK_OVERRUN",
}  # fmt: skip


def status_text(status: int) -> str:
    return SGX_STATUS.get(status, "unknown status")


@dataclass(frozen=True)
class ExceptionRecord:
    """One ECMD_EXCEPT the runtime made: the exception (vector, and the enclave offset of
    the instruction) and the tRTS's answer (SGX_SUCCESS: it resumed the thread)."""

    vector: int
    offset: int
    status: int


class EnclaveException(EnclaveCrashed):
    """An exception inside the enclave that it did not handle: the ECALL failed and the
    tRTS marked the enclave crashed (Intel's SGX_ERROR_ENCLAVE_CRASHED family)."""

    def __init__(self, entry: str, fault: str, status: int) -> None:
        super().__init__(
            f"ECALL {entry} took an exception the enclave did not handle: {fault} "
            f"(ECMD_EXCEPT answered {status:#x}, {status_text(status)})",
            hint="the enclave is crashed, as Intel's runtime leaves it: load it again",
        )
        self.fault = fault
        self.status = status


def recover(enclave: IntelEnclave, task: Task, tcs: int, ex: Exit) -> Exit:
    """After an AEX of thread ``tcs``: ECMD_EXCEPT, then ERESUME while the tRTS accepts,
    until the thread leaves with an EEXIT (returned); :class:`EnclaveException` when it
    refuses, :class:`EnclaveCrashed` for the runtime's own stops (budget, time)."""
    while ex.kind == "aex":
        runaway = enclave._runaway(ex)
        if runaway is not None:
            enclave._crash(runaway)
        if task.in_exception:  # CSSA 2 of NSSA 2: EENTER could not even get in
            enclave._crash(f"faulted while handling an exception: {ex.describe()}")
        fault = ex.describe()
        sp = (enclave.device.host_regs("rsp")["rsp"] - _RED_ZONE) & ~0xF
        task.in_exception = True
        try:
            status = enclave._run(task, tcs, ECMD_EXCEPT, 0, sp)
        finally:
            task.in_exception = False
        if ex.fault is not None:
            offset = ex.fault.rip - enclave.base
            enclave.exceptions.append(ExceptionRecord(ex.fault.vector, offset, status))
        if status != SGX_SUCCESS:
            enclave.crashed = f"{fault}, not handled"
            raise EnclaveException(task.name, fault, status)
        ex = enclave._device_enter(task.allowance or enclave._new_allowance(), tcs, {},
                                   resume=True)  # fmt: skip
    return ex
