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
from dataclasses import dataclass, field

from hwsim._layout import Layout, Packed

PAGE_SIZE = 4096
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


@dataclass
class Sigstruct(Packed):
    """SIGSTRUCT, 1808 bytes (SDM 37.14, table 37-19)."""

    LAYOUT = Layout(
        "SIGSTRUCT",
        1808,
        [
            (0, "header", "16s"),
            (16, "vendor", "I"),
            (20, "date", "I"),
            (24, "header2", "16s"),
            (40, "swdefined", "I"),
            (128, "modulus", "384s"),
            (512, "exponent", "I"),
            (516, "signature", "384s"),
            (900, "miscselect", "I"),
            (904, "miscmask", "I"),
            (908, "cet_attributes", "B"),
            (909, "cet_attributes_mask", "B"),
            (912, "isvfamilyid", "16s"),
            (928, "attributes_flags", "Q"),
            (936, "attributes_xfrm", "Q"),
            (944, "attributemask_flags", "Q"),
            (952, "attributemask_xfrm", "Q"),
            (960, "enclavehash", "32s"),
            (1008, "isvextprodid", "16s"),
            (1024, "isvprodid", "H"),
            (1026, "isvsvn", "H"),
            (1040, "q1", "384s"),
            (1424, "q2", "384s"),
        ],
    )

    header: bytes = SIGSTRUCT_HEADER
    vendor: int = 0
    date: int = 0
    header2: bytes = SIGSTRUCT_HEADER2
    swdefined: int = 0
    modulus: bytes = bytes(384)
    exponent: int = SIGSTRUCT_EXPONENT
    signature: bytes = bytes(384)
    miscselect: int = 0
    miscmask: int = 0
    cet_attributes: int = 0
    cet_attributes_mask: int = 0
    isvfamilyid: bytes = bytes(16)
    attributes_flags: int = 0
    attributes_xfrm: int = 0
    attributemask_flags: int = 0
    attributemask_xfrm: int = 0
    enclavehash: bytes = bytes(32)
    isvextprodid: bytes = bytes(16)
    isvprodid: int = 0
    isvsvn: int = 0
    q1: bytes = bytes(384)
    q2: bytes = bytes(384)

    @property
    def attributes(self) -> Attributes:
        return Attributes(self.attributes_flags, self.attributes_xfrm)

    @property
    def attributemask(self) -> Attributes:
        return Attributes(self.attributemask_flags, self.attributemask_xfrm)

    @property
    def mrsigner(self) -> bytes:
        """MRSIGNER: SHA-256 of the modulus as stored (little-endian), SDM EINIT."""
        return hashlib.sha256(self.modulus).digest()

    def signed_bytes(self) -> bytes:
        """The 256 bytes the signature covers: bytes 0-127 and 900-1027 (SDM 37.14)."""
        raw = self.pack()
        return raw[0:128] + raw[900:1028]


@dataclass
class Einittoken(Packed):
    """EINITTOKEN, 304 bytes (SDM 37.15); the MAC covers bytes 0-191."""

    LAYOUT = Layout(
        "EINITTOKEN",
        304,
        [
            (0, "valid", "I"),
            (48, "attributes_flags", "Q"),
            (56, "attributes_xfrm", "Q"),
            (64, "mrenclave", "32s"),
            (128, "mrsigner", "32s"),
            (192, "cpusvnle", "16s"),
            (208, "isvprodidle", "H"),
            (210, "isvsvnle", "H"),
            (236, "maskedmiscselectle", "I"),
            (240, "maskedattributesle_flags", "Q"),
            (248, "maskedattributesle_xfrm", "Q"),
            (256, "keyid", "32s"),
            (288, "mac", "16s"),
        ],
    )
    MAC_COVERS = 192

    valid: int = 0
    attributes_flags: int = 0
    attributes_xfrm: int = 0
    mrenclave: bytes = bytes(32)
    mrsigner: bytes = bytes(32)
    cpusvnle: bytes = bytes(16)
    isvprodidle: int = 0
    isvsvnle: int = 0
    maskedmiscselectle: int = 0
    maskedattributesle_flags: int = 0
    maskedattributesle_xfrm: int = 0
    keyid: bytes = bytes(32)
    mac: bytes = bytes(16)

    @property
    def attributes(self) -> Attributes:
        return Attributes(self.attributes_flags, self.attributes_xfrm)


