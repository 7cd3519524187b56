"""Views of the machine's one physical memory, and its one memory map.

The same system physical address reads differently depending on who looks
(``shared/reference/sim.md`` 4.1, "What each observer sees"):

- ``physical``: the bytes on the DIMM, as a bus probe or a cold-boot attacker reads them:
  ciphertext for every page written through a key, the EPC's included
  (:meth:`Transaction.physical_read`);
- ``device``: what a DMA master reads through the memory controller. Devices have no
  C-bit, so SME pages are ciphertext to them; TSME is the controller's own and decrypts
  for them too; the PRM answers them with the abort page;
- ``host``: what host kernel (and hypervisor) code loads through its own page tables.
  Which pages carry the C-bit is the booted kernel's SME map
  (:func:`hwsim.sme.boot.mapping_at`), the one model of it: those go through the host
  key, the others are read as stored (so ciphertext shows as it is, as on hardware).
  The PRM is the abort page (all ones; writes dropped). Guest memory is mapped without
  the C-bit, so the hypervisor sees a guest's private pages as ciphertext (KVM's view,
  ``SevVm.host_read``);
- ``guest`` with an ASID: what that SEV guest reads at the guest physical address its
  nested page table maps to the system address: through its key where its own page
  tables set the C-bit (private), as stored where they clear it (shared).

:func:`memory_map` is the one memory map: the booted kernel's host ranges (encrypted or
decrypted, and why), the EPC and its engine's metadata, guests' memory with their key
ids, and any other host page in DRAM. ``hwsim mem map``, ``hwsim status``, ``sevtool
sme status`` and the attack lab all show this list. The ``*_in`` functions do the same
inside a transaction the caller holds (the attack lab's).
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hwsim._guestmap import GuestMemory, guests_of
from hwsim.memory import EPC_KEYID, HOST_KEYID, PAGE_SIZE
from hwsim.prm import PrmMap
from hwsim.sev.kvm import MAX_VCPUS
from hwsim.sme.boot import KernelBoot, MapEntry, booted_kernel, host_range, mapping_at
from hwsim.sme.boot import memory_map as kernel_map
from memcrypt.errors import InvalidInput

if TYPE_CHECKING:
    from hwsim.machine import Machine, Transaction

__all__ = [
    "MAP_COLUMNS",
    "MAX_VIEW",
    "VIEWS",
    "KeyUsage",
    "Region",
    "View",
    "dram_usage",
    "hex_lines",
    "map_in",
    "map_rows",
    "memory_map",
    "read_in",
    "read_view",
    "region_at",
    "region_in",
    "write_in",
    "write_view",
]

View = Literal["physical", "device", "host", "guest"]
VIEWS: tuple[View, ...] = ("physical", "device", "host", "guest")
MAX_VIEW = 16 << 20  # bytes one read or write may span
_KVM_PAGES = 1 + MAX_VCPUS  # after a guest's memory: KVM's debug bounce page and its VMSAs
_ABORT = b"\xff"


@dataclass(frozen=True)
class Region:
    """A range of system physical memory ``[start, end)``: what it is and its key id.

    ``kind`` is one of ``host-encrypted`` (the host key: C-bit or TSME),
    ``host-decrypted`` (SME is active but the kernel leaves it without the C-bit),
    ``host`` (no memory encryption for the host at this boot), ``epc``,
    ``epc-metadata``, ``guest-private``, ``guest-shared``, ``guest-kvm`` (KVM's pages for
    a guest: its debug bounce page and VMSAs); ``keyid`` is the memory engine
    slot that encrypts it (None: stored as written); ``owner`` names who uses it and
    ``why`` says why it is (or is not) encrypted.
    """

    start: int
    end: int
    kind: str
    keyid: int | None
    owner: str
    why: str = ""

    @property
    def size(self) -> int:
        return self.end - self.start

    def as_json(self) -> dict[str, Any]:
        return {
            "start": f"{self.start:#x}",
            "end": f"{self.end:#x}",
            "size": self.size,
            "kind": self.kind,
            "keyid": self.keyid,
            "owner": self.owner,
            "why": self.why,
        }


@dataclass(frozen=True)
class KeyUsage:
    """How many pages in DRAM now hold data under one key id (None: unencrypted)."""

    keyid: int | None
    owner: str
    pages: int

    def as_json(self) -> dict[str, Any]:
        return {"keyid": self.keyid, "owner": self.owner, "pages": self.pages}


class _Layout:
    """Who holds which physical memory in one transaction: the booted kernel's map, the
    PRM and the running guests (each read once per view or map call, when first asked)."""

    def __init__(self, txn: Transaction) -> None:
        self.txn = txn
        self.prm: PrmMap | None = txn.engine.prm()

    @functools.cached_property
    def boot(self) -> KernelBoot:
        return booted_kernel(self.txn, self.txn.profile, self.txn.booted_config())

    @functools.cached_property
    def guests(self) -> list[GuestMemory]:
        return guests_of(self.txn)

    def in_prm(self, address: int) -> bool:
        return self.prm is not None and self.prm.base <= address < self.prm.end

    def guest_at(self, address: int) -> GuestMemory | None:
        """The guest whose memory, or KVM's pages for it, hold ``address``."""
        if host_range(address) is not None:
            return None  # the host's map never meets the guest pool (hwsim.sme.boot)
        for guest in self.guests:
            r = guest.vm.record
            if r.spa <= address < r.spa + r.span + _KVM_PAGES * PAGE_SIZE:
                return guest
        return None


