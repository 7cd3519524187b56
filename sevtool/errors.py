"""sevtool's exception hierarchy: ``except SevToolError`` catches every sevtool error."""

from __future__ import annotations

from memcrypt.errors import FormatError, InvalidInput, MemcryptError

__all__ = ["SevFormatError", "SevInputError", "SevToolError"]


class SevToolError(MemcryptError):
    """Base of sevtool's errors."""


class SevInputError(SevToolError, InvalidInput):
    """An input file, key or option sevtool cannot use (exit 2)."""


class SevFormatError(SevToolError, FormatError):
    """A certificate or chain file that is truncated or malformed (exit 2)."""