@dataclass
class Secs(Packed):
    """SECS, one page (SDM 37.7)."""

    LAYOUT = Layout(
        "SECS",
        PAGE_SIZE,
        [
            (0, "size", "Q"),
            (8, "baseaddr", "Q"),
            (16, "ssaframesize", "I"),
            (20, "miscselect", "I"),
            (48, "attributes_flags", "Q"),
            (56, "attributes_xfrm", "Q"),
            (64, "mrenclave", "32s"),
            (128, "mrsigner", "32s"),
            (192, "configid", "64s"),
            (256, "isvprodid", "H"),
            (258, "isvsvn", "H"),
            (260, "configsvn", "H"),
        ],
    )

    size: int = 0
    baseaddr: int = 0
    ssaframesize: int = 1
    miscselect: int = 0
    attributes_flags: int = 0
    attributes_xfrm: int = 0
    mrenclave: bytes = bytes(32)
    mrsigner: bytes = bytes(32)
    configid: bytes = bytes(64)
    isvprodid: int = 0
    isvsvn: int = 0
    configsvn: int = 0

    @property
    def attributes(self) -> Attributes:
        return Attributes(self.attributes_flags, self.attributes_xfrm)


@dataclass
class Secinfo(Packed):
    """SECINFO, 64 bytes (SDM 37.11); only FLAGS is defined."""

    LAYOUT = Layout("SECINFO", 64, [(0, "flags", "Q")])

    flags: int = 0

    @property
    def page_type(self) -> int:
        return (self.flags >> 8) & 0xFF

    @property
    def perms(self) -> int:
        return self.flags & 0x7


@dataclass
class Pageinfo(Packed):
    """PAGEINFO, 32 bytes (SDM 37.10): the operands of EADD/EWB/ELDU."""

    LAYOUT = Layout(
        "PAGEINFO",
        32,
        [
            (0, "linaddr", "Q"),
            (8, "srcpge", "Q"),
            (16, "secinfo", "Q"),
            (24, "secs", "Q"),
        ],
    )

    linaddr: int = 0
    srcpge: int = 0
    secinfo: int = 0
    secs: int = 0


@dataclass
class Tcs(Packed):
    """TCS, one page (SDM 37.8); offsets are relative to the enclave base."""

    LAYOUT = Layout(
        "TCS",
        PAGE_SIZE,
        [
            (8, "flags", "Q"),
            (16, "ossa", "Q"),
            (24, "cssa", "I"),
            (28, "nssa", "I"),
            (32, "oentry", "Q"),
            (40, "aep", "Q"),
            (48, "ofsbase", "Q"),
            (56, "ogsbase", "Q"),
            (64, "fslimit", "I"),
            (68, "gslimit", "I"),
        ],
    )

    flags: int = 0
    ossa: int = 0
    cssa: int = 0
    nssa: int = 1
    oentry: int = 0
    aep: int = 0
    ofsbase: int = 0
    ogsbase: int = 0
    fslimit: int = 0xFFF
    gslimit: int = 0xFFF


