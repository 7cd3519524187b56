"""The simulated vendor's Launch Enclave: a real enclave identity that issues EINITTOKENs.

On parts with legacy launch control only an enclave signed by the key whose hash is in
IA32_SGXLEPUBKEYHASH EINITs without a token: the vendor's Launch Enclave. It has the
controlled attribute EINITTOKEN_KEY, so EGETKEY gives it the launch key, and it MACs a
token for every enclave its policy accepts (Intel's ``le_generate_launch_token``, see
``shared/reference/sim.md`` 2.2). Here the LE is built and EINIT'd through the ENCLS
leaves like any enclave (its SIGSTRUCT signed by the vendor key, taking the tokenless
path); its policy is Python, and its keys come from EGETKEY/EREPORT in its own context.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hwsim.sgx import _enclu as enclu
from hwsim.sgx._encls import EAdd, ECreate, EExtend, EInit, encls
from hwsim.sgx.arch import (
    EEXTEND_CHUNK,
    MODULUS_BYTES,
    PAGE_SIZE,
    XFRM_LEGACY,
    AttributeFlag,
    Attributes,
    Einittoken,
    KeyName,
    Keyrequest,
    PageType,
    Report,
    SecinfoFlag,
    Secs,
    Sigstruct,
    Targetinfo,
    Tcs,
    eadd_block,
    ecreate_block,
    eextend_header,
    secinfo_flags,
)
from hwsim.sgx.errors import LaunchRefused
from hwsim.sgx.keys import cmac
from hwsim.sgx.launch import read_allow_list
from hwsim.sgx.sigcheck import attach_signature

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from hwsim.machine import Machine
    from hwsim.sgx.epc import Enclave, Epc

__all__ = ["LE_ISVPRODID", "LE_TOKEN_MASK", "LaunchEnclave", "le_mrenclave", "le_sigstruct"]

LE_ISVPRODID = 0x20  # Intel's LE product id (its allow-list names it; vectors/README.md)
LE_ISVSVN = 1
_LE_SIZE = 4 * PAGE_SIZE
# Code page: mov eax, 4 (EEXIT); enclu. The LE's policy runs as Python (see module doc).
_LE_CODE = bytes.fromhex("b8040000000f01d7")
_LE_ATTRIBUTES = Attributes(AttributeFlag.MODE64BIT | AttributeFlag.EINITTOKEN_KEY, XFRM_LEGACY)
_U64 = (1 << 64) - 1
# Attributes no enclave may ask a token for (reserved bits), SDM 37.7.1.
_RESERVED_FLAGS = _U64 & ~0x4B7
# linux-sgx le_calc_lic_token: every ATTRIBUTES bit but MODE64BIT. int() first: `~` on an
# IntFlag keeps only its defined bits on Python 3.11+, not all 64.
LE_TOKEN_MASK = _U64 & ~int(AttributeFlag.MODE64BIT)
_LES: weakref.WeakKeyDictionary[Epc, LaunchEnclave] = weakref.WeakKeyDictionary()


def _le_pages() -> list[tuple[int, int, bytes]]:
    """(offset, SECINFO.FLAGS, contents) of the LE: code, TCS, one SSA frame."""
    tcs = Tcs(ossa=2 * PAGE_SIZE, nssa=1, oentry=0).pack()
    rx = int(SecinfoFlag.R | SecinfoFlag.X)
    rw = int(SecinfoFlag.R | SecinfoFlag.W)
    return [
        (0, secinfo_flags(PageType.REG, rx), _LE_CODE.ljust(PAGE_SIZE, b"\xcc")),
        (PAGE_SIZE, secinfo_flags(PageType.TCS), tcs),
        (2 * PAGE_SIZE, secinfo_flags(PageType.REG, rw), bytes(PAGE_SIZE)),
    ]


def le_mrenclave() -> bytes:
    """The vendor's build-time measurement of the LE (SDM ECREATE/EADD/EEXTEND blocks)."""
    h = hashlib.sha256(ecreate_block(1, _LE_SIZE))
    for offset, flags, data in _le_pages():
        h.update(eadd_block(offset, flags))
        for c in range(0, PAGE_SIZE, EEXTEND_CHUNK):
            h.update(eextend_header(offset + c) + data[c : c + EEXTEND_CHUNK])
    return h.digest()


