"""SEV and AMD key certificates: tolerant parsing, strict verification, signing.

Parsing accepts what AMD and the tools actually publish: raw binary or hex text, and the
Naples ARK without its signature (the signature then comes from a separate file). Verifying
is strict and names the check that failed: version, usage code, algorithm code, curve,
point on the curve, key id, signature. Signatures follow the SEV API: RSASSA-PSS with the
salt as long as the digest, ECDSA with r and s little-endian (``shared/reference/sev.md``
2.1-2.2; AMDESE/sev-tool ``sevcert.cpp``/``amdcert.cpp``).
"""

from __future__ import annotations

from typing import TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from hwsim.errors import HwsimError
from hwsim.sev.arch import (
    ECC_COORD_SIZE,
    SEV_CERT_SIZE,
    SIG_SIZE,
    AmdCert,
    AmdCertHeader,
    Curve,
    EcdsaSig,
    EcPubKey,
    RsaPubKey,
    SevAlgo,
    SevCert,
    SevUsage,
    int_to_le,
    le_to_int,
)
from memcrypt.errors import FormatError

__all__ = [
    "CertificateError",
    "PublicKey",
    "add_ecdsa_signature",
    "amd_public_key",
    "cert_bytes",
    "check_amd_cert",
    "check_sev_cert",
    "load_amd_cert",
    "load_sev_cert",
    "make_amd_cert",
    "make_sev_cert",
    "sev_public_key",
    "sign_amd_cert",
    "sign_sev_cert",
    "slot_quirks",
    "snp_material",
    "verify_amd_cert",
    "verify_sev_cert",
]

PublicKey: TypeAlias = "ec.EllipticCurvePublicKey | rsa.RSAPublicKey"
PrivateKey: TypeAlias = "ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey"

_CURVES: dict[Curve, ec.EllipticCurve] = {Curve.P256: ec.SECP256R1(), Curve.P384: ec.SECP384R1()}
_CURVE_IDS = {"secp256r1": Curve.P256, "secp384r1": Curve.P384}
_HASHES: dict[str, type[hashes.SHA256] | type[hashes.SHA384]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
}
# Which key algorithms each SEV key role may hold (SEV API Appendix C: the firmware's
# keys are ECC; only an owner's OCA may be RSA; the PDH is a Diffie-Hellman key).
_ROLE_KINDS = {
    SevUsage.OCA: ("ecdsa", "rsa"),
    SevUsage.PEK: ("ecdsa",),
    SevUsage.CEK: ("ecdsa",),
    SevUsage.PDH: ("ecdh",),
}
_HEX_TEXT = frozenset(b"0123456789abcdefABCDEF \t\n\r\x0b\x0c")  # hex digits, whitespace