@dataclass
class Report(Packed):
    """REPORT, 432 bytes (SDM 37.16); the MAC covers the first 384 bytes."""

    LAYOUT = Layout(
        "REPORT",
        432,
        [
            (0, "cpusvn", "16s"),
            (16, "miscselect", "I"),
            (32, "isvextprodid", "16s"),
            (48, "attributes_flags", "Q"),
            (56, "attributes_xfrm", "Q"),
            (64, "mrenclave", "32s"),
            (128, "mrsigner", "32s"),
            (192, "configid", "64s"),
            (256, "isvprodid", "H"),
            (258, "isvsvn", "H"),
            (260, "configsvn", "H"),
            (304, "isvfamilyid", "16s"),
            (320, "reportdata", "64s"),
            (384, "keyid", "32s"),
            (416, "mac", "16s"),
        ],
    )
    MAC_COVERS = 384

    cpusvn: bytes = bytes(16)
    miscselect: int = 0
    isvextprodid: bytes = bytes(16)
    attributes_flags: int = 0
    attributes_xfrm: int = 0
    mrenclave: bytes = bytes(32)
    mrsigner: bytes = bytes(32)
    configid: bytes = bytes(64)
    isvprodid: int = 0
    isvsvn: int = 0
    configsvn: int = 0
    isvfamilyid: bytes = bytes(16)
    reportdata: bytes = bytes(64)
    keyid: bytes = bytes(32)
    mac: bytes = bytes(16)


@dataclass
class Targetinfo(Packed):
    """TARGETINFO, 512 bytes (SDM 37.17): whom an EREPORT is for."""

    LAYOUT = Layout(
        "TARGETINFO",
        512,
        [
            (0, "mrenclave", "32s"),
            (32, "attributes_flags", "Q"),
            (40, "attributes_xfrm", "Q"),
            (50, "configsvn", "H"),
            (52, "miscselect", "I"),
            (64, "configid", "64s"),
        ],
    )

    mrenclave: bytes = bytes(32)
    attributes_flags: int = 0
    attributes_xfrm: int = 0
    configsvn: int = 0
    miscselect: int = 0
    configid: bytes = bytes(64)


@dataclass
class Keyrequest(Packed):
    """KEYREQUEST, 512 bytes (SDM 37.18): the operand of EGETKEY."""

    LAYOUT = Layout(
        "KEYREQUEST",
        512,
        [
            (0, "keyname", "H"),
            (2, "keypolicy", "H"),
            (4, "isvsvn", "H"),
            (8, "cpusvn", "16s"),
            (24, "attributemask_flags", "Q"),
            (32, "attributemask_xfrm", "Q"),
            (40, "keyid", "32s"),
            (72, "miscmask", "I"),
            (76, "configsvn", "H"),
        ],
    )

    keyname: int = 0
    keypolicy: int = 0
    isvsvn: int = 0
    cpusvn: bytes = bytes(16)
    attributemask_flags: int = 0
    attributemask_xfrm: int = 0
    keyid: bytes = field(default=bytes(32))
    miscmask: int = 0
    configsvn: int = 0


# Measurement blocks (SDM 38.x ECREATE/EADD/EEXTEND "Operation"): MRENCLAVE is SHA-256 over
# 64-byte blocks, and an SGXS file is exactly that byte stream (rust-sgx doc/SGXS.md).
MEASURE_BLOCK = 64


def ecreate_block(ssaframesize: int, size: int) -> bytes:
    """The ECREATE block: "ECREATE\\0", SSAFRAMESIZE (u32), SIZE (u64), zeros."""
    return struct.pack("<8sIQ44x", b"ECREATE", ssaframesize, size)


def eadd_block(offset: int, flags: int) -> bytes:
    """The EADD block: "EADD", page offset from the base, SECINFO bytes 0-47."""
    return struct.pack("<8sQQ40x", b"EADD", offset, flags)


def eextend_header(offset: int) -> bytes:
    """The EEXTEND header block; the 256 measured bytes follow it."""
    return struct.pack("<8sQ48x", b"EEXTEND", offset)


@dataclass
class Pcmd(Packed):
    """PCMD, 128 bytes (SDM 37.12): metadata EWB writes beside an evicted page."""

    LAYOUT = Layout(
        "PCMD",
        128,
        [
            (0, "secinfo", "Q"),
            (64, "enclaveid", "Q"),
            (112, "mac", "16s"),
        ],
    )

    secinfo: int = 0
    enclaveid: int = 0
    mac: bytes = bytes(16)
