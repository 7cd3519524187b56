"""The memory encryption engine's page ciphers, one per key slot.

Two engines sit between the CPU package and DRAM on the parts hwsim models:

- AES-128-XTS (IEEE 1619), data unit one 4 KiB page, tweak = the page's physical address
  as a 16-byte little-endian integer: AMD's SME/SEV engine ("128-bit key, address-based
  tweak", sim.md 4.1) and TME-MK, which holds the EPC on Ice Lake Xeon (sim.md 3.9).
  Confidentiality only: equal plaintexts at one address encrypt equally, and old
  ciphertext written back decrypts to the old plaintext.
- SGX1's Memory Encryption Engine (Gueron 2016; sim.md 3.9): counter-mode encryption
  keyed by address and a per-line version, a MAC per line, and a tree of version counters
  whose root never leaves the die. Confidentiality, integrity and freshness. hwsim models
  it per page with AES-128-GCM: nonce = physical page number and version, the tag is the
  MAC the MEE keeps in DRAM beside the data; the versions stand for the tree, whose root
  makes every stored version authoritative, so they are held inside the package.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from memcrypt.errors import InvalidInput

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

__all__ = [
    "EPC_KEYID",
    "HOST_KEYID",
    "HOT_PAGES_MAX",
    "PAGE_SIZE",
    "TAG_SIZE",
    "MeeCipher",
    "XtsCipher",
    "xts_cipher",
    "xts_key",
]

PAGE_SIZE = 4096
# Key ids of the engine's slots: 0 is the host SME key, SEV guests use their ASID, and the
# EPC's id is outside any ASID range (at most a few hundred), so never shared with a guest.
HOST_KEYID = 0
EPC_KEYID = 0x10000
TAG_SIZE = 16  # bytes of MAC per EPC page in the MEE's metadata
HOT_PAGES_MAX = 256


def xts_key(key: bytes) -> bytes:
    """The 32-byte AES-128-XTS key for a key slot loaded with ``key``.

    A 32-byte key is used as is (data key, tweak key). A 16-byte key (an SME key, an SEV
    VEK) is the data key; the tweak key is derived from it with HMAC-SHA-256, since XTS
    needs two independent halves.
    """
    if len(key) == 32:
        return key
    if len(key) == 16:
        return key + hmac.new(key, b"hwsim xts tweak key", hashlib.sha256).digest()[:16]
    raise InvalidInput(f"memory encryption key must be 16 or 32 bytes, not {len(key)}")


class XtsCipher:
    """AES-128-XTS over whole pages under one key slot's key, tweak = physical address.

    Decrypting costs more than an unencrypted DRAM read, so recently used pages are kept
    decrypted, the way a CPU cache hides the engine's latency. An entry is used only
    when the key and the ciphertext now in DRAM are byte for byte those it was made
    from: XTS is deterministic, so a hit can never return stale or wrong plaintext
    (a changed key, a power cycle or an attacker's write to DRAM all miss).
    """

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self._key = key
        self._aes = algorithms.AES(key)
        self._cipher, self._xts = Cipher, modes.XTS

    def _context(self, page: int) -> Cipher[modes.XTS]:
        return self._cipher(self._aes, self._xts((page * PAGE_SIZE).to_bytes(16, "little")))

    def encrypt(self, page: int, plain: bytes | memoryview, remember: bool = True) -> bytes:
        ctx = self._context(page).encryptor()
        ciphertext = ctx.update(plain) + ctx.finalize()
        if remember:
            _remember((self._key, page), ciphertext, bytes(plain))
        return ciphertext

    def decrypt(self, page: int, ciphertext: bytes, remember: bool = True) -> bytes:
        hit = _HOT_PAGES.get((self._key, page))
        if hit is not None and hit[0] == ciphertext:
            return hit[1]
        ctx = self._context(page).decryptor()
        plain = ctx.update(ciphertext) + ctx.finalize()
        if remember:
            _remember((self._key, page), ciphertext, plain)
        return plain


class MeeCipher:
    """The SGX1 MEE's page transform: AES-128-GCM, nonce = page number and version."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        # The slot holds 32 bytes (XTS-sized); the MEE's encryption key is the first half.
        self._aead = AESGCM(key[:16])

    @staticmethod
    def _nonce(page: int, version: int) -> bytes:
        # 40 bits of physical page number (52-bit addresses), then a 56-bit version, the
        # width of the MEE's counters.
        return (page | version << 40).to_bytes(12, "little")

    def seal(self, page: int, version: int, plain: bytes) -> tuple[bytes, bytes]:
        """(ciphertext, tag) of ``plain`` stored at ``page`` with ``version``."""
        sealed = self._aead.encrypt(self._nonce(page, version), plain, None)
        return sealed[:PAGE_SIZE], sealed[PAGE_SIZE:]

    def open(self, page: int, version: int, ciphertext: bytes, tag: bytes) -> bytes | None:
        """The plaintext, or None when ciphertext, tag and version do not belong together."""
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(self._nonce(page, version), ciphertext + tag, None)
        except InvalidTag:
            return None


def xts_cipher(key: bytes) -> XtsCipher:
    """One cipher object per key for the whole process (AES key setup is not free)."""
    cipher = _CIPHERS.get(key)
    if cipher is None:
        if len(_CIPHERS) >= 64:
            _CIPHERS.clear()
        cipher = _CIPHERS[key] = XtsCipher(key)
    return cipher


_CIPHERS: dict[bytes, XtsCipher] = {}
# (key, page) -> (ciphertext, plaintext) for the most recently used pages, per process.
_HOT_PAGES: OrderedDict[tuple[bytes, int], tuple[bytes, bytes]] = OrderedDict()
_HOT_PAGES_LOCK = threading.Lock()


def _remember(slot: tuple[bytes, int], ciphertext: bytes, plain: bytes) -> None:
    with _HOT_PAGES_LOCK:
        _HOT_PAGES[slot] = (ciphertext, plain)
        _HOT_PAGES.move_to_end(slot)
        if len(_HOT_PAGES) > HOT_PAGES_MAX:
            _HOT_PAGES.popitem(last=False)
