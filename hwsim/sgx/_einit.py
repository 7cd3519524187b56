"""EINIT: the launch check, in the SDM's order with each failure's own code.

SDM vol. 3D 38.x EINIT "Operation" as transcribed in ``shared/reference/sim.md`` 2.4: the
SIGSTRUCT format and signature, the measurement, controlled attributes and the masks, then
either the tokenless path (MRSIGNER equals IA32_SGXLEPUBKEYHASH) or a Launch Enclave token
checked under the launch key, which is derived with the current MSR value.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

from hwsim.sgx._build import Op, uninitialized
from hwsim.sgx.arch import AttributeFlag, Attributes, Einittoken, Secs, SgxStatus, Sigstruct
from hwsim.sgx.epc import Enclave, Epc
from hwsim.sgx.errors import GP, SgxFault, SgxStatusError
from hwsim.sgx.keys import HARDCODED_PADDING, EnclaveIdentity, cmac, cpusvn_beyond, launch_key
from hwsim.sgx.sigcheck import SigstructError, check_sigstruct


@dataclass(frozen=True)
class EInit(Op[None]):
    secs_page: int
    sigstruct: bytes
    token: bytes = bytes(Einittoken.LAYOUT.size)


def _einit_signature(raw: bytes) -> Sigstruct:
    if len(raw) != Sigstruct.LAYOUT.size:
        raise SgxFault(GP, "EINIT: SIGSTRUCT is not 1808 bytes")
    try:
        return check_sigstruct(raw)
    except SigstructError as exc:
        raise SgxStatusError(exc.status, f"SIGSTRUCT {exc}") from exc


def _einit_attributes(secs: Secs, sig: Sigstruct, mrsigner: bytes, le_hash: bytes) -> None:
    if secs.attributes_flags & AttributeFlag.EINITTOKEN_KEY and mrsigner != le_hash:
        raise SgxStatusError(
            SgxStatus.INVALID_ATTRIBUTE,
            "EINITTOKEN_KEY is reserved for the signer in IA32_SGXLEPUBKEYHASH",
        )
    mask = sig.attributemask
    if secs.attributes & mask != sig.attributes & mask:
        raise SgxStatusError(
            SgxStatus.INVALID_ATTRIBUTE, "SECS.ATTRIBUTES differ from SIGSTRUCT under its mask"
        )
    if secs.miscselect & sig.miscmask != sig.miscselect & sig.miscmask:
        raise SgxStatusError(
            SgxStatus.INVALID_ATTRIBUTE, "SECS.MISCSELECT differs from SIGSTRUCT under its mask"
        )


def _einit_token(epc: Epc, raw: bytes, secs: Secs, ids: tuple[bytes, bytes], le: bytes) -> None:
    """Steps 11-17: a token with VALID=1 from a Launch Enclave."""
    token = Einittoken.unpack(raw)
    bad = SgxStatus.INVALID_EINITTOKEN
    if token.maskedattributesle_flags & AttributeFlag.DEBUG and not secs.attributes_flags & 2:
        raise SgxStatusError(bad, "a debug Launch Enclave's token cannot launch production")
    if token.valid != 1 or Einittoken.LAYOUT.nonzero_reserved(raw):
        raise SgxStatusError(bad, "token reserved fields or VALID bits are not zero")
    if cpusvn_beyond(token.cpusvnle, epc.keys.cpusvn):
        raise SgxStatusError(SgxStatus.INVALID_CPUSVN, "token CPUSVN is beyond the CPU's")
    key = launch_key(epc.keys, token, le)
    if cmac(key, raw[: Einittoken.MAC_COVERS]) != token.mac:
        raise SgxStatusError(
            bad,
            "token MAC does not verify under this CPU's launch key "
            "(made on another machine, or the LE hash MSRs changed since)",
        )
    if (token.mrenclave, token.mrsigner) != ids:
        raise SgxStatusError(
            SgxStatus.INVALID_MEASUREMENT, "token is for another MRENCLAVE or MRSIGNER"
        )
    if token.attributes != secs.attributes:
        # SDM: SGX_INVALID_EINIT_ATTRIBUTE; OpenSGX and the drivers report INVALID_ATTRIBUTE.
        raise SgxStatusError(SgxStatus.INVALID_ATTRIBUTE, "token ATTRIBUTES differ from SECS")


def einit(epc: Epc, op: EInit) -> None:
    if len(op.token) != Einittoken.LAYOUT.size:
        raise SgxFault(GP, "EINIT: EINITTOKEN is not 304 bytes")
    sig = _einit_signature(op.sigstruct)
    enclave = uninitialized(epc, op.secs_page, "EINIT")
    secs = enclave.secs
    kss = secs.attributes_flags & AttributeFlag.KSS
    if not kss and (any(sig.isvfamilyid) or any(sig.isvextprodid)):
        raise SgxStatusError(
            SgxStatus.INVALID_SIG_STRUCT, "ISVFAMILYID/ISVEXTPRODID need ATTRIBUTES.KSS"
        )
    mrenclave = enclave.measurement.copy().digest()
    if sig.enclavehash != mrenclave:
        raise SgxStatusError(
            SgxStatus.INVALID_MEASUREMENT,
            f"SIGSTRUCT ENCLAVEHASH {sig.enclavehash.hex()} != measured MRENCLAVE "
            f"{mrenclave.hex()}",
        )
    mrsigner = sig.mrsigner
    le_hash = epc.read_le_hash()
    _einit_attributes(secs, sig, mrsigner, le_hash)
    if not struct.unpack_from("<I", op.token)[0] & 1:
        if mrsigner != le_hash:
            raise SgxStatusError(
                SgxStatus.INVALID_EINITTOKEN,
                f"no token, and MRSIGNER {mrsigner.hex()} != IA32_SGXLEPUBKEYHASH {le_hash.hex()}",
            )
    else:
        _einit_token(epc, op.token, secs, (mrenclave, mrsigner), le_hash)
    _commit(epc, enclave, sig, mrenclave)


def _commit(epc: Epc, enclave: Enclave, sig: Sigstruct, mrenclave: bytes) -> None:
    secs = enclave.secs
    attrs = Attributes(secs.attributes_flags | AttributeFlag.INIT, secs.attributes_xfrm)
    enclave.identity = EnclaveIdentity(
        mrenclave=mrenclave, mrsigner=sig.mrsigner, attributes=attrs,
        miscselect=secs.miscselect, isvprodid=sig.isvprodid, isvsvn=sig.isvsvn,
        configid=secs.configid, configsvn=secs.configsvn, isvfamilyid=sig.isvfamilyid,
        isvextprodid=sig.isvextprodid, padding=HARDCODED_PADDING,
    )  # fmt: skip
    enclave.secs = dataclasses.replace(
        secs, mrenclave=mrenclave, mrsigner=sig.mrsigner, attributes_flags=attrs.flags,
        isvprodid=sig.isvprodid, isvsvn=sig.isvsvn,
    )  # fmt: skip
    epc.write(enclave.secs_page, enclave.secs.pack())
