"""SIGSTRUCT signing against Fortanix's golden file and the RSA primitive vector."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hwsim.sgx.arch import Sigstruct
from hwsim.sgx.sigcheck import check_sigstruct
from sgxtool.config import parse_config
from sgxtool.errors import SgxToolError, SigningKeyError, VerificationError
from sgxtool.keys import generate_key, load_private_key, load_public_key, save_private_key
from sgxtool.sign import (
    ExternalSignature,
    KeySigner,
    bcd_date,
    sign_sigstruct,
    signing_date,
    unsigned_sigstruct,
)

SIG1_HASH = bytes.fromhex("c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d")
SAMPLE_MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
# sgxs-sign -x 3/0xe4: flags 0x4 with mask ~0x2 (DEBUG free), xfrm 0x3 with mask ~0xe4.
SIG1_CONFIG = "[security]\nattributes_mask = 0xFFFFFFFFFFFFFFFD\n"

Vector = Callable[[str], Path]


def test_sig1_rebuilt_byte_for_byte(vector: Vector) -> None:
    key = load_private_key(vector("sgx/fortanix-rust-sgx/sig1.key.pem"))
    cfg = parse_config(SIG1_CONFIG)
    sig = sign_sigstruct(
        unsigned_sigstruct(cfg, SIG1_HASH, signing_date("20160109")), KeySigner(key)
    )
    assert sig.pack() == vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin").read_bytes()


@pytest.mark.parametrize(
    "name",
    [
        "fortanix-rust-sgx/sig1.key.pem",
        "intel-linux-sgx/SampleEnclave_Enclave_private_test.pem",
    ],
)
def test_sample_key_mrsigner(vector: Vector, name: str) -> None:
    key = load_private_key(vector(f"sgx/{name}"))
    sig = sign_sigstruct(Sigstruct(enclavehash=bytes(32)), KeySigner(key))
    assert sig.mrsigner.hex() == SAMPLE_MRSIGNER


@pytest.mark.parametrize(
    "name", ["ref_le_enclave_private_test_key.pem", "ref_le_le_private_test_key.pem"]
)
def test_reference_le_keys_load_and_differ(vector: Vector, name: str) -> None:
    private = load_private_key(vector(f"sgx/intel-linux-sgx/{name}"))
    public = load_public_key(vector(f"sgx/intel-linux-sgx/{name.replace('private', 'public')}"))
    assert private.public_key().public_numbers() == public.public_numbers()
    sig = sign_sigstruct(Sigstruct(), KeySigner(private))
    assert sig.mrsigner.hex() != SAMPLE_MRSIGNER
    check_sigstruct(sig.pack())


def test_bcd_date_and_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    assert bcd_date(dt.date(2016, 1, 9)) == 0x20160109
    assert signing_date("2023-12-31") == 0x20231231
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 UTC
    assert signing_date() == 0x20231114
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert signing_date() == bcd_date(dt.datetime.now(dt.timezone.utc).date())
    with pytest.raises(SgxToolError, match="not a date"):
        signing_date("2023-02-30")


def test_external_signature_checked(vector: Vector) -> None:
    key = load_private_key(vector("sgx/fortanix-rust-sgx/sig1.key.pem"))
    unsigned = unsigned_sigstruct(parse_config(""), SIG1_HASH, 0x20240101)
    data = unsigned.signed_bytes()
    good = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    external = sign_sigstruct(unsigned, ExternalSignature(key.public_key(), good))
    assert external == sign_sigstruct(unsigned, KeySigner(key))
    with pytest.raises(VerificationError, match="does not verify"):
        sign_sigstruct(unsigned, ExternalSignature(key.public_key(), good[::-1]))
    with pytest.raises(VerificationError, match="384 raw big-endian"):
        sign_sigstruct(unsigned, ExternalSignature(key.public_key(), good.hex().encode()))


def test_keys_refused_and_protected(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = generate_key()
    path = tmp_path / "k.pem"
    save_private_key(key, path, b"s3cret")
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_private_key(path, b"s3cret").private_numbers() == key.private_numbers()
    with pytest.raises(SigningKeyError, match="wrong passphrase"):
        load_private_key(path, b"nope")
    with pytest.raises(SigningKeyError, match="passphrase is needed"):
        load_private_key(path)
    save_private_key(rsa.generate_private_key(65537, 3072), tmp_path / "e.pem")
    with pytest.raises(SigningKeyError, match="exponent is 65537"):
        load_private_key(tmp_path / "e.pem")
    save_private_key(rsa.generate_private_key(3, 2048), tmp_path / "s.pem")
    with pytest.raises(SigningKeyError, match="RSA-2048"):
        load_private_key(tmp_path / "s.pem")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(SigningKeyError, match="not a private key"):
        load_private_key(tmp_path / "junk.pem")


def test_damaged_key_cannot_sign(vector: Vector, tmp_path: Path) -> None:
    """Keys load without cryptography's slow full check, so a key whose private numbers
    are damaged must be caught by verifying the signature it makes (issue: key loading)."""
    good = load_private_key(vector("sgx/fortanix-rust-sgx/sig1.key.pem")).private_numbers()
    broken = rsa.RSAPrivateNumbers(
        good.p, good.q, good.d + 2, good.dmp1 + 2, good.dmq1, good.iqmp, good.public_numbers
    ).private_key(unsafe_skip_rsa_key_validation=True)
    path = tmp_path / "broken.pem"
    save_private_key(broken, path)
    signer = KeySigner(load_private_key(path))
    with pytest.raises(SigningKeyError, match="does not verify with the signing key"):
        sign_sigstruct(Sigstruct(enclavehash=bytes(range(32))), signer)
