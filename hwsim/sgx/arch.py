"""SGX architectural structures and constants, byte-exact.

Offsets follow Intel SDM vol. 3D ch. 34-38 (SGX data structures) as cross-checked against
linux-sgx ``common/inc/internal/arch.h`` (static_asserts on every size) and rust-sgx's
``sgx-isa``; ``shared/reference/sgx.md`` section 2 lists them. Every structure here is used
by both the tools (signing, measuring) and the simulator (ENCLS/ENCLU).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass
from typing import NamedTuple

from hwsim._layout import Packed, at
from hwsim.arch import PAGE_SIZE as PAGE_SIZE  # noqa: PLC0414 (re-exported for the SGX formats)
from memcrypt.errors import FormatError

EEXTEND_CHUNK = 256

# SDM 38.13: SIGSTRUCT HEADER and HEADER2 are fixed; VENDOR is 0 or 0x8086.
SIGSTRUCT_HEADER = bytes.fromhex("06000000e10000000000010000000000")
SIGSTRUCT_HEADER2 = bytes.fromhex("01010000600000006000000001000000")
VENDOR_INTEL = 0x8086
# The launch key hash pre-FLC parts hardwire in IA32_SGXLEPUBKEYHASH: MRSIGNER of Intel's
# Launch Enclave (the production LE in rust-sgx's examples, vectors/README.md).
INTEL_LE_PUBKEY_HASH = bytes.fromhex(
    "acb77012053e05a63d413b8bbae8fb6c5d73b3f2996d91c43bbbf90959c0f8d4"
)
SIGSTRUCT_EXPONENT = 3
MODULUS_BYTES = 384


class AttributeFlag(enum.IntFlag):
    """SECS.ATTRIBUTES.FLAGS bits (SDM 37.7.1; linux-sgx sgx_attributes.h)."""

    INIT = 0x1
    DEBUG = 0x2
    MODE64BIT = 0x4
    PROVISIONKEY = 0x10
    EINITTOKEN_KEY = 0x20
    KSS = 0x80
    AEXNOTIFY = 0x400


# Bits that an enclave may set; everything else is reserved (SDM 37.7.1).
ATTRIBUTE_FLAGS_DEFINED = (
    AttributeFlag.INIT
    | AttributeFlag.DEBUG
    | AttributeFlag.MODE64BIT
    | AttributeFlag.PROVISIONKEY
    | AttributeFlag.EINITTOKEN_KEY
    | AttributeFlag.KSS
    | AttributeFlag.AEXNOTIFY
)


class Xfrm(enum.IntFlag):
    """XFRM feature groups (XCR0 bits) an enclave may enable."""

    X87 = 0x1
    SSE = 0x2
    AVX = 0x4
    MPX_BNDREGS = 0x8
    MPX_BNDCSR = 0x10
    AVX512_OPMASK = 0x20
    AVX512_ZMM_HI256 = 0x40
    AVX512_HI16_ZMM = 0x80
    PKRU = 0x200
    AMX_TILECFG = 0x20000
    AMX_TILEDATA = 0x40000


XFRM_LEGACY = Xfrm.X87 | Xfrm.SSE


class PageType(enum.IntEnum):
    """EPCM page types (SDM 37.13, SECINFO.FLAGS.PAGE_TYPE)."""

    SECS = 0
    TCS = 1
    REG = 2
    VA = 3
    TRIM = 4


class SecinfoFlag(enum.IntFlag):
    """SECINFO.FLAGS permission and state bits (SDM 37.11.1)."""

    R = 0x1
    W = 0x2
    X = 0x4
    PENDING = 0x8
    MODIFIED = 0x10
    PR = 0x20


def secinfo_flags(page_type: PageType, perms: int = 0) -> int:
    """SECINFO.FLAGS for a page: the type in bits 15:8, permissions in bits 2:0."""
    return (int(page_type) << 8) | perms


def mrsigner(modulus: int) -> bytes:
    """MRSIGNER of a signer's RSA modulus: SHA-256 of the modulus as SIGSTRUCT stores it,
    384 bytes little-endian (SDM vol. 3D 38.13, EINIT "Operation")."""
    return hashlib.sha256(modulus.to_bytes(MODULUS_BYTES, "little")).digest()


class KeyName(enum.IntEnum):
    """KEYREQUEST.KEYNAME (SDM 38.18.1)."""

    EINITTOKEN = 0
    PROVISION = 1
    PROVISION_SEAL = 2
    REPORT = 3
    SEAL = 4


class KeyPolicy(enum.IntFlag):
    """KEYREQUEST.KEYPOLICY (SDM 38.18.1)."""

    MRENCLAVE = 0x1
    MRSIGNER = 0x2
    NOISVPRODID = 0x4
    CONFIGID = 0x8
    ISVFAMILYID = 0x10
    ISVEXTPRODID = 0x20


class EnclsLeaf(enum.IntEnum):
    """ENCLS leaf numbers in EAX (SDM vol. 3D 38.3, table 38-1)."""

    ECREATE = 0x0
    EADD = 0x1
    EINIT = 0x2
    EREMOVE = 0x3
    EDBGRD = 0x4
    EDBGWR = 0x5
    EEXTEND = 0x6
    ELDB = 0x7
    ELDU = 0x8
    EBLOCK = 0x9
    EPA = 0xA
    EWB = 0xB
    ETRACK = 0xC
    EAUG = 0xD
    EMODPR = 0xE
    EMODT = 0xF


class EncluLeaf(enum.IntEnum):
    """ENCLU leaf numbers in EAX (SDM vol. 3D 38.3, table 38-1)."""

    EREPORT = 0x0
    EGETKEY = 0x1
    EENTER = 0x2
    ERESUME = 0x3
    EEXIT = 0x4
    EACCEPT = 0x5
    EMODPE = 0x6
    EACCEPTCOPY = 0x7


class SgxStatus(enum.IntEnum):
    """ENCLS/ENCLU error codes returned in RAX (linux-sgx-driver ``sgx_user.h``)."""

    SUCCESS = 0
    INVALID_SIG_STRUCT = 1
    INVALID_ATTRIBUTE = 2
    BLKSTATE = 3
    INVALID_MEASUREMENT = 4
    NOTBLOCKABLE = 5
    PG_INVLD = 6
    LOCKFAIL = 7
    INVALID_SIGNATURE = 8
    MAC_COMPARE_FAIL = 9
    PAGE_NOT_BLOCKED = 10
    NOT_TRACKED = 11
    VA_SLOT_OCCUPIED = 12
    CHILD_PRESENT = 13
    ENCLAVE_ACT = 14
    ENTRYEPOCH_LOCKED = 15
    INVALID_EINITTOKEN = 16
    PREV_TRK_INCMPL = 17
    PG_IS_SECS = 18
    PAGE_ATTRIBUTES_MISMATCH = 19
    PAGE_NOT_MODIFIABLE = 20
    INVALID_CPUSVN = 32
    INVALID_ISVSVN = 64
    UNMASKED_EVENT = 128
    INVALID_KEYNAME = 256


@dataclass(frozen=True)
class Attributes:
    """ATTRIBUTES (16 bytes): FLAGS then XFRM."""

    flags: int = 0
    xfrm: int = 0

    def pack(self) -> bytes:
        return struct.pack("<QQ", self.flags, self.xfrm)

    def __and__(self, mask: Attributes) -> Attributes:
        return Attributes(self.flags & mask.flags, self.xfrm & mask.xfrm)

    def flag_names(self) -> list[str]:
        """Names of the set FLAGS bits, with unknown bits as hex."""
        names = [f.name for f in AttributeFlag if self.flags & f and f.name]
        unknown = self.flags & ~int(ATTRIBUTE_FLAGS_DEFINED)
        if unknown:
            names.append(hex(unknown))
        return names


@dataclass(repr=False, eq=False)
class Sigstruct(Packed, name="SIGSTRUCT", size=1808):
    """SIGSTRUCT, 1808 bytes (SDM 37.14, table 37-19)."""

    header: bytes = at(0, "16s", SIGSTRUCT_HEADER)
    vendor: int = at(16, "I")
    date: int = at(20, "I")
    header2: bytes = at(24, "16s", SIGSTRUCT_HEADER2)
    swdefined: int = at(40, "I")
    modulus: bytes = at(128, "384s")
    exponent: int = at(512, "I", SIGSTRUCT_EXPONENT)
    signature: bytes = at(516, "384s")
    miscselect: int = at(900, "I")
    miscmask: int = at(904, "I")
    cet_attributes: int = at(908, "B")
    cet_attributes_mask: int = at(909, "B")
    isvfamilyid: bytes = at(912, "16s")
    attributes_flags: int = at(928, "Q")
    attributes_xfrm: int = at(936, "Q")
    attributemask_flags: int = at(944, "Q")
    attributemask_xfrm: int = at(952, "Q")
    enclavehash: bytes = at(960, "32s")
    isvextprodid: bytes = at(1008, "16s")
    isvprodid: int = at(1024, "H")
    isvsvn: int = at(1026, "H")
    q1: bytes = at(1040, "384s")
    q2: bytes = at(1424, "384s")

    @property
    def attributes(self) -> Attributes:
        return Attributes(self.attributes_flags, self.attributes_xfrm)

    @property
    def attributemask(self) -> Attributes:
        return Attributes(self.attributemask_flags, self.attributemask_xfrm)

    @property
    def mrsigner(self) -> bytes:
        return mrsigner(int.from_bytes(self.modulus, "little"))

    def signed_bytes(self) -> bytes:
        """The 256 bytes the signature covers: bytes 0-127 and 900-1027 (SDM 37.14)."""
        raw = self.pack()
        return raw[0:128] + raw[900:1028]


@dataclass(repr=False, eq=False)
class Einittoken(Packed, name="EINITTOKEN", size=304):
    """EINITTOKEN, 304 bytes (SDM 37.15); the MAC covers bytes 0-191."""

    MAC_COVERS = 192

    valid: int = at(0, "I")
    attributes_flags: int = at(48, "Q")
    attributes_xfrm: int = at(56, "Q")
    mrenclave: bytes = at(64, "32s")
    mrsigner: bytes = at(128, "32s")
    cpusvnle: bytes = at(192, "16s")
    isvprodidle: int = at(208, "H")
    isvsvnle: int = at(210, "H")
    maskedmiscselectle: int = at(236, "I")
    maskedattributesle_flags: int = at(240, "Q")
    maskedattributesle_xfrm: int = at(248, "Q")
    keyid: bytes = at(256, "32s")
    mac: bytes = at(288, "16s")

    @property
    def attributes(self) -> Attributes:
        return Attributes(self.attributes_flags, self.attributes_xfrm)


@dataclass(repr=False, eq=False)
class Secs(Packed, name="SECS", size=PAGE_SIZE):
    """SECS, one page (SDM 37.7)."""

    size: int = at(0, "Q")
    baseaddr: int = at(8, "Q")
    ssaframesize: int = at(16, "I", 1)
    miscselect: int = at(20, "I")
    attributes_flags: int = at(48, "Q")
    attributes_xfrm: int = at(56, "Q")
    mrenclave: bytes = at(64, "32s")
    mrsigner: bytes = at(128, "32s")
    configid: bytes = at(192, "64s")
    isvprodid: int = at(256, "H")
    isvsvn: int = at(258, "H")
    configsvn: int = at(260, "H")

    @property
    def attributes(self) -> Attributes:
        return Attributes(self.attributes_flags, self.attributes_xfrm)


@dataclass(repr=False, eq=False)
class Secinfo(Packed, name="SECINFO", size=64):
    """SECINFO, 64 bytes (SDM 37.11); only FLAGS is defined."""

    flags: int = at(0, "Q")

    @property
    def page_type(self) -> int:
        return (self.flags >> 8) & 0xFF

    @property
    def perms(self) -> int:
        return self.flags & 0x7


@dataclass(repr=False, eq=False)
class Pageinfo(Packed, name="PAGEINFO", size=32):
    """PAGEINFO, 32 bytes (SDM 37.10): the operands of EADD/EWB/ELDU."""

    linaddr: int = at(0, "Q")
    srcpge: int = at(8, "Q")
    secinfo: int = at(16, "Q")
    secs: int = at(24, "Q")


@dataclass(repr=False, eq=False)
class Tcs(Packed, name="TCS", size=PAGE_SIZE):
    """TCS, one page (SDM 37.8); offsets are relative to the enclave base."""

    flags: int = at(8, "Q")
    ossa: int = at(16, "Q")
    cssa: int = at(24, "I")
    nssa: int = at(28, "I", 1)
    oentry: int = at(32, "Q")
    aep: int = at(40, "Q")
    ofsbase: int = at(48, "Q")
    ogsbase: int = at(56, "Q")
    fslimit: int = at(64, "I", 0xFFF)
    gslimit: int = at(68, "I", 0xFFF)


# The GPR area an AEX saves, GPRSGX (SDM vol. 3D 37.9.1, table 37-8): the last 184 bytes of
# each SSA frame, starting with these 8-byte registers in this order.
GPRSGX_SIZE = 184
GPRSGX_REGS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10",
               "r11", "r12", "r13", "r14", "r15", "rflags", "rip")  # fmt: skip


@dataclass(repr=False, eq=False)
class Report(Packed, name="REPORT", size=432):
    """REPORT, 432 bytes (SDM 37.16); the MAC covers the first 384 bytes."""

    MAC_COVERS = 384

    cpusvn: bytes = at(0, "16s")
    miscselect: int = at(16, "I")
    isvextprodid: bytes = at(32, "16s")
    attributes_flags: int = at(48, "Q")
    attributes_xfrm: int = at(56, "Q")
    mrenclave: bytes = at(64, "32s")
    mrsigner: bytes = at(128, "32s")
    configid: bytes = at(192, "64s")
    isvprodid: int = at(256, "H")
    isvsvn: int = at(258, "H")
    configsvn: int = at(260, "H")
    isvfamilyid: bytes = at(304, "16s")
    reportdata: bytes = at(320, "64s")
    keyid: bytes = at(384, "32s")
    mac: bytes = at(416, "16s")


@dataclass(repr=False, eq=False)
class Targetinfo(Packed, name="TARGETINFO", size=512):
    """TARGETINFO, 512 bytes (SDM 37.17): whom an EREPORT is for."""

    mrenclave: bytes = at(0, "32s")
    attributes_flags: int = at(32, "Q")
    attributes_xfrm: int = at(40, "Q")
    configsvn: int = at(50, "H")
    miscselect: int = at(52, "I")
    configid: bytes = at(64, "64s")


@dataclass(repr=False, eq=False)
class Keyrequest(Packed, name="KEYREQUEST", size=512):
    """KEYREQUEST, 512 bytes (SDM 37.18): the operand of EGETKEY."""

    keyname: int = at(0, "H")
    keypolicy: int = at(2, "H")
    isvsvn: int = at(4, "H")
    cpusvn: bytes = at(8, "16s")
    attributemask_flags: int = at(24, "Q")
    attributemask_xfrm: int = at(32, "Q")
    keyid: bytes = at(40, "32s")
    miscmask: int = at(72, "I")
    configsvn: int = at(76, "H")


# Measurement records (SDM vol. 3D 38.x, "Operation" of ECREATE, EADD and EEXTEND): MRENCLAVE
# is SHA-256 over 64-byte records, and an SGXS file is exactly that byte stream (rust-sgx
# doc/SGXS.md). Each record has its packer and its parser here, side by side.
MEASURE_BLOCK = 64
TAG_ECREATE = b"ECREATE\0"
TAG_EADD = b"EADD\0\0\0\0"
TAG_EEXTEND = b"EEXTEND\0"
_ECREATE = struct.Struct("<8sIQ44x")
_EADD = struct.Struct("<8sQQ40x")
_EEXTEND = struct.Struct("<8sQ48x")


class EcreateRecord(NamedTuple):
    """ECREATE: "ECREATE\\0", SSAFRAMESIZE (u32), SIZE (u64), zeros."""

    ssaframesize: int
    size: int


class EaddRecord(NamedTuple):
    """EADD: "EADD", the page's offset from the base, SECINFO bytes 0-47 (FLAGS, zeros)."""

    offset: int
    flags: int

    @property
    def secinfo(self) -> Secinfo:
        return Secinfo(self.flags)


