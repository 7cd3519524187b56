"""What an enclave's memory looks like from outside it, for ``sgxtool run --show-memory``.

Two views of the same enclave address, after a call, with the enclave still loaded:

- the DIMM's: the ciphertext of the EPC page behind it, read through the machine's
  physical view (:func:`hwsim.memview.read_view`) at that page's physical address; a page
  the reclaimer has evicted is not in the EPC, so its view is the sealed copy in the
  kernel's backing store;
- the host's: what host code loads at the enclave's linear address, the abort page.

Neither is ever the plaintext of the enclave, debug or not: that takes EDBGRD
(:mod:`sgxtool.debug`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hwsim.memview import read_view
from hwsim.sgx.arch import PAGE_SIZE
from sgxtool.errors import UsageError
from sgxtool.runtime import Enclave

__all__ = ["EnclaveMemory", "enclave_memory", "parse_span"]

MAX_SHOW = 1 << 16


@dataclass(frozen=True)
class EnclaveMemory:
    """One enclave range: its linear address, the DIMM's bytes and the host's."""

    offset: int
    linear: int
    physical: tuple[str, ...]  # where each page is: a physical address, or "backing store"
    dimm: bytes
    host: bytes

    def as_json(self) -> dict[str, Any]:
        return {
            "offset": f"{self.offset:#x}",
            "linear": f"{self.linear:#x}",
            "length": len(self.dimm),
            "physical": list(self.physical),
            "dimm_hex": self.dimm.hex(),
            "host_hex": self.host.hex(),
        }


def parse_span(text: str) -> tuple[int, int]:
    """ADDRESS[:LEN] (numbers in decimal or 0x-hex; LEN defaults to 64)."""
    address, _, length = text.partition(":")
    try:
        span = int(address, 0), int(length, 0) if length else 64
    except ValueError:
        raise UsageError(f"{text!r}: expected ADDRESS[:LEN], e.g. 0x3000:32") from None
    if not 0 < span[1] <= MAX_SHOW:
        raise UsageError(f"{text!r}: LEN must be 1 to {MAX_SHOW}")
    return span


def enclave_memory(enclave: Enclave, offset: int, length: int) -> EnclaveMemory:
    """The DIMM's and the host's view of enclave offset ``offset`` (module doc)."""
    device = enclave.device
    base, size = device.elrange
    if offset < 0 or offset + length > size:
        raise UsageError(f"{offset:#x}+{length:#x} is not inside the enclave (size {size:#x})")
    stored = device.backing_store()
    where, dimm = [], b""
    at = offset
    while at < offset + length:
        page, skip = at - at % PAGE_SIZE, at % PAGE_SIZE
        n = min(PAGE_SIZE - skip, offset + length - at)
        if page in stored:
            where.append("backing store")
            dimm += stored[page].contents[skip : skip + n]
        else:
            paddr = device.epc.paddr(device.enclave.page(base + page)) + skip
            where.append(f"{paddr:#x}")
            dimm += read_view(device.machine, "physical", paddr, n)
        at += n
    host = device.host_read(base + offset, length)
    return EnclaveMemory(offset, base + offset, tuple(where), dimm, host)
