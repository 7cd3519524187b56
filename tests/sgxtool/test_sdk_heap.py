"""The SDK's heap: memory the runtime hands an ECALL is zeroed, whatever was there before."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.machine import Machine
from sgxtool.runtime import Enclave
from tests.examples.build import compile_enclave, sign_image

ENCLAVE = r"""
#include <enclave.h>
/* Leaves a pattern in heap memory it got from sgx_alloc and does not wipe. */
SGX_ECALL(dirty) {
    uint8_t *p = sgx_alloc(256);
    if (!p) return -1;
    memset(p, 0xAA, 256);
    return 0;
}
/* Returns what a fresh sgx_alloc block holds. */
SGX_ECALL(peek) {
    uint8_t *p = sgx_alloc(256);
    if (!p || out_cap < 256) return -1;
    memcpy(out, p, 256);
    return 256;
}
"""
CONFIG = """
[enclave]
debug = true
[memory]
heap_size = "1M"
stack_size = "32K"
threads = 1
"""


@pytest.fixture(scope="module")
def heap_enclave(tmp_path_factory: pytest.TempPathFactory, vector: Callable[[str], Path]) -> Path:
    out = tmp_path_factory.mktemp("heap")
    elf = compile_enclave(ENCLAVE, out / "heap.elf")
    return sign_image(elf, CONFIG, vector("sgx/fortanix-rust-sgx/sig1.key.pem"), out / "heap.img")


def test_sgx_alloc_hands_out_zeroed_memory(heap_enclave: Path, machine: Machine) -> None:
    with Enclave.load(heap_enclave, machine=machine) as enclave:
        assert enclave.call("peek", b"", out_size=256) == bytes(256)
        assert enclave.call("dirty", b"", out_size=256) == b""
        # The same heap block again: the previous ECALL's pattern must not show through.
        assert enclave.call("peek", b"", out_size=256) == bytes(256)
