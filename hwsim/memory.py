"""One physical memory: the machine's DRAM and the memory encryption engine in front of it.

The physical address space (``phys_addr_bits`` less the C-bit reduction) is one DRAM
model with two backings that differ only in lifetime:

- the ``dram`` table of state.db, one row per 4 KiB physical page ever written (pages
  never written read as zeros): host memory and SEV guest memory, which persist;
- the PRM (:mod:`hwsim.prm`), reserved by the BIOS at power-on: the EPC and its engine's
  metadata, held by the process that loaded the enclaves, which are volatile.

The physical view (:meth:`MemoryEngine.physical_read`, :meth:`MemoryEngine.physical_write`)
is what a probe on the memory bus, a cold-boot or a DMA attacker sees: ciphertext for
every page written through a key, the EPC's included. The CPU view (:meth:`MemoryEngine.read`,
:meth:`MemoryEngine.write`) is host code's: it goes through a key slot (key id 0 is the
host SME key, SEV guests use their ASID) and gets abort-page semantics on the PRM (reads
all ones, writes dropped). Key id :data:`EPC_KEYID` holds the EPC key, which only the SGX
engine uses, through :meth:`MemoryEngine.epc_region`.

The engine encrypts with AES-128 in XTS mode per page, tweaked by the physical address
(:mod:`hwsim._pagecrypt`): equal plaintexts at different addresses encrypt differently
and ciphertext moved to another address decrypts to garbage, as AMD describes its engine
("128-bit key, address-based tweak", sim.md 4.1). Equal plaintexts at the same address
under the same key encrypt equally, which is what ciphertext side channels exploit.
"""

from __future__ import annotations

from hwsim._pagecrypt import (
    EPC_KEYID,
    HOST_KEYID,
    HOT_PAGES_MAX,
    XtsCipher,
    xts_cipher,
    xts_key,
)
from hwsim.arch import PAGE_SIZE
from hwsim.errors import HwsimError
from hwsim.prm import PrmMap, PrmRegion, prm_region
from hwsim.store import KEY_SLOTS_NS, PRM_NS, StateTxn
from memcrypt.errors import InvalidInput

__all__ = ["EPC_KEYID", "HOST_KEYID", "PAGE_SIZE", "MemoryEngine", "xts_key"]

_ZERO_PAGE = bytes(PAGE_SIZE)
_ABORT = 0xFF


