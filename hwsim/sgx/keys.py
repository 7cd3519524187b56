"""SGX key derivation: EGETKEY's key names and policies, the report key, the launch key.

The SDM leaves ``derivekey()`` unspecified beyond "a fused secret plus a PRF over the key
dependencies" (SDM vol. 3D 38.17, EGETKEY; ``shared/reference/sim.md`` 3.5). hwsim uses
AES-CMAC-128 keyed by a per-chip fused root over a fixed serialisation of the
KEYDEPENDENCIES, which gives the invariants that matter: same enclave on the same chip gets
the same key; another chip, another OWNEREPOCH or another identity gets another key.

Each key name's dependency row is a table entry (:data:`_KEY_ROWS`), transcribed from the
SDM table of EGETKEY dependencies.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass

from hwsim.sgx.arch import (
    AttributeFlag,
    Attributes,
    Einittoken,
    KeyName,
    KeyPolicy,
    Keyrequest,
    SgxStatus,
    Targetinfo,
)
from hwsim.sgx.errors import GP, SgxFault, SgxStatusError

__all__ = [
    "CR_CPUSVN",
    "HARDCODED_PADDING",
    "EnclaveIdentity",
    "KeyContext",
    "KeyDependencies",
    "cmac",
    "derive",
    "egetkey",
    "launch_key",
    "report_key",
]

# CR_CPUSVN of the simulated part: the security version of its microcode and firmware
# components. A request for a CPUSVN "beyond" it (any component greater) is refused.
CR_CPUSVN = bytes([0x0E, 0x0E, 0x02, 0x04, 0xFF, 0x80, 0x0E, 0, 0, 0, 0, 0, 0, 0, 0, 0])

# INIT and DEBUG are always bound into a derived key (SDM EGETKEY: TMP_ATTRIBUTES = (mask |
# 0x3) & SECS.ATTRIBUTES), so debug and production enclaves never share a key; the
# dependencies' ATTRIBUTEMASK is still the request's mask as given.
_ALWAYS_BOUND = int(AttributeFlag.INIT | AttributeFlag.DEBUG)
# Key policy bits that need ATTRIBUTES.KSS (SDM EGETKEY: #GP otherwise).
_KSS_POLICIES = int(
    KeyPolicy.NOISVPRODID | KeyPolicy.CONFIGID | KeyPolicy.ISVFAMILYID | KeyPolicy.ISVEXTPRODID
)
_PADDING_BYTES = 352
_NO_ATTRIBUTES = Attributes()

# HARDCODED_PKCS1_5_PADDING (SDM EINIT/EREPORT): the top 352 bytes of a PKCS#1 v1.5
# SHA-256 signature block for a 3072-bit key, stored little-endian like SECS.PADDING.
HARDCODED_PADDING = (
    bytes.fromhex("3031300d060960864801650304020105000420")[::-1]
    + b"\x00" + b"\xff" * 330 + b"\x01\x00"
)  # fmt: skip


def cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC-128 (RFC 4493), the MAC behind every SGX key, token and report."""
    from cryptography.hazmat.primitives.ciphers import algorithms
    from cryptography.hazmat.primitives.cmac import CMAC

    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


@dataclass(frozen=True)
class EnclaveIdentity:
    """What EINIT commits into the SECS: the identity keys and reports are bound to."""

    mrenclave: bytes
    mrsigner: bytes
    attributes: Attributes
    miscselect: int = 0
    isvprodid: int = 0
    isvsvn: int = 0
    configid: bytes = bytes(64)
    configsvn: int = 0
    isvfamilyid: bytes = bytes(16)
    isvextprodid: bytes = bytes(16)
    padding: bytes = bytes(_PADDING_BYTES)


@dataclass(frozen=True)
class KeyContext:
    """The per-chip and per-boot values derivations draw on.

    ``root`` stands for the fused derivation key, ``seal_fuses`` for CR_SEAL_FUSES (both
    survive power cycles), ``owner_epoch`` for CR_SGXOWNEREPOCH (set by the platform
    owner), ``report_keyid`` for CR_REPORT_KEYID (new each boot, SDM EREPORT).
    """

    root: bytes
    seal_fuses: bytes
    owner_epoch: bytes
    report_keyid: bytes
    cpusvn: bytes = CR_CPUSVN


