"""Fixtures for sgxtool tests: a compiled test enclave, the Intel sample signing key and
Intel's SgxRandTest enclave loaded with its EDL."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hwsim.machine import Machine
from sgxtool.intelrt import IntelEnclave

# A freestanding static-PIE program with code, read-only data, initialised data, bss and
# one base-relative relocation: every kind of content the layout has to place.
ENCLAVE_C = r"""
static const char msg[] = "hello from a test enclave";
const char *greeting = msg;
char scratch[8192];
long counter = 5;
void _start(void) { for (;;) counter += greeting[counter & 7] + scratch[counter & 4095]; }
"""

CFLAGS = ["-O2", "-fPIE", "-nostdlib", "-static-pie"]


def compile_c(source: str, out: Path, flags: list[str] = CFLAGS) -> Path:
    """Compile ``source`` with the system C compiler (a test prerequisite, like in CI)."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.fail("no C compiler (cc) on PATH; .ci/run installs gcc")
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run([cc, *flags, "-o", str(out), str(src)], check=True)
    return out


@pytest.fixture(scope="session")
def enclave_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(ENCLAVE_C, tmp_path_factory.mktemp("elf") / "enclave.elf")


@pytest.fixture
def enclave_copy(enclave_elf: Path, tmp_path: Path) -> Path:
    """A private copy of the test enclave that a test may damage."""
    return Path(shutil.copy(enclave_elf, tmp_path / "enclave.elf"))


@pytest.fixture(scope="session")
def sample_key(vector: Callable[[str], Path]) -> Path:
    """Intel's sample enclave key (RSA-3072, e=3), read in place."""
    return vector("sgx/fortanix-rust-sgx/sig1.key.pem")


Vector = Callable[[str], Path]
SAMPLE = "sgx/intel-sdk-enclaves/DongpingZ+SgxRandTest"
# Types SgxRandTest's EDL uses from a header of its App, which the EDL does not import.
USER_TYPES = {"buffer_t": "void *", "array_t": "int[10]"}


@pytest.fixture
def sample(vector: Vector, machine: Machine) -> Iterator[IntelEnclave]:
    """SgxRandTest loaded with its EDL on the test machine, its console captured."""
    so = vector(f"{SAMPLE}/enclave.signed.so")
    with IntelEnclave.load(so, edl=so.parent / "Enclave.edl", typedefs=USER_TYPES,
                           machine=machine, console=io.StringIO()) as enclave:  # fmt: skip
        yield enclave