class MemoryEngine:
    """DRAM reads and writes inside one transaction: physical view and CPU view."""

    def __init__(self, txn: StateTxn, addr_bits: int) -> None:
        self._db = txn.db
        self._txn = txn
        self._limit = 1 << addr_bits
        self._ciphers: dict[int, XtsCipher] = {}
        self._prm_map: PrmMap | None = None
        self._prm_known = False
        self._prm_span = (0, 0)  # [base, end) of the PRM once known; empty when none

    # -- key slots ------------------------------------------------------------------

    def set_key(self, keyid: int, key: bytes) -> None:
        """Load ``key`` (16 or 32 bytes) into slot ``keyid``, as the firmware does."""
        self._txn.put(KEY_SLOTS_NS, str(self._check_keyid(keyid)), xts_key(bytes(key)))
        self._ciphers.pop(keyid, None)

    def clear_key(self, keyid: int) -> None:
        self._txn.delete(KEY_SLOTS_NS, str(self._check_keyid(keyid)))
        self._ciphers.pop(keyid, None)

    def key_ids(self) -> list[int]:
        names = self._txn.keys(KEY_SLOTS_NS)
        if not all(k.isdecimal() for k in names):
            raise HwsimError(f"state.db: a memory encryption key slot name is corrupt: {names}")
        return sorted(int(k) for k in names)

    @staticmethod
    def _check_keyid(keyid: int) -> int:
        if isinstance(keyid, bool) or not isinstance(keyid, int) or keyid < 0:
            raise InvalidInput(f"key id must be a non-negative integer, not {keyid!r}")
        return keyid

    def _slot(self, keyid: int) -> bytes:
        key = self._txn.get(KEY_SLOTS_NS, str(self._check_keyid(keyid)))
        if key is None:
            raise HwsimError(f"no key is loaded in memory encryption key slot {keyid}")
        if len(key) != 32:  # set_key stores the 32-byte XTS key
            raise HwsimError(f"state.db: memory encryption key slot {keyid} is corrupt")
        return key

    def _cipher(self, keyid: int) -> XtsCipher:
        cached = self._ciphers.get(keyid)
        if cached is None:
            cached = self._ciphers[keyid] = xts_cipher(self._slot(keyid))
        return cached

    # -- the PRM (EPC) -----------------------------------------------------------------

    def reserve_prm(self, prm: PrmMap) -> None:
        """Reserve the PRM for this boot, as the BIOS programs PRMRR at power-on."""
        if prm.end > self._limit:
            raise HwsimError(f"the PRM ends at {prm.end:#x}, outside the physical address space")
        self._txn.put(PRM_NS, "map", prm.pack())
        self._know_prm(prm)

    def prm(self) -> PrmMap | None:
        """Where the PRM is at this boot; None when the BIOS reserved none (SGX off)."""
        if not self._prm_known:
            raw = self._txn.get(PRM_NS, "map")
            self._know_prm(None if raw is None else PrmMap.unpack(raw))
        return self._prm_map

    def _know_prm(self, prm: PrmMap | None) -> None:
        self._prm_map, self._prm_known = prm, True
        self._prm_span = (0, 0) if prm is None else (prm.base, prm.end)

    def epc_region(self) -> PrmRegion:
        """The PRM's contents for this boot in this process, under the EPC key slot."""
        prm = self.prm()
        if prm is None:
            raise HwsimError(
                "no PRM is reserved at this boot: SGX is off",
                hint="hwsim power-cycle reserves one when the BIOS enables SGX",
            )
        return prm_region(prm, self._slot(EPC_KEYID))

    def _prm_overlap(self, paddr: int, n: int) -> tuple[int, int] | None:
        """The part [lo, hi) of paddr..paddr+n that lies in the PRM, if any."""
        if not self._prm_known:
            self.prm()
        base, end = self._prm_span  # read on every DRAM access: kept as two ints
        lo, hi = max(paddr, base), min(paddr + n, end)
        return (lo, hi) if lo < hi else None

    # -- physical view (what is on the DIMM) -----------------------------------------

    def physical_read(self, paddr: int, n: int) -> bytes:
        first, last = self._span(paddr, n)
        raw = b"".join(self._stored(first, last))
        start = paddr - first * PAGE_SIZE
        return raw[start : start + n]

    def physical_write(self, paddr: int, data: bytes) -> None:
        self._write(paddr, bytes(data), None)

    # -- CPU view (host code, through the engine) ------------------------------------

    def read(self, paddr: int, n: int, keyid: int | None) -> bytes:
        """``n`` bytes at ``paddr`` as host code sees them with ``keyid`` (None: no
        encryption); the PRM reads as the abort page, all ones."""
        if keyid == EPC_KEYID:
            raise _epc_keyid_refused()
        hole = self._prm_overlap(paddr, n)
        if hole is None:  # each _read checks its range against the address space
            return self._read(paddr, n, keyid)
        lo, hi = hole
        abort = bytes([_ABORT]) * (hi - lo)
        return self._read(paddr, lo - paddr, keyid) + abort + self._read(hi, paddr + n - hi, keyid)

    def write(self, paddr: int, data: bytes, keyid: int | None) -> None:
        """Write ``data`` at ``paddr`` through the engine with ``keyid`` (None: plaintext);
        what falls in the PRM is dropped, as the abort page does."""
        if keyid == EPC_KEYID:
            raise _epc_keyid_refused()
        data = bytes(data)
        cipher = None if keyid is None else self._cipher(keyid)
        self._span(paddr, len(data))
        hole = self._prm_overlap(paddr, len(data))
        if hole is None:
            self._write(paddr, data, cipher)
            return
        lo, hi = hole
        self._write(paddr, data[: lo - paddr], cipher)
        self._write(hi, data[hi - paddr :], cipher)

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

    def _read(self, paddr: int, n: int, keyid: int | None) -> bytes:
        if keyid is None:
            return self.physical_read(paddr, n)
        cipher = self._cipher(keyid)
        first, last = self._span(paddr, n)
        if n == 0:
            return b""
        stored = self._stored(first, last)
        remember = last - first < HOT_PAGES_MAX  # bulk reads would only flush the cache
        plain = b"".join(
            cipher.decrypt(p, data, remember)
            for p, data in zip(range(first, last + 1), stored, strict=True)
        )
        start = paddr - first * PAGE_SIZE
        return plain[start : start + n]

    def _write(self, paddr: int, data: bytes, cipher: XtsCipher | None) -> None:
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
        if cipher is not None:
            remember = len(images) <= HOT_PAGES_MAX
            images = [cipher.encrypt(first + i, img, remember) for i, img in enumerate(images)]
        self._put(first, images)

    def _merge(self, page: int, lo: int, data: memoryview, cipher: XtsCipher | None) -> bytes:
        """Page ``page`` after writing ``data``, which starts ``-lo`` bytes into it."""
        (stored,) = self._stored(page, page)
        current = bytearray(stored if cipher is None else cipher.decrypt(page, stored))
        start, end = max(lo, 0), min(lo + PAGE_SIZE, len(data))
        current[start - lo : end - lo] = data[start:end]
        return bytes(current)

    def _prm_pages(self, first: int, last: int) -> range:
        """The physical pages among first..last that lie in the PRM."""
        hole = self._prm_overlap(first * PAGE_SIZE, (last - first + 1) * PAGE_SIZE)
        return range(0) if hole is None else range(hole[0] // PAGE_SIZE, hole[1] // PAGE_SIZE)

    def _stored(self, first: int, last: int) -> list[bytes]:
        """The DIMM contents of pages first..last, in order (never-written pages are zero)."""
        rows = self._db.execute(
            "SELECT page, data FROM dram WHERE page BETWEEN ? AND ? ORDER BY page", (first, last)
        ).fetchall()
        if len(rows) == last - first + 1:
            pages = [data for _page, data in rows]
        else:
            found = dict(rows)
            pages = [found.get(p, _ZERO_PAGE) for p in range(first, last + 1)]
        prm = self._prm_pages(first, last)
        if prm:
            region = self.epc_region()
            for p in prm:
                pages[p - first] = region.dimm_page(p)
        return pages

    def _put(self, first: int, images: list[bytes | memoryview]) -> None:
        """Store page images from physical page ``first`` on, in the PRM or in state.db."""
        pages = range(first, first + len(images))
        prm = self._prm_pages(first, pages[-1])
        if prm:
            region = self.epc_region()
            for p in prm:
                region.dimm_write(p, bytes(images[p - first]))
        rows = [(p, img) for p, img in zip(pages, images, strict=True) if p not in prm]
        self._db.executemany("INSERT OR REPLACE INTO dram VALUES (?, ?)", rows)


def _epc_keyid_refused() -> InvalidInput:
    return InvalidInput(f"key id {EPC_KEYID:#x} is the EPC's: only the SGX engine encrypts with it")
