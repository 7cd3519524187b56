"""The SIGSTRUCT checks EINIT and `sgxtool verify` share, against Fortanix's vectors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from hwsim.sgx.arch import SgxStatus, Sigstruct
from hwsim.sgx.sigcheck import SigstructError, attach_signature, check_sigstruct, q1_q2

Vector = Callable[[str], Path]


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def test_rsa_primitive_vector(vector: Vector) -> None:
    def le(name: str) -> int:
        return int.from_bytes(
            vector(f"sgx/fortanix-rust-sgx/sig1.{name}.bin").read_bytes(), "little"
        )

    key = load_private_key(vector("sgx/fortanix-rust-sgx/sig1.key.pem"))
    n = key.public_key().public_numbers().n
    assert n == le("key_n")
    digest = vector("sgx/fortanix-rust-sgx/sig1.data.bin").read_bytes()
    raw = key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    s = int.from_bytes(raw, "big")
    assert s == le("sig")
    assert q1_q2(s, n) == (le("q1"), le("q2"))


def test_check_sigstruct_names_each_failure(vector: Vector) -> None:
    good = vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin").read_bytes()
    check_sigstruct(good)
    cases = [
        (16, "VENDOR", SgxStatus.INVALID_SIG_STRUCT),
        (24, "HEADER2", SgxStatus.INVALID_SIG_STRUCT),
        (512, "EXPONENT", SgxStatus.INVALID_SIG_STRUCT),
        (60, "reserved", SgxStatus.INVALID_SIG_STRUCT),
        (960, "signature", SgxStatus.INVALID_SIGNATURE),
        (600, "signature", SgxStatus.INVALID_SIGNATURE),
        (1100, "Q1/Q2", SgxStatus.INVALID_SIGNATURE),
        (1500, "Q1/Q2", SgxStatus.INVALID_SIGNATURE),
    ]
    for offset, check, status in cases:
        bad = bytearray(good)
        bad[offset] ^= 0x40
        with pytest.raises(SigstructError) as info:
            check_sigstruct(bytes(bad))
        assert (info.value.check, info.value.status) == (check, status)


def test_attach_signature_refuses_a_signature_that_does_not_verify(vector: Vector) -> None:
    key = load_private_key(vector("sgx/fortanix-rust-sgx/sig1.key.pem"))
    sig = Sigstruct(enclavehash=bytes(range(32)))
    n = key.public_key().public_numbers().n
    good = key.sign(sig.signed_bytes(), padding.PKCS1v15(), hashes.SHA256())
    check_sigstruct(attach_signature(sig, n, good).pack())
    for bad in (good[:-1] + bytes([good[-1] ^ 1]), n.to_bytes(384, "big")):
        with pytest.raises(SigstructError) as info:
            attach_signature(sig, n, bad)
        assert (info.value.check, info.value.status) == ("signature", SgxStatus.INVALID_SIGNATURE)
