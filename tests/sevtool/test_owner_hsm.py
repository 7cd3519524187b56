"""The platform owner's key in a PKCS#11 token (SoftHSM2, tests/softhsm.py): every command
that signs with the OCA key takes a ``pkcs11:`` URI, and what the token signs is what the
same key exported to a file signs (ECDSA is randomized: all but the signature is equal, and
both signatures verify)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwsim.machine import Machine
from hwsim.sev.arch import SevAlgo, SevCert, SevUsage
from hwsim.sev.certs import load_sev_cert, sev_public_key, verify_sev_cert
from tests.sevtool.test_cli import Result, one_error_line, sevtool
from tests.softhsm import PIN, SoftHsm

BAD_PIN = "97531864"


@pytest.fixture
def hsm(softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    monkeypatch.setenv("HSM_PIN", PIN)
    return softhsm


def _pin(*args: str | Path) -> Result:
    """``sevtool ARGS --passphrase-env HSM_PIN``."""
    return sevtool(*args, "--passphrase-env", "HSM_PIN")


def _cert(path: Path) -> SevCert:
    return load_sev_cert(path.read_bytes(), str(path))


def test_token_oca_equals_the_exported_keys(hsm: SoftHsm, tmp_path: Path) -> None:
    made = _pin("generate", tmp_path / "token.cert", "--key", hsm.uri("owner"))
    assert made.code == 0, made.err
    assert "pkcs11:token=memcrypt-test;object=owner" in made.err
    assert "module-path" not in made.err
    pem = hsm.export("owner", tmp_path / "owner.pem")
    assert sevtool("generate", tmp_path / "file.cert", "--key", pem).code == 0
    token, file = _cert(tmp_path / "token.cert"), _cert(tmp_path / "file.cert")
    assert token.signed_bytes() == file.signed_bytes()
    slots = [(usage, algo) for usage, algo, _ in token.slots()]
    assert slots == [(usage, algo) for usage, algo, _ in file.slots()]
    assert slots[0] == (SevUsage.OCA, SevAlgo.ECDSA_SHA256)
    for cert in (token, file):
        verify_sev_cert(cert, SevUsage.OCA, cert, "OCA")
    assert sev_public_key(token) == hsm.keys["owner"].public_key()
    # The token's certificate with the file key, and the file's with the token key.
    verify_sev_cert(token, SevUsage.OCA, file, "token OCA under the file's key")


def test_the_pin_from_a_prompt_or_a_file(hsm: SoftHsm, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sevtool._cli import cli

    args = ["generate", str(tmp_path / "a.cert"), "--key", hsm.uri("owner")]
    asked = CliRunner().invoke(cli, [*args, "--ask-passphrase"], input=f"{PIN}\n")
    assert asked.exit_code == 0, asked.output
    assert PIN not in asked.output
    assert "PIN of the PKCS#11 token" in asked.output  # the prompt names what it asks for
    (tmp_path / "pin").write_text(PIN + "\n")
    from_file = sevtool(*args, "--passphrase-file", tmp_path / "pin")
    assert from_file.code == 0, from_file.err
    in_uri = sevtool("generate", tmp_path / "b.cert", "--key",
                     hsm.uri("owner", f"pin-source={tmp_path / 'pin'}"))  # fmt: skip
    assert in_uri.code == 0, in_uri.err
    assert _cert(tmp_path / "a.cert").signed_bytes() == _cert(tmp_path / "b.cert").signed_bytes()


def test_provision_with_a_token_key_and_the_chain_verifies(
    hsm: SoftHsm, machine: Machine, tmp_path: Path
) -> None:
    cert, chain = tmp_path / "oca.cert", tmp_path / "chain.cert"
    assert _pin("generate", cert, "--key", hsm.uri("owner")).code == 0
    done = _pin("--machine", machine.path, "provision", cert, hsm.uri("owner"), "--json")
    assert done.code == 0, done.err
    assert '"owner": "external"' in done.out
    assert sevtool("--machine", machine.path, "export", "--full", chain).code == 0
    verified = sevtool("verify", chain, "--oca", cert)
    assert verified.code == 0 and "chain verified" in verified.out, verified.err


@pytest.mark.parametrize("with_cert", [False, True], ids=["sev-tool", "with-cert"])
def test_pek_sign_with_a_token_key(
    hsm: SoftHsm, machine: Machine, tmp_path: Path, with_cert: bool
) -> None:
    m, csr, signed = machine.path, tmp_path / "pek.csr", tmp_path / "pek.signed"
    oca = tmp_path / "oca.cert"
    assert sevtool("--machine", m, "pek", "csr", csr).code == 0
    if with_cert:
        # The OCA made from the exported key file: the token's key is the same key.
        assert sevtool("generate", oca, "--key", hsm.export("owner", tmp_path / "o.pem")).code == 0
        result = _pin("pek", "sign", csr, oca, hsm.uri("owner"), signed)
    else:
        result = _pin("pek", "sign", csr, hsm.uri("owner"), signed, "--oca-out", oca)
    assert result.code == 0, result.err
    assert sevtool("--machine", m, "pek", "import", signed, oca).code == 0
    assert sevtool("--machine", m, "export", tmp_path / "chain").code == 0
    assert sevtool("verify", tmp_path / "chain", "--oca", oca).code == 0


def test_refusals_are_one_line(
    hsm: SoftHsm, monkeypatch: pytest.MonkeyPatch, machine: Machine, tmp_path: Path
) -> None:
    out = tmp_path / "oca.cert"
    cases = [
        # (arguments, exit code, the one error line says)
        (["--key", hsm.uri("owner", f"pin-value={BAD_PIN}")], 1, "the token refused the PIN"),
        (["--key", hsm.uri("nope")], 2, "the token has no private key object='nope'"),
        (["--key", hsm.uri("p256")], 2,
         "pkcs11:token=memcrypt-test;object=p256: an EC key on secp256r1; SEV owner keys are "
         "ECDSA P-384"),
        (["--key", hsm.uri("sgx")], 2, "an RSA-3072 key; SEV owner keys are ECDSA P-384"),
        ([hsm.uri("owner")], 2, "KEY is the file for a new key"),
    ]  # fmt: skip
    for args, code, says in cases:
        result = _pin("generate", out, *args)
        assert result.code == code and says in one_error_line(result), (args, result.err)
        assert BAD_PIN not in result.err + result.out and PIN not in result.err + result.out
        assert not out.exists()
    monkeypatch.setenv("HSM_PIN", BAD_PIN)
    wrong = _pin("--machine", machine.path, "provision", _other_oca(tmp_path), hsm.uri("owner"))
    assert wrong.code == 1 and "refused the PIN" in one_error_line(wrong)
    assert BAD_PIN not in wrong.err


def test_a_token_key_that_is_not_the_certificates(
    hsm: SoftHsm, machine: Machine, tmp_path: Path
) -> None:
    result = _pin("--machine", machine.path, "provision", _other_oca(tmp_path), hsm.uri("owner"))
    assert result.code == 1
    assert one_error_line(result).endswith(
        "OCA key pkcs11:token=memcrypt-test;object=owner does not belong to certificate "
        f"{tmp_path / 'other.cert'}"
    )
    shown = sevtool("--machine", machine.path, "show", "--json")
    assert '"owner": "self"' in shown.out


def _other_oca(tmp_path: Path) -> Path:
    cert = tmp_path / "other.cert"
    assert sevtool("generate", cert, tmp_path / "other.key").code == 0
    return cert
