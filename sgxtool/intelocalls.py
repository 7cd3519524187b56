"""The host functions Intel SDK enclaves call out to: the SDK's own OCALLs and the sample
applications', served by name (linux-sgx ``psw/urts/se_ocalls.cpp``, SampleEnclave
``App/``; ``shared/reference/intel-sdk.md`` 4). A Python handler given to
:meth:`~sgxtool.intelrt.IntelEnclave.load` for the same name takes precedence.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from sgxtool.intelthreads import EVENT_OCALLS

if TYPE_CHECKING:
    from sgxtool.intelrt import IntelEnclave
    from sgxtool.marshal import OcallCall

__all__ = ["BUILTIN_OCALLS", "IntelHandler"]

IntelHandler = Callable[["IntelEnclave", "OcallCall"], object]


def _print_string(enclave: IntelEnclave, call: OcallCall) -> None:
    enclave.write(str(call.values["str"] or ""))


def _print_int(enclave: IntelEnclave, call: OcallCall) -> None:
    # test_hash_SGX's App: printf("%d\n", *str)
    enclave.write(f"{call.values['str']}\n")


def _set_1234(_enclave: IntelEnclave, call: OcallCall) -> None:
    # SampleEnclave App/Edger8rSyntax/Pointers.cpp: *val = 1234 (copied back for [out]).
    out = call.values["val"]
    if isinstance(out, bytearray):
        out[:4] = struct.pack("<i", 1234)


def _nothing(_enclave: IntelEnclave, _call: OcallCall) -> None:
    """ocall_pointer_user_check and ocall_pointer_in: the App only looks."""


def _function_allow(enclave: IntelEnclave, _call: OcallCall) -> None:
    # SampleEnclave App/Edger8rSyntax/Functions.cpp: call the private ECALL back.
    enclave.ecall("ecall_function_private")


def _cpuidex(enclave: IntelEnclave, call: OcallCall) -> None:
    leaf, subleaf = (int(call.values[k]) & 0xFFFFFFFF for k in ("leaf", "subleaf"))  # type: ignore[call-overload]
    out = call.values["cpuinfo"]
    if isinstance(out, bytearray):
        out[:16] = struct.pack("<4I", *enclave.device.machine.cpuid(leaf, subleaf))


BUILTIN_OCALLS: dict[str, IntelHandler] = {
    "sgx_oc_cpuidex": _cpuidex,
    **EVENT_OCALLS,
    "ocall_print_string": _print_string,
    "ocall_print": _print_int,
    "ocall_pointer_user_check": _nothing,
    "ocall_pointer_in": _nothing,
    "ocall_pointer_out": _set_1234,
    "ocall_pointer_in_out": _set_1234,
    "ocall_function_allow": _function_allow,
}