def le_sigstruct(vendor_key: RSAPrivateKey) -> Sigstruct:
    """The Launch Enclave's SIGSTRUCT, signed by the vendor (RSA-3072, e=3, Q1/Q2)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    n = vendor_key.public_key().public_numbers().n
    sig = Sigstruct(
        date=0x20240101, modulus=n.to_bytes(MODULUS_BYTES, "little"),
        attributes_flags=_LE_ATTRIBUTES.flags, attributes_xfrm=_LE_ATTRIBUTES.xfrm,
        attributemask_flags=_U64, attributemask_xfrm=_U64, miscmask=0xFFFFFFFF,
        enclavehash=le_mrenclave(), isvprodid=LE_ISVPRODID, isvsvn=LE_ISVSVN,
    )  # fmt: skip
    raw = vendor_key.sign(sig.signed_bytes(), padding.PKCS1v15(), hashes.SHA256())
    return attach_signature(sig, n, raw)


@dataclass(eq=False)
class LaunchEnclave:
    """The running LE of one machine's boot, and its token policy."""

    machine: Machine
    enclave: Enclave

    @classmethod
    def start(cls, machine: Machine, epc: Epc) -> LaunchEnclave:
        """The LE for this EPC, built and EINIT'd on first use (tokenless path)."""
        running = _LES.get(epc)
        if running is None:
            running = _LES[epc] = cls(machine, _build(machine, epc))
        return running

    def get_token(self, sigstruct: Sigstruct, attributes: Attributes) -> Einittoken:
        """An EINITTOKEN for the enclave ``sigstruct`` describes with SECS ``attributes``.

        Raises :class:`LaunchRefused` saying which LE rule refused and what to do.
        """
        _check_policy(self.machine, sigstruct.mrsigner, attributes)
        me = Report.unpack(enclu.ereport(self.enclave, self._self_target(), bytes(64)))
        token = Einittoken(
            valid=1, attributes_flags=attributes.flags, attributes_xfrm=attributes.xfrm,
            mrenclave=sigstruct.enclavehash, mrsigner=sigstruct.mrsigner,
            cpusvnle=me.cpusvn, isvprodidle=me.isvprodid, isvsvnle=me.isvsvn,
            maskedmiscselectle=me.miscselect,
            maskedattributesle_flags=me.attributes_flags & LE_TOKEN_MASK,
            maskedattributesle_xfrm=0, keyid=os.urandom(32),
        )  # fmt: skip
        # linux-sgx le_calc_lic_token: EGETKEY(EINITTOKEN) with these masks, CMAC the body.
        request = Keyrequest(
            keyname=KeyName.EINITTOKEN, isvsvn=me.isvsvn, cpusvn=me.cpusvn,
            attributemask_flags=LE_TOKEN_MASK, attributemask_xfrm=0,
            keyid=token.keyid, miscmask=0xFFFFFFFF,
        )  # fmt: skip
        key = enclu.egetkey_leaf(self.enclave, request.pack())
        body = token.pack()[: Einittoken.MAC_COVERS]
        return replace(token, mac=cmac(key, body))

    def _self_target(self) -> bytes:
        who = self.enclave.identity
        assert who is not None  # the LE is initialized when it is started
        return Targetinfo(
            mrenclave=who.mrenclave, attributes_flags=who.attributes.flags,
            attributes_xfrm=who.attributes.xfrm, miscselect=who.miscselect,
        ).pack()  # fmt: skip


def _build(machine: Machine, epc: Epc) -> Enclave:
    with machine.transaction() as txn:
        sig = le_sigstruct(txn.sgx_vendor_private_key())
    secs = Secs(
        size=_LE_SIZE, ssaframesize=1, attributes_flags=_LE_ATTRIBUTES.flags,
        attributes_xfrm=_LE_ATTRIBUTES.xfrm,
    )  # fmt: skip
    secs_page = epc.alloc()
    encls(epc, ECreate(secs_page, secs.pack()))
    for offset, flags, data in _le_pages():
        page = epc.alloc()
        encls(epc, EAdd(page, secs_page, offset, data, flags))
        for c in range(0, PAGE_SIZE, EEXTEND_CHUNK):
            encls(epc, EExtend(page, c))
    encls(epc, EInit(secs_page, sig.pack()))
    return epc.enclaves[secs_page]


def _check_policy(machine: Machine, mrsigner: bytes, attributes: Attributes) -> None:
    """The LE's rules (after Intel's ``le_generate_launch_token``), in its order."""
    with machine.transaction(write=False) as txn:
        approved = mrsigner in read_allow_list(txn).signers
    rule = "the Launch Enclave"
    if attributes.flags & _RESERVED_FLAGS or attributes.flags & AttributeFlag.INIT:
        raise LaunchRefused(
            rule, f"wrong attributes: reserved bits {attributes.flags & _RESERVED_FLAGS:#x} "
            "or INIT requested", hint="sign the enclave with defined ATTRIBUTES bits only",
        )  # fmt: skip
    if attributes.flags & AttributeFlag.EINITTOKEN_KEY:
        raise LaunchRefused(
            rule, "wrong attributes: EINITTOKEN_KEY is reserved for the Launch Enclave",
            hint="clear EINITTOKEN_KEY in the enclave's attributes",
        )  # fmt: skip
    if attributes.flags & AttributeFlag.PROVISIONKEY and not approved:
        raise LaunchRefused(
            rule, f"wrong attributes: PROVISIONKEY needs a vendor-approved signer, and "
            f"{mrsigner.hex()} is not on the allow-list",
            hint=f"drop PROVISIONKEY, or have the vendor approve: hwsim vendor approve "
            f"{mrsigner.hex()}",
        )  # fmt: skip
    if not attributes.flags & AttributeFlag.DEBUG and not approved:
        raise LaunchRefused(
            rule, f"unapproved production signer {mrsigner.hex()}: signers not on the "
            "vendor's allow-list may launch debug enclaves only",
            hint=f"build with DEBUG to test it, or have the vendor approve the signer: "
            f"hwsim vendor approve {mrsigner.hex()}",
        )  # fmt: skip
