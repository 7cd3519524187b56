"""Errors raised by the simulated SGX hardware and its kernel-like device layer.

The hardware raises what real silicon reports: an architectural status in RAX
(:class:`SgxStatusError`, carrying :class:`~hwsim.sgx.arch.SgxStatus`) or a fault
(:class:`SgxFault`, #GP or #PF). The device layer and the launch policy refuse with
:class:`LaunchRefused`, whose message names the rule and whose hint names the remedy.
"""

from __future__ import annotations

from hwsim.errors import HwsimError
from hwsim.sgx.arch import SgxStatus

__all__ = ["GP", "PF", "UD", "LaunchRefused", "SgxError", "SgxFault", "SgxStatusError"]

# Exception vectors (SDM vol. 3A 6.3.1).
UD = 6
GP = 13
PF = 14

_VECTOR_NAMES = {UD: "#UD", GP: "#GP(0)", PF: "#PF"}


class SgxError(HwsimError):
    """Base of the SGX model's errors."""


class SgxStatusError(SgxError):
    """An ENCLS/ENCLU leaf failed with an architectural error code (ZF=1, RAX=code)."""

    def __init__(self, status: SgxStatus, detail: str, *, hint: str | None = None) -> None:
        super().__init__(f"SGX_{status.name} ({int(status)}): {detail}", hint=hint)
        self.status = status
        self.detail = detail


class SgxFault(SgxError):
    """An ENCLS/ENCLU leaf faulted (#GP, #PF or #UD) instead of completing."""

    def __init__(self, vector: int, detail: str) -> None:
        super().__init__(f"{_VECTOR_NAMES.get(vector, f'vector {vector}')}: {detail}")
        self.vector = vector
        self.detail = detail


class LaunchRefused(SgxError):
    """The launch policy (kernel, Launch Enclave or owner) refused an enclave."""

    def __init__(self, rule: str, detail: str, *, hint: str | None = None) -> None:
        super().__init__(f"launch refused by {rule}: {detail}", hint=hint)
        self.rule = rule
        self.detail = detail
