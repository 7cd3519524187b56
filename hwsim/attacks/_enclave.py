"""The lab's own enclave: a production (non-debug) enclave holding a key, loaded through
``/dev/sgx_enclave`` like any other. The key is made inside the enclave after EINIT (as
an enclave makes its keys), so the image, its measurement and its SIGSTRUCT are the same
for every load and are signed once per vendor key in a process.

Enclaves live in the process that loads them, so the lab loads its own. It is signed by
the machine's simulated SGX vendor (as the vendor signs its own enclaves), which every
launch policy of the simulator admits without a token from elsewhere: its MRSIGNER is
the LE hash MSRs' reset value on vendor-key parts, and Flexible Launch Control parts
write it into the MSRs before EINIT.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from hwsim.sgx.arch import (
    EEXTEND_CHUNK,
    MODULUS_BYTES,
    PAGE_SIZE,
    XFRM_LEGACY,
    AttributeFlag,
    PageType,
    SecinfoFlag,
    Secs,
    Sigstruct,
    Tcs,
    eadd_block,
    ecreate_block,
    eextend_header,
    secinfo_flags,
)
from hwsim.sgx.device import SgxEnclaveDevice
from hwsim.sgx.sigcheck import attach_signature

if TYPE_CHECKING:
    from hwsim.machine import Machine

__all__ = ["KEY_OFFSET", "load_key_enclave"]

KEY_OFFSET = 3 * PAGE_SIZE  # the data page that holds the key
_BASE = 0x7000_0000_0000
_SIZE = 4 * PAGE_SIZE
_EEXIT = bytes.fromhex("b8040000000f01d7")  # mov eax, 4 (EEXIT); enclu
_ATTRIBUTES = int(AttributeFlag.MODE64BIT)  # DEBUG clear: EDBGRD is refused
_RX = secinfo_flags(PageType.REG, int(SecinfoFlag.R | SecinfoFlag.X))
_RW = secinfo_flags(PageType.REG, int(SecinfoFlag.R | SecinfoFlag.W))


_SIGNED: dict[bytes, Sigstruct] = {}  # vendor MRSIGNER -> the lab enclave's SIGSTRUCT


def _pages() -> list[tuple[int, int, bytes]]:
    tcs = Tcs(ossa=2 * PAGE_SIZE, nssa=1, oentry=0).pack()
    return [
        (0, _RX, _EEXIT.ljust(PAGE_SIZE, b"\xcc")),
        (PAGE_SIZE, secinfo_flags(PageType.TCS), tcs),
        (2 * PAGE_SIZE, _RW, bytes(PAGE_SIZE)),
        (KEY_OFFSET, _RW, bytes(PAGE_SIZE)),
    ]


def _mrenclave(pages: list[tuple[int, int, bytes]]) -> bytes:
    h = hashlib.sha256(ecreate_block(1, _SIZE))
    for offset, flags, data in pages:
        h.update(eadd_block(offset, flags))
        for c in range(0, PAGE_SIZE, EEXTEND_CHUNK):
            h.update(eextend_header(offset + c) + data[c : c + EEXTEND_CHUNK])
    return h.digest()


def _sigstruct(machine: Machine) -> Sigstruct:
    """The lab enclave's SIGSTRUCT, signed by the machine's SGX vendor."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    with machine.transaction(write=False) as txn:
        signer = txn.sgx_vendor_key_hash()
        if signer in _SIGNED:
            return _SIGNED[signer]
        vendor = txn.sgx_vendor_private_key()
    n = vendor.public_key().public_numbers().n
    sig = Sigstruct(
        date=0x20240101, modulus=n.to_bytes(MODULUS_BYTES, "little"),
        attributes_flags=_ATTRIBUTES, attributes_xfrm=XFRM_LEGACY,
        attributemask_flags=(1 << 64) - 1, attributemask_xfrm=(1 << 64) - 1,
        miscmask=0xFFFFFFFF, enclavehash=_mrenclave(_pages()), isvprodid=0x1AB,
    )  # fmt: skip
    signature = vendor.sign(sig.signed_bytes(), padding.PKCS1v15(), hashes.SHA256())
    signed = _SIGNED[signer] = attach_signature(sig, n, signature)
    return signed


def load_key_enclave(machine: Machine, key: bytes) -> SgxEnclaveDevice:
    """ECREATE, EADD (measured), EINIT the lab enclave; it then writes ``key`` into its
    page at :data:`KEY_OFFSET` (from inside: the enclave's own store)."""
    sig = _sigstruct(machine)
    dev = SgxEnclaveDevice(machine)
    try:
        dev.create(Secs(size=_SIZE, baseaddr=_BASE, ssaframesize=1,
                        attributes_flags=_ATTRIBUTES, attributes_xfrm=XFRM_LEGACY))  # fmt: skip
        for offset, flags, data in _pages():
            dev.add_pages(offset, data, flags)
        dev.init(sig)
        index = dev.enclave.page(_BASE + KEY_OFFSET)
        dev.epc.write(index, key.ljust(PAGE_SIZE, b"\0"))
    except BaseException:
        dev.close()
        raise
    return dev
