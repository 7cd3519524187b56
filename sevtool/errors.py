"""sevtool's exception hierarchy."""

from __future__ import annotations

from hwsim.errors import MemcryptError

__all__ = ["SevToolError"]


class SevToolError(MemcryptError):
    """Base of sevtool's errors."""
