"""The plaintext page cache inside the simulated CPU package.

On hardware an enclave's data is plaintext only inside the processor package; in DRAM it
is ciphertext under the EPC key (``shared/reference/sim.md`` 3.9). Here the package's
copies live in Unicorn RAM, one 4 KiB slot per EPC page the enclave touched: a page is
decrypted into its slot on first touch (or when the EPC copy changed underneath), and at
every exit the pages the enclave wrote go back through the EPC's encryption when their
plaintext changed, so DRAM is always current and an unchanged call encrypts nothing.
Nothing here grows with the enclave's size, only with the pages it touches.

Which pages were written is known from the TLB: a page is filled read-only until its
first store, which refills it writable and makes it a write-back candidate. Unicorn 2.1.4
cannot take the write right back from one page (its only TLB control flushes all of it,
and a refill costs a Python callback, about 5 us), so a candidate stays one until the
TLB is flushed. Pages that stay clean exit after exit cost a compare each; when those
compares have cost as much as refilling the TLB would, :meth:`leave` flushes it and the
candidates start again from the pages written after that (a ski-rental rule: never more
than twice the cheaper choice). An Intel tRTS that zeroes its whole heap once thus stops
paying for those pages a few calls later.

The window is physical memory of the simulated CPU only: no host path translates to it
(:mod:`hwsim.sgx._run` checks every host access), as no host load reaches a real CPU's caches.
"""

from __future__ import annotations

from hwsim._exec import PAGE, Cpu
from hwsim.sgx.epc import Epc

__all__ = ["PageCache"]

_BASE = 0x40_0000_0000  # physical window of the cache in the CPU's address space
_CHUNK = 1024  # slots mapped at a time as the cache grows
_W = 0x2  # UC_PROT_WRITE, SecinfoFlag.W
# What one TLB refill costs in clean-page compares (measured: about 5 us against 0.3-0.5 us;
# the rule stays within twice the better choice for any ratio near this one).
_REFILL_COST = 20


class PageCache:
    """Slots of plaintext EPC pages for one :class:`Cpu`, with write-back to the EPC."""

    def __init__(self, cpu: Cpu, epc: Epc) -> None:
        self.cpu = cpu
        self.epc = epc
        self.written: set[int] = set()  # pages the TLB holds writable: written since a flush
        self._slots: dict[int, int] = {}  # EPC index -> slot
        self._views: dict[int, memoryview] = {}  # EPC index -> its slot's bytes
        self._stamps: dict[int, int | None] = {}  # EPC index -> EPC stamp when loaded
        self._clean: dict[int, bytes] = {}  # plaintext as last loaded or written back
        self._chunks: list[memoryview] = []
        self._seen: int | None = None  # EPC generation the TLB was last valid for
        self._fills = 0  # TLB fills since the last flush: what a flush makes us redo
        self._idle = 0  # compares that found a candidate clean, since the last flush

    def tlb_entry(self, index: int, perms: int, write: bool) -> tuple[int, int]:
        """A TLB fill for EPC page ``index`` that the EPCM allows ``perms``: its slot, and
        the rights to cache. Until the page's first store the entry is read-only, so that
        the store refills it and the page becomes a write-back candidate."""
        self._fills += 1
        if write:
            self.written.add(index)
        elif index not in self.written:
            perms &= ~_W
        return self.load(index), perms

    def store(self, index: int) -> int:
        """The slot of ``index`` for a store made by the CPU itself (an ENCLU operand)."""
        self.written.add(index)
        return self.load(index)

    def load(self, index: int) -> int:
        """The physical address of ``index``'s plaintext, filled from the EPC when stale."""
        slot = self._slots.get(index)
        stamp = self.epc.stamps.get(index)
        if slot is None:
            if len(self._slots) == len(self._chunks) * _CHUNK:
                paddr = _BASE + len(self._chunks) * _CHUNK * PAGE
                self._chunks.append(self.cpu.map_buffer(paddr, _CHUNK * PAGE))
            slot = self._slots[index] = len(self._slots)
            chunk, at = divmod(slot, _CHUNK)
            self._views[index] = self._chunks[chunk][at * PAGE : (at + 1) * PAGE]
        elif stamp is not None and self._stamps.get(index) == stamp:
            return _BASE + slot * PAGE
        plain = self.epc.read(index)
        self.cpu.write_phys(_BASE + slot * PAGE, plain)  # also drops code translated from it
        self._stamps[index] = stamp
        self._clean[index] = plain
        return _BASE + slot * PAGE

    def loaded(self, index: int) -> memoryview | None:
        """The slot of ``index`` as it is now (None if never loaded), without a Unicorn call."""
        return self._views.get(index)

    def write_back(self) -> None:
        """Written pages whose plaintext changed go back to the EPC, encrypted."""
        views, clean, idle = self._views, self._clean, 0
        for index in self.written:
            plain = views[index].tobytes()  # compares by memcmp, unlike a memoryview
            if plain == clean[index]:
                idle += 1
                continue
            self.epc.write(index, plain)
            clean[index] = plain
            self._stamps[index] = self.epc.stamps.get(index)
        self._idle += idle

    def flush(self) -> None:
        """Flush the CPU's TLB; the pages it let the enclave write are written back first."""
        self.write_back()
        self._flush_tlb()

    def forget_tlb(self) -> None:
        """Flush now, and again at the next entry (the TLB held the other mode's view)."""
        self.flush()
        self._seen = None

    def enter(self) -> None:
        """At entry: keep the TLB only if no ENCLS leaf or foreign write touched the EPC
        since our last exit; then every cached translation is still what the EPCM allows
        (and this CPU ran no host code in between)."""
        if self.epc.generation != self._seen:
            self.flush()
            self._refresh()

    def _refresh(self) -> None:
        """Refill slots whose EPC page changed underneath (EDBGWR, ELDU into a reused
        index) before code runs, and drop code translated from the old contents: a
        debugger's int3 written with EDBGWR must trap on the next call."""
        stale = [i for i, s in self._stamps.items() if self.epc.stamps.get(i) != s]
        for index in stale:
            self.load(index)
        if stale:
            self.cpu.flush_code()

    def leave(self) -> None:
        """At exit: DRAM gets every change; remember the EPC generation we leave behind.
        When clean candidates have cost as many compares as a refill of the TLB would,
        flush it: the next entry's stores name the pages written from then on."""
        self.write_back()
        if self._idle > _REFILL_COST * self._fills:
            self._flush_tlb()
        self._seen = self.epc.generation

    def _flush_tlb(self) -> None:
        self.cpu.flush_tlb()
        self.written.clear()
        self._fills = self._idle = 0
