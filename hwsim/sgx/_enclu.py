"""ENCLU leaves performed for a running enclave: EGETKEY, EREPORT, EACCEPT, EMODPE.

The execution core traps ENCLU and calls these with the running enclave and the operand
bytes it read from enclave memory; each returns the bytes to write back (or nothing), or
raises :class:`~hwsim.sgx.errors.SgxStatusError` (ZF=1, RAX=code, output untouched) or
:class:`~hwsim.sgx.errors.SgxFault` (#GP/#PF). EENTER, EEXIT and ERESUME belong to the
execution core itself. Sources: SDM vol. 3D 38.x leaf "Operation" sections, summarised in
``shared/reference/sim.md`` 3.5-3.6 and 3.8.
"""

from __future__ import annotations

from hwsim.sgx._paging import tracked
from hwsim.sgx.arch import PageType, Report, SecinfoFlag, SgxStatus, Targetinfo
from hwsim.sgx.epc import Enclave, EpcmEntry
from hwsim.sgx.errors import GP, PF, SgxError, SgxFault, SgxStatusError
from hwsim.sgx.keys import EnclaveIdentity, cmac, egetkey, report_key

__all__ = ["check_report", "eaccept", "egetkey_leaf", "emodpe", "ereport"]

_RWX = int(SecinfoFlag.R | SecinfoFlag.W | SecinfoFlag.X)
_REPORTDATA = 64


def _identity(enclave: Enclave, leaf: str) -> EnclaveIdentity:
    if enclave.identity is None:
        raise SgxFault(GP, f"{leaf}: the enclave is not initialized")
    return enclave.identity


def egetkey_leaf(enclave: Enclave, keyrequest: bytes) -> bytes:
    """EGETKEY: the 16-byte key the 512-byte KEYREQUEST asks for."""
    return egetkey(enclave.keys, _identity(enclave, "EGETKEY"), keyrequest)


def ereport(enclave: Enclave, targetinfo: bytes, reportdata: bytes) -> bytes:
    """EREPORT: a 432-byte REPORT about ``enclave``, MAC'd with the target's report key."""
    who = _identity(enclave, "EREPORT")
    if len(targetinfo) != Targetinfo.LAYOUT.size or len(reportdata) != _REPORTDATA:
        raise SgxFault(GP, "EREPORT: TARGETINFO is 512 bytes and REPORTDATA 64")
    target = Targetinfo.unpack(targetinfo)
    ctx = enclave.keys
    report = Report(
        cpusvn=ctx.cpusvn, miscselect=who.miscselect, isvextprodid=who.isvextprodid,
        attributes_flags=who.attributes.flags, attributes_xfrm=who.attributes.xfrm,
        mrenclave=who.mrenclave, mrsigner=who.mrsigner, configid=who.configid,
        isvprodid=who.isvprodid, isvsvn=who.isvsvn, configsvn=who.configsvn,
        isvfamilyid=who.isvfamilyid, reportdata=reportdata, keyid=ctx.report_keyid,
    )  # fmt: skip
    raw = report.pack()
    mac = cmac(report_key(ctx, target, ctx.report_keyid), raw[: Report.MAC_COVERS])
    return raw[: Report.LAYOUT.offset("mac")] + mac


def check_report(enclave: Enclave, report: bytes) -> Report:
    """What a target enclave does to verify a REPORT made for it on this machine.

    EGETKEY(REPORT_KEY) with the report's KEYID, then the CMAC over the body; raises
    :class:`SgxError` when the REPORT was made for another enclave or on another machine.
    """
    who = _identity(enclave, "EGETKEY")
    parsed = Report.unpack(report)
    target = Targetinfo(
        mrenclave=who.mrenclave, attributes_flags=who.attributes.flags,
        attributes_xfrm=who.attributes.xfrm, miscselect=who.miscselect,
        configid=who.configid, configsvn=who.configsvn,
    )  # fmt: skip
    key = report_key(enclave.keys, target, parsed.keyid)
    if cmac(key, report[: Report.MAC_COVERS]) != parsed.mac:
        raise SgxError(
            "REPORT MAC does not verify: it was made for another enclave or on another machine"
        )
    return parsed


def _own_page(enclave: Enclave, linaddr: int, leaf: str) -> EpcmEntry:
    if linaddr & 0xFFF or not enclave.contains(linaddr):
        raise SgxFault(GP, f"{leaf}: {linaddr:#x} is not a page inside ELRANGE")
    entry = enclave.epc.entry(enclave.page(linaddr))
    if entry.secs != enclave.secs_page or entry.linaddr != linaddr:
        raise SgxFault(PF, f"{leaf}: the EPC page at {linaddr:#x} is not this enclave's")
    return entry


def eaccept(enclave: Enclave, linaddr: int, secinfo: int) -> None:
    """EACCEPT: accept a pending (EAUG), modified (EMODT) or restricted (EMODPR) page.

    SECINFO must describe the page's new state exactly (SDM EACCEPT), otherwise
    SGX_PAGE_ATTRIBUTES_MISMATCH; a change made by EMODPR/EMODT needs a completed ETRACK.
    """
    _identity(enclave, "EACCEPT")
    entry = _own_page(enclave, linaddr, "EACCEPT")
    want = (int(entry.page_type) << 8) | entry.perms
    if entry.pending:
        want |= SecinfoFlag.PENDING
    elif entry.modified:
        want = (int(entry.page_type) << 8) | SecinfoFlag.MODIFIED
    elif entry.pr:
        want |= SecinfoFlag.PR
    if secinfo != want or not (entry.pending or entry.modified or entry.pr):
        raise SgxStatusError(
            SgxStatus.PAGE_ATTRIBUTES_MISMATCH,
            f"EACCEPT: SECINFO {secinfo:#x} does not match the page ({entry.describe()})",
        )
    if (entry.modified or entry.pr) and not tracked(enclave, entry.block_epoch):
        raise SgxStatusError(SgxStatus.NOT_TRACKED, "EACCEPT: the change is not tracked yet")
    entry.pending = entry.modified = entry.pr = False


def emodpe(enclave: Enclave, linaddr: int, secinfo: int) -> None:
    """EMODPE: extend a regular page's permissions (SGX2; the OS may then allow them)."""
    _identity(enclave, "EMODPE")
    if secinfo & ~_RWX or (secinfo & SecinfoFlag.W and not secinfo & SecinfoFlag.R):
        raise SgxFault(GP, "EMODPE: SECINFO holds R/W/X only, and W needs R")
    entry = _own_page(enclave, linaddr, "EMODPE")
    if entry.page_type != PageType.REG or entry.pending or entry.modified:
        raise SgxFault(PF, "EMODPE: the page is not a settled PT_REG page")
    entry.perms |= secinfo
