"""The kernel's EPC reclaimer: oversubscription as Linux's SGX driver does it.

When an allocation would take the EPC's last free page, the reclaimer evicts pages of
the loaded enclaves (``sgx_reclaim_pages``): EBLOCK, ETRACK and EWB each into its
enclave's backing store, sealed by the CPU with a version kept in a version-array slot
(``shared/reference/sim.md`` 3.8). The last free page is kept back so that an eviction can
make a VA page. A later access to an evicted page faults; the device's fault path
(``SgxEnclaveDevice.enter``, ``sgx_vma_fault``) loads it back with ELDU and resumes the
thread, so enclaves run unaware of it.

Which pages go is Linux's second-chance choice: pages queue in the order they came into
the EPC (``sgx_active_page_list``); the head page goes unless its PTE's accessed bit is
set (``sgx_reclaimer_age``), in which case the bit is cleared and the page goes to the
tail. The simulated CPU's page tables are its TLB-fill callback, so the accessed bit is
set when a translation is filled and clearing it drops the TLB (``ptep_clear_flush_young``):
the next access fills again and sets it. Nothing is added to the run path but that mark
on a TLB fill, which a run without EPC pressure rarely makes.

One simplification, named here: a thread's TCS and SSA frames stay resident, since the
model does not restart EENTER after a fault on them as the kernel does.
"""

from __future__ import annotations

import weakref
from collections.abc import Container
from dataclasses import dataclass
from typing import Protocol

from hwsim._exec import PF, Fault
from hwsim.sgx._encls import EPa, ERemove, encls
from hwsim.sgx.arch import PAGE_SIZE, PageType, Tcs
from hwsim.sgx.epc import Enclave, Epc
from hwsim.sgx.errors import SgxError

__all__ = [
    "VA_SLOTS", "EpcStats", "Reclaimer", "VersionArrays", "evicted_fault", "pinned_offsets",
    "reclaimer_of",
]  # fmt: skip

VA_SLOTS = PAGE_SIZE // 8  # versions one VA page holds (SGX_VA_SLOT_COUNT)
_BATCH = 16  # pages scanned per pass, Linux's SGX_NR_TO_SCAN
_PRESENT = 1  # #PF error code bit 0: the page was present

_Key = tuple[int, int, int]  # (enclave id, linear address, EPC index): one page's stay


@dataclass
class EpcStats:
    """One enclave's EPC traffic: pages added (EADD, EAUG), evicted (EWB), reloaded (ELDU)."""

    added: int = 0
    evicted: int = 0
    reloaded: int = 0

    def as_json(self) -> dict[str, int]:
        return {"added": self.added, "evicted": self.evicted, "reloaded": self.reloaded}


class Reclaimable(Protocol):
    """What the reclaimer needs of a device (``SgxEnclaveDevice``)."""

    @property
    def resident(self) -> Enclave | None: ...

    def evictable(self, offset: int) -> bool: ...

    def young(self, offset: int) -> bool: ...

    def evict(self, offset: int) -> None: ...


