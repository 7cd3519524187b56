"""The kernel's EPC reclaimer: oversubscription as Linux's SGX driver does it.

When an allocation would take the EPC's last free page, the reclaimer evicts the least
recently used pages of the loaded enclaves (``sgx_reclaim_pages``): EBLOCK, ETRACK and
EWB each into its enclave's backing store, sealed by the CPU with a version kept in a
version-array slot (``shared/reference/sim.md`` 3.8). The last free page is kept back so
that an enclave's first eviction can make its VA page. A later access to an evicted page
faults; the device's fault path (``SgxEnclaveDevice.enter``, ``sgx_vma_fault``) loads it
back with ELDU and resumes the thread, so enclaves run unaware of it.

Two simplifications, both named here: recency is the last time a page was written or
loaded into the EPC (the simulator keeps no accessed bits, which Linux ages), and a
thread's TCS and SSA frames stay resident, since the model does not restart EENTER after
a fault on them as the kernel does.
"""

from __future__ import annotations

import heapq
import weakref
from collections.abc import Container
from dataclasses import dataclass
from typing import Protocol

from hwsim._exec import PF, Fault
from hwsim.sgx.arch import PAGE_SIZE, PageType, Tcs
from hwsim.sgx.epc import Enclave, Epc

__all__ = ["EpcStats", "Reclaimer", "evicted_fault", "pinned_offsets", "reclaimer_of"]

_BATCH = 16  # pages evicted per pass, Linux's SGX_NR_TO_SCAN
_PRESENT = 1  # #PF error code bit 0: the page was present


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

    def evict(self, offset: int) -> None: ...


class Reclaimer:
    """The EPC's reclaimer: the devices whose enclaves' pages it may evict."""

    def __init__(self, epc: Epc) -> None:
        self.epc = epc
        self._devices: weakref.WeakSet[Reclaimable] = weakref.WeakSet()
        self._busy = False

    def attach(self, device: Reclaimable) -> None:
        self._devices.add(device)

    def detach(self, device: Reclaimable) -> None:
        self._devices.discard(device)

    def __call__(self) -> None:
        """Evict a batch of least recently used pages (called by ``Epc.alloc``)."""
        if self._busy:  # an eviction's own VA page takes the page kept back
            return
        self._busy = True
        try:
            count = min(_BATCH, max(1, self.epc.npages // 4))
            for _stamp, _n, device, offset in heapq.nsmallest(count, self._candidates()):
                device.evict(offset)
        finally:
            self._busy = False

    def _candidates(self) -> list[tuple[int, int, Reclaimable, int]]:
        found = []
        stamps = self.epc.stamps
        for n, device in enumerate(list(self._devices)):
            enclave = device.resident
            if enclave is None or enclave.active_threads:
                continue
            base = enclave.secs.baseaddr
            for linaddr, index in enclave.pages.items():
                if device.evictable(linaddr - base) and _plain_reg(self.epc, index):
                    found.append((stamps.get(index, 0), n, device, linaddr - base))
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
