"""Views of the machine's one physical memory, and its memory map.

The same system physical address reads differently depending on who looks
(``shared/reference/sim.md`` 4.1, "What each observer sees"):

- ``physical``: the bytes on the DIMM, as a bus probe, a DMA device without the C-bit or
  a cold-boot attacker reads them: ciphertext for every page written through a key, the
  EPC's included (:meth:`Transaction.physical_read`);
- ``host``: what host kernel code loads through its own page tables. A page the host maps
  with the C-bit goes through the host (SME) key slot, any other page is read as stored;
  the PRM is the abort page (all ones; writes dropped). Guest memory is mapped without
  the C-bit, so the hypervisor sees a guest's private pages as ciphertext (KVM's view,
  ``SevVm.host_read``);
- ``guest`` with an ASID: what that SEV guest reads at the guest physical address its
  nested page table maps to the system address: through its key where its own page
  tables set the C-bit (private), as stored where they clear it (shared).

Which host pages carry the C-bit is page-table state of the host kernel, so it is
volatile: :data:`HOST_NS` lists the pages the host mapped encrypted since the last power
cycle (:func:`write_view` with ``encrypted=True``, or :func:`mark_host_encrypted` for the
kernel's own policy). After a power cycle the SME key is new and those pages are
ciphertext nobody can read, as on hardware.

:func:`memory_map` is the one memory map: the EPC and its engine's metadata, guests'
memory with their key ids, and the host pages in DRAM, encrypted or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hwsim._guestmap import GuestMemory, guests_of
from hwsim.memory import EPC_KEYID, HOST_KEYID, PAGE_SIZE
from hwsim.prm import PrmMap
from memcrypt.errors import InvalidInput

if TYPE_CHECKING:
    from hwsim.machine import Machine, Transaction

__all__ = [
    "HOST_NS",
    "MAX_VIEW",
    "VIEWS",
    "KeyUsage",
    "Region",
    "View",
    "dram_usage",
    "hex_lines",
    "mark_host_encrypted",
    "memory_map",
    "read_view",
    "write_view",
]

View = Literal["physical", "host", "guest"]
VIEWS: tuple[View, ...] = ("physical", "host", "guest")
HOST_NS = "boot.hostmem"  # page number (hex) -> b"" for host pages mapped with the C-bit
MAX_VIEW = 16 << 20  # bytes one read or write may span


@dataclass(frozen=True)
class Region:
    """A range of system physical memory ``[start, end)``: what it is and its key id.

    ``kind`` is one of ``epc``, ``epc-metadata``, ``host``, ``host-encrypted``,
    ``guest-private``, ``guest-shared``; ``keyid`` is the memory engine slot that encrypts
    it (None: stored as written); ``owner`` names who uses it.
    """

    start: int
    end: int
    kind: str
    keyid: int | None
    owner: str

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
        }


@dataclass(frozen=True)
class KeyUsage:
    """How many pages in DRAM now hold data under one key id (None: unencrypted)."""

    keyid: int | None
    owner: str
    pages: int

    def as_json(self) -> dict[str, Any]:
        return {"keyid": self.keyid, "owner": self.owner, "pages": self.pages}


# -- the memory map ---------------------------------------------------------------------


def memory_map(machine: Machine) -> list[Region]:
    """The physical memory map of ``machine`` now, sorted by address, without overlaps."""
    with machine.transaction(write=False) as txn:
        return _memory_map(txn)


def _memory_map(txn: Transaction) -> list[Region]:
    regions = list(_prm_regions(txn.engine.prm()))
    guests = guests_of(txn)
    for guest in guests:
        regions += _runs(guest.pages(), lambda page, g=guest: _guest_kind(g, page))
    taken = _spans(regions)
    host = [p for p in _dram_pages(txn) if not _inside(taken, p)]
    encrypted = _host_encrypted(txn)
    regions += _runs(host, lambda page: _host_kind(page in encrypted))
    return sorted(regions, key=lambda r: r.start)


def _prm_regions(prm: PrmMap | None) -> Iterator[Region]:
    if prm is None:
        return
    yield Region(prm.base, prm.meta_base, "epc", EPC_KEYID, "SGX (EPC key)")
    if prm.end > prm.meta_base:
        yield Region(prm.meta_base, prm.end, "epc-metadata", None, "SGX MEE (MACs)")


def _guest_kind(guest: GuestMemory, page: int) -> tuple[str, int | None, str]:
    private = guest.private(page * PAGE_SIZE)
    kind, keyid = ("guest-private", guest.asid) if private else ("guest-shared", None)
    return kind, keyid, guest.owner


def _host_kind(encrypted: bool) -> tuple[str, int | None, str]:
    if encrypted:
        return "host-encrypted", HOST_KEYID, "host (SME key)"
    return "host", None, "host"


def _runs(pages: list[int], classify: Any) -> list[Region]:
    """Merge consecutive pages of the same classification into regions."""
    out: list[Region] = []
    for page in pages:
        kind, keyid, owner = classify(page)
        last = out[-1] if out else None
        start = page * PAGE_SIZE
        if (
            last
            and last.end == start
            and (last.kind, last.keyid, last.owner) == (kind, keyid, owner)
        ):
            out[-1] = Region(last.start, start + PAGE_SIZE, kind, keyid, owner)
        else:
            out.append(Region(start, start + PAGE_SIZE, kind, keyid, owner))
    return out


def _spans(regions: list[Region]) -> list[tuple[int, int]]:
    return sorted((r.start // PAGE_SIZE, r.end // PAGE_SIZE) for r in regions)


def _inside(spans: list[tuple[int, int]], page: int) -> bool:
    return any(lo <= page < hi for lo, hi in spans)


def _dram_pages(txn: Transaction) -> list[int]:
    return [int(p) for (p,) in txn.db.execute("SELECT page FROM dram ORDER BY page")]


# -- what is in DRAM per key id -------------------------------------------------------


def dram_usage(machine: Machine) -> list[KeyUsage]:
    """Pages in DRAM now per key id: host (plain and SME key), each guest, the EPC.

    EPC pages count only in the process that holds the PRM (the one that loaded the
    enclaves); a command of its own sees an EPC with no enclave in it.
    """
    with machine.transaction(write=False) as txn:
        counts: dict[tuple[int | None, str], int] = {}
        for region in _memory_map(txn):
            if region.kind == "epc-metadata":
                continue
            pages = region.size // PAGE_SIZE
            if region.kind == "epc":
                pages = txn.engine.epc_region().written_pages()
            key = (region.keyid, region.owner)
            counts[key] = counts.get(key, 0) + pages
    return [KeyUsage(k, owner, n) for (k, owner), n in counts.items() if n]


# -- reading and writing through a view ---------------------------------------------------


def read_view(
    machine: Machine, view: View, address: int, length: int, asid: int | None = None
) -> bytes:
    """``length`` bytes at system physical ``address`` as ``view`` sees them (module doc)."""
    _check(view, address, length, asid)
    with machine.transaction(write=False) as txn:
        if view == "physical":
            return txn.physical_read(address, length)
        if view == "host":
            encrypted = _host_encrypted(txn)
            return b"".join(
                txn.dram_read(at, n, _host_key(txn, at, encrypted))
                for at, n in _pieces(address, length)
            )
        guest = _guest(txn, asid)
        return b"".join(
            txn.dram_read(at, n, guest.keyid_at(at)) for at, n in _pieces(address, length)
        )


def write_view(
    machine: Machine,
    view: View,
    address: int,
    data: bytes,
    asid: int | None = None,
    *,
    encrypted: bool = False,
) -> None:
    """Write ``data`` at system physical ``address`` as ``view``'s actor would.

    ``physical`` writes the DIMM (a probe), ``host`` stores through the host's mapping
    (``encrypted``: with the C-bit, through the SME key; the PRM drops it), ``guest``
    stores as that guest does (through its key on private pages).
    """
    _check(view, address, len(data), asid)
    if encrypted and view != "host":
        raise InvalidInput("--encrypted is for the host view: it sets the host's C-bit")
    with machine.transaction() as txn:
        if view == "physical":
            txn.physical_write(address, data)
        elif view == "host":
            _host_store(txn, address, data, encrypted)
        else:
            guest = _guest(txn, asid)
            for at, n in _pieces(address, len(data)):
                txn.dram_write(at, data[at - address : at - address + n], guest.keyid_at(at))


def mark_host_encrypted(txn: Transaction, address: int, length: int, on: bool = True) -> None:
    """Record that the host maps these pages with (``on``) or without the C-bit."""
    for at, _n in _pieces(address, length):
        key = f"{at // PAGE_SIZE:x}"
        if on:
            txn.put(HOST_NS, key, b"")
        else:
            txn.delete(HOST_NS, key)


def _host_store(txn: Transaction, address: int, data: bytes, encrypted: bool) -> None:
    if encrypted and HOST_KEYID not in txn.engine.key_ids():
        raise InvalidInput(
            "the host has no memory encryption key: SME is off at this boot",
            hint="hwsim config set sme_enabled true, then hwsim power-cycle",
        )
    known = _host_encrypted(txn)
    prm = txn.engine.prm()
    key = HOST_KEYID if encrypted else None
    for at, n in _pieces(address, len(data)):
        page = at - at % PAGE_SIZE
        if prm is not None and prm.base <= at < prm.end:
            continue  # the abort page: nothing is stored, nothing remapped
        if (page // PAGE_SIZE in known) != encrypted:
            # The C-bit changes: the kernel converts the page in place (as
            # sme_encrypt_kernel does), so its contents read the same through the new map.
            old = txn.dram_read(page, PAGE_SIZE, HOST_KEYID if not encrypted else None)
            txn.dram_write(page, old, key)
            mark_host_encrypted(txn, page, PAGE_SIZE, encrypted)
        txn.dram_write(at, data[at - address : at - address + n], key)


def _host_encrypted(txn: Transaction) -> set[int]:
    return {int(k, 16) for k in txn.keys(HOST_NS)}


def _host_key(txn: Transaction, address: int, encrypted: set[int]) -> int | None:
    return HOST_KEYID if address // PAGE_SIZE in encrypted else None


def _guest(txn: Transaction, asid: int | None) -> GuestMemory:
    for guest in guests_of(txn):
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
