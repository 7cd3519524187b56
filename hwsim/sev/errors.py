"""The SEV firmware's failure: one error type carrying the SEV API status code.

Its own module so that the firmware (``psp``) and the transport crypto it calls
(``session``) both raise it without importing each other.
"""

from __future__ import annotations

from hwsim.errors import HwsimError
from hwsim.sev.arch import SevCommand, SevStatus

__all__ = ["PspError"]


class PspError(HwsimError):
    """A SEV firmware command failed with API status ``status``."""

    def __init__(
        self, command: SevCommand, status: SevStatus, why: str, *, hint: str | None = None
    ) -> None:
        super().__init__(
            f"{command.name} failed: {status.name} ({status.value:#04x}): {why}", hint=hint
        )
        self.command = command
        self.status = status
