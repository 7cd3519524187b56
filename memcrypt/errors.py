"""The exception root shared by the three packages.

Every error a user can cause derives from :class:`MemcryptError`. The CLIs catch that one
class, print ``prog: error: <message>`` (plus a hint line when there is one) and exit with
``exit_code``: 1 for a refused or failed operation, 2 for unreadable or invalid input. Each
package derives its own base from it (``HwsimError``, ``SgxToolError``, ``SevToolError``), so
``except SevToolError`` catches every sevtool error.
"""

from __future__ import annotations

__all__ = ["FormatError", "InvalidInput", "MemcryptError"]


class MemcryptError(Exception):
    """Root of every error memcrypt reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class InvalidInput(MemcryptError):
    """Input that cannot be read or does not make sense (exit 2)."""

    exit_code = 2


class FormatError(InvalidInput):
    """A binary structure is truncated, oversized or has a bad magic or length."""
