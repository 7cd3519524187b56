"""Files and flows of sevctl and sev-tool, with the real AMD chains in ``../shared/vectors``:
one-file chains, built-in roots, owner keys in every encoding, and the messages that name
what is wrong (generation, simulator vs AMD, unsigned CEK, SNP material)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hwsim.machine import Machine
from hwsim.sev.arch import SevCert
from tests.sevtool.test_cli import AMD, one_error_line, sevtool

Vec = Callable[[str], Path]
SEVCTL = ("pdh", "pek", "oca", "cek")


def _sevctl_chain(vector: Vec, gen: str, tmp_path: Path, *, full: bool = False) -> Path:
    """The file sevctl export writes for a real chain: PDH||PEK||OCA||CEK [||ASK||ARK]."""
    parts = [vector(f"sev/virtee-sev/{gen}/{n}.cert").read_bytes() for n in SEVCTL]
    if full:
        parts += [vector(f"{AMD}/{gen}/{n}.cert").read_bytes() for n in ("ask", "ark")]
    out = tmp_path / f"{gen}.chain"
    out.write_bytes(b"".join(parts))
    return out


def _ask_ark(vector: Vec, gen: str, tmp_path: Path) -> Path:
    """AMD's key server's ask_ark_<gen>.cert: ASK||ARK."""
    out = tmp_path / f"ask_ark_{gen}.cert"
    out.write_bytes(b"".join(vector(f"{AMD}/{gen}/{n}.cert").read_bytes() for n in ("ask", "ark")))
    return out


@pytest.mark.parametrize(("gen", "name"), [("rome", "AMD Rome"), ("naples", "AMD Naples")])
def test_sevctl_chain_of_real_platform_verifies_with_builtin_roots(
    vector: Vec, tmp_path: Path, gen: str, name: str
) -> None:
    chain = _sevctl_chain(vector, gen, tmp_path)
    result = sevtool("verify", chain, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["roots"] == f"{name} (built in)" and report["generation"] == gen
    assert report["complete"] and len(report["links"]) == 7 and report["warnings"] == []
    text = sevtool("verify", "--sev", chain)
    assert text.code == 0 and f"roots: {name} (built in)" in text.out
    hex_text = tmp_path / "chain.hex"
    hex_text.write_text(chain.read_bytes().hex() + "\n")
    assert sevtool("verify", hex_text).code == 0


def test_sev_and_ca_as_sevctl_spells_them(vector: Vec, tmp_path: Path) -> None:
    chain, ca = _sevctl_chain(vector, "rome", tmp_path), _ask_ark(vector, "rome", tmp_path)
    result = sevtool("verify", "--sev", chain, "--ca", ca, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["roots"] == "AMD Rome (given)"
    # AMD's ask_ark file where one certificate is asked for: the ASK is taken from it.
    assert sevtool("verify", "--sev", chain, "--ask", ca).code == 0
    full = _sevctl_chain(vector, "rome", tmp_path, full=True)
    assert sevtool("verify", full).code == 0


def test_generation_mismatch_is_named(vector: Vec, tmp_path: Path) -> None:
    chain = _sevctl_chain(vector, "rome", tmp_path)
    result = sevtool("verify", "--sev", chain, "--ca", _ask_ark(vector, "naples", tmp_path))
    assert result.code == 1
    line = one_error_line(result)
    assert "this CEK is Rome-generation (RSA_SHA384), the ASK is Naples" in line
    assert "ask_ark_rome.cert" in result.err  # the hint names the file that fits


def test_amd_chain_under_the_simulators_roots(m: Path, vector: Vec, tmp_path: Path) -> None:
    assert sevtool("--machine", m, "export", "--full", "--dir", tmp_path / "sim").code == 0
    chain = _sevctl_chain(vector, "rome", tmp_path)
    sim = sevtool(
        "verify",
        "--sev",
        chain,
        "--ark",
        tmp_path / "sim/ark.cert",
        "--ask",
        tmp_path / "sim/ask.cert",
    )
    assert sim.code == 1
    assert "this CEK is AMD's, Rome-generation (RSA_SHA384); the ASK given is the simulator's" in (
        one_error_line(sim)
    )


def test_unsigned_cek_points_to_the_key_server(vector: Vec, tmp_path: Path) -> None:
    """The CEK as PDH_CERT_EXPORT returns it (sev-tool's cert_chain.cert): no ASK signature."""
    cek = SevCert.unpack(vector("sev/virtee-sev/rome/cek.cert").read_bytes()).unsigned()
    (tmp_path / "cek.cert").write_bytes(cek.pack())
    chain = _sevctl_chain(vector, "rome", tmp_path)
    alone = sevtool("verify", "--sev", chain, "--cek", tmp_path / "cek.cert")
    assert alone.code == 1
    assert "the CEK is unsigned (as PDH_CERT_EXPORT returns it)" in one_error_line(alone)
    assert "kdsintf.amd.com/cek/id/" in alone.err
    given = sevtool(
        "verify",
        "--sev",
        chain,
        "--cek",
        tmp_path / "cek.cert",
        "--ca",
        _ask_ark(vector, "rome", tmp_path),
    )
    assert given.code == 1 and "unsigned" in one_error_line(given)
    assert "kdsintf.amd.com" in given.err


def test_malformed_sig2_usage_is_tolerated_with_a_warning(vector: Vec, tmp_path: Path) -> None:
    """AMDESE/AMDSEV#18: some KDS-signed Naples CEKs had SIG2_USAGE 0x0010 for 0x1000. The
    slot lies outside the signed bytes, so the real CEK with that field set still verifies."""
    cek = SevCert.unpack(vector("sev/virtee-sev/naples/cek.cert").read_bytes())
    (tmp_path / "cek.cert").write_bytes(replace(cek, sig2_usage=0x0010).pack())
    chain = _sevctl_chain(vector, "naples", tmp_path)
    result = sevtool("verify", "--sev", chain, "--cek", tmp_path / "cek.cert", "--json")
    assert result.code == 0, result.err
    [warning] = json.loads(result.out)["warnings"]
    assert "signature slot 2 has usage 0x0010" in warning
    text = sevtool("verify", "--sev", chain, "--cek", tmp_path / "cek.cert")
    assert "warning: CEK" in text.out and "0x0010" in text.out


def test_naples_ark_without_signature_is_a_warning(vector: Vec) -> None:
    result = sevtool(
        "verify",
        "--ark",
        vector("sev/virtee-sev/naples/ark.cert.bad"),
        "--ask",
        vector(f"{AMD}/naples/ask.cert"),
        "--partial",
        "--json",
    )
    assert result.code == 0, result.err
    assert any("has no signature" in w for w in json.loads(result.out)["warnings"])


def test_unknown_roots_are_a_warning(vector: Vec, tmp_path: Path) -> None:
    ark = bytearray(vector(f"{AMD}/rome/ark.cert").read_bytes())
    ark[4] ^= 1  # another key id: not one of AMD's published roots
    (tmp_path / "ark.cert").write_bytes(bytes(ark))
    result = sevtool("verify", "--ark", tmp_path / "ark.cert", "--partial", "--json")
    report = json.loads(result.out)
    assert report["roots"].startswith("given (not AMD's")
    assert "neither one of AMD's published roots" in report["warnings"][0]


def _x509(cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    import datetime

    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (lambda: _x509("SEV-VCEK"), "X.509 a VCEK 'SEV-VCEK'"),
        (
            lambda: x509.load_der_x509_certificate(_x509("ARK-Milan")).public_bytes(
                serialization.Encoding.PEM
            ),
            "X.509 an SNP ARK 'ARK-Milan'",
        ),
        (
            lambda: (
                (2).to_bytes(4, "little")
                + bytes(0x30)
                + (1).to_bytes(4, "little")
                + bytes(0x4A0 - 0x38)
            ),
            "an SNP attestation report, version 2",
        ),
    ],
)
def test_snp_material_is_named(tmp_path: Path, data: Callable[[], bytes], named: str) -> None:
    """No SNP files are among the vectors; these are made here in SNP's published formats."""
    path = tmp_path / "snp.bin"
    path.write_bytes(data())
    runs: list[list[str | Path]] = [["verify", path], ["verify", "--ask", path, "--partial"]]
    for args in runs:
        result = sevtool(*args)
        assert result.code == 2
        line = one_error_line(result)
        assert f"is SEV-SNP material ({named}); SEV-SNP is not supported yet" in line
        assert "pub_exp_size" not in line


