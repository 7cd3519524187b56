"""PKCS#11 signing against SoftHSM2: a token made for the test in a temporary directory
(tests/softhsm.py), holding the same key as a PEM file, must give the same SIGSTRUCT byte
for byte."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from memcrypt.errors import InvalidInput
from memcrypt.pkcs11 import Pkcs11Signer, Pkcs11Uri
from memcrypt.signer import ECDSA_SHA256, Ecdsa, ExternalSignature, SignerError
from tests.cli.conftest import Runner
from tests.softhsm import PIN

Vector = Callable[[str], Path]
SIG1_HASH = "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"


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


def test_the_prompt_asks_a_token_for_its_pin_and_a_key_file_for_its_passphrase(
    token: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from sgxtool._cli import cli

    cfg = tmp_path / "sig1.toml"
    cfg.write_text("[security]\nattributes_mask = 0xFFFFFFFFFFFFFFFD\n")
    common = ["sign", "--enclave-hash", SIG1_HASH, "-c", str(cfg), "-s", str(tmp_path / "h.sig")]
    uri = f"pkcs11:token=memcrypt-test;object=sgx?module-path={token}"
    asked = CliRunner().invoke(cli, [*common, "-k", uri, "--ask-passphrase"], input=f"{PIN}\n")
    assert asked.exit_code == 0, asked.output
    assert "PIN of the PKCS#11 token" in asked.output and PIN not in asked.output
    assert CliRunner().invoke(cli, ["keygen", str(tmp_path / "k.pem"), "--ask-passphrase"],
                              input="pass phrase\npass phrase\n").exit_code == 0  # fmt: skip
    filed = CliRunner().invoke(cli, [*common, "-k", str(tmp_path / "k.pem"), "--ask-passphrase"],
                               input="pass phrase\n")  # fmt: skip
    assert filed.exit_code == 0, filed.output
    assert "Passphrase" in filed.output and "PIN" not in filed.output
