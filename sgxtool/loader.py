"""Loading an enclave through the ``/dev/sgx_enclave``-shaped device.

Walks the same :class:`~sgxtool.layout.EnclaveLayout` the signer measured, in the same
order (ECREATE, then EADD with EEXTEND per measured chunk), so a loaded enclave measures
exactly as signed; then EINIT under the machine's launch policy (the device asks the
vendor's Launch Enclave for a token where the policy needs one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwsim.sgx.arch import EEXTEND_CHUNK, PAGE_SIZE, Secs, Sigstruct
from sgxtool.layout import ALL_CHUNKS, EnclaveLayout, Region

if TYPE_CHECKING:
    from hwsim.sgx.device import SgxEnclaveDevice
    from hwsim.sgx.epc import Enclave

__all__ = ["enclave_base", "load_enclave"]

_BATCH = 256  # pages read from the source file per device call


def enclave_base(size: int) -> int:
    """Where ELRANGE goes: 1 TiB, or SIZE if larger (BASE must be aligned to SIZE)."""
    return max(1 << 40, size)


def load_enclave(
    device: SgxEnclaveDevice,
    layout: EnclaveLayout,
    sigstruct: Sigstruct,
    token: bytes | None = None,
) -> Enclave:
    """ECREATE, EADD/EEXTEND every page of ``layout``, EINIT with ``sigstruct``."""
    secs = Secs(
        size=layout.size,
        baseaddr=enclave_base(layout.size),
        ssaframesize=layout.ssaframesize,
        miscselect=sigstruct.miscselect,
        attributes_flags=sigstruct.attributes_flags,
        attributes_xfrm=sigstruct.attributes_xfrm,
    )
    device.create(secs)
    with layout.open_source() as fd:
        for region in layout.regions:
            for first in range(0, region.pages, _BATCH):
                count = min(_BATCH, region.pages - first)
                _add(device, region, first, region.read_pages(fd, first, count))
    return device.init(sigstruct, token)


def _add(device: SgxEnclaveDevice, region: Region, first: int, data: bytes) -> None:
    offset = region.offset + first * PAGE_SIZE
    device.add_pages(offset, data, region.flags, measure=region.mrmask == ALL_CHUNKS)
    if region.mrmask in (0, ALL_CHUNKS):
        return
    # Partly measured pages (SGXS streams may say so): EEXTEND only the chunks in the mask.
    from hwsim.sgx.encls import EExtend, encls

    enclave = device.enclave
    for page in range(len(data) // PAGE_SIZE):
        index = enclave.page(enclave.secs.baseaddr + offset + page * PAGE_SIZE)
        for chunk in range(PAGE_SIZE // EEXTEND_CHUNK):
            if region.mrmask >> chunk & 1:
                encls(device.epc, EExtend(index, chunk * EEXTEND_CHUNK))
