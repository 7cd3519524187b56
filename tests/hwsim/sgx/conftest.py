"""Helpers for the SGX simulator tests: small enclaves built, measured and signed here.

Signing keys are real RSA-3072 e=3 test keys from ``../shared/vectors`` (Intel's sample
key and reference-LE test keys), read in place, so no test pays for key generation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hwsim.machine import Machine
from hwsim.sgx.arch import (
    EEXTEND_CHUNK,
    PAGE_SIZE,
    XFRM_LEGACY,
    AttributeFlag,
    PageType,
    SecinfoFlag,
    Secs,
    Sigstruct,
    Tcs,
    eadd_block,
    ecreate_block,
    eextend_header,
    secinfo_flags,
)
from hwsim.sgx.device import SgxEnclaveDevice
from sgxtool.sign import KeySigner, sign_sigstruct

U64 = (1 << 64) - 1
RX = int(SecinfoFlag.R | SecinfoFlag.X)
RW = int(SecinfoFlag.R | SecinfoFlag.W)
KEY_FILES = {
    "author": "sgx/intel-linux-sgx/SampleEnclave_Enclave_private_test.pem",
    "owner": "sgx/intel-linux-sgx/ref_le_le_private_test_key.pem",
    "other": "sgx/intel-linux-sgx/ref_le_enclave_private_test_key.pem",
}


@dataclass(frozen=True)
class Image:
    """A tiny signed enclave: code, TCS, SSA, and a data page."""

    secs: Secs
    pages: tuple[tuple[int, int, bytes], ...]
    sigstruct: Sigstruct

    @property
    def mrsigner(self) -> bytes:
        return self.sigstruct.mrsigner


def _pages(payload: bytes) -> tuple[tuple[int, int, bytes], ...]:
    tcs = Tcs(ossa=2 * PAGE_SIZE, nssa=1).pack()
    code = bytes.fromhex("b8040000000f01d7").ljust(PAGE_SIZE, b"\xcc")
    return (
        (0, secinfo_flags(PageType.REG, RX), code),
        (PAGE_SIZE, secinfo_flags(PageType.TCS), tcs),
        (2 * PAGE_SIZE, secinfo_flags(PageType.REG, RW), bytes(PAGE_SIZE)),
        (3 * PAGE_SIZE, secinfo_flags(PageType.REG, RW), payload.ljust(PAGE_SIZE, b"\0")),
    )


def measure(secs: Secs, pages: tuple[tuple[int, int, bytes], ...]) -> bytes:
    h = hashlib.sha256(ecreate_block(secs.ssaframesize, secs.size))
    for offset, flags, data in pages:
        h.update(eadd_block(offset, flags))
        for c in range(0, PAGE_SIZE, EEXTEND_CHUNK):
            h.update(eextend_header(offset + c) + data[c : c + EEXTEND_CHUNK])
    return h.digest()


def build_image(
    key: rsa.RSAPrivateKey,
    *,
    debug: bool = False,
    flags: int = 0,
    payload: bytes = b"hello",
    isvsvn: int = 1,
    size: int = 4 * PAGE_SIZE,
    **sig_fields: Any,
) -> Image:
    attrs = int(AttributeFlag.MODE64BIT) | (int(AttributeFlag.DEBUG) if debug else 0) | flags
    secs = Secs(size=size, ssaframesize=1, attributes_flags=attrs,
                attributes_xfrm=int(XFRM_LEGACY))  # fmt: skip
    pages = _pages(payload)
    sig = Sigstruct(
        date=0x20250101, attributes_flags=attrs, attributes_xfrm=int(XFRM_LEGACY),
        attributemask_flags=U64, attributemask_xfrm=U64, miscmask=0xFFFFFFFF,
        enclavehash=measure(secs, pages), isvprodid=7, isvsvn=isvsvn,
    )  # fmt: skip
    sig = replace(sig, **sig_fields) if sig_fields else sig
    return Image(secs, pages, sign_sigstruct(sig, KeySigner(key)))


def build_device(machine: Machine, image: Image) -> SgxEnclaveDevice:
    dev = SgxEnclaveDevice(machine)
    dev.create(image.secs)
    for offset, flags, data in image.pages:
        dev.add_pages(offset, data, flags)
    return dev


@pytest.fixture(scope="session")
def keys(vectors: Path) -> dict[str, rsa.RSAPrivateKey]:
    found = {}
    for name, rel in KEY_FILES.items():
        path = vectors / rel
        if not path.is_file():
            pytest.fail(f"test vector {path} is missing")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        found[name] = key
    return found


ImageMaker = Callable[..., Image]


@pytest.fixture
def image(keys: dict[str, rsa.RSAPrivateKey]) -> ImageMaker:
    """``image("author", debug=True)``: a small enclave signed by one of the test keys."""

    def make(signer: str = "author", **kw: Any) -> Image:
        return build_image(keys[signer], **kw)

    return make
