"""Where SEV guests' memory is, and which of it each guest maps private (C-bit set).

The hypervisor knows a guest's memory through its nested page table (guest physical ->
system physical, :class:`~hwsim.sev.kvm.VmRecord`); whether a guest page is private or
shared is the guest's own choice, the C-bit in its page tables
(``shared/reference/sim.md`` 4.2). :class:`GuestMemory` walks those tables once, through
the guest's key as the hardware does (tables are always private), and answers per
address. A guest that has not run yet has no tables: its memory is all private, as its
first instructions see it. A page no table maps is taken as private too (instruction
fetches and table walks are private); a page the guest maps shared anywhere is shared.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hwsim.memory import PAGE_SIZE
from memcrypt.errors import InvalidInput

if TYPE_CHECKING:
    from hwsim.machine import Transaction
    from hwsim.sev.kvm import SevVm

__all__ = ["GuestMemory", "guests_of"]

_P, _PS = 0x1, 0x80
_MAX_TABLES = 4096  # page-table pages walked per guest (a 4-level tree can be far larger)


@dataclass
class GuestMemory:
    """One running SEV guest's memory as the map and the views need it."""

    vm: SevVm
    asid: int
    cbit: int
    _shared: list[tuple[int, int]] = field(default_factory=list)  # sorted GPA ranges
    _walked: bool = False

    @property
    def owner(self) -> str:
        r = self.vm.record
        return f"guest {r.handle} {r.name!r} (ASID {self.asid})"

    def pages(self) -> list[int]:
        """The system physical pages of the guest's RAM and firmware flash."""
        r = self.vm.record
        return list(range(r.spa // PAGE_SIZE, (r.spa + r.span) // PAGE_SIZE))

    def gpa_of(self, spa: int) -> int:
        """The guest physical address the nested page table maps to ``spa``."""
        r = self.vm.record
        page, offset = divmod(spa, PAGE_SIZE)
        for gfn, spfn in sorted(r.npt_overrides.items()):
            if spfn == page:
                return gfn * PAGE_SIZE + offset
        lo = spa - r.spa
        gpa = lo if lo < r.memory_size else r.flash_gpa + lo - r.memory_size
        if 0 <= lo < r.span and r.npt(gpa) == spa:
            return gpa
        raise InvalidInput(f"{spa:#x} is not mapped into {self.owner}")

    def private(self, spa: int) -> bool:
        """Does the guest reach ``spa`` through its key (C-bit set)?"""
        gpa = self.gpa_of(spa)
        self._walk()
        i = bisect.bisect_right(self._shared, (gpa, 1 << 64)) - 1
        return not (i >= 0 and self._shared[i][0] <= gpa < self._shared[i][1])

    def keyid_at(self, spa: int) -> int | None:
        return self.asid if self.private(spa) else None

    def _walk(self) -> None:
        if self._walked:
            return
        self._walked = True
        cr3 = self.vm.record.vcpu.get("cr3")
        if cr3 is None:
            return  # not run yet: no page tables, all private
        mask = ((1 << self.cbit) - 1) & ~0xFFF & ((1 << 52) - 1)
        leaves: list[tuple[int, int, bool]] = []
        self._tables(cr3 & mask, 4, mask, leaves, [0])
        for gpa, size, private in sorted(leaves):
            last = self._shared[-1] if self._shared else None
            if private:
                continue
            if last and last[1] >= gpa:
                self._shared[-1] = (last[0], max(last[1], gpa + size))
            else:
                self._shared.append((gpa, gpa + size))

    def _tables(
        self, table: int, level: int, mask: int, out: list[tuple[int, int, bool]], count: list[int]
    ) -> None:
        count[0] += 1
        spa = self.vm.record.npt(table)
        if spa is None or count[0] > _MAX_TABLES:
            return
        raw = self.vm.dev.memory.read(spa, PAGE_SIZE, self.asid)  # tables are private
        shift = 12 + 9 * (level - 1)
        for entry in struct.unpack("<512Q", raw):
            if not entry & _P:
                continue
            base = entry & mask
            if level == 1 or (level in (2, 3) and entry & _PS):
                out.append((base & ~((1 << shift) - 1), 1 << shift, bool(entry >> self.cbit & 1)))
            else:
                self._tables(base, level - 1, mask, out, count)


def guests_of(txn: Transaction) -> list[GuestMemory]:
    """The machine's SEV guests that hold a key (an ASID); none without SEV."""
    from hwsim.sev.device import SevDevice, SevUnavailable
    from hwsim.sev.kvm import SevVm

    try:
        dev = SevDevice(txn)
    except SevUnavailable:
        return []
    found = []
    for vm in SevVm.all(dev):
        asid = vm.status().asid
        if asid:
            found.append(GuestMemory(vm, asid, txn.profile.cbit))
    return found
