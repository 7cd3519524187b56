"""ENCLS paging and SGX2 leaves: EPA, EBLOCK, ETRACK, EWB, ELDU/ELDB, EAUG, EMODPR, EMODT.

Eviction follows SDM vol. 3D 38.5.5 (``shared/reference/sim.md`` 3.8): EWB seals the page
with AES-GCM under the paging key, binding the enclave id, linear address, SECINFO and a
fresh version that goes into a version-array slot; ELDU checks the MAC with the version in
the slot and clears it, so a stale or replayed page is refused. The version is also the
GCM nonce, so it must never repeat under a key: the key is made afresh for each
simulated CPU (:class:`~hwsim.sgx.epc.Epc`, one per process and boot) and the counter only
grows within it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hwsim.sgx._build import RWX, Op, check_linaddr
from hwsim.sgx.arch import (
    PAGE_SIZE,
    PageType,
    Pcmd,
    Secinfo,
    SecinfoFlag,
    SgxStatus,
    secinfo_flags,
)
from hwsim.sgx.epc import Enclave, Epc, EpcmEntry
from hwsim.sgx.errors import GP, PF, SgxFault, SgxStatusError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VA_SLOTS = PAGE_SIZE // 8


@dataclass(frozen=True)
class EPa(Op[None]):
    page: int


@dataclass(frozen=True)
class EBlock(Op[None]):
    page: int


@dataclass(frozen=True)
class ETrack(Op[None]):
    secs_page: int


@dataclass(frozen=True)
class EvictedPage:
    """What EWB writes to normal memory: the encrypted page, its PCMD and LINADDR."""

    linaddr: int
    contents: bytes
    pcmd: bytes
    status: SgxStatus = SgxStatus.SUCCESS  # VA_SLOT_OCCUPIED still evicts (CF=1)


@dataclass(frozen=True)
class EWb(Op[EvictedPage]):
    page: int
    va_page: int
    va_slot: int


@dataclass(frozen=True)
class ELd(Op[None]):
    """ELDU, or ELDB with ``blocked=True``."""

    page: int
    secs_page: int
    evicted: EvictedPage
    va_page: int
    va_slot: int
    blocked: bool = False


@dataclass(frozen=True)
class EAug(Op[None]):
    page: int
    secs_page: int
    linaddr: int


@dataclass(frozen=True)
class EModPr(Op[None]):
    page: int
    secinfo: int


@dataclass(frozen=True)
class EModT(Op[None]):
    page: int
    secinfo: int


def epa(epc: Epc, op: EPa) -> None:
    epc.free_check(op.page)
    epc.epcm[op.page] = EpcmEntry(PageType.VA, -1)
    epc.write(op.page, bytes(PAGE_SIZE))


def eblock(epc: Epc, op: EBlock) -> None:
    entry = epc.epcm.get(op.page)
    if entry is None:
        raise SgxStatusError(SgxStatus.PG_INVLD, "EBLOCK: the page is not valid")
    if entry.page_type in (PageType.SECS, PageType.VA):
        raise SgxStatusError(SgxStatus.NOTBLOCKABLE, f"EBLOCK: a {entry.page_type.name} page")
    if entry.blocked:
        raise SgxStatusError(SgxStatus.BLKSTATE, "EBLOCK: the page is already blocked")
    entry.blocked = True
    entry.block_epoch = epc.enclaves[entry.secs].epoch


def etrack(epc: Epc, op: ETrack) -> None:
    enclave = epc.enclave_of(op.secs_page)
    if enclave.track_outstanding:
        raise SgxStatusError(
            SgxStatus.PREV_TRK_INCMPL, "threads from the previous ETRACK are still inside"
        )
    enclave.epoch += 1
    enclave.track_outstanding = enclave.active_threads


def tracked(enclave: Enclave, since_epoch: int) -> bool:
    """True once an ETRACK after ``since_epoch`` has completed (its threads have left)."""
    return enclave.epoch > since_epoch and not enclave.track_outstanding


def _va_slot(epc: Epc, va_page: int, slot: int) -> tuple[bytearray, int]:
    if epc.entry(va_page, "VA page").page_type != PageType.VA:
        raise SgxFault(PF, "the version array operand is not a PT_VA page")
    if not 0 <= slot < _VA_SLOTS:
        raise SgxFault(GP, f"VA slot {slot} is outside 0..{_VA_SLOTS - 1}")
    page = bytearray(epc.read(va_page))
    return page, struct.unpack_from("<Q", page, slot * 8)[0]


def _paging_aead(
    epc: Epc, version: int, enclave_id: int, linaddr: int, secinfo: int
) -> tuple[AESGCM, bytes, bytes]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    # EWB: AES-GCM under CR_BASE_PK, counter = version << 32, AAD = EID|LINADDR|SECINFO.
    nonce = struct.pack("<QI", version, 0)
    aad = struct.pack("<QQQ", enclave_id, linaddr, secinfo)
    return AESGCM(epc.paging_key), nonce, aad


def ewb(epc: Epc, op: EWb) -> EvictedPage:
    entry = epc.entry(op.page)
    if entry.page_type not in (PageType.REG, PageType.TCS, PageType.TRIM):
        raise SgxFault(PF, f"EWB: evicting a {entry.page_type.name} page is not modelled")
    if not entry.blocked:
        raise SgxStatusError(SgxStatus.PAGE_NOT_BLOCKED, "EWB: run EBLOCK first")
    enclave = epc.enclaves[entry.secs]
    if not tracked(enclave, entry.block_epoch):
        raise SgxStatusError(SgxStatus.NOT_TRACKED, "EWB: run ETRACK after EBLOCK and wait")
    va, old = _va_slot(epc, op.va_page, op.va_slot)
    version = epc.next_version()
    secinfo = _entry_secinfo(entry)
    aead, nonce, aad = _paging_aead(epc, version, enclave.eid, entry.linaddr, secinfo)
    sealed = aead.encrypt(nonce, epc.read(op.page), aad)
    struct.pack_into("<Q", va, op.va_slot * 8, version)
    epc.write(op.va_page, bytes(va))
    del enclave.pages[entry.linaddr]
    del epc.epcm[op.page]
    epc.release(op.page)
    pcmd = Pcmd(secinfo=secinfo, enclaveid=enclave.eid, mac=sealed[PAGE_SIZE:]).pack()
    status = SgxStatus.VA_SLOT_OCCUPIED if old else SgxStatus.SUCCESS
    return EvictedPage(entry.linaddr, sealed[:PAGE_SIZE], pcmd, status)


def _entry_secinfo(entry: EpcmEntry) -> int:
    state = (
        (SecinfoFlag.PENDING if entry.pending else 0)
        | (SecinfoFlag.MODIFIED if entry.modified else 0)
        | (SecinfoFlag.PR if entry.pr else 0)
    )
    return secinfo_flags(entry.page_type, entry.perms) | int(state)


def eld(epc: Epc, op: ELd) -> None:
    from cryptography.exceptions import InvalidTag

    epc.free_check(op.page)
    enclave = epc.enclave_of(op.secs_page)
    va, version = _va_slot(epc, op.va_page, op.va_slot)
    pcmd = Pcmd.unpack(op.evicted.pcmd)
    aead, nonce, aad = _paging_aead(epc, version, enclave.eid, op.evicted.linaddr, pcmd.secinfo)
    try:
        plain = aead.decrypt(nonce, op.evicted.contents + pcmd.mac, aad)
    except InvalidTag:
        raise SgxStatusError(
            SgxStatus.MAC_COMPARE_FAIL,
            "ELDU: the page does not match its version slot (stale, replayed or altered)",
        ) from None
    check_linaddr(enclave, op.evicted.linaddr, "ELDU")
    struct.pack_into("<Q", va, op.va_slot * 8, 0)
    epc.write(op.va_page, bytes(va))
    s = pcmd.secinfo
    epc.epcm[op.page] = EpcmEntry(
        PageType(Secinfo(s).page_type), op.secs_page, op.evicted.linaddr, s & RWX,
        pending=bool(s & SecinfoFlag.PENDING), modified=bool(s & SecinfoFlag.MODIFIED),
        pr=bool(s & SecinfoFlag.PR), blocked=op.blocked,
    )  # fmt: skip
    epc.write(op.page, plain)
    enclave.pages[op.evicted.linaddr] = op.page


# -- SGX2: dynamic memory (SDM 38.5.7) ----------------------------------------------------


def eaug(epc: Epc, op: EAug) -> None:
    enclave = epc.enclave_of(op.secs_page)
    if not enclave.initialized:
        raise SgxFault(GP, "EAUG: the enclave is not initialized")
    epc.free_check(op.page)
    check_linaddr(enclave, op.linaddr, "EAUG")
    epc.write(op.page, bytes(PAGE_SIZE))
    perms = int(SecinfoFlag.R | SecinfoFlag.W)
    epc.epcm[op.page] = EpcmEntry(PageType.REG, op.secs_page, op.linaddr, perms, pending=True)
    enclave.pages[op.linaddr] = op.page


def _modifiable(epc: Epc, page: int, leaf: str) -> EpcmEntry:
    entry = epc.entry(page)
    enclave = epc.enclaves.get(entry.secs)
    if enclave is None or not enclave.initialized:
        raise SgxFault(GP, f"{leaf}: the page does not belong to an initialized enclave")
    if entry.pending or entry.modified:
        raise SgxStatusError(
            SgxStatus.PAGE_NOT_MODIFIABLE, f"{leaf}: the page is pending or modified"
        )
    return entry


def emodpr(epc: Epc, op: EModPr) -> None:
    if op.secinfo & ~RWX or (op.secinfo & SecinfoFlag.W and not op.secinfo & SecinfoFlag.R):
        raise SgxFault(GP, "EMODPR: SECINFO must hold R/W/X only, and W needs R")
    entry = _modifiable(epc, op.page, "EMODPR")
    if entry.page_type != PageType.REG:
        raise SgxStatusError(SgxStatus.PAGE_NOT_MODIFIABLE, "EMODPR: not a PT_REG page")
    entry.perms &= op.secinfo
    entry.pr = True
    entry.block_epoch = epc.enclaves[entry.secs].epoch


def emodt(epc: Epc, op: EModT) -> None:
    target = Secinfo(op.secinfo).page_type
    if op.secinfo & ~0xFF00 or target not in (PageType.TCS, PageType.TRIM):
        raise SgxFault(GP, "EMODT: SECINFO must name PT_TCS or PT_TRIM and nothing else")
    entry = _modifiable(epc, op.page, "EMODT")
    if entry.page_type not in (PageType.REG, PageType.TCS):
        raise SgxStatusError(SgxStatus.PAGE_NOT_MODIFIABLE, "EMODT: not a PT_REG/PT_TCS page")
    entry.page_type = PageType(target)
    entry.perms = 0
    entry.modified = True
    entry.block_epoch = epc.enclaves[entry.secs].epoch
