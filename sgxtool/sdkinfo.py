"""Where the enclave SDK lives and the compiler flags that build an enclave with it.

``cc $(sgxtool sdk --cflags) enclave.c $(sgxtool sdk --ldflags) -o enclave.elf``: the
``--ldflags`` list names the SDK's C and assembly sources, so the compiler builds them with
the enclave's own flags in the same command and no prebuilt library has to match the
user's compiler.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

__all__ = ["SDK_DIR", "SOURCES", "cflags", "ldflags", "linker_script"]

SDK_DIR = Path(__file__).resolve().parent / "sdk"
SOURCES = ("entry.S", "sgx_support.c", "sgx_sha512.c", "sgx_seal.c")

# Freestanding position-independent code: no libc, no stack protector (it needs a TLS
# canary the SDK does not set up), no unwind tables, no CET markers.
_CFLAGS = (
    "-ffreestanding",
    "-fPIE",
    "-fvisibility=hidden",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-plt",
    "-fcf-protection=none",
)
# A static PIE linked at 0 with the SDK's segment layout; no RELRO (relocations are applied
# by the entry stub, in writable pages) and no build id (it would change MRENCLAVE).
_LDFLAGS = (
    "-nostdlib",
    "-static-pie",
    "-Wl,-z,norelro",
    "-Wl,-z,noexecstack",
    "-Wl,--build-id=none",
)


def linker_script() -> Path:
    return SDK_DIR / "enclave.lds"


def cflags() -> list[str]:
    """Compiler flags for enclave sources (include path first)."""
    return [f"-I{SDK_DIR}", *_CFLAGS]


def ldflags() -> list[str]:
    """The SDK sources and link flags; put them after the enclave's own sources."""
    return [*(str(SDK_DIR / s) for s in SOURCES), *_LDFLAGS, f"-Wl,-T,{linker_script()}"]


def render(flags: list[str]) -> str:
    """Flags as one shell-quoted line, for ``$(...)`` in a Makefile or shell."""
    return shlex.join(flags)


if __name__ == "__main__":  # ``python sgxtool/sdkinfo.py --cflags`` before installation
    wanted = {"--cflags": cflags, "--ldflags": ldflags}
    if not sys.argv[1:] or any(arg not in wanted for arg in sys.argv[1:]):
        sys.exit("usage: sdkinfo.py --cflags | --ldflags")
    print(render([f for arg in sys.argv[1:] for f in wanted[arg]()]))
