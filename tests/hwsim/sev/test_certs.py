"""Certificate verification on AMD's real chains, and every way a certificate is refused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hwsim.sev.arch import (
    SEV_CERT_SIGNED_LEN,
    AmdCert,
    EcdsaSig,
    EcPubKey,
    SevAlgo,
    SevCert,
    SevUsage,
)
from hwsim.sev.certs import (
    CertificateError,
    load_amd_cert,
    load_sev_cert,
    make_amd_cert,
    make_sev_cert,
    sign_sev_cert,
    verify_amd_cert,
    verify_sev_cert,
)
from memcrypt.errors import FormatError
from tests.hwsim.sev.conftest import CHAINS, GENERATIONS

Vec = Callable[[str], bytes]
# (subject, signer) links of a platform chain.
LINKS = [("cek", "ask"), ("pek", "cek"), ("pek", "oca"), ("oca", "oca"), ("pdh", "pek")]


def _amd(vec: Vec, gen: str, name: str) -> AmdCert:
    return load_amd_cert(vec(f"builtin-sev/{gen}/{name}.cert"))


def _sev(vec: Vec, gen: str, name: str) -> SevCert:
    return load_sev_cert(vec(f"{gen}/{name}.cert"))


def _cert(vec: Vec, gen: str, name: str) -> AmdCert | SevCert:
    return _amd(vec, gen, name) if name in ("ark", "ask") else _sev(vec, gen, name)


@pytest.mark.parametrize("gen", GENERATIONS)
def test_every_amd_ark_ask_pair_verifies(
    sev_vector: Vec, sev_expected: dict[str, Any], gen: str
) -> None:
    ark, ask = _amd(sev_vector, gen, "ark"), _amd(sev_vector, gen, "ask")
    verify_amd_cert(ark, SevUsage.ARK, ark)
    verify_amd_cert(ask, SevUsage.ASK, ark)
    assert ark.header.key_id.hex() == sev_expected["amd_root_key_ids"][gen]
    assert ask.header.key_id.hex() == sev_expected["amd_ask_key_ids"][gen]
    assert ask.header.certifying_id == ark.header.key_id


@pytest.mark.parametrize("gen", CHAINS)
@pytest.mark.parametrize(("subject", "signer"), LINKS)
def test_real_chain_verifies_link_by_link(
    sev_vector: Vec, gen: str, subject: str, signer: str
) -> None:
    issuer = _cert(sev_vector, gen, signer)
    verify_sev_cert(_sev(sev_vector, gen, subject), SevUsage[subject.upper()], issuer)


def test_naples_cek_fails_under_rome_ask(sev_vector: Vec) -> None:
    with pytest.raises(CertificateError, match="CEK signed by ASK") as exc:
        verify_sev_cert(
            _sev(sev_vector, "naples", "cek"), SevUsage.CEK, _amd(sev_vector, "rome", "ask")
        )
    assert exc.value.check == "signature"


def test_amd_asks_do_not_cross_verify(sev_vector: Vec) -> None:
    with pytest.raises(CertificateError) as exc:
        verify_amd_cert(
            _amd(sev_vector, "milan", "ask"), SevUsage.ASK, _amd(sev_vector, "rome", "ark")
        )
    assert exc.value.check == "key-id"


def test_unsigned_naples_ark_with_separate_signature(sev_vector: Vec) -> None:
    ark = load_amd_cert(
        sev_vector("naples/ark.cert.bad"), signature=sev_vector("naples/ark.cert.sig")
    )
    verify_amd_cert(ark, SevUsage.ARK, ark)
    verify_amd_cert(_amd(sev_vector, "naples", "ask"), SevUsage.ASK, ark)


def test_unsigned_naples_ark_alone_is_refused(sev_vector: Vec) -> None:
    ark = load_amd_cert(sev_vector("naples/ark.cert.bad"))
    with pytest.raises(CertificateError, match="no signature") as exc:
        verify_amd_cert(ark, SevUsage.ARK, ark)
    assert exc.value.check == "signature"
    assert exc.value.hint is not None and "ark.cert.sig" in exc.value.hint


def test_separate_signature_of_wrong_length_is_refused(sev_vector: Vec) -> None:
    with pytest.raises(FormatError, match="signature must be 256 bytes"):
        load_amd_cert(sev_vector("naples/ark.cert.bad"), signature=b"\1" * 100)


def test_hex_text_certificates_are_accepted(sev_vector: Vec) -> None:
    raw = sev_vector("rome/pdh.cert")
    text = raw.hex().encode()
    wrapped = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + b"\n"
    assert load_sev_cert(wrapped).pack() == raw
    ark = sev_vector("builtin-sev/rome/ark.cert")
    assert load_amd_cert(ark.hex().upper().encode()).pack() == ark


@pytest.mark.parametrize("size", [0, 100, 2083, 2085])
def test_truncated_or_long_sev_cert_refused(sev_vector: Vec, size: int) -> None:
    data = (sev_vector("naples/pek.cert") * 2)[:size]
    with pytest.raises(FormatError, match="2084 bytes"):
        load_sev_cert(data)


def test_odd_hex_text_refused() -> None:
    with pytest.raises(FormatError, match="odd number"):
        load_sev_cert(b"abc")


def _flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


SEV_FLIPS = [0x04, 0x20, 0x40, 0x413, 0x41C + 10, 0x624 + 10]


@pytest.mark.parametrize("gen", CHAINS)
@pytest.mark.parametrize(("subject", "signer"), LINKS)
@pytest.mark.parametrize("offset", SEV_FLIPS)
def test_flipped_byte_in_any_sev_cert_is_refused(
    sev_vector: Vec, gen: str, subject: str, signer: str, offset: int
) -> None:
    cert = load_sev_cert(_flip(sev_vector(f"{gen}/{subject}.cert"), offset))
    issuer = cert if subject == signer else _cert(sev_vector, gen, signer)
    slot_of_signer = [u for u, _, _ in cert.slots()].index(
        issuer.header.key_usage if isinstance(issuer, AmdCert) else issuer.pub_key_usage
    )
    usage = SevUsage[subject.upper()]
    if offset >= 0x41C and (offset >= 0x624) != bool(slot_of_signer):
        verify_sev_cert(cert, usage, issuer)  # another slot: this signer's link still holds
        return
    with pytest.raises(CertificateError) as exc:
        verify_sev_cert(cert, usage, issuer)
    assert exc.value.check in ("signature", "point", "reserved")


@pytest.mark.parametrize("gen", GENERATIONS)
@pytest.mark.parametrize("offset", [0x10, 0x50, 0x100, -1])
def test_flipped_byte_in_ask_is_refused(sev_vector: Vec, gen: str, offset: int) -> None:
    data = sev_vector(f"builtin-sev/{gen}/ask.cert")
    ask = load_amd_cert(_flip(data, offset % len(data)))
    with pytest.raises(CertificateError) as exc:
        verify_amd_cert(ask, SevUsage.ASK, _amd(sev_vector, gen, "ark"))
    assert exc.value.check in ("signature", "key-id")


def test_expected_negative_vectors(sev_vector: Vec) -> None:
    """expected.json: byte 0x05 of pdh.cert breaks the PEK signature; qx byte 0x14 the point."""
    pek = _sev(sev_vector, "naples", "pek")
    with pytest.raises(CertificateError) as sig:
        verify_sev_cert(
            load_sev_cert(_flip(sev_vector("naples/pdh.cert"), 0x05)), SevUsage.PDH, pek
        )
    assert sig.value.check == "signature"
    with pytest.raises(CertificateError, match="not a valid P384 point") as point:
        verify_sev_cert(
            load_sev_cert(_flip(sev_vector("naples/pdh.cert"), 0x14)), SevUsage.PDH, pek
        )
    assert point.value.check == "point"


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ({"pub_key_usage": SevUsage.PEK}, "usage"),
        ({"pub_key_usage": 0x77}, "usage"),
        ({"pub_key_algo": SevAlgo.ECDSA_SHA256}, "algorithm"),
        ({"pub_key_algo": 0x999}, "algorithm"),
        ({"version": 2}, "version"),
    ],
)
def test_wrong_codes_are_refused(sev_vector: Vec, change: dict[str, Any], check: str) -> None:
    pdh = load_sev_cert(replace(_sev(sev_vector, "rome", "pdh"), **change).pack())
    with pytest.raises(CertificateError) as exc:
        verify_sev_cert(pdh, SevUsage.PDH, _sev(sev_vector, "rome", "pek"))
    assert exc.value.check == check


def test_unknown_curve_and_oversized_coordinates_refused(sev_vector: Vec) -> None:
    pek = _sev(sev_vector, "rome", "pek")
    key = EcPubKey.unpack(pek.pub_key)
    bad_curve = replace(pek, pub_key=replace(key, curve=7).pack())
    with pytest.raises(CertificateError) as exc:
        verify_sev_cert(bad_curve, SevUsage.PEK, _sev(sev_vector, "rome", "cek"))
    assert exc.value.check == "curve"
    wide = replace(pek, pub_key=replace(key, qx=key.qx[:48] + b"\1" + bytes(23)).pack())
    with pytest.raises(CertificateError) as exc:
        verify_sev_cert(wide, SevUsage.PEK, _sev(sev_vector, "rome", "cek"))
    assert exc.value.check == "point"


def test_missing_signature_slot_is_refused(sev_vector: Vec) -> None:
    pek = _sev(sev_vector, "rome", "pek").unsigned()
    with pytest.raises(CertificateError, match="no signature slot with usage CEK") as exc:
        verify_sev_cert(pek, SevUsage.PEK, _sev(sev_vector, "rome", "cek"))
    assert exc.value.check == "signature"


def _self_signed_oca() -> SevCert:
    """A fresh owner (OCA) certificate signed by its own P-384 key."""
    key = ec.generate_private_key(ec.SECP384R1())
    unsigned = make_sev_cert(key.public_key(), SevUsage.OCA, SevAlgo.ECDSA_SHA256)
    return sign_sev_cert(unsigned, key, SevUsage.OCA, SevAlgo.ECDSA_SHA256)


def test_ecdsa_big_endian_signature_is_refused() -> None:
    cert = _self_signed_oca()
    verify_sev_cert(cert, SevUsage.OCA, cert)
    sig = EcdsaSig.unpack(cert.sig1)
    flipped = EcdsaSig(sig.r[:48][::-1] + bytes(24), sig.s[:48][::-1] + bytes(24)).pack()
    with pytest.raises(CertificateError) as exc:
        bad = cert.with_slot(0, SevUsage.OCA, SevAlgo.ECDSA_SHA256, flipped)
        verify_sev_cert(bad, SevUsage.OCA, bad)
    assert exc.value.check == "signature"


def test_ecdsa_signature_under_rsa_algorithm_code_is_refused() -> None:
    cert = _self_signed_oca()
    bad = cert.with_slot(0, SevUsage.OCA, SevAlgo.RSA_SHA256, cert.sig1)
    with pytest.raises(CertificateError) as exc:
        verify_sev_cert(bad, SevUsage.OCA, bad)
    assert exc.value.check == "algorithm"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def test_rsa_pss_salt_must_be_the_hash_length(rsa_key: rsa.RSAPrivateKey) -> None:
    cert = make_amd_cert(rsa_key.public_key(), SevUsage.ARK, b"k" * 16, b"k" * 16)
    for salt, ok in ((32, True), (0, False), (20, False)):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt)
        cert.signature = rsa_key.sign(cert.signed_bytes(), pss, hashes.SHA256())[::-1]
        if ok:
            verify_amd_cert(cert, SevUsage.ARK, cert)
            continue
        with pytest.raises(CertificateError) as exc:
            verify_amd_cert(cert, SevUsage.ARK, cert)
        assert exc.value.check == "signature"


def test_amd_cert_wrong_usage_is_refused(sev_vector: Vec) -> None:
    ark = _amd(sev_vector, "rome", "ark")
    with pytest.raises(CertificateError) as exc:
        verify_amd_cert(ark, SevUsage.ASK, ark)
    assert exc.value.check == "usage"


def test_sign_and_verify_round_trip(rsa_key: rsa.RSAPrivateKey) -> None:
    """Our signing (used by the simulator) verifies under our strict checks, bytes intact."""
    from hwsim.sev.certs import sign_amd_cert

    ark = sign_amd_cert(
        make_amd_cert(rsa_key.public_key(), SevUsage.ARK, b"a" * 16, b"a" * 16), rsa_key
    )
    assert load_amd_cert(ark.pack()).pack() == ark.pack()
    verify_amd_cert(load_amd_cert(ark.pack()), SevUsage.ARK, ark)
    cek_key = ec.generate_private_key(ec.SECP384R1())
    cek = make_sev_cert(cek_key.public_key(), SevUsage.CEK, SevAlgo.ECDSA_SHA256, (0, 24))
    cek = sign_sev_cert(cek, rsa_key, SevUsage.ASK, SevAlgo.RSA_SHA384)
    assert load_sev_cert(cek.pack()) == cek
    ask_like = replace(ark, header=replace(ark.header, key_usage=SevUsage.ASK))
    verify_sev_cert(cek, SevUsage.CEK, ask_like)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(["rome/pek.cert", "rome/pdh.cert", "naples/oca.cert"]),
    edits=st.lists(st.tuples(st.integers(0, 2083), st.integers(0, 255)), min_size=1, max_size=6),
)
@example(name="rome/pek.cert", edits=[(0x414, 0x13)])  # the OCA slot's usage: signed by none
def test_mutated_sev_certs_fail_only_with_certificate_errors(
    sev_vector: Vec, name: str, edits: list[tuple[int, int]]
) -> None:
    data = bytearray(sev_vector(name))
    for offset, value in edits:
        data[offset] = value
    cert = load_sev_cert(bytes(data))
    usage = SevUsage[name.split("/")[1][:3].upper()]
    signer = cert if usage == SevUsage.OCA else _sev(sev_vector, "rome", "pek")
    if usage == SevUsage.PEK:
        signer = _sev(sev_vector, "rome", "cek")
    try:
        verify_sev_cert(cert, usage, signer)
    except CertificateError as exc:
        assert exc.check
    else:
        # The signatures cover bytes 0x000-0x413 only: the slots after them (usage, algo,
        # signature) are not signed, so an edit there may pass (the other signer's slot, or
        # padding past r and s) as long as every signed byte is intact.
        signed = slice(0, SEV_CERT_SIGNED_LEN)
        assert bytes(data[signed]) == sev_vector(name)[signed]


@settings(max_examples=100, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 831), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_amd_certs_fail_only_with_known_errors(
    sev_vector: Vec, edits: list[tuple[int, int]]
) -> None:
    data = bytearray(sev_vector("builtin-sev/naples/ask.cert"))
    for offset, value in edits:
        data[offset] = value
    ark = _amd(sev_vector, "naples", "ark")
    try:
        verify_amd_cert(load_amd_cert(bytes(data)), SevUsage.ASK, ark)
    except (CertificateError, FormatError):
        return
    assert bytes(data) == sev_vector("builtin-sev/naples/ask.cert")


def test_ecdsa_signature_reserved_bytes_must_be_zero(sev_vector: Vec) -> None:
    data = bytearray(sev_vector("rome/pdh.cert"))
    data[0x41C + 200] = 1  # inside the PEK's signature slot, after r and s
    with pytest.raises(CertificateError) as exc:
        verify_sev_cert(load_sev_cert(bytes(data)), SevUsage.PDH, _sev(sev_vector, "rome", "pek"))
    assert exc.value.check == "reserved"


def test_kds_cek_with_stray_unused_slot_usage_still_verifies(sev_vector: Vec) -> None:
    """AMDESE/AMDSEV#18: a KDS-signed CEK carried SIG2_USAGE 0x0010 instead of 0x1000."""
    cek = replace(_sev(sev_vector, "naples", "cek"), sig2_usage=0x0010)
    verify_sev_cert(load_sev_cert(cek.pack()), SevUsage.CEK, _amd(sev_vector, "naples", "ask"))
