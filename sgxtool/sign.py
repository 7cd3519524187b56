"""Building and signing SIGSTRUCT.

Signing goes through a :class:`memcrypt.signer.Signer` (a key file, an external command, a
PKCS#11 token, or a signature made elsewhere: two-step signing with ``gendata``/``catsig``),
so no key path is threaded through the code. SIGSTRUCT takes RSA-3072 (e = 3) signatures with
PKCS#1 v1.5 and SHA-256 over its 256 signed bytes (SDM vol. 3D 38.13).
"""

from __future__ import annotations

import datetime as _dt
import os
import re

from cryptography.hazmat.primitives.asymmetric import rsa

from hwsim.sgx.arch import Sigstruct
from hwsim.sgx.sigcheck import SigstructError, attach_signature
from memcrypt.signer import (
    RSA_PKCS1V15_SHA256,
    CommandSigner,
    ExternalSignature,
    KeySigner,
    Signer,
    SignerError,
)
from sgxtool.config import EnclaveConfig
from sgxtool.errors import SgxToolError, SigningKeyError, UsageError, VerificationError
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
    if not isinstance(public, rsa.RSAPublicKey) or signer.scheme != RSA_PKCS1V15_SHA256:
        raise SigningKeyError(
            f"signing key: SIGSTRUCT needs {RSA_PKCS1V15_SHA256.name} with RSA-3072, "
            f"not {signer.scheme.name}",
            hint="make a key with `sgxtool keygen`",
        )
    check_key(public, "signing key")
    try:
        # The signed bytes (0-127, 900-1027) hold neither MODULUS nor EXPONENT.
        raw = signer.sign(sig.signed_bytes())
    except SignerError as exc:
        raise VerificationError(str(exc), hint=exc.hint) from exc
    try:
        return attach_signature(sig, public.public_numbers().n, raw)
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
            raise UsageError(f"--date {text!r}: not a date (use YYYY-MM-DD)") from exc
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        try:
            stamp = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc)
        except (ValueError, OverflowError, OSError) as exc:
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r}: not a Unix time") from exc
        return bcd_date(stamp.date())
    return bcd_date(_dt.datetime.now(_dt.timezone.utc).date())


def decode_bcd_date(value: int) -> _dt.date | None:
    """The date a SIGSTRUCT DATE holds, or None if it is not valid BCD."""
    try:
        return _dt.datetime.strptime(f"{value:08x}", "%Y%m%d").date()
    except ValueError:
        return None
