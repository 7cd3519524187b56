"""The simulator's exception base.

Errors of the simulated hardware derive from :class:`HwsimError`; those that model a
firmware or instruction failure carry its architectural status code as an attribute
(``SgxStatusError.status``, ``PspError.status``).
"""

from __future__ import annotations

from memcrypt.errors import MemcryptError

__all__ = ["HwsimError", "MachineError"]


class HwsimError(MemcryptError):
    """Base of the simulator's errors."""


class MachineError(HwsimError):
    """A machine directory, its configuration or its state store is unusable."""
