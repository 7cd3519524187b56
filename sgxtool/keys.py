"""Enclave signing keys: RSA-3072 with public exponent 3, as SIGSTRUCT requires.

SIGSTRUCT has room for a 384-byte modulus and a 4-byte exponent that EINIT insists is 3
(SDM 38.13), so any other key is refused here, before anything is signed.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hwsim.sgx.arch import MODULUS_BYTES, SIGSTRUCT_EXPONENT
from memcrypt.files import Output, read_file, write_files
from memcrypt.signer import SignerKeyError, load_private_key_file
from sgxtool.errors import SigningKeyError

__all__ = [
    "check_key",
    "generate_key",
    "load_private_key",
    "load_public_key",
    "private_pem",
    "public_pem",
    "save_key_pair",
    "save_private_key",
]


def generate_key() -> rsa.RSAPrivateKey:
    """A new RSA-3072 key with e = 3."""
    return rsa.generate_private_key(public_exponent=SIGSTRUCT_EXPONENT, key_size=3072)


def check_key(key: rsa.RSAPublicKey, source: str) -> None:
    """Refuse a key SIGSTRUCT cannot carry, saying why."""
    numbers = key.public_numbers()
    if numbers.e != SIGSTRUCT_EXPONENT:
        raise SigningKeyError(
            f"{source}: public exponent is {numbers.e}; SGX needs 3",
            hint="make a key with `sgxtool keygen`",
        )
    if key.key_size != MODULUS_BYTES * 8:
        raise SigningKeyError(
            f"{source}: RSA-{key.key_size}; SGX needs RSA-3072",
            hint="make a key with `sgxtool keygen`",
        )


def private_pem(key: rsa.RSAPrivateKey, passphrase: bytes | None = None) -> bytes:
    """``key`` as PKCS#8 PEM, encrypted when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def save_key_pair(
    key: rsa.RSAPrivateKey,
    path: str | Path,
    public_path: str | Path | None = None,
    passphrase: bytes | None = None,
) -> None:
    """Write the private key (mode 0600) and, if asked, its public key, as one change:
    after a kill part-way the old pair or the new pair is on disk, never a mix."""
    outputs = [Output(Path(path), private_pem(key, passphrase), 0o600)]
    if public_path is not None:
        outputs.append(Output(Path(public_path), public_pem(key.public_key())))
    write_files(outputs)


def save_private_key(
    key: rsa.RSAPrivateKey, path: str | Path, passphrase: bytes | None = None
) -> None:
    """Write ``key`` as PKCS#8 PEM, mode 0600, encrypted when a passphrase is given."""
    save_key_pair(key, path, None, passphrase)


def public_pem(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path: str | Path, passphrase: bytes | None = None) -> rsa.RSAPrivateKey:
    """Load and check a private key file; a wrong or missing passphrase is one clear error."""
    try:
        # sign_sigstruct verifies every signature it makes with the public key (microseconds
        # with e = 3), so the slow full RSA check on load can be skipped.
        key = load_private_key_file(path, passphrase, "signing key", verified_use=True)
    except SignerKeyError as exc:
        raise SigningKeyError(str(exc), hint=exc.hint) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SigningKeyError(f"{path}: not an RSA key; SGX needs RSA-3072 with e=3")
    check_key(key.public_key(), str(path))
    return key


def load_public_key(path: str | Path) -> rsa.RSAPublicKey:
    """Load a PEM public key (or the public half of an unencrypted private key)."""
    data = read_file(path, "public key", max_size=1 << 20)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, None).public_key()
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"{path}: not a PEM public key") from exc
        except UnsupportedAlgorithm as exc:
            raise SigningKeyError(f"{path}: not an RSA key ({exc})") from exc
    except UnsupportedAlgorithm as exc:
        raise SigningKeyError(f"{path}: not an RSA key ({exc})") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise SigningKeyError(f"{path}: not an RSA key; SGX needs RSA-3072 with e=3")
    check_key(key, str(path))
    return key