@pytest.fixture
def m(machine: Machine) -> Path:
    return machine.path


def test_export_file_is_what_sevctl_writes(m: Path, tmp_path: Path) -> None:
    assert sevtool("--machine", m, "export", "--full", "--dir", tmp_path / "d").code == 0
    assert sevtool("--machine", m, "export", "--full", tmp_path / "full.chain").code == 0
    assert sevtool("--machine", m, "export", tmp_path / "four.chain").code == 0
    order = [*SEVCTL, "ask", "ark"]
    parts = {n: (tmp_path / "d" / f"{n}.cert").read_bytes() for n in order}
    assert (tmp_path / "full.chain").read_bytes() == b"".join(parts[n] for n in order)
    assert (tmp_path / "four.chain").read_bytes() == b"".join(parts[n] for n in SEVCTL)
    for chain in ("full.chain", "four.chain"):
        verified = sevtool("verify", tmp_path / chain, "--json")
        assert verified.code == 0, verified.err
        assert json.loads(verified.out)["roots"].startswith("the simulator's")


def test_export_real_certificates_byte_identical(vector: Vec, tmp_path: Path) -> None:
    """sevtool's writer gives the bytes sevctl's encoder would, for AMD's real certificates."""
    import sevtool as api

    source = _sevctl_chain(vector, "rome", tmp_path, full=True)
    chain = api.load_chain(source)
    assert api.write_chain(chain, tmp_path / "again").read_bytes() == source.read_bytes()


