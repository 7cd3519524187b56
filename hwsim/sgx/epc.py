"""The Enclave Page Cache: EPC pages, their EPCM entries, and the enclaves that own them.

The EPC is a region of the machine's one physical memory, the PRM
(:class:`hwsim.prm.PrmRegion`): inside the CPU package an EPC page is plaintext; in DRAM
it is ciphertext under the EPC key the machine loads into the memory engine's
``EPC_KEYID`` slot at every boot, tweaked by the page's physical address (TME-MK AES-XTS
on Ice Lake Xeon, SGX1's MEE with integrity and freshness; ``sim.md`` 3.9). The physical
view of the machine (``Transaction.physical_read``) reads that ciphertext at the page's
address. :meth:`Epc.read` and :meth:`Epc.write` are the CPU-internal path through the
engine.

Software outside the enclave gets abort-page semantics on EPC addresses: reads return all
ones and writes are dropped (Dave Hansen on LKML, ``sim.md`` 3.2).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hwsim.prm import PrmRegion
from hwsim.sgx.arch import PAGE_SIZE, AttributeFlag, PageType, Secs
from hwsim.sgx.errors import GP, PF, SgxFault

if TYPE_CHECKING:
    from hwsim.profiles import Profile
    from hwsim.sgx.keys import EnclaveIdentity, KeyContext

__all__ = ["Enclave", "Epc", "EpcmEntry"]

ABORT_BYTE = 0xFF


@dataclass
class EpcmEntry:
    """One EPCM entry (SDM vol. 3D 38.5.1, table 38-27); an absent entry means VALID=0."""

    page_type: PageType
    secs: int  # EPC index of the owning enclave's SECS (its own index for a SECS page)
    linaddr: int = 0
    perms: int = 0  # SecinfoFlag R|W|X
    pending: bool = False
    modified: bool = False
    pr: bool = False
    blocked: bool = False
    block_epoch: int = 0

    def describe(self) -> str:
        rwx = "".join(c if self.perms & b else "-" for c, b in zip("rwx", (1, 2, 4), strict=True))
        states = [n for n in ("pending", "modified", "pr", "blocked") if getattr(self, n)]
        return f"{self.page_type.name} {rwx} {self.linaddr:#x} {' '.join(states)}".rstrip()


_EIDS = itertools.count(1)


@dataclass(eq=False)
class Enclave:
    """The control state the CPU keeps in and beside one enclave's SECS page.

    ``pages`` maps each linear page address in ELRANGE to its EPC page index; the
    execution core (EENTER/EEXIT/AEX) calls :meth:`enter` and :meth:`leave` so that EREMOVE
    and ETRACK see the threads inside.
    """

    epc: Epc
    secs_page: int
    secs: Secs
    eid: int = field(default_factory=lambda: next(_EIDS))
    identity: EnclaveIdentity | None = None
    pages: dict[int, int] = field(default_factory=dict)
    measurement: hashlib._Hash = field(default_factory=hashlib.sha256)
    active_threads: int = 0
    epoch: int = 0  # ETRACK epoch: bumped by every ETRACK
    track_outstanding: int = 0  # threads still inside from before the last ETRACK

    @property
    def initialized(self) -> bool:
        return self.identity is not None

    @property
    def debug(self) -> bool:
        return bool(self.secs.attributes_flags & AttributeFlag.DEBUG)

    @property
    def keys(self) -> KeyContext:
        return self.epc.keys

    def contains(self, linaddr: int) -> bool:
        return self.secs.baseaddr <= linaddr < self.secs.baseaddr + self.secs.size

    def page(self, linaddr: int) -> int:
        """The EPC index backing the page at ``linaddr``; #PF when nothing is there."""
        index = self.pages.get(linaddr & ~(PAGE_SIZE - 1))
        if index is None:
            raise SgxFault(PF, f"no EPC page at enclave address {linaddr:#x}")
        return index

    def enter(self) -> None:
        self.active_threads += 1

    def leave(self) -> None:
        self.active_threads -= 1
        if self.track_outstanding:
            self.track_outstanding -= 1


