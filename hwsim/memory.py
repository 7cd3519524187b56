"""Simulated DRAM and the memory encryption engine in front of it.

The DIMMs are the ``dram`` table of state.db: one row per 4 KiB physical page that was
ever written (pages never written read as zeros). What is stored is what an attacker with
a probe on the memory bus would see: ciphertext for pages written through a key.

The engine encrypts with AES-128 in XTS mode (IEEE 1619) keyed per key id: key id 0 is
the host SME key, SEV guests use their ASID, and the EPC uses :data:`EPC_KEYID`. The data
unit is one 4 KiB page and the tweak is the page's physical address as a 16-byte
little-endian integer. XTS then gives every 16-byte block of memory its own
address-derived tweak, so equal plaintexts at different addresses encrypt differently and
ciphertext moved to another address decrypts to garbage, as AMD describes its engine
("128-bit key, address-based tweak", sim.md 4.1). Equal plaintexts at the same address
under the same key encrypt equally, which is what ciphertext side channels exploit.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from hwsim.arch import PAGE_SIZE
from hwsim.errors import HwsimError
from hwsim.store import StateTxn
from memcrypt.errors import InvalidInput

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

__all__ = ["EPC_KEYID", "HOST_KEYID", "PAGE_SIZE", "MemoryEngine", "xts_key"]

HOST_KEYID = 0
# Outside any ASID range (SEV ASIDs are at most a few hundred), so never shared with a guest.
EPC_KEYID = 0x10000

_KEY_NS = "boot.keys"  # key slots are volatile: a power cycle empties them
_ZERO_PAGE = bytes(PAGE_SIZE)


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


class MemoryEngine:
    """DRAM reads and writes inside one transaction: physical view and CPU view."""

    def __init__(self, txn: StateTxn, addr_bits: int) -> None:
        self._db = txn.db
        self._txn = txn
        self._limit = 1 << addr_bits
        self._ciphers: dict[int, _PageCipher] = {}

    # -- key slots ------------------------------------------------------------------

    def set_key(self, keyid: int, key: bytes) -> None:
        """Load ``key`` (16 or 32 bytes) into slot ``keyid``, as the firmware does."""
        self._txn.put(_KEY_NS, str(self._check_keyid(keyid)), xts_key(bytes(key)))
        self._ciphers.pop(keyid, None)

    def clear_key(self, keyid: int) -> None:
        self._txn.delete(_KEY_NS, str(self._check_keyid(keyid)))
        self._ciphers.pop(keyid, None)

    def key_ids(self) -> list[int]:
        names = self._txn.keys(_KEY_NS)
        if not all(k.isdecimal() for k in names):
            raise HwsimError(f"state.db: a memory encryption key slot name is corrupt: {names}")
        return sorted(int(k) for k in names)

    @staticmethod
    def _check_keyid(keyid: int) -> int:
        if isinstance(keyid, bool) or not isinstance(keyid, int) or keyid < 0:
            raise InvalidInput(f"key id must be a non-negative integer, not {keyid!r}")
        return keyid

    def _cipher(self, keyid: int) -> _PageCipher:
        cached = self._ciphers.get(keyid)
        if cached is None:
            key = self._txn.get(_KEY_NS, str(self._check_keyid(keyid)))
            if key is None:
                raise HwsimError(f"no key is loaded in memory encryption key slot {keyid}")
            if len(key) != 32:  # set_key stores the 32-byte XTS key
                raise HwsimError(f"state.db: memory encryption key slot {keyid} is corrupt")
            cached = self._ciphers[keyid] = _page_cipher(key)
        return cached

    # -- physical view (what is on the DIMM) -----------------------------------------

    def physical_read(self, paddr: int, n: int) -> bytes:
        first, last = self._span(paddr, n)
        raw = b"".join(self._stored(first, last))
        start = paddr - first * PAGE_SIZE
        return raw[start : start + n]

    def physical_write(self, paddr: int, data: bytes) -> None:
        self._write(paddr, bytes(data), None)

    # -- CPU view (through the engine) ------------------------------------------------

    def read(self, paddr: int, n: int, keyid: int | None) -> bytes:
        """``n`` bytes at ``paddr`` as the CPU sees them with ``keyid`` (None: no encryption)."""
        if keyid is None:
            return self.physical_read(paddr, n)
        cipher = self._cipher(keyid)
        first, last = self._span(paddr, n)
        stored = self._stored(first, last)
        remember = last - first < _HOT_PAGES_MAX  # bulk reads would only flush the cache
        plain = b"".join(
            cipher.decrypt(p, data, remember)
            for p, data in zip(range(first, last + 1), stored, strict=True)
        )
        start = paddr - first * PAGE_SIZE
        return plain[start : start + n]

    def write(self, paddr: int, data: bytes, keyid: int | None) -> None:
        """Write ``data`` at ``paddr`` through the engine with ``keyid`` (None: plaintext)."""
        self._write(paddr, bytes(data), None if keyid is None else self._cipher(keyid))

    def page_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM dram").fetchone()[0])

    # -- internals -------------------------------------------------------------------

    def _span(self, paddr: int, n: int) -> tuple[int, int]:
        if paddr < 0 or n < 0 or paddr + n > self._limit:
            raise InvalidInput(
                f"physical range {paddr:#x}+{n:#x} is outside the machine's "
                f"{self._limit.bit_length() - 1}-bit physical address space"
            )
        return paddr // PAGE_SIZE, (paddr + max(n, 1) - 1) // PAGE_SIZE

    def _write(self, paddr: int, data: bytes, cipher: _PageCipher | None) -> None:
        first, last = self._span(paddr, len(data))
        if not data:
            return
        offset = paddr - first * PAGE_SIZE
        view = memoryview(data)
        # Page images: slices of data for whole pages; the partly written first and last
        # pages are merged with what they held before (decrypted with the same key).
        images: list[bytes | memoryview] = [
            view[max(lo, 0) : lo + PAGE_SIZE] for lo in range(-offset, len(data), PAGE_SIZE)
        ]
        for index, page in {0: first, len(images) - 1: last}.items():
            if len(images[index]) < PAGE_SIZE:
                lo = (page - first) * PAGE_SIZE - offset
                images[index] = self._merge(page, lo, view, cipher)
        pages = range(first, last + 1)
        if cipher is not None:
            remember = len(images) <= _HOT_PAGES_MAX
            images = [
                cipher.encrypt(p, img, remember) for p, img in zip(pages, images, strict=True)
            ]
        self._db.executemany(
            "INSERT OR REPLACE INTO dram VALUES (?, ?)", zip(pages, images, strict=True)
        )

    def _merge(self, page: int, lo: int, data: memoryview, cipher: _PageCipher | None) -> bytes:
        """Page ``page`` after writing ``data``, which starts ``-lo`` bytes into it."""
        (stored,) = self._stored(page, page)
        current = bytearray(stored if cipher is None else cipher.decrypt(page, stored))
        start, end = max(lo, 0), min(lo + PAGE_SIZE, len(data))
        current[start - lo : end - lo] = data[start:end]
        return bytes(current)

    def _stored(self, first: int, last: int) -> list[bytes]:
        """The DIMM contents of pages first..last, in order (never-written pages are zero)."""
        rows = self._db.execute(
            "SELECT page, data FROM dram WHERE page BETWEEN ? AND ? ORDER BY page", (first, last)
        ).fetchall()
        if len(rows) == last - first + 1:
            return [data for _page, data in rows]
        found = dict(rows)
        return [found.get(p, _ZERO_PAGE) for p in range(first, last + 1)]


class _PageCipher:
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


def _page_cipher(key: bytes) -> _PageCipher:
    """One cipher object per key for the whole process (AES key setup is not free)."""
    cipher = _CIPHERS.get(key)
    if cipher is None:
        if len(_CIPHERS) >= 64:
            _CIPHERS.clear()
        cipher = _CIPHERS[key] = _PageCipher(key)
    return cipher


_CIPHERS: dict[bytes, _PageCipher] = {}
# (key, page) -> (ciphertext, plaintext) for the most recently used pages, per process.
_HOT_PAGES: OrderedDict[tuple[bytes, int], tuple[bytes, bytes]] = OrderedDict()
_HOT_PAGES_MAX = 256


_HOT_PAGES_LOCK = threading.Lock()


def _remember(slot: tuple[bytes, int], ciphertext: bytes, plain: bytes) -> None:
    with _HOT_PAGES_LOCK:
        _HOT_PAGES[slot] = (ciphertext, plain)
        _HOT_PAGES.move_to_end(slot)
        if len(_HOT_PAGES) > _HOT_PAGES_MAX:
            _HOT_PAGES.popitem(last=False)