@dataclass(frozen=True)
class KeyDependencies:
    """KEYDEPENDENCIES of the SDM EGETKEY pseudocode, zero where a key name omits one."""

    keyname: int
    isvprodid: int = 0
    isvsvn: int = 0
    ownerepoch: bytes = bytes(16)
    attributes: Attributes = _NO_ATTRIBUTES
    attributemask: Attributes = _NO_ATTRIBUTES
    mrenclave: bytes = bytes(32)
    mrsigner: bytes = bytes(32)
    keyid: bytes = bytes(32)
    seal_fuses: bytes = bytes(16)
    cpusvn: bytes = bytes(16)
    padding: bytes = bytes(_PADDING_BYTES)
    miscselect: int = 0
    miscmask: int = 0
    keypolicy: int = 0
    configid: bytes = bytes(64)
    configsvn: int = 0
    isvfamilyid: bytes = bytes(16)
    isvextprodid: bytes = bytes(16)

    def pack(self) -> bytes:
        head = struct.pack(
            "<HHH16s16s16s32s32s32s16s16s",
            self.keyname, self.isvprodid, self.isvsvn, self.ownerepoch,
            self.attributes.pack(), self.attributemask.pack(), self.mrenclave, self.mrsigner,
            self.keyid, self.seal_fuses, self.cpusvn,
        )  # fmt: skip
        tail = struct.pack(
            "<IIH64sH16s16s",
            self.miscselect, self.miscmask, self.keypolicy, self.configid, self.configsvn,
            self.isvfamilyid, self.isvextprodid,
        )  # fmt: skip
        return head + self.padding + tail


def derive(ctx: KeyContext, deps: KeyDependencies) -> bytes:
    """derivekey(): a 128-bit key from the chip root and the dependencies."""
    return cmac(ctx.root[:16], deps.pack())


def cpusvn_beyond(requested: bytes, current: bytes) -> bool:
    """True when a requested CPUSVN is newer than the part's in any component."""
    return any(r > c for r, c in zip(requested, current, strict=True))


def _seal_like(ctx: KeyContext, who: EnclaveIdentity, req: Keyrequest) -> KeyDependencies:
    """Dependencies common to the SVN-checked keys (SEAL, PROVISION*, EINITTOKEN)."""
    mask = Attributes(req.attributemask_flags, req.attributemask_xfrm)
    bound = Attributes(mask.flags | _ALWAYS_BOUND, mask.xfrm)
    policy = req.keypolicy
    prodid = 0 if policy & KeyPolicy.NOISVPRODID else who.isvprodid
    return KeyDependencies(
        keyname=req.keyname, isvprodid=prodid, isvsvn=req.isvsvn, ownerepoch=ctx.owner_epoch,
        attributes=who.attributes & bound, attributemask=mask,
        keyid=req.keyid, seal_fuses=ctx.seal_fuses, cpusvn=req.cpusvn, padding=who.padding,
        miscselect=who.miscselect & req.miscmask, miscmask=~req.miscmask & 0xFFFFFFFF,
        keypolicy=policy,
        configid=who.configid if policy & KeyPolicy.CONFIGID else bytes(64),
        configsvn=req.configsvn if policy & KeyPolicy.CONFIGID else 0,
        isvfamilyid=who.isvfamilyid if policy & KeyPolicy.ISVFAMILYID else bytes(16),
        isvextprodid=who.isvextprodid if policy & KeyPolicy.ISVEXTPRODID else bytes(16),
    )  # fmt: skip


def _seal(ctx: KeyContext, who: EnclaveIdentity, req: Keyrequest) -> KeyDependencies:
    deps = _seal_like(ctx, who, req)
    return dataclasses.replace(
        deps,
        mrenclave=who.mrenclave if req.keypolicy & KeyPolicy.MRENCLAVE else bytes(32),
        mrsigner=who.mrsigner if req.keypolicy & KeyPolicy.MRSIGNER else bytes(32),
    )


def _report(ctx: KeyContext, who: EnclaveIdentity, req: Keyrequest) -> KeyDependencies:
    target = Targetinfo(
        mrenclave=who.mrenclave, attributes_flags=who.attributes.flags,
        attributes_xfrm=who.attributes.xfrm, miscselect=who.miscselect,
        configid=who.configid, configsvn=who.configsvn,
    )  # fmt: skip
    return _report_deps(ctx, target, req.keyid)


def _einittoken(ctx: KeyContext, who: EnclaveIdentity, req: Keyrequest) -> KeyDependencies:
    deps = _seal_like(ctx, who, req)
    # SDM EGETKEY: the launch key has no attribute or misc mask and binds MRSIGNER only.
    return dataclasses.replace(
        deps, isvprodid=who.isvprodid, attributemask=Attributes(), miscmask=0,
        mrsigner=who.mrsigner, keypolicy=0, configid=bytes(64), configsvn=0,
        isvfamilyid=bytes(16), isvextprodid=bytes(16),
    )  # fmt: skip


def _provision(ctx: KeyContext, who: EnclaveIdentity, req: Keyrequest) -> KeyDependencies:
    # No OWNEREPOCH, KEYID or SEAL_FUSES: the key survives an owner change (SDM table).
    deps = _seal(ctx, who, dataclasses.replace(req, keypolicy=KeyPolicy.MRSIGNER))
    return dataclasses.replace(
        deps, isvprodid=who.isvprodid, ownerepoch=bytes(16), keyid=bytes(32),
        seal_fuses=bytes(16), keypolicy=0,
    )  # fmt: skip


def _provision_seal(ctx: KeyContext, who: EnclaveIdentity, req: Keyrequest) -> KeyDependencies:
    deps = _seal(ctx, who, dataclasses.replace(req, keypolicy=req.keypolicy & ~0x3 | 0x2))
    return dataclasses.replace(deps, ownerepoch=bytes(16), keyid=bytes(32))


