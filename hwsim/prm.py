"""Processor Reserved Memory: the EPC's DRAM, held by the process that loaded the enclaves.

At power-on the BIOS reserves the PRM (PRMRR): the EPC pages and, on a part whose EPC
engine has integrity (SGX1's MEE), the engine's metadata right after them (one MAC per
EPC page here). The PRM is part of the machine's one physical address space and is read
through the same physical view as the rest of DRAM (``MemoryEngine.physical_read``); it
differs in lifetime only. Enclaves are volatile (DESIGN.md), so the PRM's contents are
held in memory by the process that loaded them, for the boot whose EPC key encrypts
them, while the rest of DRAM lives in state.db. A power cycle loads a new EPC key and
with it a new, empty PRM.

Only the CPU package (:meth:`PrmRegion.load` and :meth:`PrmRegion.store`, used by the
EPC) sees plaintext. The DIMM side (:meth:`PrmRegion.dimm_page`, :meth:`PrmRegion.dimm_write`)
is what a probe on the memory bus reads and writes. Host software never reaches either:
the memory engine gives it the abort page. A page never written holds the engine's
encryption of zeros, as if the PRM had been initialised at power-on.
"""

from __future__ import annotations

import struct
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from hwsim._pagecrypt import PAGE_SIZE, TAG_SIZE, MeeCipher, xts_cipher
from hwsim.errors import HwsimError
from hwsim.profiles import EpcEngine, Profile

__all__ = ["MachineCheck", "PrmMap", "PrmRegion", "prm_region"]

_ZERO_PAGE = bytes(PAGE_SIZE)
_TAGS_PER_PAGE = PAGE_SIZE // TAG_SIZE
MC = 18  # machine-check exception vector (SDM vol. 3A 6.3.1)


class MachineCheck(HwsimError):
    """The MEE found EPC memory altered or replayed; the memory controller is locked.

    SGX1's MEE answers an integrity failure with "drop and lock": the line is not
    returned and the memory controller refuses every further access until a reset.
    """

    vector = MC

    def __init__(self, paddr: int) -> None:
        super().__init__(
            f"machine check: the EPC integrity check failed at {paddr:#x} (ciphertext or "
            "MAC altered or replayed in DRAM); the memory controller is locked until the "
            "next power cycle",
            hint="power-cycle the machine: hwsim power-cycle",
        )
        self.paddr = paddr