class CertificateError(HwsimError):
    """A certificate failed verification; ``check`` names the check (exit 1)."""

    def __init__(self, message: str, *, check: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.check = check


def _usage_name(usage: int) -> str:
    try:
        return SevUsage(usage).name
    except ValueError:
        return f"usage {usage:#x}"


def cert_bytes(data: bytes, what: str) -> bytes:
    """Raw bytes of a certificate file given as binary or as hex text (sev-tool writes both).

    SEV-SNP material (X.509 certificates, attestation reports) is recognised and refused by
    name rather than misread as a SEV certificate.
    """
    kind = snp_material(data)
    if kind is not None:
        raise FormatError(
            f"{what} is SEV-SNP material ({kind}); SEV-SNP is not supported yet "
            "(sevtool reads SEV and SEV-ES certificates)"
        )
    if data and _HEX_TEXT.issuperset(data):
        try:
            return bytes.fromhex(data.decode("ascii"))
        except ValueError as exc:
            raise FormatError(f"{what}: hex text with an odd number of digits") from exc
    return data


# An SNP attestation report (SEV-SNP ABI spec table 22, ``ATTESTATION_REPORT``): 0x4A0 bytes,
# version 2 onwards at offset 0, signature algorithm 1 (ECDSA P-384 with SHA-384) at 0x34.
_SNP_REPORT_SIZE = 0x4A0
_SNP_REPORT_VERSIONS = range(2, 6)
# Subject common names of AMD's SNP certificates (KDS ``cert_chain``, ``vcek``, ``vlek``).
_SNP_NAMES = {"ARK": "an SNP ARK", "SEV": "an SNP ASK", "SEV-VCEK": "a VCEK", "SEV-VLEK": "a VLEK"}


def snp_material(data: bytes) -> str | None:
    """What SEV-SNP material ``data`` is (X.509 PEM/DER certificate, attestation report), or
    None. SNP moved AMD's certificates to X.509 and signs attestation reports with the VCEK."""
    if b"-----BEGIN CERTIFICATE-----" in data[:4096]:
        return _x509_kind(data, pem=True)
    if data[:2] == b"\x30\x82" and int.from_bytes(data[2:4], "big") + 4 == len(data):
        return _x509_kind(data, pem=False)
    if len(data) == _SNP_REPORT_SIZE:
        version, algo = (
            int.from_bytes(data[:4], "little"),
            int.from_bytes(data[0x34:0x38], "little"),
        )
        if version in _SNP_REPORT_VERSIONS and algo == 1:
            return f"an SNP attestation report, version {version}"
    return None


def _x509_kind(data: bytes, *, pem: bool) -> str:
    from cryptography import x509

    try:
        certs = (
            x509.load_pem_x509_certificates(data) if pem else [x509.load_der_x509_certificate(data)]
        )
    except ValueError:
        return "X.509 certificate text" if pem else "DER data"
    names = []
    for cert in certs:
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        name = str(cn[0].value) if cn else "?"
        role = _SNP_NAMES.get(name, _SNP_NAMES.get(name.split("-")[0], "a certificate"))
        names.append(f"{role} '{name}'")
    return f"X.509 {', '.join(names)}"


def load_sev_cert(data: bytes, what: str = "SEV certificate") -> SevCert:
    """Parse a 2084-byte SEV certificate (binary or hex text)."""
    raw = cert_bytes(data, what)
    if len(raw) != SEV_CERT_SIZE:
        raise FormatError(f"{what} must be {SEV_CERT_SIZE} bytes, got {len(raw)}")
    return SevCert.unpack(raw)


def load_amd_cert(
    data: bytes, what: str = "AMD certificate", signature: bytes | None = None
) -> AmdCert:
    """Parse an ARK/ASK certificate; ``signature`` supplies a separately published one."""
    try:
        cert = AmdCert.unpack(cert_bytes(data, what))
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from exc
    if signature is None:
        return cert
    sig = cert_bytes(signature, f"{what} signature")
    if len(sig) != cert.header.modulus_size // 8:
        raise FormatError(
            f"{what} signature must be {cert.header.modulus_size // 8} bytes, got {len(sig)}"
        )
    if cert.signature is not None and cert.signature != sig:
        raise FormatError(f"{what} already holds a different signature than the one given")
    cert.signature = sig
    return cert


def _ec_public_key(cert: SevCert, what: str) -> ec.EllipticCurvePublicKey:
    key = EcPubKey.unpack(cert.pub_key)
    try:
        curve = Curve(key.curve)
    except ValueError:
        raise CertificateError(f"{what}: unknown curve id {key.curve}", check="curve") from None
    if EcPubKey.LAYOUT.nonzero_reserved(cert.pub_key):
        raise CertificateError(
            f"{what}: reserved bytes after the public key are not zero", check="reserved"
        )
    size = curve.coord_size
    if any(key.qx[size:]) or any(key.qy[size:]):
        raise CertificateError(
            f"{what}: point coordinates exceed the {curve.name} field", check="point"
        )
    numbers = ec.EllipticCurvePublicNumbers(le_to_int(key.qx), le_to_int(key.qy), _CURVES[curve])
    try:
        return numbers.public_key()
    except ValueError:
        raise CertificateError(
            f"{what}: public key is not a valid {curve.name} point", check="point"
        ) from None


def _rsa_public_key(modulus: bytes, exponent: bytes, what: str) -> rsa.RSAPublicKey:
    try:
        return rsa.RSAPublicNumbers(le_to_int(exponent), le_to_int(modulus)).public_key()
    except ValueError:
        raise CertificateError(f"{what}: invalid RSA public key", check="key") from None


def sev_public_key(cert: SevCert, what: str = "certificate") -> PublicKey:
    """The public key a SEV certificate holds, checked (algorithm, curve, on-curve point)."""
    algo = _algo(cert.pub_key_algo, f"{what} public key")
    if algo.kind in ("ecdsa", "ecdh"):
        return _ec_public_key(cert, what)
    if algo.kind == "rsa":
        key = RsaPubKey.unpack(cert.pub_key)
        if key.modulus_size not in (2048, 4096):
            raise CertificateError(
                f"{what}: RSA modulus size {key.modulus_size} is not 2048 or 4096 bits", check="key"
            )
        return _rsa_public_key(key.modulus[: key.modulus_size // 8], key.pub_exp, what)
    raise CertificateError(f"{what}: public key algorithm is INVALID", check="algorithm")


def _algo(code: int, what: str) -> SevAlgo:
    try:
        return SevAlgo(code)
    except ValueError:
        raise CertificateError(
            f"{what}: unknown algorithm code {code:#x}", check="algorithm"
        ) from None


def _check_version_and_usage(name: str, version: int, key_usage: int, usage: SevUsage) -> None:
    """Both certificate formats are version 1 and name the key's role (its usage code)."""
    if version != 1:
        raise CertificateError(f"{name}: version {version}, expected 1", check="version")
    if key_usage != usage:
        raise CertificateError(
            f"{name}: key usage is {_usage_name(key_usage)}, "
            f"expected {usage.name} ({usage.value:#x})",
            check="usage",
        )


def slot_quirks(cert: SevCert, what: str) -> list[str]:
    """Deviations in the signature slots that verification tolerates, each one sentence.

    AMD's key server once returned CEKs whose empty second slot had usage 0x0010 instead of
    INVALID (0x1000) (AMDESE/AMDSEV#18); such a slot signs nothing and is read as empty.
    """
    quirks = []
    for index, (usage, algo, sig) in enumerate(cert.slots(), start=1):
        if usage not in SevUsage._value2member_map_:
            quirks.append(
                f"{what} signature slot {index} has usage {usage:#06x}, which names no key; "
                "read as empty (a malformed INVALID 0x1000, as AMD's key server once wrote it)"
            )
        elif usage == SevUsage.INVALID and (algo or any(sig)):
            quirks.append(f"{what} signature slot {index} is unused but not zero; ignored")
    return quirks


def check_sev_cert(cert: SevCert, usage: SevUsage, what: str | None = None) -> PublicKey:
    """Check a SEV certificate's own fields for the role ``usage``; return its public key."""
    name = what or usage.name
    _check_version_and_usage(name, cert.version, cert.pub_key_usage, usage)
    algo = _algo(cert.pub_key_algo, name)
    allowed = _ROLE_KINDS.get(usage, ())
    if algo.kind not in allowed:
        raise CertificateError(
            f"{name}: key algorithm {algo.name} is not allowed for a "
            f"{usage.name} (needs {'/'.join(allowed).upper()})",
            check="algorithm",
        )
    if cert.reserved_0 or cert.reserved_1:
        raise CertificateError(f"{name}: reserved bytes 6-7 are not zero", check="reserved")
    return sev_public_key(cert, name)


def _verify_signature(pub: PublicKey, algo: SevAlgo, sig: bytes, data: bytes, what: str) -> None:
    digest = _HASHES[algo.hash_name]()
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            if algo.kind != "rsa":
                raise CertificateError(
                    f"{what}: signature algorithm {algo.name} does not fit the signer's RSA key",
                    check="algorithm",
                )
            size = pub.key_size // 8
            if any(sig[size:]):
                raise CertificateError(
                    f"{what}: signature longer than the signer's {pub.key_size}-bit key",
                    check="signature",
                )
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            pub.verify(sig[:size][::-1], data, pss, digest)
            return
        if algo.kind != "ecdsa":
            raise CertificateError(
                f"{what}: signature algorithm {algo.name} does not fit the signer's ECDSA key",
                check="algorithm",
            )
        if EcdsaSig.LAYOUT.nonzero_reserved(sig):
            raise CertificateError(
                f"{what}: reserved bytes after the ECDSA r and s are not zero", check="reserved"
            )
        parsed = EcdsaSig.unpack(sig)
        der = encode_dss_signature(le_to_int(parsed.r), le_to_int(parsed.s))
        pub.verify(der, data, ec.ECDSA(digest))
    except InvalidSignature:
        raise CertificateError(f"{what}: signature does not verify", check="signature") from None


def verify_sev_cert(
    cert: SevCert, usage: SevUsage, signer: SevCert | AmdCert, what: str | None = None
) -> None:
    """Check ``cert`` for its role and that ``signer`` signed it (raises CertificateError)."""
    name = what or usage.name
    check_sev_cert(cert, usage, name)
    signer_key: PublicKey
    if isinstance(signer, AmdCert):
        signer_usage, signer_key = signer.header.key_usage, amd_public_key(signer)
    else:
        signer_usage = signer.pub_key_usage
        signer_key = sev_public_key(signer, _usage_name(signer_usage))
    link = f"{name} signed by {_usage_name(signer_usage)}"
    for slot_usage, slot_algo, sig in cert.slots():
        if slot_usage == signer_usage:
            algo = _algo(slot_algo, link)
            _verify_signature(signer_key, algo, sig, cert.signed_bytes(), link)
            return
    raise CertificateError(
        f"{link}: {name} has no signature slot with usage {_usage_name(signer_usage)}",
        check="signature",
    )


def amd_public_key(cert: AmdCert, what: str = "AMD certificate") -> rsa.RSAPublicKey:
    return _rsa_public_key(cert.modulus, cert.pub_exp, what)


def check_amd_cert(cert: AmdCert, usage: SevUsage, what: str | None = None) -> None:
    """Check an ARK/ASK certificate's own fields (version, usage, self-certification)."""
    name = what or usage.name
    head = cert.header
    _check_version_and_usage(name, head.version, head.key_usage, usage)
    if any(head.reserved):
        raise CertificateError(f"{name}: reserved header bytes are not zero", check="reserved")


def verify_amd_cert(
    cert: AmdCert, usage: SevUsage, signer: AmdCert, what: str | None = None
) -> None:
    """Check an ARK (``signer`` is itself) or ASK (``signer`` is the ARK)."""
    name = what or usage.name
    check_amd_cert(cert, usage, name)
    link = f"{name} signed by {'itself' if signer is cert else 'ARK'}"
    if cert.header.certifying_id != signer.header.key_id:
        raise CertificateError(
            f"{link}: certifying id {cert.header.certifying_id.hex()} is not the signer's key "
            f"id {signer.header.key_id.hex()}",
            check="key-id",
        )
    if cert.signature is None:
        raise CertificateError(
            f"{link}: the certificate has no signature",
            check="signature",
            hint="AMD published the Naples ARK without its signature; "
            "give the separate signature file (ark.cert.sig)",
        )
    # sev-tool amdcert.cpp: SHA-256 with Naples' 2048-bit keys, SHA-384 with 4096-bit keys.
    algo = SevAlgo.RSA_SHA384 if signer.header.modulus_size == 4096 else SevAlgo.RSA_SHA256
    _verify_signature(amd_public_key(signer, name), algo, cert.signature, cert.signed_bytes(), link)


def make_sev_cert(
    pub: ec.EllipticCurvePublicKey, usage: SevUsage, algo: SevAlgo, api: tuple[int, int] = (0, 0)
) -> SevCert:
    """An unsigned SEV certificate for an ECC public key."""
    curve = _CURVE_IDS[pub.curve.name]
    nums = pub.public_numbers()
    key = EcPubKey(curve, int_to_le(nums.x, ECC_COORD_SIZE), int_to_le(nums.y, ECC_COORD_SIZE))
    return SevCert(
        api_major=api[0],
        api_minor=api[1],
        pub_key_usage=usage,
        pub_key_algo=algo,
        pub_key=key.pack(),
    )


def _sign(key: PrivateKey, algo: SevAlgo, data: bytes) -> bytes:
    digest = _HASHES[algo.hash_name]()
    if isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return key.sign(data, pss, digest)[::-1]
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
    return EcdsaSig(int_to_le(r, ECC_COORD_SIZE), int_to_le(s, ECC_COORD_SIZE)).pack()


def sign_sev_cert(cert: SevCert, key: PrivateKey, signer_usage: SevUsage, algo: SevAlgo) -> SevCert:
    """``cert`` with a signature by ``key`` (role ``signer_usage``) in its first free slot."""
    return _in_free_slot(cert, signer_usage, algo, _sign(key, algo, cert.signed_bytes()))


def add_ecdsa_signature(
    cert: SevCert, signer_usage: SevUsage, algo: SevAlgo, raw: bytes
) -> SevCert:
    """``cert`` with an ECDSA signature made elsewhere in its first free slot; ``raw`` is
    ``r || s`` big-endian, as signers and PKCS#11 return it (stored little-endian here)."""
    half = len(raw) // 2
    r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    sig = EcdsaSig(int_to_le(r, ECC_COORD_SIZE), int_to_le(s, ECC_COORD_SIZE)).pack()
    return _in_free_slot(cert, signer_usage, algo, sig)


def _in_free_slot(cert: SevCert, signer_usage: SevUsage, algo: SevAlgo, sig: bytes) -> SevCert:
    for index, (usage, _, _) in enumerate(cert.slots()):
        if usage == SevUsage.INVALID:
            return cert.with_slot(index, signer_usage, algo, sig.ljust(SIG_SIZE, b"\0"))
    raise FormatError("certificate has no free signature slot")


def make_amd_cert(
    pub: rsa.RSAPublicKey, usage: SevUsage, key_id: bytes, certifying_id: bytes
) -> AmdCert:
    """An unsigned ARK/ASK certificate for an RSA key."""
    nums = pub.public_numbers()
    size = pub.key_size // 8
    header = AmdCertHeader(
        key_id=key_id,
        certifying_id=certifying_id,
        key_usage=usage,
        pub_exp_size=pub.key_size,
        modulus_size=pub.key_size,
    )
    return AmdCert(header, int_to_le(nums.e, size), int_to_le(nums.n, size), None)


def sign_amd_cert(cert: AmdCert, key: rsa.RSAPrivateKey) -> AmdCert:
    """``cert`` signed by ``key`` (SHA-256 for 2048-bit signers, SHA-384 for 4096-bit)."""
    algo = SevAlgo.RSA_SHA384 if key.key_size == 4096 else SevAlgo.RSA_SHA256
    return AmdCert(cert.header, cert.pub_exp, cert.modulus, _sign(key, algo, cert.signed_bytes()))
