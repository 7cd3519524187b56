"""The SIGSTRUCT checks EINIT performs, shared by the simulator and ``sgxtool verify``.

EINIT verifies the RSA signature by computing S^3 mod N with the help of Q1 and Q2
(SDM vol. 3D 38.13 and the EINIT "Operation"), so the check is plain integer arithmetic:
the result must be the PKCS#1 v1.5 encoding of SHA-256 over the signed 256 bytes, and Q1,
Q2 must be exactly the quotients the hardware expects.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace

from hwsim.errors import HwsimError
from hwsim.sgx.arch import (
    MODULUS_BYTES,
    SIGSTRUCT_EXPONENT,
    SIGSTRUCT_HEADER,
    SIGSTRUCT_HEADER2,
    VENDOR_INTEL,
    SgxStatus,
    Sigstruct,
)

__all__ = [
    "SigstructError",
    "attach_signature",
    "check_sigstruct",
    "pkcs1_sha256_encoding",
    "q1_q2",
]

# DER DigestInfo prefix for SHA-256 (RFC 8017 9.2 note 1).
_SHA256_DIGESTINFO = bytes.fromhex("3031300d060960864801650304020105000420")


class SigstructError(HwsimError):
    """A SIGSTRUCT fails one of EINIT's checks; ``status`` is the EINIT error code."""

    def __init__(self, status: SgxStatus, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.status = status
        self.check = check


def pkcs1_sha256_encoding(data: bytes, length: int = MODULUS_BYTES) -> int:
    """EMSA-PKCS1-v1_5 encoding of SHA-256(data), as an integer (RFC 8017 9.2)."""
    t = _SHA256_DIGESTINFO + hashlib.sha256(data).digest()
    em = b"\x00\x01" + b"\xff" * (length - len(t) - 3) + b"\x00" + t
    return int.from_bytes(em, "big")


def q1_q2(signature: int, modulus: int) -> tuple[int, int]:
    """Q1 = floor(S^2 / N), Q2 = floor((S^3 - Q1*S*N) / N) (SDM 38.13)."""
    q1 = signature * signature // modulus
    q2 = (signature**3 - q1 * signature * modulus) // modulus
    return q1, q2


def attach_signature(sig: Sigstruct, modulus: int, signature: bytes) -> Sigstruct:
    """``sig`` carrying ``modulus`` and the big-endian RSA ``signature`` over its signed
    bytes, stored as SIGSTRUCT stores them: little-endian, with exponent 3, Q1 and Q2.

    The signature is checked first, as EINIT would check it, so that a faulty key or
    signer can never produce a SIGSTRUCT that does not verify."""
    s = int.from_bytes(signature, "big")
    _check_signature(s, modulus, sig.signed_bytes())
    q1, q2 = q1_q2(s, modulus)

    def le(n: int) -> bytes:
        return n.to_bytes(MODULUS_BYTES, "little")

    return replace(sig, modulus=le(modulus), exponent=SIGSTRUCT_EXPONENT, signature=le(s),
                   q1=le(q1), q2=le(q2))  # fmt: skip


def check_sigstruct(raw: bytes) -> Sigstruct:
    """Check a SIGSTRUCT's format, signature and Q1/Q2 as EINIT does; return it parsed."""
    sig = Sigstruct.unpack(raw)
    _check_format(sig, raw)
    n = int.from_bytes(sig.modulus, "little")
    s = int.from_bytes(sig.signature, "little")
    if n.bit_length() != MODULUS_BYTES * 8:
        raise SigstructError(
            SgxStatus.INVALID_SIGNATURE,
            "modulus",
            f"{n.bit_length()}-bit modulus; SGX needs 3072 bits",
        )
    _check_signature(s, n, sig.signed_bytes())
    q1, q2 = q1_q2(s, n)
    if int.from_bytes(sig.q1, "little") != q1 or int.from_bytes(sig.q2, "little") != q2:
        raise SigstructError(
            SgxStatus.INVALID_SIGNATURE,
            "Q1/Q2",
            "Q1 or Q2 is not the value EINIT expects for this signature",
        )
    return sig


def _check_signature(s: int, n: int, signed: bytes) -> None:
    if s >= n or pow(s, SIGSTRUCT_EXPONENT, n) != pkcs1_sha256_encoding(signed):
        raise SigstructError(
            SgxStatus.INVALID_SIGNATURE,
            "signature",
            "RSA signature does not verify with the SIGSTRUCT's modulus",
        )


def _check_format(sig: Sigstruct, raw: bytes) -> None:
    problems = []
    if sig.header != SIGSTRUCT_HEADER and not _release_header(sig.header):
        problems.append(("HEADER", f"is {sig.header.hex()}, must be {SIGSTRUCT_HEADER.hex()}"))
    if sig.vendor not in (0, VENDOR_INTEL):
        problems.append(("VENDOR", f"is {sig.vendor:#x}, must be 0 or 0x8086"))
    if sig.header2 != SIGSTRUCT_HEADER2:
        problems.append(("HEADER2", f"is {sig.header2.hex()}, must be {SIGSTRUCT_HEADER2.hex()}"))
    if sig.exponent != SIGSTRUCT_EXPONENT:
        problems.append(("EXPONENT", f"is {sig.exponent}, must be 3"))
    for off, size in Sigstruct.LAYOUT.nonzero_reserved(raw):
        problems.append(("reserved", f"bytes {off}..{off + size - 1} are not zero"))
    if problems:
        field, message = problems[0]
        raise SigstructError(SgxStatus.INVALID_SIG_STRUCT, field, message)


def _release_header(header: bytes) -> bool:
    # Intel's signer sets bit 31 of the HEADER's last word for release builds
    # (linux-sgx manage_metadata.cpp "type"); the first 12 bytes are what is checked.
    return header[:12] == SIGSTRUCT_HEADER[:12] and struct.unpack("<I", header[12:])[0] in (
        0,
        1 << 31,
    )