# -- the memory map ---------------------------------------------------------------------


def memory_map(machine: Machine) -> list[Region]:
    """The physical memory map of ``machine`` now, sorted by address, without overlaps."""
    with machine.transaction(write=False) as txn:
        return map_in(txn)


def map_in(txn: Transaction) -> list[Region]:
    """:func:`memory_map` inside the caller's transaction."""
    layout = _Layout(txn)
    regions = list(_prm_regions(layout.prm))
    for guest in layout.guests:
        regions += _runs(guest.pages(), functools.partial(_guest_region, guest))
    regions += [_host_region(e, layout.boot) for e in kernel_map(layout.boot)]
    spans = sorted((r.start, r.end) for r in regions)
    other = [p for p in _dram_pages(txn) if not _covered(spans, p * PAGE_SIZE)]
    regions += _runs(other, functools.partial(_other_region, layout))
    return sorted(regions, key=lambda r: r.start)


def region_in(txn: Transaction, address: int) -> Region | None:
    """The map's region holding ``address``, classified alone (no whole map built): the
    same answer as :func:`map_in`, except that guest pages and host pages outside the boot
    map come as their one page (the map merges runs of equal pages)."""
    layout = _Layout(txn)
    page = address // PAGE_SIZE
    for region in _prm_regions(layout.prm):
        if region.start <= address < region.end:
            return region
    guest = layout.guest_at(address)
    if guest is not None and address < guest.vm.record.spa + guest.vm.record.span:
        return _guest_region(guest, page)
    return _other_region(layout, page)


def region_at(regions: list[Region], address: int) -> Region | None:
    """The region of a sorted map holding ``address``, if any."""
    i = bisect.bisect_right([r.start for r in regions], address) - 1
    return regions[i] if i >= 0 and address < regions[i].end else None


MAP_COLUMNS = ("start", "end", "size", "kind", "key id", "owner", "why")


def map_rows(regions: list[Region]) -> list[tuple[str, ...]]:
    """The map as table rows under :data:`MAP_COLUMNS` (every command shows these)."""
    return [
        (f"{r.start:#x}", f"{r.end:#x}", f"{r.size:#x}", r.kind,
         "-" if r.keyid is None else f"{r.keyid:#x}", r.owner, r.why or "-")
        for r in regions
    ]  # fmt: skip


def _prm_regions(prm: PrmMap | None) -> Iterator[Region]:
    if prm is None:
        return
    yield Region(prm.base, prm.meta_base, "epc", EPC_KEYID, "SGX (EPC key)",
                 f"the EPC, under the {prm.engine.value.upper()} engine; host and devices "
                 "read the abort page")  # fmt: skip
    if prm.end > prm.meta_base:
        yield Region(prm.meta_base, prm.end, "epc-metadata", None, "SGX MEE (MACs)",
                     "the MEE's integrity tree and version counters")  # fmt: skip


