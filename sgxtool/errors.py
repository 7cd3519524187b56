"""sgxtool's exception hierarchy: one base, subclasses a caller can act on."""

from __future__ import annotations

from memcrypt.errors import FormatError, InvalidInput, MemcryptError

__all__ = [
    "ConfigError",
    "ElfError",
    "ImageError",
    "SgxToolError",
    "SigningKeyError",
    "UsageError",
    "VerificationError",
]


class SgxToolError(MemcryptError):
    """Base of sgxtool's errors."""


class ConfigError(SgxToolError, InvalidInput):
    """enclave.toml is missing, unreadable or invalid."""


class ElfError(SgxToolError, InvalidInput):
    """The enclave ELF cannot be used (not an ELF, wrong class, not PIE, corrupt)."""


class ImageError(SgxToolError, FormatError):
    """A signed image, SIGSTRUCT or SGXS stream is truncated or malformed (exit 2)."""


class SigningKeyError(SgxToolError, InvalidInput):
    """A signing key is unreadable, encrypted with another passphrase, or not RSA-3072 e=3."""


class UsageError(SgxToolError, InvalidInput):
    """The inputs given do not fit the operation asked for (exit 2)."""


class VerificationError(SgxToolError):
    """A signature, measurement or structure check failed (exit 1)."""
