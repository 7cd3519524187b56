"""hwsim: a simulated x86 machine with Intel SGX and AMD SME/SEV.

Public names are imported on first use so that the command-line programs start fast.
"""

from __future__ import annotations

from hwsim.errors import HwsimError, MachineError
from memcrypt.cli import lazy_attr
from memcrypt.errors import FormatError, InvalidInput, MemcryptError

__version__ = "0.1.0"

__all__ = [
    "PROFILES",
    "FormatError",
    "GeneralProtection",
    "HwsimError",
    "InvalidInput",
    "Machine",
    "MachineError",
    "MemcryptError",
    "Profile",
    "__version__",
]

__getattr__ = lazy_attr(
    __name__,
    {
        "GeneralProtection": "hwsim.cpu",
        "Machine": "hwsim.machine",
        "PROFILES": "hwsim.profiles",
        "Profile": "hwsim.profiles",
    },
)
