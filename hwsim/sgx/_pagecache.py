"""The plaintext page cache inside the simulated CPU package.

On hardware an enclave's data is plaintext only inside the processor package; in DRAM it
is ciphertext under the EPC key (``shared/reference/sim.md`` 3.9). Here the package's
copies live in Unicorn RAM, one 4 KiB slot per EPC page the enclave touched: a page is
decrypted into its slot on first touch (or when the EPC copy changed underneath), and at
every exit the pages the enclave could have written go back through the EPC's encryption
when their plaintext changed, so DRAM is always current and an unchanged call encrypts
nothing. Nothing here grows with the enclave's size, only with the pages it touches.

The window is physical memory of the simulated CPU only: no host path translates to it
(:mod:`hwsim.sgx._run` checks every host access), as no host load reaches a real CPU's caches.
"""

from __future__ import annotations

from hwsim._exec import PAGE, Cpu
from hwsim.sgx.epc import Epc

__all__ = ["PageCache"]

_BASE = 0x40_0000_0000  # physical window of the cache in the CPU's address space
_CHUNK = 1024  # slots mapped at a time as the cache grows


class PageCache:
    """Slots of plaintext EPC pages for one :class:`Cpu`, with write-back to the EPC."""

    def __init__(self, cpu: Cpu, epc: Epc) -> None:
        self.cpu = cpu
        self.epc = epc
        self.writable: set[int] = set()  # pages the TLB may hold writable (since a flush)
        self._slots: dict[int, int] = {}  # EPC index -> slot
        self._stamps: dict[int, int | None] = {}  # EPC index -> EPC stamp when loaded
        self._clean: dict[int, bytes] = {}  # plaintext as last loaded or written back
        self._chunks: list[memoryview] = []
        self._seen: int | None = None  # EPC generation the TLB was last valid for

    def load(self, index: int) -> int:
        """The physical address of ``index``'s plaintext, filled from the EPC when stale."""
        slot = self._slots.get(index)
        stamp = self.epc.stamps.get(index)
        if slot is None:
            if len(self._slots) == len(self._chunks) * _CHUNK:
                paddr = _BASE + len(self._chunks) * _CHUNK * PAGE
                self._chunks.append(self.cpu.map_buffer(paddr, _CHUNK * PAGE))
            slot = self._slots[index] = len(self._slots)
        elif stamp is not None and self._stamps.get(index) == stamp:
            return _BASE + slot * PAGE
        plain = self.epc.read(index)
        self.cpu.write_phys(_BASE + slot * PAGE, plain)  # also drops code translated from it
        self._stamps[index] = stamp
        self._clean[index] = plain
        return _BASE + slot * PAGE

    def view(self, index: int) -> memoryview:
        """The cached plaintext of a loaded page, read without a Unicorn call."""
        chunk, slot = divmod(self._slots[index], _CHUNK)
        return self._chunks[chunk][slot * PAGE : (slot + 1) * PAGE]

    def write_back(self) -> None:
        """Writable pages whose plaintext changed go back to the EPC, encrypted."""
        for index in self.writable:
            plain = self.view(index).tobytes()  # compares by memcmp, unlike a memoryview
            if plain != self._clean.get(index):
                self.epc.write(index, plain)
                self._clean[index] = plain
                self._stamps[index] = self.epc.stamps.get(index)

    def flush(self) -> None:
        """Flush the CPU's TLB; the pages it let the enclave write are written back first."""
        self.write_back()
        self.cpu.flush_tlb()
        self.writable.clear()

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
        """At exit: DRAM gets every change; remember the EPC generation we leave behind."""
        self.write_back()
        self._seen = self.epc.generation