class Reclaimer:
    """The EPC's reclaimer: the devices whose enclaves' pages it may evict, and the
    queue of their pages in the order the second-chance scan visits them."""

    def __init__(self, epc: Epc) -> None:
        self.epc = epc
        self._devices: weakref.WeakSet[Reclaimable] = weakref.WeakSet()
        self._queue: dict[_Key, None] = {}  # oldest first (a dict keeps insertion order)
        self._busy = False

    def attach(self, device: Reclaimable) -> None:
        self._devices.add(device)

    def detach(self, device: Reclaimable) -> None:
        self._devices.discard(device)

    def __call__(self) -> None:
        """Evict the pages not accessed lately among the next few of the queue (called by
        ``Epc.alloc``)."""
        if self._busy:  # an eviction's own VA page takes the page kept back
            return
        self._busy = True
        try:
            self._evict(min(_BATCH, max(1, self.epc.npages // 4)))
        finally:
            self._busy = False

    def _evict(self, scan: int) -> None:
        """Scan ``scan`` pages from the head, evicting the old ones; scan on while none
        could go. Two laps at most: a page young on the first is old on the second."""
        pages = self._reclaimable()
        self._sync(pages)
        evicted = 0
        for scanned in range(2 * len(self._queue)):
            if (evicted and scanned >= scan) or not self._queue:
                return
            key = next(iter(self._queue))
            del self._queue[key]
            device, offset = pages[key]
            if device.young(offset):
                self._queue[key] = None  # second chance: to the tail
            else:
                device.evict(offset)
                evicted += 1

    def _sync(self, pages: dict[_Key, tuple[Reclaimable, int]]) -> None:
        """Drop pages that left the EPC; queue newcomers at the tail, oldest first."""
        self._queue = {key: None for key in self._queue if key in pages}
        stamps = self.epc.stamps
        for key in sorted(pages.keys() - self._queue.keys(), key=lambda k: stamps.get(k[2], 0)):
            self._queue[key] = None

    def _reclaimable(self) -> dict[_Key, tuple[Reclaimable, int]]:
        found = {}
        for device in list(self._devices):
            enclave = device.resident
            if enclave is None or enclave.active_threads:
                continue
            base = enclave.secs.baseaddr
            for linaddr, index in enclave.pages.items():
                if device.evictable(linaddr - base) and _plain_reg(self.epc, index):
                    found[enclave.eid, linaddr, index] = (device, linaddr - base)
        return found


def _plain_reg(epc: Epc, index: int) -> bool:
    entry = epc.epcm.get(index)
    return (
        entry is not None
        and entry.page_type == PageType.REG
        and not (entry.blocked or entry.pending or entry.modified)
    )


def reclaimer_of(epc: Epc) -> Reclaimer:
    """The reclaimer of ``epc``, installed as its allocation hook on first use."""
    found = epc.reclaim
    if not isinstance(found, Reclaimer):
        found = Reclaimer(epc)
        epc.reclaim = found
    return found


class VersionArrays:
    """One enclave's VA pages (Linux's ``encl->va_pages``): a slot for each evicted page's
    version. A new VA page is made (EPA, in the EPC like any page) when every slot is
    taken, and removed (EREMOVE) when its last slot is given back by ELDU."""

    def __init__(self, epc: Epc) -> None:
        self.epc = epc
        self._free: dict[int, list[int]] = {}  # VA page -> its free slots, lowest last

    @property
    def pages(self) -> list[int]:
        """The EPC indices of the VA pages, oldest first."""
        return list(self._free)

    def take(self) -> tuple[int, int]:
        """A free (VA page, slot), making a VA page when all are full."""
        for va, free in self._free.items():
            if free:
                return va, free.pop()
        va = self.epc.alloc()
        try:
            encls(self.epc, EPa(va))
        except SgxError:
            self.epc.release(va)
            raise
        self._free[va] = list(range(VA_SLOTS - 1, 0, -1))
        return va, 0

    def give_back(self, va: int, slot: int) -> None:
        """A slot ELDU cleared is free again; an empty VA page leaves the EPC."""
        free = self._free[va]
        free.append(slot)
        if len(free) == VA_SLOTS:
            del self._free[va]
            encls(self.epc, ERemove(va))

    def close(self) -> None:
        for va in self._free:
            encls(self.epc, ERemove(va))
        self._free.clear()


def pinned_offsets(tcs_offset: int, tcs_page: bytes, frame_pages: int) -> set[int]:
    """Page offsets a TCS keeps resident: itself and its SSA frames."""
    tcs = Tcs.unpack(tcs_page)
    ssa = range(tcs.ossa, tcs.ossa + tcs.nssa * frame_pages * PAGE_SIZE, PAGE_SIZE)
    return {tcs_offset, *ssa}


def evicted_fault(fault: Fault | None, base: int, evicted: Container[int]) -> int | None:
    """The enclave offset of an evicted page a not-present #PF was for, if it was one."""
    if fault is None or fault.vector != PF or fault.error_code & _PRESENT:
        return None
    if fault.address is None:
        return None
    offset = (fault.address & ~(PAGE_SIZE - 1)) - base
    return offset if offset in evicted else None
