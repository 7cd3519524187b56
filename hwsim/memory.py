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
from collections.abc import Iterable
from typing import TYPE_CHECKING

from hwsim.errors import HwsimError, InvalidInput
from hwsim.store import StateTxn

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.algorithms import AES

__all__ = ["EPC_KEYID", "HOST_KEYID", "PAGE_SIZE", "MemoryEngine", "xts_key"]

PAGE_SIZE = 4096
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
        self._ciphers: dict[int, AES] = {}

    # -- key slots ------------------------------------------------------------------

    def set_key(self, keyid: int, key: bytes) -> None:
        """Load ``key`` (16 or 32 bytes) into slot ``keyid``, as the firmware does."""
        self._txn.put(_KEY_NS, str(self._check_keyid(keyid)), xts_key(bytes(key)))
        self._ciphers.pop(keyid, None)

    def clear_key(self, keyid: int) -> None:
        self._txn.delete(_KEY_NS, str(self._check_keyid(keyid)))
        self._ciphers.pop(keyid, None)

    def key_ids(self) -> list[int]:
        return sorted(int(k) for k in self._txn.keys(_KEY_NS))

    @staticmethod
    def _check_keyid(keyid: int) -> int:
        if isinstance(keyid, bool) or not isinstance(keyid, int) or keyid < 0:
            raise InvalidInput(f"key id must be a non-negative integer, not {keyid!r}")
        return keyid

    def _cipher(self, keyid: int) -> AES:
        cached = self._ciphers.get(keyid)
        if cached is None:
            key = self._txn.get(_KEY_NS, str(self._check_keyid(keyid)))
            if key is None:
                raise HwsimError(f"no key is loaded in memory encryption key slot {keyid}")
            from cryptography.hazmat.primitives.ciphers import algorithms

            cached = self._ciphers[keyid] = algorithms.AES(key)
        return cached

    # -- physical view (what is on the DIMM) -----------------------------------------

    def physical_read(self, paddr: int, n: int) -> bytes:
        first, last = self._span(paddr, n)
        pages = self._load(first, last)
        raw = b"".join(pages.get(p, _ZERO_PAGE) for p in range(first, last + 1))
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
        pages = self._load(first, last)
        plain = b"".join(
            _xts(cipher, p, pages.get(p, _ZERO_PAGE), decrypt=True) for p in range(first, last + 1)
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

    def _load(self, first: int, last: int) -> dict[int, bytes]:
        rows = self._db.execute(
            "SELECT page, data FROM dram WHERE page BETWEEN ? AND ?", (first, last)
        )
        return dict(rows)

    def _write(self, paddr: int, data: bytes, cipher: AES | None) -> None:
        first, last = self._span(paddr, len(data))
        if not data:
            return
        offset = paddr - first * PAGE_SIZE
        # Only the partly written first and last pages need their old contents.
        partial = {p for p in (first, last) if _partial(p, offset, len(data), first)}
        old = self._load_pages(partial)
        rows = (
            (p, _page_image(p, (p - first) * PAGE_SIZE - offset, data, old, cipher))
            for p in range(first, last + 1)
        )
        self._db.executemany("INSERT OR REPLACE INTO dram VALUES (?, ?)", rows)

    def _load_pages(self, pages: Iterable[int]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for p in pages:
            found.update(self._load(p, p))
        return found


def _page_image(
    page: int, lo: int, data: bytes, old: dict[int, bytes], cipher: AES | None
) -> bytes:
    """What page ``page`` holds after writing ``data``, which covers it from offset -lo."""
    if lo >= 0 and lo + PAGE_SIZE <= len(data):
        plain = data[lo : lo + PAGE_SIZE]
    else:
        stored = old.get(page, _ZERO_PAGE)
        current = bytearray(stored if cipher is None else _xts(cipher, page, stored, True))
        start, end = max(lo, 0), min(lo + PAGE_SIZE, len(data))
        current[start - lo : end - lo] = data[start:end]
        plain = bytes(current)
    return plain if cipher is None else _xts(cipher, page, plain, False)


def _partial(page: int, offset: int, n: int, first: int) -> bool:
    lo = (page - first) * PAGE_SIZE - offset
    return lo < 0 or lo + PAGE_SIZE > n


def _xts(cipher: AES, page: int, data: bytes, decrypt: bool) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    mode = modes.XTS((page * PAGE_SIZE).to_bytes(16, "little"))
    ctx = Cipher(cipher, mode).decryptor() if decrypt else Cipher(cipher, mode).encryptor()
    return ctx.update(data) + ctx.finalize()
