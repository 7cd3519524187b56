"""One signer interface for every tool: a key in memory, a signature made elsewhere, an
external command, or a PKCS#11 token (``memcrypt.pkcs11``).

A :class:`Signer` knows its public key and its :class:`Scheme`, and signs bytes. What it
returns is the scheme's *raw* signature, the form HSMs and PKCS#11 produce:

- RSA PKCS#1 v1.5: the big-endian integer, as long as the modulus (384 bytes for the
  RSA-3072 keys of SGX's SIGSTRUCT);
- ECDSA: ``r || s``, each big-endian and as long as the curve's order (48 bytes each on
  P-384, the curve of SEV owner keys), as IEEE P1363 and PKCS#11's CKM_ECDSA give it.

Each tool turns the raw form into its own layout (SIGSTRUCT wants it little-endian, SEV
certificates want r and s little-endian in fixed slots) and checks the key is one its format
can carry; nothing here knows SGX or SEV. A signature that did not come from a key in
memory is verified before it is returned, so a wrong HSM key or a broken command is caught
before anything is written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from memcrypt.errors import InvalidInput, MemcryptError
from memcrypt.files import read_file

__all__ = [
    "ECDSA_SHA256",
    "RSA_PKCS1V15_SHA256",
    "CommandSigner",
    "Ecdsa",
    "ExternalSignature",
    "KeySigner",
    "PrivateKey",
    "PublicKey",
    "RsaPkcs1v15",
    "Scheme",
    "Signer",
    "SignerError",
    "SignerKeyError",
    "load_pem_public_key",
    "load_private_key_file",
    "scheme_for",
]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
}


class SignerError(MemcryptError):
    """A signer could not sign, or what it returned is not a valid signature."""


class SignerKeyError(SignerError, InvalidInput):
    """A key cannot be read, or is not of the kind the scheme signs with (exit 2)."""


class Scheme(ABC):
    """A signature scheme: key type, encoding and hash, with the raw form described above."""

    hash_name: str

    @property
    @abstractmethod
    def name(self) -> str:
        """How messages name the scheme."""

    @property
    def hash(self) -> hashes.HashAlgorithm:
        return _HASHES[self.hash_name]()

    @abstractmethod
    def fits(self, key: PublicKey) -> bool:
        """Whether ``key`` is of the type this scheme signs with."""

    @abstractmethod
    def raw_size(self, key: PublicKey) -> int:
        """Length in bytes of a raw signature by ``key``."""

    @abstractmethod
    def sign_with(self, key: PrivateKey, data: bytes) -> bytes:
        """The raw signature over ``data`` by a key in memory."""

    @abstractmethod
    def verify(self, key: PublicKey, signature: bytes, data: bytes) -> None:
        """Raise InvalidSignature unless ``signature`` (raw form) is ``key``'s over ``data``."""

    def check_key(self, key: PublicKey, source: str) -> None:
        if not self.fits(key):
            raise SignerKeyError(f"{source}: {describe_key(key)} cannot sign {self.name}")


@dataclass(frozen=True)
class RsaPkcs1v15(Scheme):
    """RSASSA-PKCS1-v1_5 (RFC 8017 8.2); raw form: big-endian, modulus length."""

    hash_name: str = "sha256"

    @property
    def name(self) -> str:
        return f"RSA PKCS#1 v1.5 {self.hash_name.upper()}"

    def fits(self, key: PublicKey) -> bool:
        return isinstance(key, rsa.RSAPublicKey)

    def raw_size(self, key: PublicKey) -> int:
        return (key.key_size + 7) // 8

    def sign_with(self, key: PrivateKey, data: bytes) -> bytes:
        assert isinstance(key, rsa.RSAPrivateKey)  # callers check with fits() first
        return key.sign(data, padding.PKCS1v15(), self.hash)

    def verify(self, key: PublicKey, signature: bytes, data: bytes) -> None:
        assert isinstance(key, rsa.RSAPublicKey)
        key.verify(signature, data, padding.PKCS1v15(), self.hash)


@dataclass(frozen=True)
class Ecdsa(Scheme):
    """ECDSA (FIPS 186-5); raw form: ``r || s``, each big-endian, curve-order length."""

    hash_name: str = "sha256"

    @property
    def name(self) -> str:
        return f"ECDSA {self.hash_name.upper()}"

    def fits(self, key: PublicKey) -> bool:
        return isinstance(key, ec.EllipticCurvePublicKey)

    def raw_size(self, key: PublicKey) -> int:
        return 2 * self.coordinate_size(key)

    @staticmethod
    def coordinate_size(key: PublicKey) -> int:
        return (key.curve.key_size + 7) // 8 if isinstance(key, ec.EllipticCurvePublicKey) else 0

    def sign_with(self, key: PrivateKey, data: bytes) -> bytes:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(self.hash)))
        size = self.coordinate_size(key.public_key())
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    def verify(self, key: PublicKey, signature: bytes, data: bytes) -> None:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        r, s = self.split(signature)
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(self.hash))

    @staticmethod
    def split(signature: bytes) -> tuple[int, int]:
        """``(r, s)`` from the raw form."""
        half = len(signature) // 2
        return int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")


RSA_PKCS1V15_SHA256 = RsaPkcs1v15("sha256")
ECDSA_SHA256 = Ecdsa("sha256")


def scheme_for(key: PublicKey | PrivateKey, hash_name: str = "sha256") -> Scheme:
    """The scheme a key of this type signs with: PKCS#1 v1.5 for RSA, ECDSA for EC keys."""
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return RsaPkcs1v15(hash_name)
    return Ecdsa(hash_name)


