"""Building and signing SIGSTRUCT.

Signing goes through a :class:`Signer`: something that knows the public key and can sign
256 bytes with RSASSA-PKCS1-v1_5/SHA-256. A key file, or a signature made elsewhere (an HSM,
an offline machine: two-step signing with ``gendata``/``catsig``) both fit, so no key path
is threaded through the code.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hwsim.sgx.arch import MODULUS_BYTES, Sigstruct
from hwsim.sgx.sigcheck import SigstructError, attach_signature
from sgxtool.config import EnclaveConfig
from sgxtool.errors import SgxToolError, SigningKeyError, VerificationError
from sgxtool.keys import check_key

__all__ = [
    "CommandSigner",
    "ExternalSignature",
    "KeySigner",
    "Signer",
    "bcd_date",
    "sign_sigstruct",
    "signing_date",
    "unsigned_sigstruct",
]


class Signer(Protocol):
    """Signs the 256 SIGSTRUCT bytes; returns the raw 384-byte big-endian signature."""

    @property
    def public_key(self) -> rsa.RSAPublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class KeySigner:
    """A private key in memory (from a file, possibly passphrase-protected)."""

    private_key: rsa.RSAPrivateKey

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


@dataclass(frozen=True)
class ExternalSignature:
    """A signature made elsewhere (``openssl dgst -sign``, an HSM), checked before use."""

    public_key: rsa.RSAPublicKey
    signature: bytes

    def sign(self, data: bytes) -> bytes:
        if len(self.signature) != MODULUS_BYTES:
            raise VerificationError(
                f"the signature is {len(self.signature)} bytes; expected {MODULUS_BYTES} raw "
                "big-endian bytes",
                hint="`openssl dgst -sha256 -sign` writes this form; "
                "base64 or hex text must be decoded first",
            )
        try:
            self.public_key.verify(self.signature, data, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature as exc:
            raise VerificationError(
                "the signature does not verify over the signing data with this public key",
                hint="sign exactly the bytes `sgxtool gendata` wrote, with SHA-256 and "
                "PKCS#1 v1.5, using the key that matches --public-key",
            ) from exc
        return self.signature


@dataclass(frozen=True)
class CommandSigner:
    """An external program signs, as HSM and cloud-KMS command-line tools do: it reads the
    256 bytes on stdin and writes the raw 384-byte big-endian signature on stdout. The
    result is checked against ``public_key`` before it is used."""

    public_key: rsa.RSAPublicKey
    argv: tuple[str, ...]
    timeout: float = 300.0

    def sign(self, data: bytes) -> bytes:
        try:
            done = subprocess.run(self.argv, input=data, capture_output=True, check=False,
                                  timeout=self.timeout)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SgxToolError(f"signing command {self.argv[0]!r} failed: {exc}") from exc
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            raise SgxToolError(
                f"signing command {self.argv[0]!r} exited with status {done.returncode}"
                + (f": {said[-1]}" if said else "")
            )
        return ExternalSignature(self.public_key, done.stdout).sign(data)


def unsigned_sigstruct(cfg: EnclaveConfig, enclavehash: bytes, date: int) -> Sigstruct:
    """A SIGSTRUCT for ``cfg`` and MRENCLAVE ``enclavehash``, not yet signed."""
    if len(enclavehash) != 32:
        raise SgxToolError(f"enclave hash must be 32 bytes, got {len(enclavehash)}")
    return Sigstruct(
        vendor=cfg.vendor,
        date=date,
        miscselect=cfg.miscselect,
        miscmask=cfg.miscmask,
        isvfamilyid=cfg.isvfamilyid,
        attributes_flags=cfg.attribute_flags,
        attributes_xfrm=cfg.xfrm,
        attributemask_flags=cfg.attributes_mask,
        attributemask_xfrm=cfg.xfrm_mask,
        enclavehash=enclavehash,
        isvextprodid=cfg.isvextprodid,
        isvprodid=cfg.isvprodid,
        isvsvn=cfg.isvsvn,
    )


def sign_sigstruct(sig: Sigstruct, signer: Signer) -> Sigstruct:
    """Fill in MODULUS, EXPONENT, SIGNATURE, Q1 and Q2 (all little-endian)."""
    public = signer.public_key
    check_key(public, "signing key")
    # The signed bytes (0-127, 900-1027) hold neither MODULUS nor EXPONENT.
    signature = signer.sign(sig.signed_bytes())
    try:
        return attach_signature(sig, public.public_numbers().n, signature)
    except SigstructError as exc:
        raise SigningKeyError(
            "the signature made does not verify with the signing key's public key",
            hint="the private key file is damaged; sign with an intact copy",
        ) from exc


def bcd_date(day: _dt.date) -> int:
    """DATE as SIGSTRUCT stores it: yyyymmdd in BCD, 2016-01-09 -> 0x20160109."""
    return int(day.strftime("%Y%m%d"), 16)


def signing_date(text: str | None = None) -> int:
    """The DATE to sign with: ``text`` (YYYY-MM-DD or YYYYMMDD), else SOURCE_DATE_EPOCH,
    else today (UTC), so that rebuilding from the same inputs gives the same bytes."""
    if text is not None:
        m = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", text.strip())
        try:
            if not m:
                raise ValueError(text)
            return bcd_date(_dt.date(int(m[1]), int(m[2]), int(m[3])))
        except ValueError as exc:
            raise SgxToolError(f"--date {text!r}: not a date (use YYYY-MM-DD)") from exc
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        try:
            stamp = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc)
        except (ValueError, OverflowError, OSError) as exc:
            raise SgxToolError(f"SOURCE_DATE_EPOCH={epoch!r}: not a Unix time") from exc
        return bcd_date(stamp.date())
    return bcd_date(_dt.datetime.now(_dt.timezone.utc).date())


def decode_bcd_date(value: int) -> _dt.date | None:
    """The date a SIGSTRUCT DATE holds, or None if it is not valid BCD."""
    try:
        return _dt.datetime.strptime(f"{value:08x}", "%Y%m%d").date()
    except ValueError:
        return None
