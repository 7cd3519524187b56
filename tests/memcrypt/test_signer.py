"""The tool-neutral signer: raw signature forms, verification of what comes from outside."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from memcrypt.signer import (
    ECDSA_SHA256,
    RSA_PKCS1V15_SHA256,
    CommandSigner,
    Ecdsa,
    ExternalSignature,
    KeySigner,
    SignerError,
    SignerKeyError,
)

DATA = b"memcrypt signer test data"


def test_ecdsa_p384_raw_form_is_r_then_s() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    raw = KeySigner(key, ECDSA_SHA256).sign(DATA)
    assert len(raw) == 96 == ECDSA_SHA256.raw_size(key.public_key())
    r, s = Ecdsa.split(raw)
    key.public_key().verify(encode_dss_signature(r, s), DATA, ec.ECDSA(hashes.SHA256()))
    assert ExternalSignature(key.public_key(), raw, ECDSA_SHA256).sign(DATA) == raw


def test_rsa_raw_form_is_the_big_endian_integer() -> None:
    key = rsa.generate_private_key(65537, 2048)
    raw = KeySigner(key).sign(DATA)
    assert raw == key.sign(DATA, padding.PKCS1v15(), hashes.SHA256())
    assert RSA_PKCS1V15_SHA256.raw_size(key.public_key()) == 256


def test_key_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(SignerKeyError, match="EC key on secp384r1 cannot sign RSA"):
        KeySigner(ec.generate_private_key(ec.SECP384R1()), RSA_PKCS1V15_SHA256)


def test_external_signatures_are_checked() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    raw = KeySigner(key, ECDSA_SHA256).sign(DATA)
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(SignerError, match="does not verify"):
        ExternalSignature(other, raw, ECDSA_SHA256).sign(DATA)
    with pytest.raises(SignerError, match="95 bytes"):
        ExternalSignature(key.public_key(), raw[:-1], ECDSA_SHA256).sign(DATA)


def test_command_signer(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    pem = tmp_path / "k.pem"
    from cryptography.hazmat.primitives import serialization

    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    script = (
        "import sys; from cryptography.hazmat.primitives import serialization as s;"
        "from memcrypt.signer import KeySigner;"
        f"k = s.load_pem_private_key(open({str(pem)!r}, 'rb').read(), None);"
        "sys.stdout.buffer.write(KeySigner(k).sign(sys.stdin.buffer.read()))"
    )
    signer = CommandSigner(key.public_key(), (sys.executable, "-c", script))
    assert signer.sign(DATA) == KeySigner(key).sign(DATA)
    failing = CommandSigner(key.public_key(), (sys.executable, "-c", "raise SystemExit('no')"))
    with pytest.raises(SignerError, match="exited with status 1: no"):
        failing.sign(DATA)