def describe_key(key: PublicKey) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"an RSA-{key.key_size} key"
    return f"an EC key on {key.curve.name}"


class Signer(Protocol):
    """Signs bytes with one key; returns the scheme's raw signature."""

    @property
    def public_key(self) -> PublicKey: ...

    @property
    def scheme(self) -> Scheme: ...

    def sign(self, data: bytes) -> bytes: ...


def checked(signer: Signer, signature: bytes, data: bytes, source: str) -> bytes:
    """``signature`` if it is ``signer``'s raw signature over ``data``; else one clear error."""
    want = signer.scheme.raw_size(signer.public_key)
    if len(signature) != want:
        raise SignerError(
            f"{source} gave {len(signature)} bytes; a raw {signer.scheme.name} signature "
            f"by this key is {want} raw big-endian bytes",
            hint="base64, hex or DER must be decoded to the raw form first",
        )
    try:
        signer.scheme.verify(signer.public_key, signature, data)
    except InvalidSignature as exc:
        raise SignerError(
            f"the signature from {source} does not verify over the signed data with "
            f"this public key ({signer.scheme.name})",
            hint="check that the signing key matches the public key given",
        ) from exc
    return signature


@dataclass(frozen=True)
class KeySigner:
    """A private key in memory (from a key file, encrypted or not)."""

    private_key: PrivateKey
    scheme: Scheme = field(default=RSA_PKCS1V15_SHA256)

    def __post_init__(self) -> None:
        self.scheme.check_key(self.private_key.public_key(), "signing key")

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self.scheme.sign_with(self.private_key, data)


@dataclass(frozen=True)
class ExternalSignature:
    """A signature made elsewhere (``openssl dgst -sign``, an offline machine), checked
    against ``public_key`` before use: the second step of two-step signing."""

    public_key: PublicKey
    signature: bytes
    scheme: Scheme = field(default=RSA_PKCS1V15_SHA256)

    def sign(self, data: bytes) -> bytes:
        return checked(self, self.signature, data, "the signature file")


@dataclass(frozen=True)
class CommandSigner:
    """An external program signs, as HSM and cloud-KMS command-line tools do: it reads the
    bytes to sign on stdin and writes the raw signature on stdout."""

    public_key: PublicKey
    argv: tuple[str, ...]
    scheme: Scheme = field(default=RSA_PKCS1V15_SHA256)
    timeout: float = 300.0

    def sign(self, data: bytes) -> bytes:
        import subprocess  # here, not at the top: only this signer runs a program

        name = f"signing command {self.argv[0]!r}"
        try:
            done = subprocess.run(self.argv, input=data, capture_output=True, check=False,
                                  timeout=self.timeout)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SignerError(f"{name} failed: {exc}") from exc
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            raise SignerError(
                f"{name} exited with status {done.returncode}" + (f": {said[-1]}" if said else "")
            )
        return checked(self, done.stdout, data, name)


def load_private_key_file(
    path: str | Path, passphrase: bytes | None, what: str, *, verified_use: bool = False
) -> PrivateKey:
    """An RSA or EC private key from a file: PEM or DER; PKCS#8, PKCS#1 or SEC1; encrypted or
    not. A missing or wrong passphrase, or another key type, is one clear error naming
    ``what``.

    ``verified_use``: the caller verifies every signature it makes with the public key, so
    cryptography's full RSA key check on load (about 140 ms for RSA-3072) can be skipped; a
    broken key then fails at that verification instead of producing a bad signature.
    """
    data = read_file(path, what, max_size=1 << 20)
    pem = b"-----BEGIN" in data
    load = serialization.load_pem_private_key if pem else serialization.load_der_private_key
    try:
        key = load(data, passphrase, unsafe_skip_rsa_key_validation=verified_use)
    except TypeError as exc:
        if passphrase is None:
            raise SignerKeyError(
                f"{what} {path}: key is encrypted; a passphrase is needed",
                hint="use --passphrase-env, --passphrase-file or --ask-passphrase",
            ) from exc
        raise SignerKeyError(f"{what} {path}: key is not encrypted; drop the passphrase") from exc
    except ValueError as exc:
        if passphrase is not None and (b"ENCRYPTED" in data or not pem):
            raise SignerKeyError(f"{what} {path}: wrong passphrase, or not a private key") from exc
        raise SignerKeyError(
            f"{what} {path}: not a private key (PEM or DER; PKCS#8, PKCS#1 or SEC1)"
        ) from exc
    except UnsupportedAlgorithm as exc:
        raise SignerKeyError(f"{what} {path}: unsupported key type") from exc
    except Exception as exc:  # cryptography raises several kinds for corrupt key bodies
        raise SignerKeyError(f"{what} {path}: unreadable private key ({exc})") from exc
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise SignerKeyError(f"{what} {path}: neither an RSA nor an EC key")
    return key


def load_pem_public_key(path: str | Path, what: str) -> PublicKey:
    """An RSA or EC public key from a PEM file (a private key's public half also works)."""
    data = read_file(path, what, max_size=1 << 20)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_private_key(data, None).public_key()
        except (TypeError, ValueError, UnsupportedAlgorithm) as exc:
            raise SignerKeyError(f"{what} {path}: not a PEM public key") from exc
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise SignerKeyError(f"{what} {path}: neither an RSA nor an EC key")
    return key