class EextendRecord(NamedTuple):
    """EEXTEND: "EEXTEND\\0", the chunk's offset; its 256 bytes follow in the stream."""

    offset: int


MeasureRecord = EcreateRecord | EaddRecord | EextendRecord


def ecreate_block(ssaframesize: int, size: int) -> bytes:
    return _ECREATE.pack(TAG_ECREATE, ssaframesize, size)


def eadd_block(offset: int, flags: int) -> bytes:
    return _EADD.pack(TAG_EADD, offset, flags)


def eextend_header(offset: int) -> bytes:
    return _EEXTEND.pack(TAG_EEXTEND, offset)


def parse_record(block: bytes | memoryview) -> MeasureRecord:
    """The record in a 64-byte block. Every byte a record does not define is zero in any
    stream the hardware measures, so a non-zero one is refused like an unknown tag."""
    if len(block) != MEASURE_BLOCK:
        raise FormatError(f"a measurement record is {MEASURE_BLOCK} bytes, got {len(block)}")
    tag = bytes(block[:8])
    if tag == TAG_EADD:
        _, offset, flags = _EADD.unpack(block)
        record: MeasureRecord = EaddRecord(offset, flags)
    elif tag == TAG_EEXTEND:
        record = EextendRecord(_EEXTEND.unpack(block)[1])
    elif tag == TAG_ECREATE:
        record = EcreateRecord(*_ECREATE.unpack(block)[1:])
    else:
        raise FormatError(f"unknown record {tag!r}")
    if any(block[_RECORD_END[tag] :]):
        raise FormatError(f"{tag.rstrip(bytes(1)).decode()} record has non-zero reserved bytes")
    return record


# Where each record's defined bytes end (the struct formats above, without the padding).
_RECORD_END = {TAG_ECREATE: 20, TAG_EADD: 24, TAG_EEXTEND: 16}


@dataclass(repr=False, eq=False)
class Pcmd(Packed, name="PCMD", size=128):
    """PCMD, 128 bytes (SDM 37.12): metadata EWB writes beside an evicted page."""

    secinfo: int = at(0, "Q")
    enclaveid: int = at(64, "Q")
    mac: bytes = at(112, "16s")
