"""ENCLS leaves that build, remove and debug an enclave: ECREATE, EADD, EEXTEND, EREMOVE,
EDBGRD, EDBGWR (SDM vol. 3D 38.x "Operation"; ``shared/reference/sim.md`` 3.2, 3.3, 3.7).

Each leaf takes the :class:`~hwsim.sgx.epc.Epc` and one frozen operand record, the
contents RBX/RCX/RDX point at on real hardware; :mod:`hwsim.sgx._encls` dispatches to them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generic, TypeVar

from hwsim.sgx.arch import (
    EEXTEND_CHUNK,
    PAGE_SIZE,
    AttributeFlag,
    PageType,
    Secinfo,
    SecinfoFlag,
    Secs,
    SgxStatus,
    Tcs,
    eadd_block,
    ecreate_block,
    eextend_header,
    secinfo_flags,
)
from hwsim.sgx.epc import Enclave, Epc, EpcmEntry
from hwsim.sgx.errors import GP, PF, SgxFault, SgxStatusError

R = TypeVar("R")

RWX = int(SecinfoFlag.R | SecinfoFlag.W | SecinfoFlag.X)
# MISCSELECT bits defined on the simulated parts: EXINFO (bit 0), SDM 37.7.2.
_MISC_DEFINED = 0x1
# Largest ELRANGE: 2^36 bytes, what Skylake-era parts report in CPUID.(12H,0):EDX[15:8].
_MAX_ENCLAVE_SIZE = 1 << 36


class Op(Generic[R]):
    """An ENCLS operand record whose leaf returns ``R``."""


@dataclass(frozen=True)
class ECreate(Op[None]):
    page: int  # the free EPC page that becomes the SECS
    secs: bytes  # the SECS source page (PAGEINFO.SRCPGE)
    secinfo: int = secinfo_flags(PageType.SECS)


@dataclass(frozen=True)
class EAdd(Op[None]):
    page: int
    secs_page: int
    linaddr: int
    src: bytes
    secinfo: int


@dataclass(frozen=True)
class EExtend(Op[None]):
    page: int
    offset: int  # 256-byte chunk offset inside the page


@dataclass(frozen=True)
class ERemove(Op[None]):
    page: int


@dataclass(frozen=True)
class EDbgRd(Op[bytes]):
    page: int
    offset: int


@dataclass(frozen=True)
class EDbgWr(Op[None]):
    page: int
    offset: int
    data: bytes


def _check_secs(epc: Epc, raw: bytes) -> Secs:
    if len(raw) != PAGE_SIZE or Secs.LAYOUT.nonzero_reserved(raw):
        raise SgxFault(GP, "SECS source is not a page or has non-zero reserved fields")
    secs = Secs.unpack(raw)
    p = epc.profile
    problems = [
        (secs.size < 2 * PAGE_SIZE or secs.size & (secs.size - 1), "SIZE is not 2^n >= 8 KiB"),
        (secs.size > _MAX_ENCLAVE_SIZE, f"SIZE exceeds {_MAX_ENCLAVE_SIZE:#x}"),
        (secs.baseaddr & (secs.size - 1), "BASEADDR is not aligned to SIZE"),
        (secs.ssaframesize < 1, "SSAFRAMESIZE is 0"),
        (secs.attributes_flags & AttributeFlag.INIT, "ATTRIBUTES.INIT is set"),
        (secs.attributes_flags & ~p.sgx_attributes, "ATTRIBUTES outside CPUID.(12H,1) allows"),
        (secs.attributes_xfrm & 3 != 3, "XFRM lacks x87 and SSE"),
        (secs.attributes_xfrm & ~p.sgx_xfrm, "XFRM outside CPUID.(12H,1) allows"),
        (secs.miscselect & ~_MISC_DEFINED, "MISCSELECT has reserved bits"),
        (not secs.attributes_flags & AttributeFlag.MODE64BIT
         and secs.baseaddr + secs.size > 1 << 32, "32-bit enclave above 4 GiB"),
    ]  # fmt: skip
    for bad, why in problems:
        if bad:
            raise SgxFault(GP, f"ECREATE: {why}")
    return secs


def ecreate(epc: Epc, op: ECreate) -> None:
    if op.secinfo != secinfo_flags(PageType.SECS):
        raise SgxFault(GP, "ECREATE: SECINFO must be PT_SECS with no other bits")
    epc.free_check(op.page)
    secs = _check_secs(epc, op.secs)
    secs = dataclasses.replace(secs, mrenclave=bytes(32), mrsigner=bytes(32))
    enclave = Enclave(epc, op.page, secs)
    enclave.measurement.update(ecreate_block(secs.ssaframesize, secs.size))
    epc.epcm[op.page] = EpcmEntry(PageType.SECS, op.page)
    epc.enclaves[op.page] = enclave
    epc.write(op.page, secs.pack())


def _check_tcs(raw: bytes) -> None:
    tcs = Tcs.unpack(raw)
    if Tcs.LAYOUT.nonzero_reserved(raw) or tcs.flags & ~0x3 or tcs.cssa:
        raise SgxFault(GP, "EADD: TCS has reserved bits set or CSSA != 0")
    if (tcs.ossa | tcs.ofsbase | tcs.ogsbase) & (PAGE_SIZE - 1):
        raise SgxFault(GP, "EADD: TCS OSSA/OFSBASE/OGSBASE are not page aligned")


def uninitialized(epc: Epc, secs_page: int, leaf: str) -> Enclave:
    enclave = epc.enclave_of(secs_page)
    if enclave.initialized:
        raise SgxFault(GP, f"{leaf}: the enclave is already initialized")
    return enclave


def check_linaddr(enclave: Enclave, linaddr: int, leaf: str) -> None:
    if linaddr & (PAGE_SIZE - 1) or not enclave.contains(linaddr):
        raise SgxFault(GP, f"{leaf}: {linaddr:#x} is not a page inside ELRANGE")
    if linaddr in enclave.pages:
        # Real parts do not track this; the model keeps one EPC page per linear page.
        raise SgxFault(GP, f"{leaf}: {linaddr:#x} already has an EPC page")


def eadd(epc: Epc, op: EAdd) -> None:
    ptype = Secinfo(op.secinfo).page_type
    if op.secinfo & ~(0xFF00 | RWX) or ptype not in (PageType.REG, PageType.TCS):
        raise SgxFault(GP, "EADD: SECINFO must be PT_REG or PT_TCS with no state bits")
    if op.secinfo & SecinfoFlag.W and not op.secinfo & SecinfoFlag.R:
        raise SgxFault(GP, "EADD: SECINFO has W without R")
    if len(op.src) != PAGE_SIZE:
        raise SgxFault(GP, "EADD: source is not one page")
    enclave = uninitialized(epc, op.secs_page, "EADD")
    epc.free_check(op.page)
    check_linaddr(enclave, op.linaddr, "EADD")
    if ptype == PageType.TCS:
        _check_tcs(op.src)
    # The TCS keeps no permissions: the CPU clears R/W/X (Linux sgx_validate_secinfo).
    perms = op.secinfo & RWX if ptype == PageType.REG else 0
    epc.write(op.page, op.src)
    epc.epcm[op.page] = EpcmEntry(PageType(ptype), op.secs_page, op.linaddr, perms)
    enclave.pages[op.linaddr] = op.page
    enclave.measurement.update(eadd_block(op.linaddr - enclave.secs.baseaddr, op.secinfo))


def eextend(epc: Epc, op: EExtend) -> None:
    entry = epc.entry(op.page)
    if entry.page_type not in (PageType.REG, PageType.TCS):
        raise SgxFault(PF, "EEXTEND: page is not PT_REG or PT_TCS")
    if op.offset % EEXTEND_CHUNK or not 0 <= op.offset < PAGE_SIZE:
        raise SgxFault(GP, "EEXTEND: offset is not a 256-byte chunk of the page")
    enclave = uninitialized(epc, entry.secs, "EEXTEND")
    chunk = epc.read(op.page)[op.offset : op.offset + EEXTEND_CHUNK]
    offset = entry.linaddr - enclave.secs.baseaddr + op.offset
    enclave.measurement.update(eextend_header(offset) + chunk)


def eremove(epc: Epc, op: ERemove) -> None:
    entry = epc.entry(op.page)
    if entry.page_type == PageType.SECS:
        enclave = epc.enclaves[op.page]
        if enclave.pages:
            raise SgxStatusError(
                SgxStatus.CHILD_PRESENT, f"SECS still has {len(enclave.pages)} pages"
            )
        del epc.enclaves[op.page]
    elif entry.page_type != PageType.VA:
        enclave = epc.enclaves[entry.secs]
        if enclave.active_threads:
            raise SgxStatusError(SgxStatus.ENCLAVE_ACT, "a thread is executing in the enclave")
        del enclave.pages[entry.linaddr]
    del epc.epcm[op.page]
    epc.release(op.page)


def _debug_target(epc: Epc, page: int, offset: int, leaf: str) -> EpcmEntry:
    entry = epc.entry(page)
    if entry.page_type not in (PageType.REG, PageType.TCS):
        raise SgxFault(PF, f"{leaf}: page is not PT_REG or PT_TCS")
    if not epc.enclaves[entry.secs].debug:
        raise SgxFault(GP, f"{leaf}: the enclave is not a debug enclave (ATTRIBUTES.DEBUG=0)")
    if offset % 8 or not 0 <= offset < PAGE_SIZE:
        raise SgxFault(GP, f"{leaf}: offset {offset:#x} is not 8-byte aligned inside the page")
    return entry


def edbgrd(epc: Epc, op: EDbgRd) -> bytes:
    _debug_target(epc, op.page, op.offset, "EDBGRD")
    return epc.read(op.page)[op.offset : op.offset + 8]


def edbgwr(epc: Epc, op: EDbgWr) -> None:
    entry = _debug_target(epc, op.page, op.offset, "EDBGWR")
    if len(op.data) != 8:
        raise SgxFault(GP, "EDBGWR writes 8 bytes")
    if entry.page_type == PageType.TCS and op.offset != Tcs.LAYOUT.offset("flags"):
        raise SgxFault(GP, "EDBGWR: only TCS.FLAGS of a TCS may be written")
    page = bytearray(epc.read(op.page))
    page[op.offset : op.offset + 8] = op.data
    epc.write(op.page, bytes(page))
