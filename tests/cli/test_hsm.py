"""PKCS#11 signing against SoftHSM2: a token made for the test in a temporary directory,
holding the same key as a PEM file, must give the same SIGSTRUCT byte for byte."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from memcrypt.errors import InvalidInput
from memcrypt.pkcs11 import Pkcs11Signer, Pkcs11Uri
from memcrypt.signer import ECDSA_SHA256, Ecdsa, ExternalSignature, SignerError
from tests.cli.conftest import Runner

Vector = Callable[[str], Path]
SIG1_HASH = "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"
_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
PIN = "4321"


def _import(tmp: Path, key: object, label: str, key_id: str) -> None:
    pem = tmp / f"{label}.pem"
    pem.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    subprocess.run(
        ["softhsm2-util", "--import", str(pem), "--token", "memcrypt-test", "--label", label,
         "--id", key_id, "--pin", PIN],
        check=True, capture_output=True,
    )  # fmt: skip
    pem.unlink()


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vector: Vector) -> str:
    """A SoftHSM2 token in tmp_path with Fortanix's sig1 key ('sgx') and a P-384 key
    ('owner'); returns the module path."""
    module = next((m for m in _MODULES if Path(m).is_file()), None)
    if module is None or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)")
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed (memcrypt[hsm])")
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "memcrypt-test",
         "--pin", PIN, "--so-pin", "87654321"],
        check=True, capture_output=True,
    )  # fmt: skip
    sgx_key = serialization.load_pem_private_key(
        vector("sgx/fortanix-rust-sgx/sig1.key.pem").read_bytes(), None
    )
    _import(tmp_path, sgx_key, "sgx", "01")
    _import(tmp_path, ec.generate_private_key(ec.SECP384R1()), "owner", "02")
    return module


def test_hsm_sigstruct_equals_the_exported_keys(
    token: str, sgxtool: Runner, vector: Vector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "sig1.toml"
    cfg.write_text("[security]\nattributes_mask = 0xFFFFFFFFFFFFFFFD\n")
    monkeypatch.setenv("HSM_PIN", PIN)
    uri = f"pkcs11:token=memcrypt-test;object=sgx?module-path={token}"
    common = ["sign", "--enclave-hash", SIG1_HASH, "-c", str(cfg), "--date", "2016-01-09"]
    r = sgxtool(*common, "-k", uri, "--passphrase-env", "HSM_PIN", "-s", str(tmp_path / "h.sig"))
    assert r.code == 0, r.err
    golden = vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin").read_bytes()
    assert (tmp_path / "h.sig").read_bytes() == golden
    # The PIN from a file the URI names (RFC 7512 pin-source), the key by id.
    (tmp_path / "pin").write_text(PIN + "\n")
    by_id = f"pkcs11:token=memcrypt-test;id=%01?module-path={token}&pin-source={tmp_path}/pin"
    r = sgxtool(*common, "-k", by_id, "-s", str(tmp_path / "i.sig"))
    assert r.code == 0, r.err
    assert (tmp_path / "i.sig").read_bytes() == golden


def test_hsm_refusals_are_one_line(
    token: str, sgxtool: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["sign", "--enclave-hash", SIG1_HASH, "-s", str(tmp_path / "x.sig")]
    monkeypatch.setenv("HSM_PIN", "0000")
    wrong_pin = sgxtool(*base, "-k", f"pkcs11:token=memcrypt-test;object=sgx?module-path={token}",
                        "--passphrase-env", "HSM_PIN")  # fmt: skip
    assert wrong_pin.code == 1 and "refused the PIN" in wrong_pin.one_error_line()
    monkeypatch.delenv("MEMCRYPT_PKCS11_MODULE", raising=False)
    no_module = sgxtool(*base, "-k", "pkcs11:token=memcrypt-test;object=sgx")
    assert no_module.code == 2 and "no PKCS#11 module" in no_module.one_error_line()
    monkeypatch.setenv("MEMCRYPT_PKCS11_MODULE", token)
    monkeypatch.setenv("HSM_PIN", PIN)
    owner = sgxtool(*base, "-k", "pkcs11:token=memcrypt-test;object=owner", "--passphrase-env",
                    "HSM_PIN")  # fmt: skip
    assert owner.code == 2 and "SIGSTRUCT needs RSA" in owner.one_error_line()
    assert not (tmp_path / "x.sig").exists()


def test_ecdsa_p384_owner_key_in_a_token(token: str) -> None:
    signer = Pkcs11Signer.open(
        f"pkcs11:token=memcrypt-test;object=owner?module-path={token}&pin-value={PIN}"
    )
    assert signer.scheme == ECDSA_SHA256
    assert isinstance(signer.public_key, ec.EllipticCurvePublicKey)
    raw = signer.sign(b"a SEV certificate body")
    assert len(raw) == 96 and all(v > 0 for v in Ecdsa.split(raw))
    ExternalSignature(signer.public_key, raw, ECDSA_SHA256).sign(b"a SEV certificate body")
    with pytest.raises(SignerError, match="does not verify"):
        ExternalSignature(signer.public_key, raw, ECDSA_SHA256).sign(b"other bytes")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pkcs11:token=t", "names no key"),
        ("pkcs11:token=t;object=k;colour=red", "'colour=red' is not a PKCS#11 URI attribute"),
        ("pkcs11:object=k?pin=1", "'pin=1' is not"),
        ("file:key.pem", "is not a pkcs11: URI"),
    ],
)
def test_uri_errors(uri: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Pkcs11Uri.parse(uri)


def test_uri_decoding() -> None:
    uri = Pkcs11Uri.parse("pkcs11:token=My%20HSM;id=%01%ff;object=k?module-path=/x/y.so")
    assert uri.path == {"token": "My HSM", "id": "\x01\xff", "object": "k"}
    assert uri.query == {"module-path": "/x/y.so"}
