"""Fixtures for the example tests: each example built once per session, signed with
Intel's sample key (read in place from the shared vectors)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.examples.build import EXAMPLES, make_example, sign_image

Built = Callable[..., Path]


@pytest.fixture(scope="session")
def sample_key(vector: Callable[[str], Path]) -> Path:
    return vector("sgx/fortanix-rust-sgx/sig1.key.pem")


@pytest.fixture(scope="session")
def other_key(vector: Callable[[str], Path]) -> Path:
    """A second signer: Intel's reference Launch Enclave test key."""
    return vector("sgx/intel-linux-sgx/ref_le_enclave_private_test_key.pem")


@pytest.fixture(scope="session")
def signed_example(tmp_path_factory: pytest.TempPathFactory, sample_key: Path) -> Built:
    """``signed_example("hello", "hello", key=..., **make_vars)``: a signed image, cached."""
    cache: dict[tuple[object, ...], Path] = {}

    def build(example: str, name: str, key: Path | None = None, **variables: str) -> Path:
        signer = key or sample_key
        slot = (example, name, signer, tuple(sorted(variables.items())))
        if slot not in cache:
            out = tmp_path_factory.mktemp(example)
            elf = make_example(example, out, f"{name}.elf", **variables)
            signed = out / f"{name}.signed.elf"
            cache[slot] = sign_image(elf, EXAMPLES / example / "enclave.toml", signer, signed)
        return cache[slot]

    return build
