"""sevtool: AMD SEV platform, guest-owner and SME management."""

from __future__ import annotations

from hwsim._console import lazy_attr
from sevtool.errors import SevToolError

__version__ = "0.1.0"

__all__ = ["SevToolError", "__version__"]

__getattr__ = lazy_attr(__name__, {})