@dataclass(frozen=True)
class _KeyRow:
    build: Callable[[KeyContext, EnclaveIdentity, Keyrequest], KeyDependencies]
    needs: int  # ATTRIBUTES.FLAGS bit the enclave must have (0: none)
    svn_checks: bool


_KEY_ROWS: dict[int, _KeyRow] = {
    KeyName.EINITTOKEN: _KeyRow(_einittoken, AttributeFlag.EINITTOKEN_KEY, True),
    KeyName.PROVISION: _KeyRow(_provision, AttributeFlag.PROVISIONKEY, True),
    KeyName.PROVISION_SEAL: _KeyRow(_provision_seal, AttributeFlag.PROVISIONKEY, True),
    KeyName.REPORT: _KeyRow(_report, 0, False),
    KeyName.SEAL: _KeyRow(_seal, 0, True),
}


def _check_request(raw: bytes, who: EnclaveIdentity) -> Keyrequest:
    if len(raw) != Keyrequest.LAYOUT.size:
        raise SgxFault(GP, f"KEYREQUEST must be {Keyrequest.LAYOUT.size} bytes")
    if Keyrequest.LAYOUT.nonzero_reserved(raw):
        raise SgxFault(GP, "KEYREQUEST reserved bytes are not zero")
    req = Keyrequest.unpack(raw)
    kss = who.attributes.flags & AttributeFlag.KSS
    if not kss and (req.keypolicy & _KSS_POLICIES or req.configsvn):
        raise SgxFault(GP, "KEYPOLICY uses KSS bits but the enclave lacks ATTRIBUTES.KSS")
    if req.keypolicy & ~0x3F:
        raise SgxFault(GP, f"KEYPOLICY has reserved bits set ({req.keypolicy:#x})")
    return req


def egetkey(ctx: KeyContext, who: EnclaveIdentity, raw_request: bytes) -> bytes:
    """EGETKEY for an initialized enclave: the 16-byte key, or the architectural error."""
    req = _check_request(raw_request, who)
    row = _KEY_ROWS.get(req.keyname)
    if row is None:
        raise SgxStatusError(SgxStatus.INVALID_KEYNAME, f"no key name {req.keyname}")
    if row.needs and not who.attributes.flags & row.needs:
        name = AttributeFlag(row.needs).name
        raise SgxStatusError(
            SgxStatus.INVALID_ATTRIBUTE,
            f"{KeyName(req.keyname).name} key needs ATTRIBUTES.{name}",
        )
    if row.svn_checks:
        if cpusvn_beyond(req.cpusvn, ctx.cpusvn):
            raise SgxStatusError(SgxStatus.INVALID_CPUSVN, "requested CPUSVN is beyond the CPU's")
        if req.isvsvn > who.isvsvn or req.configsvn > who.configsvn:
            raise SgxStatusError(
                SgxStatus.INVALID_ISVSVN,
                f"requested ISVSVN {req.isvsvn} is above the enclave's {who.isvsvn}",
            )
    return derive(ctx, row.build(ctx, who, req))


def _report_deps(ctx: KeyContext, target: Targetinfo, keyid: bytes) -> KeyDependencies:
    return KeyDependencies(
        keyname=KeyName.REPORT, ownerepoch=ctx.owner_epoch,
        attributes=Attributes(target.attributes_flags, target.attributes_xfrm),
        mrenclave=target.mrenclave, keyid=keyid, seal_fuses=ctx.seal_fuses,
        cpusvn=ctx.cpusvn, padding=HARDCODED_PADDING, miscselect=target.miscselect,
        configid=target.configid, configsvn=target.configsvn,
    )  # fmt: skip


def report_key(ctx: KeyContext, target: Targetinfo, keyid: bytes) -> bytes:
    """The report key of the enclave ``target`` describes (EREPORT's MAC key)."""
    return derive(ctx, _report_deps(ctx, target, keyid))


def launch_key(ctx: KeyContext, token: Einittoken, le_pubkeyhash: bytes) -> bytes:
    """The key EINIT checks a token's MAC with (SDM EINIT; ``sim.md`` 2.4 step 14).

    MRSIGNER is the current IA32_SGXLEPUBKEYHASH value, so changing the MSRs invalidates
    every token issued before. It equals what the Launch Enclave gets from
    EGETKEY(EINITTOKEN) with the request Intel's LE uses (``le_calc_lic_token``).
    """
    return derive(ctx, KeyDependencies(
        keyname=KeyName.EINITTOKEN, isvprodid=token.isvprodidle, isvsvn=token.isvsvnle,
        ownerepoch=ctx.owner_epoch,
        attributes=Attributes(token.maskedattributesle_flags, token.maskedattributesle_xfrm),
        mrsigner=le_pubkeyhash, keyid=token.keyid, seal_fuses=ctx.seal_fuses,
        cpusvn=token.cpusvnle, padding=HARDCODED_PADDING,
        miscselect=token.maskedmiscselectle,
    ))  # fmt: skip