class Epc:
    """The EPC of one machine for one boot in this process: its PRM region, EPCM, enclaves."""

    def __init__(
        self,
        profile: Profile,
        region: PrmRegion,
        keys: KeyContext,
        read_le_hash: Callable[[], bytes],
    ) -> None:
        self.profile = profile
        self.region = region
        self.base = region.map.base
        self.npages = region.map.epc_pages
        self.keys = keys
        self.read_le_hash = read_le_hash  # IA32_SGXLEPUBKEYHASH0-3 of this processor
        # CR_BASE_PK, the key EWB seals evicted pages with, and the version counter that is
        # its nonce. Each process simulates the CPU afresh, so each gets its own random
        # key: a counter started anew under a shared key would repeat nonces across
        # processes, and AES-GCM's keystream with them.
        self.paging_key = os.urandom(16)
        self._version = 0
        # The last page decrypted or written, kept in plaintext "inside the package" (a
        # one-line cache), so that EADD then 16 EEXTENDs decrypt the page once, not 16 times.
        self._hot: tuple[int, bytes] = (-1, b"")
        # The execution core caches plaintext pages and TLB entries inside the "CPU
        # package"; these tell it when they went stale: ``stamps`` per page on every write
        # or release, ``generation`` on those and on every ENCLS leaf (EPCM changes).
        self.stamps: dict[int, int] = {}
        self._stamp = 0
        self.generation = 0
        self.epcm: dict[int, EpcmEntry] = {}
        self.enclaves: dict[int, Enclave] = {}
        self._next_free = 0
        self._freed: list[int] = []
        # The kernel's reclaimer (hwsim.sgx._reclaim), called when the last free page is
        # asked for, so that it can evict pages first; None: the EPC just fills up.
        self.reclaim: Callable[[], None] | None = None
        region.listeners.append(self._dimm_written)

    # -- allocation (the kernel's job; ENCLS leaves take the page it chose) ------------
    def alloc(self) -> int:
        """A free EPC page index, or :class:`SgxFault` when the EPC is full."""
        if self.reclaim is not None and self.free_pages() <= 1:
            self.reclaim()
        if self._freed:
            return self._freed.pop()
        if self._next_free >= self.npages:
            raise SgxFault(PF, f"the EPC is full ({self.npages} pages)")
        self._next_free += 1
        return self._next_free - 1

    def release(self, index: int) -> None:
        """Return a page whose EPCM entry is invalid to the free pool (its stale
        ciphertext stays in DRAM, as on hardware)."""
        if self._hot[0] == index:
            self._hot = (-1, b"")
        self.stamps.pop(index, None)
        self.generation += 1
        self._freed.append(index)

    def free_pages(self) -> int:
        return len(self._freed) + self.npages - self._next_free

    def used_pages(self) -> int:
        return len(self.epcm)

    def next_version(self) -> int:
        """A fresh, never-zero version for EWB (an internal counter; SDM EWB)."""
        self._version += 1
        return self._version

    # -- addressing --------------------------------------------------------------------
    def paddr(self, index: int) -> int:
        return self.base + index * PAGE_SIZE

    def contains(self, paddr: int) -> bool:
        return self.base <= paddr < self.base + self.npages * PAGE_SIZE

    def entry(self, index: int, what: str = "page") -> EpcmEntry:
        """The EPCM entry of a valid page; #PF when the page is not valid."""
        if not 0 <= index < self.npages:
            raise SgxFault(GP, f"{what} {index} is outside the EPC")
        found = self.epcm.get(index)
        if found is None:
            raise SgxFault(PF, f"{what} at {self.paddr(index):#x} is not a valid EPC page")
        return found

    def free_check(self, index: int) -> None:
        """#PF unless ``index`` is an EPC page whose EPCM entry is invalid (free)."""
        if not 0 <= index < self.npages:
            raise SgxFault(GP, f"page {index} is outside the EPC")
        if index in self.epcm:
            raise SgxFault(PF, f"EPC page at {self.paddr(index):#x} is already in use")

    def enclave_of(self, secs_page: int) -> Enclave:
        entry = self.entry(secs_page, "SECS")
        if entry.page_type != PageType.SECS:
            raise SgxFault(PF, f"EPC page at {self.paddr(secs_page):#x} is not a SECS")
        return self.enclaves[secs_page]

    # -- contents: CPU-internal plaintext view -------------------------------------------
    def read(self, index: int) -> bytes:
        """The plaintext of an EPC page as the CPU sees it inside the package."""
        if self._hot[0] == index:
            return self._hot[1]
        plain = self.region.load(index)
        self._hot = (index, plain)
        return plain

    def write(self, index: int, data: bytes) -> None:
        """Store a page's plaintext; it reaches DRAM encrypted."""
        if len(data) != PAGE_SIZE:
            raise SgxFault(GP, f"an EPC page is {PAGE_SIZE} bytes, not {len(data)}")
        plain = bytes(data)
        self.region.store(index, plain)
        self._hot = (index, plain)
        self._touch(index)

    def _touch(self, index: int) -> None:
        self._stamp += 1
        self.stamps[index] = self._stamp
        self.generation += 1

    def _dimm_written(self, index: int) -> None:
        """Something outside the package wrote the page's DRAM: drop the package's copies,
        so that the CPU's next read goes to DRAM (and the engine's checks)."""
        if self._hot[0] == index:
            self._hot = (-1, b"")
        if 0 <= index < self.npages:
            self._touch(index)

    # -- outside views -------------------------------------------------------------------
    def read_ciphertext(self, index: int) -> bytes:
        """What a physical DRAM probe reads from an EPC page: the ciphertext (the machine's
        physical view at :meth:`paddr` returns the same bytes)."""
        return self.region.dimm_page(self.paddr(index) // PAGE_SIZE)

    def host_read(self, paddr: int, length: int) -> bytes:
        """A non-enclave load from EPC: the abort page, all 0xFF."""
        self._check_range(paddr, length)
        return bytes([ABORT_BYTE]) * length

    def host_write(self, paddr: int, data: bytes) -> None:
        """A non-enclave store to EPC: silently dropped (abort-page semantics)."""
        self._check_range(paddr, len(data))

    def _check_range(self, paddr: int, length: int) -> None:
        if not (self.contains(paddr) and self.contains(paddr + max(length, 1) - 1)):
            raise SgxFault(GP, f"{paddr:#x}+{length} is not inside the EPC")
