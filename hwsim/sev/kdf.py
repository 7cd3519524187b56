"""AMD's key derivation for SEV transport keys, and the two primitives those keys drive.

The KDF is NIST SP 800-108 in counter mode with HMAC-SHA256 as the PRF, as the SEV API
specifies it for LAUNCH_START: block i = HMAC(key, LE32(i) || label || 0x00 || context ||
LE32(L)), i counting from 1, L the output length in bits; the counter and length are
little-endian (AMDESE/sev-tool ``crypto.cpp kdf``, virtee/sev ``session/key.rs derive``;
``shared/reference/sev.md`` 2.3). The labels the firmware uses are below.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = [
    "LABEL_KEK",
    "LABEL_KIK",
    "LABEL_MASTER",
    "aes128_ctr",
    "hmac_sha256",
    "kdf",
]

LABEL_MASTER = b"sev-master-secret"
LABEL_KEK = b"sev-kek"
LABEL_KIK = b"sev-kik"

_PRF_SIZE = hashlib.sha256().digest_size


def kdf(key: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """``length`` bytes derived from ``key`` for ``label`` and ``context`` (SP 800-108 5.1)."""
    if length <= 0:
        raise ValueError("a derived key needs at least one byte")
    bits = (length * 8).to_bytes(4, "little")
    blocks = []
    for counter in range(1, -(-length // _PRF_SIZE) + 1):
        message = counter.to_bytes(4, "little") + label + b"\0" + context + bits
        blocks.append(hmac_sha256(key, message))
    return b"".join(blocks)[:length]


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256, the MAC of every SEV transport structure."""
    return hmac.new(key, data, hashlib.sha256).digest()


def aes128_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128 in counter mode, the 16-byte IV as the initial counter block (both ways)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if len(key) != 16 or len(iv) != 16:
        raise ValueError("AES-128-CTR takes a 16-byte key and a 16-byte IV")
    crypt = Cipher(algorithms.AES128(key), modes.CTR(iv)).encryptor()
    return crypt.update(data) + crypt.finalize()