def _guest_region(guest: GuestMemory, page: int) -> Region:
    at = page * PAGE_SIZE
    try:
        private = guest.private(at)
    except InvalidInput:  # the hypervisor pointed the NPT elsewhere (a remap)
        return Region(at, at + PAGE_SIZE, "guest-private", guest.asid, guest.owner,
                      "the guest's page, mapped at no guest address now (NPT changed)")  # fmt: skip
    if private:
        return Region(at, at + PAGE_SIZE, "guest-private", guest.asid, guest.owner,
                      "C-bit set in the guest's page tables: its ASID's key")  # fmt: skip
    return Region(at, at + PAGE_SIZE, "guest-shared", None, guest.owner,
                  "C-bit clear in the guest's page tables: shared with the hypervisor")  # fmt: skip


def _other_region(layout: _Layout, page: int) -> Region:
    """A page outside the PRM and guests' memory: KVM's page for a guest, or host memory."""
    at = page * PAGE_SIZE
    guest = layout.guest_at(at)
    if guest is not None:
        return Region(at, at + PAGE_SIZE, "guest-kvm", None, guest.owner,
                      "KVM's pages for the guest (debug bounce page, VMSAs), mapped without "
                      "the C-bit; an SEV-ES VMSA is under the guest's key")  # fmt: skip
    return _host_region(mapping_at(layout.boot, at), layout.boot)


def _host_region(entry: MapEntry, boot: KernelBoot) -> Region:
    r = entry.range
    owner = f"host: {r.name} ({r.kind})"
    if entry.cbit:
        return Region(r.start, r.end, "host-encrypted", HOST_KEYID, owner,
                      "C-bit in the kernel's page tables (SME)")  # fmt: skip
    if entry.encrypted:
        return Region(r.start, r.end, "host-encrypted", HOST_KEYID, owner,
                      "TSME: the memory controller encrypts all DRAM")  # fmt: skip
    if boot.sme_active:
        return Region(r.start, r.end, "host-decrypted", None, owner, r.decrypted)
    return Region(r.start, r.end, "host", None, owner, f"SME not active: {boot.why}")


def _runs(pages: list[int], classify: Callable[[int], Region]) -> list[Region]:
    """Merge consecutive pages of the same classification into regions."""
    out: list[Region] = []
    for page in pages:
        region = classify(page)
        last = out[-1] if out else None
        start = page * PAGE_SIZE
        if last and last.end == start and _same(last, region):
            out[-1] = Region(last.start, start + PAGE_SIZE, last.kind, last.keyid,
                             last.owner, last.why)  # fmt: skip
        else:
            out.append(Region(start, start + PAGE_SIZE, region.kind, region.keyid,
                              region.owner, region.why))  # fmt: skip
    return out


def _same(a: Region, b: Region) -> bool:
    return (a.kind, a.keyid, a.owner, a.why) == (b.kind, b.keyid, b.owner, b.why)


def _covered(spans: list[tuple[int, int]], address: int) -> bool:
    i = bisect.bisect_right(spans, (address, 1 << 64)) - 1
    return i >= 0 and spans[i][0] <= address < spans[i][1]


def _dram_pages(txn: Transaction) -> list[int]:
    return [int(p) for (p,) in txn.db.execute("SELECT page FROM dram ORDER BY page")]


# -- what is in DRAM per key id -------------------------------------------------------


def dram_usage(machine: Machine) -> list[KeyUsage]:
    """Pages in DRAM now per key id: host (plain and host key), each guest, the EPC.

    A host page counts under the key the host's mapping of it uses (the map's). EPC pages
    count only in the process that holds the PRM (the one that loaded the enclaves); a
    command of its own sees an EPC with no enclave in it.
    """
    with machine.transaction(write=False) as txn:
        regions = map_in(txn)
        counts: dict[tuple[int | None, str], int] = {}
        for page in _dram_pages(txn):
            region = region_at(regions, page * PAGE_SIZE)
            if region is not None and region.kind not in ("epc", "epc-metadata"):
                key = _usage_key(region)
                counts[key] = counts.get(key, 0) + 1
        if txn.engine.prm() is not None:
            key = (EPC_KEYID, "SGX (EPC key)")
            counts[key] = txn.engine.epc_region().written_pages()
    return [KeyUsage(k, owner, n) for (k, owner), n in counts.items() if n]


def _usage_key(region: Region) -> tuple[int | None, str]:
    if region.kind.startswith("host"):
        return region.keyid, "host (host key)" if region.keyid == HOST_KEYID else "host"
    return region.keyid, region.owner