def test_existing_directory_as_file_keeps_the_old_behaviour(m: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    result = sevtool("--machine", m, "export", tmp_path / "out")
    assert result.code == 0 and "note:" in result.err and "--dir" in result.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir())[0] == "cek.cert"
    both = sevtool("--machine", m, "export", "--dir", tmp_path / "x", tmp_path / "y")
    assert both.code == 2


def test_pek_import_of_a_pdh_names_its_usage(m: Path, tmp_path: Path) -> None:
    sevtool("generate", tmp_path / "oca.cert", tmp_path / "oca.key")
    sevtool("--machine", m, "export", "--dir", tmp_path / "c")
    result = sevtool(
        "--machine", m, "pek", "import", tmp_path / "c/pdh.cert", tmp_path / "oca.cert"
    )
    assert result.code == 1
    assert "key usage is PDH" in one_error_line(result)


def _key_bytes(key: ec.EllipticCurvePrivateKey, kind: str, secret: bytes | None) -> bytes:
    enc = serialization.Encoding.PEM if kind.startswith("pem") else serialization.Encoding.DER
    fmt = (
        serialization.PrivateFormat.PKCS8
        if kind.endswith("pkcs8")
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    protect: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    return key.private_bytes(enc, fmt, protect)


# SEC1 DER has no encrypted form, so that one combination is not a case.
ENCODINGS = [
    (kind, secret)
    for kind in ("pem-pkcs8", "pem-sec1", "der-pkcs8", "der-sec1")
    for secret in (None, b"s3cret")
    if not (kind == "der-sec1" and secret)
]


@pytest.mark.parametrize(("kind", "secret"), ENCODINGS)
def test_owner_key_encodings(
    m: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, secret: bytes | None
) -> None:
    """sevctl generate writes SEC1 DER; openssl ecparam -genkey SEC1 PEM; PKCS#8 elsewhere."""
    key = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "oca.key").write_bytes(_key_bytes(key, kind, secret))
    pass_args: list[str] = []
    if secret:
        monkeypatch.setenv("OCA_PASS", secret.decode())
        pass_args = ["--passphrase-env", "OCA_PASS"]
        missing = sevtool("generate", tmp_path / "oca.cert", "--key", tmp_path / "oca.key")
        assert missing.code == 2 and "passphrase is needed" in one_error_line(missing)
        assert "--passphrase-env" in missing.err  # sgxtool's hint
    made = sevtool("generate", tmp_path / "oca.cert", "--key", tmp_path / "oca.key", *pass_args)
    assert made.code == 0, made.err
    provisioned = sevtool(
        "--machine", m, "provision", tmp_path / "oca.cert", tmp_path / "oca.key", *pass_args
    )
    assert provisioned.code == 0, provisioned.err


def test_wrong_passphrase_and_wrong_key_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "k.der").write_bytes(_key_bytes(key, "der-pkcs8", b"right"))
    monkeypatch.setenv("WRONG", "wrong")
    wrong = sevtool(
        "generate", tmp_path / "c", "--key", tmp_path / "k.der", "--passphrase-env", "WRONG"
    )
    assert wrong.code == 2 and "wrong passphrase" in one_error_line(wrong)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "r.pem").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    refused = sevtool("generate", tmp_path / "c", "--key", tmp_path / "r.pem")
    assert refused.code == 2 and "SEV owner keys are ECDSA" in one_error_line(refused)
    assert not (tmp_path / "c").exists()


def test_pek_sign_without_cert_makes_the_oca_like_sev_tool(m: Path, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "oca_priv.pem").write_bytes(_key_bytes(key, "pem-sec1", None))
    assert sevtool("--machine", m, "pek", "csr", tmp_path / "pek_csr.cert").code == 0
    signed = tmp_path / "pek_csr.signed.cert"
    result = sevtool("pek", "sign", tmp_path / "pek_csr.cert", tmp_path / "oca_priv.pem", signed)
    assert result.code == 0, result.err
    oca = tmp_path / "oca.cert"
    assert oca.stat().st_size == 2084
    assert sevtool("--machine", m, "pek", "import", signed, oca).code == 0
    chain = tmp_path / "chain"
    assert sevtool("--machine", m, "export", chain).code == 0
    assert sevtool("verify", chain, "--oca", oca).code == 0
    other = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "other.pem").write_bytes(_key_bytes(other, "pem-pkcs8", None))
    clash = sevtool("pek", "sign", tmp_path / "pek_csr.cert", tmp_path / "other.pem", signed)
    assert clash.code == 2 and "another key's OCA" in one_error_line(clash)
    assert os.path.getsize(signed) == 2084


def test_certificate_of_the_other_kind_is_named(vector: Vec) -> None:
    result = sevtool("verify", "--cek", vector(f"{AMD}/rome/ask.cert"), "--partial")
    assert result.code == 2
    assert "holds an AMD key certificate (key usage ASK); the CEK is a SEV" in (
        one_error_line(result)
    )
    pdh_as_pek = sevtool("verify", "--pek", vector("sev/virtee-sev/rome/pdh.cert"), "--partial")
    assert pdh_as_pek.code == 1 and "key usage is PDH" in one_error_line(pdh_as_pek)
