"""sgxtool: build, measure, sign, inspect and run SGX enclaves.

Public names are imported on first use so that the command line starts fast.
"""

from __future__ import annotations

from memcrypt.cli import lazy_attr
from sgxtool.errors import (
    ConfigError,
    ElfError,
    SgxToolError,
    SigningKeyError,
    VerificationError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ElfError",
    "Enclave",
    "EnclaveCallError",
    "EnclaveCrashed",
    "SgxToolError",
    "SigningKeyError",
    "VerificationError",
    "__version__",
]

__getattr__ = lazy_attr(
    __name__,
    {
        "Enclave": "sgxtool.runtime",
        "EnclaveCallError": "sgxtool.runtime",
        "EnclaveCrashed": "sgxtool.runtime",
    },
)
