"""Loading an enclave through the ``/dev/sgx_enclave``-shaped device.

Walks the same :class:`~sgxtool.layout.EnclaveLayout` the signer measured, in the same
order (ECREATE, then EADD with EEXTEND per measured chunk), so a loaded enclave measures
exactly as signed; then EINIT under the machine's launch policy (the device asks the
vendor's Launch Enclave for a token where the policy needs one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwsim.sgx.arch import PAGE_SIZE, AttributeFlag, Secs, Sigstruct
from sgxtool.layout import EnclaveLayout

if TYPE_CHECKING:
    from hwsim.sgx.device import SgxEnclaveDevice

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
    *,
    debug: bool = False,
) -> None:
    """ECREATE, EADD/EEXTEND every page of ``layout``, EINIT with ``sigstruct``.

    ``debug`` sets DEBUG in the SECS, as Intel's uRTS does when launched with debug=1;
    EINIT accepts it only if the SIGSTRUCT leaves DEBUG out of its ATTRIBUTEMASK.
    """
    flags = sigstruct.attributes_flags | (AttributeFlag.DEBUG if debug else 0)
    secs = Secs(
        size=layout.size,
        baseaddr=enclave_base(layout.size),
        ssaframesize=layout.ssaframesize,
        miscselect=sigstruct.miscselect,
        attributes_flags=flags,
        attributes_xfrm=sigstruct.attributes_xfrm,
    )
    device.create(secs)
    with layout.open_source() as fd:
        for region in layout.regions:
            for first in range(0, region.pages, _BATCH):
                data = region.read_pages(fd, first, min(_BATCH, region.pages - first))
                # The mask: SGXS streams may measure only some 256-byte chunks of a page.
                offset = region.offset + first * PAGE_SIZE
                device.add_pages(offset, data, region.flags, measure=region.mrmask)
    device.init(sigstruct, token)