@dataclass(frozen=True)
class PrmMap:
    """Where the PRM is: ``epc_pages`` EPC pages from ``base``, then the engine's MACs."""

    base: int
    epc_pages: int
    engine: EpcEngine

    @classmethod
    def at_boot(cls, profile: Profile, epc_size: int) -> PrmMap:
        """The PRM the BIOS reserves at power-on for an EPC of ``epc_size`` bytes."""
        return cls(profile.epc_base, epc_size // PAGE_SIZE, profile.epc_engine)

    @property
    def meta_base(self) -> int:
        return self.base + self.epc_pages * PAGE_SIZE

    @property
    def end(self) -> int:
        meta = self.epc_pages * TAG_SIZE if self.engine.integrity else 0
        return self.meta_base + -(-meta // PAGE_SIZE) * PAGE_SIZE

    def pack(self) -> bytes:
        return struct.pack("<QQ", self.base, self.epc_pages) + self.engine.value.encode()

    @classmethod
    def unpack(cls, raw: bytes) -> PrmMap:
        try:
            base, pages = struct.unpack_from("<QQ", raw)
            engine = EpcEngine(raw[16:].decode("ascii"))
        except (struct.error, ValueError) as exc:
            raise HwsimError(f"state.db: the PRM record is corrupt ({exc})") from None
        if base % PAGE_SIZE:
            raise HwsimError(f"state.db: the PRM record is corrupt (base {base:#x})")
        return cls(base, pages, engine)


class PrmRegion(ABC):
    """The contents of one boot's PRM in this process, with its EPC engine."""

    def __init__(self, prm: PrmMap) -> None:
        self.map = prm
        self.first_page = prm.base // PAGE_SIZE  # physical page number of EPC page 0
        self._lines: dict[int, bytes] = {}  # EPC page index -> ciphertext on the DIMM
        self._stored: set[int] = set()  # EPC pages the CPU has written since power-on
        # Called with an EPC page index when a DIMM write changed what backs it, so that
        # copies inside the package are dropped and the CPU's next read sees DRAM.
        self.listeners: list[Callable[[int], None]] = []

    # -- inside the package -------------------------------------------------------------

    @abstractmethod
    def load(self, index: int) -> bytes:
        """The plaintext of EPC page ``index`` as the engine decrypts it for the CPU."""

    @abstractmethod
    def store(self, index: int, plain: bytes) -> None:
        """Encrypt ``plain`` into EPC page ``index`` in DRAM."""

    # -- the DIMMs -----------------------------------------------------------------------

    def dimm_page(self, page: int) -> bytes:
        """What is on the DIMM at physical page ``page`` (inside the PRM)."""
        index = page - self.first_page
        line = self._lines.get(index)
        return self._zero_line(index) if line is None else line

    def dimm_write(self, page: int, data: bytes) -> None:
        """A probe writes the whole physical page ``page`` (inside the PRM)."""
        index = page - self.first_page
        self._lines[index] = bytes(data)
        self._changed(index)

    @abstractmethod
    def _zero_line(self, index: int) -> bytes:
        """The ciphertext of a never-written page (the PRM's state at power-on)."""

    def _changed(self, index: int) -> None:
        for listener in self.listeners:
            listener(index)

    def paddr(self, index: int) -> int:
        return self.map.base + index * PAGE_SIZE

    def written_pages(self) -> int:
        """How many EPC pages hold data the CPU stored (in this process) since power-on."""
        return len(self._stored)


class _XtsRegion(PrmRegion):
    """TME-MK's AES-XTS: the same engine as SME and SEV pages, under the EPC key."""

    def __init__(self, prm: PrmMap, key: bytes) -> None:
        super().__init__(prm)
        self._cipher = xts_cipher(key)

    def load(self, index: int) -> bytes:
        line = self._lines.get(index)
        if line is None:
            return _ZERO_PAGE
        return self._cipher.decrypt(self.first_page + index, line, remember=False)

    def store(self, index: int, plain: bytes) -> None:
        self._lines[index] = self._cipher.encrypt(self.first_page + index, plain, remember=False)
        self._stored.add(index)

    def _zero_line(self, index: int) -> bytes:
        return self._cipher.encrypt(self.first_page + index, _ZERO_PAGE, remember=False)


class _MeeRegion(PrmRegion):
    """SGX1's MEE: a MAC per page in the PRM's metadata, versions inside the package."""

    def __init__(self, prm: PrmMap, key: bytes) -> None:
        super().__init__(prm)
        self._cipher = MeeCipher(key)
        self._tags: dict[int, bytes] = {}
        self._versions: dict[int, int] = {}  # the counter tree, rooted on the die
        self._meta_first = prm.meta_base // PAGE_SIZE
        self._locked: MachineCheck | None = None

    def load(self, index: int) -> bytes:
        self._check_unlocked()
        if index not in self._lines and index not in self._tags:
            return _ZERO_PAGE
        page = self.first_page + index
        line, tag = self._line_and_tag(index)
        plain = self._cipher.open(page, self._versions.get(index, 0), line, tag)
        if plain is None:
            self._locked = MachineCheck(self.paddr(index))
            raise self._locked
        return plain

    def store(self, index: int, plain: bytes) -> None:
        self._check_unlocked()
        version = self._versions.get(index, 0) + 1
        line, tag = self._cipher.seal(self.first_page + index, version, plain)
        self._lines[index], self._tags[index], self._versions[index] = line, tag, version
        self._stored.add(index)

    def dimm_page(self, page: int) -> bytes:
        if page < self._meta_first:
            return super().dimm_page(page)
        tags = [self._line_and_tag(i)[1] for i in self._tag_span(page)]
        return b"".join(tags).ljust(PAGE_SIZE, b"\0")

    def dimm_write(self, page: int, data: bytes) -> None:
        # A page never written gets its zero line and MAC first, so that the half the
        # probe did not write keeps what the DIMM held.
        if page < self._meta_first:
            self._line_and_tag(page - self.first_page)
            super().dimm_write(page, data)
            return
        for n, index in enumerate(self._tag_span(page)):
            tag = bytes(data[n * TAG_SIZE : (n + 1) * TAG_SIZE])
            if tag != self._line_and_tag(index)[1]:
                self._tags[index] = tag
                self._changed(index)

    def _tag_span(self, page: int) -> range:
        first = (page - self._meta_first) * _TAGS_PER_PAGE
        return range(first, min(first + _TAGS_PER_PAGE, self.map.epc_pages))

    def _line_and_tag(self, index: int) -> tuple[bytes, bytes]:
        """The page's ciphertext and MAC on the DIMM; a page never written gets those of
        the zero page at version 0 (kept, so each is computed once)."""
        line, tag = self._lines.get(index), self._tags.get(index)
        if line is None or tag is None:
            zero_line, zero_tag = self._cipher.seal(self.first_page + index, 0, _ZERO_PAGE)
            line = self._lines[index] = line or zero_line
            tag = self._tags[index] = tag or zero_tag
        return line, tag

    def _zero_line(self, index: int) -> bytes:
        return self._line_and_tag(index)[0]

    def _check_unlocked(self) -> None:
        if self._locked is not None:
            raise self._locked


_REGIONS: weakref.WeakValueDictionary[bytes, PrmRegion] = weakref.WeakValueDictionary()
_REGIONS_LOCK = threading.Lock()


def prm_region(prm: PrmMap, key: bytes) -> PrmRegion:
    """The PRM held in this process for the boot whose EPC key slot holds ``key``.

    The key is made anew at every power-on, so it names one boot of one machine. Whoever
    loaded an enclave (the EPC) keeps the region alive; without one, the region is made
    afresh on each use and holds only the initial encrypted zeros.
    """
    with _REGIONS_LOCK:
        found = _REGIONS.get(key)
        if found is None or found.map != prm:
            engine = _MeeRegion if prm.engine.integrity else _XtsRegion
            found = _REGIONS[key] = engine(prm, key)
        return found
