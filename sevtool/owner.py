"""The platform owner's key: the OCA certificate and the signer behind it.

The owner's key signs the self-signed OCA certificate and the PEK (SEV API 2.1: the OCA
signs the PEK; ``shared/reference/sev.md`` 2.2). It is an ECDSA P-384 key, as every real
OCA is, signing with ECDSA_SHA256. It is held by a key file (PEM or DER, PKCS#8 or SEC1,
encrypted or not) or by a PKCS#11 token named by an RFC 7512 URI; either way it signs
through :class:`memcrypt.signer.Signer`, so certificates made with a token and with the
same key in a file differ only in ECDSA's random nonce.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hwsim.sev.arch import SevAlgo, SevCert, SevUsage
from hwsim.sev.certs import (
    add_ecdsa_signature,
    check_sev_cert,
    load_sev_cert,
    make_sev_cert,
    sev_public_key,
    verify_sev_cert,
)
from memcrypt.files import Output, read_file, write_files
from memcrypt.pkcs11 import Pkcs11Signer, Pkcs11Uri, is_pkcs11_uri
from memcrypt.signer import (
    ECDSA_SHA256,
    KeySigner,
    PublicKey,
    Signer,
    describe_key,
    load_private_key_file,
)
from sevtool.errors import SevInputError, SevToolError

__all__ = [
    "OwnerKey",
    "generate_oca",
    "key_name",
    "load_owner_key",
    "open_owner_signer",
    "self_signed_oca",
    "sign_pek_csr",
]

_MAX_CERT = 64 * 1024
# SEV API 2.1 / every real chain (sev.md 2.2): OCA keys are ECDSA on P-384, signing with
# ECDSA_SHA256; sev-tool and sevctl make no other kind.
_CURVE = ec.SECP384R1


@dataclass(frozen=True)
class OwnerKey:
    """A platform owner's OCA: the self-signed certificate and the signer of its key."""

    cert: SevCert
    signer: Signer

    @property
    def public_key(self) -> PublicKey:
        return self.signer.public_key

    def sign(self, cert: SevCert) -> SevCert:
        """``cert`` signed by the owner (usage OCA, ECDSA_SHA256) in its first free slot."""
        raw = self.signer.sign(cert.signed_bytes())
        return add_ecdsa_signature(cert, SevUsage.OCA, SevAlgo.ECDSA_SHA256, raw)

    def write(self, cert_path: Path, key_path: Path, passphrase: bytes | None = None) -> None:
        """The certificate (binary, 2084 bytes) and the key (PKCS#8 PEM, mode 0600),
        encrypted when a passphrase is given; the same path twice is refused. Only a key
        in memory (a new one) can be written: a token's key never leaves the token."""
        if not isinstance(self.signer, KeySigner):
            raise SevToolError("the owner key is held by a token: it cannot be written out")
        protect: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        pem = self.signer.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, protect
        )
        # One change: after a kill part-way the old pair or the new pair is on disk.
        write_files([Output(cert_path, self.cert.pack()), Output(key_path, pem, 0o600)])


def generate_oca() -> OwnerKey:
    """A new owner key (ECDSA P-384) and its self-signed OCA certificate."""
    return self_signed_oca(KeySigner(ec.generate_private_key(_CURVE()), ECDSA_SHA256))


def self_signed_oca(signer: Signer) -> OwnerKey:
    """The self-signed OCA certificate of an existing owner key, as sev-tool's
    ``create_oca_cert`` makes it (usage OCA, ECDSA_SHA256)."""
    public = signer.public_key
    assert isinstance(public, ec.EllipticCurvePublicKey)  # open_owner_signer checked it
    cert = make_sev_cert(public, SevUsage.OCA, SevAlgo.ECDSA_SHA256)
    return OwnerKey(OwnerKey(cert, signer).sign(cert), signer)


def key_name(key: str | Path) -> str:
    """How messages name an owner key: its path, or its URI without module and PIN."""
    text = str(key)
    return Pkcs11Uri.parse(text).display() if is_pkcs11_uri(text) else text


def open_owner_signer(key: str | Path, secret: bytes | None = None) -> Signer:
    """The owner key ``key`` names: a key file (``secret`` its passphrase) or a PKCS#11
    URI (``secret`` the PIN, unless the URI gives one). It must be ECDSA P-384."""
    text = str(key)
    if is_pkcs11_uri(text):
        signer = Pkcs11Signer.open(text, secret)
        _check_owner_key(signer.public_key, key_name(text))
        return signer
    private = load_private_key_file(Path(text), secret, "OCA key")
    _check_owner_key(private.public_key(), text)
    return KeySigner(private, ECDSA_SHA256)


def _check_owner_key(public: PublicKey, name: str) -> None:
    if not (isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, _CURVE)):
        raise SevInputError(
            f"OCA key {name}: {describe_key(public)}; SEV owner keys are ECDSA P-384 "
            "(as sevctl and sev-tool make them)"
        )


def load_owner_key(cert_path: Path, key: str | Path, secret: bytes | None = None) -> OwnerKey:
    """Read an OCA certificate and open its key (file or token), checking they belong
    together."""
    cert = load_sev_cert(
        read_file(cert_path, "OCA certificate", max_size=_MAX_CERT), f"OCA certificate {cert_path}"
    )
    verify_sev_cert(cert, SevUsage.OCA, cert, f"OCA certificate {cert_path}")
    signer = open_owner_signer(key, secret)
    if sev_public_key(cert) != signer.public_key:
        raise SevToolError(f"OCA key {key_name(key)} does not belong to certificate {cert_path}")
    return OwnerKey(cert, signer)


def sign_pek_csr(csr: SevCert, owner: OwnerKey) -> SevCert:
    """The owner's signature on a PEK CSR (sev-tool ``--sign_pek_csr``)."""
    check_sev_cert(csr, SevUsage.PEK, "PEK CSR")
    return owner.sign(csr.unsigned())