# -- reading and writing through a view ---------------------------------------------------


def read_view(
    machine: Machine, view: View, address: int, length: int, asid: int | None = None
) -> bytes:
    """``length`` bytes at system physical ``address`` as ``view`` sees them (module doc)."""
    with machine.transaction(write=False) as txn:
        return read_in(txn, view, address, length, asid)


def write_view(
    machine: Machine, view: View, address: int, data: bytes, asid: int | None = None
) -> None:
    """Write ``data`` at system physical ``address`` as ``view``'s actor would: a probe on
    the DIMM, a device, the host kernel through its mapping (the PRM drops it), the guest
    (through its key on private pages)."""
    with machine.transaction() as txn:
        write_in(txn, view, address, data, asid)


def read_in(
    txn: Transaction, view: View, address: int, length: int, asid: int | None = None
) -> bytes:
    """:func:`read_view` inside the caller's transaction."""
    _check(view, address, length, asid)
    if view == "physical":
        return txn.physical_read(address, length)
    layout = _Layout(txn)
    out = []
    for at, n in _pieces(address, length):
        key = _key(layout, view, at, asid)
        if not isinstance(key, _Access):
            out.append(txn.dram_read(at, n, key))
        elif key is _STORED:
            out.append(txn.physical_read(at, n))
        else:
            out.append(_ABORT * n)
    return b"".join(out)


def write_in(
    txn: Transaction, view: View, address: int, data: bytes, asid: int | None = None
) -> None:
    """:func:`write_view` inside the caller's transaction."""
    _check(view, address, len(data), asid)
    if view == "physical":
        txn.physical_write(address, data)
        return
    layout = _Layout(txn)
    for at, n in _pieces(address, len(data)):
        piece = data[at - address : at - address + n]
        key = _key(layout, view, at, asid)
        if not isinstance(key, _Access):
            txn.dram_write(at, piece, key)
        elif key is _STORED:
            txn.physical_write(at, piece)
        # else the abort page: nothing is stored


class _Access:
    """A way through the memory controller other than a key slot."""


_ABORT_PAGE = _Access()  # the PRM seen from outside the enclave
_STORED = _Access()  # no key: the bytes as the DIMM holds them


def _key(layout: _Layout, view: View, address: int, asid: int | None) -> int | _Access | None:
    """The key slot (or other access) ``view`` reaches ``address`` through."""
    if view == "guest":
        return _guest(layout, asid).keyid_at(address)
    if layout.in_prm(address):
        return _ABORT_PAGE
    if layout.guest_at(address) is not None:
        return _STORED  # the hypervisor's mapping of guest memory has no C-bit
    if view == "device":
        return HOST_KEYID if layout.boot.tsme else _STORED
    return HOST_KEYID if mapping_at(layout.boot, address).encrypted else _STORED


def _guest(layout: _Layout, asid: int | None) -> GuestMemory:
    for guest in layout.guests:
        if guest.asid == asid:
            return guest
    raise InvalidInput(f"no running SEV guest has ASID {asid}", hint="sevtool guest list")


def _pieces(address: int, length: int) -> Iterator[tuple[int, int]]:
    """The range split at page boundaries: (address, length) per page."""
    end = address + length
    while address < end:
        n = min(PAGE_SIZE - address % PAGE_SIZE, end - address)
        yield address, n
        address += n


def _check(view: str, address: int, length: int, asid: int | None) -> None:
    if view not in VIEWS:
        raise InvalidInput(f"unknown view {view!r}; views: {', '.join(VIEWS)}")
    if (view == "guest") != (asid is not None):
        raise InvalidInput("the guest view needs an ASID, and only the guest view takes one")
    if address < 0 or length < 0:
        raise InvalidInput("address and length must not be negative")
    if length > MAX_VIEW:
        raise InvalidInput(f"{length} bytes is more than one view spans ({MAX_VIEW} bytes)")


def hex_lines(data: bytes, address: int = 0) -> list[str]:
    """A hex dump, 16 bytes a line: address, bytes, and the printable ASCII of them."""
    lines = []
    for at in range(0, len(data), 16):
        row = data[at : at + 16]
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in row)
        lines.append(f"{address + at:016x}  {row.hex(' '):<47}  {text}")
    return lines
