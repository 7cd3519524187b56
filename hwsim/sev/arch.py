"""AMD SEV architectural structures and constants, byte-exact.

Offsets and codes follow AMD's SEV API specification (doc 55766) as transcribed in
AMDESE/sev-tool ``src/sevapi.h`` (Appendix B.1 ``amd_cert``, Appendix C.1 ``sev_cert``,
chapter 5 platform state machine and status codes) and cross-checked against virtee/sev and
the real certificates in ``shared/vectors/sev``; ``shared/reference/sev.md`` section 2 lists
them. All integers are little-endian, and so are the key and signature numbers inside the
certificates. Tools and the simulated secure processor both import this module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

from hwsim._layout import Layout, Packed, at
from memcrypt.errors import FormatError

__all__ = [
    "AMD_CERT_HEADER_SIZE",
    "CHIP_ID_SIZE",
    "ECC_COORD_SIZE",
    "GUEST_POLICY_RESERVED",
    "MEASURE_SIZE",
    "SECRET_HEADER_SIZE",
    "SESSION_SIZE",
    "SEV_CERT_SIGNED_LEN",
    "SEV_CERT_SIZE",
    "SIG_SIZE",
    "VMSA_LAYOUT",
    "VMSA_SEGMENTS",
    "VMSA_SEGMENT_FIELDS",
    "VMSA_SEVCTL_END",
    "VMSA_SIZE",
    "AmdCert",
    "AmdCertHeader",
    "Curve",
    "EcPubKey",
    "EcdsaSig",
    "GuestPolicy",
    "GuestState",
    "GuestStatus",
    "LaunchMeasure",
    "LaunchSession",
    "PlatformState",
    "PlatformStatus",
    "RsaPubKey",
    "SecretHeader",
    "SevAlgo",
    "SevCert",
    "SevCommand",
    "SevStatus",
    "SevUsage",
    "Vmsa",
    "int_to_le",
    "le_to_int",
]

SEV_CERT_SIZE = 0x824
# Signed data of a SEV certificate: everything before sig_1_usage (sevcert.cpp).
SEV_CERT_SIGNED_LEN = 0x414
PUB_KEY_SIZE = 0x404
SIG_SIZE = 0x200
# Both ECC coordinates and ECDSA r/s are 72-byte fields (SEV_ECDSA_PUB_KEY_MAX_BITS 576).
ECC_COORD_SIZE = 72
AMD_CERT_HEADER_SIZE = 0x40
CHIP_ID_SIZE = 64  # GET_ID: one 64-byte ID per socket (linux psp-sev.h sev_user_data_get_id)


def le_to_int(data: bytes) -> int:
    """A little-endian number field as an integer."""
    return int.from_bytes(data, "little")


def int_to_le(value: int, size: int) -> bytes:
    """An integer as a little-endian field of ``size`` bytes (raises if it does not fit)."""
    try:
        return value.to_bytes(size, "little")
    except OverflowError as exc:
        raise FormatError(f"number of {value.bit_length()} bits does not fit {size} bytes") from exc


class SevUsage(enum.IntEnum):
    """Key usage codes (sevapi.h SEV_USAGE)."""

    ARK = 0x0
    ASK = 0x13
    INVALID = 0x1000
    OCA = 0x1001
    PEK = 0x1002
    PDH = 0x1003
    CEK = 0x1004


class SevAlgo(enum.IntEnum):
    """Public-key and signature algorithm codes (sevapi.h SEV_SIG_ALGO)."""

    INVALID = 0x0
    RSA_SHA256 = 0x1
    ECDSA_SHA256 = 0x2
    ECDH_SHA256 = 0x3
    RSA_SHA384 = 0x101
    ECDSA_SHA384 = 0x102
    ECDH_SHA384 = 0x103

    @property
    def hash_name(self) -> str:
        """The digest an algorithm code names: 0x1-0x3 SHA-256, 0x101-0x103 SHA-384."""
        return "sha384" if self.value & 0x100 else "sha256"

    @property
    def kind(self) -> str:
        """``rsa``, ``ecdsa``, ``ecdh`` or ``invalid``."""
        return {0: "invalid", 1: "rsa", 2: "ecdsa", 3: "ecdh"}[self.value & 0xFF]


class Curve(enum.IntEnum):
    """ECC curve ids in SEV public keys (sevapi.h ECC_CURVE_NAME)."""

    P256 = 1
    P384 = 2

    @property
    def coord_size(self) -> int:
        return 32 if self is Curve.P256 else 48


class SevStatus(enum.IntEnum):
    """Firmware status codes (sevapi.h SEV_ERROR_CODE, SEV API chapter 4)."""

    SUCCESS = 0x00
    INVALID_PLATFORM_STATE = 0x01
    INVALID_GUEST_STATE = 0x02
    INVALID_CONFIG = 0x03
    INVALID_LENGTH = 0x04
    ALREADY_OWNED = 0x05
    INVALID_CERTIFICATE = 0x06
    POLICY_FAILURE = 0x07
    INACTIVE = 0x08
    INVALID_ADDRESS = 0x09
    BAD_SIGNATURE = 0x0A
    BAD_MEASUREMENT = 0x0B
    ASID_OWNED = 0x0C
    INVALID_ASID = 0x0D
    WBINVD_REQUIRED = 0x0E
    DF_FLUSH_REQUIRED = 0x0F
    INVALID_GUEST = 0x10
    INVALID_COMMAND = 0x11
    ACTIVE = 0x12
    HWERROR_PLATFORM = 0x13
    HWERROR_UNSAFE = 0x14
    UNSUPPORTED = 0x15
    INVALID_PARAM = 0x16
    RESOURCE_LIMIT = 0x17
    SECURE_DATA_INVALID = 0x18


class SevCommand(enum.IntEnum):
    """Firmware command ids (sevapi.h SEV_API_COMMAND_CODE)."""

    INIT = 0x01
    SHUTDOWN = 0x02
    PLATFORM_RESET = 0x03
    PLATFORM_STATUS = 0x04
    PEK_GEN = 0x05
    PEK_CSR = 0x06
    PEK_CERT_IMPORT = 0x07
    PDH_CERT_EXPORT = 0x08
    PDH_GEN = 0x09
    DF_FLUSH = 0x0A
    DOWNLOAD_FIRMWARE = 0x0B
    GET_ID = 0x0C
    INIT_EX = 0x0D
    NOP = 0x0E
    RING_BUFFER = 0x0F
    DECOMMISSION = 0x20
    ACTIVATE = 0x21
    DEACTIVATE = 0x22
    GUEST_STATUS = 0x23
    COPY = 0x24
    ACTIVATE_EX = 0x25
    LAUNCH_START = 0x30
    LAUNCH_UPDATE_DATA = 0x31
    LAUNCH_UPDATE_VMSA = 0x32
    LAUNCH_MEASURE = 0x33
    LAUNCH_SECRET = 0x34
    LAUNCH_FINISH = 0x35
    ATTESTATION = 0x36
    SEND_START = 0x40
    SEND_UPDATE_DATA = 0x41
    SEND_UPDATE_VMSA = 0x42
    SEND_FINISH = 0x43
    SEND_CANCEL = 0x44
    RECEIVE_START = 0x50
    RECEIVE_UPDATE_DATA = 0x51
    RECEIVE_UPDATE_VMSA = 0x52
    RECEIVE_FINISH = 0x53
    DBG_DECRYPT = 0x60
    DBG_ENCRYPT = 0x61


class PlatformState(enum.IntEnum):
    """Platform states (sevapi.h "Chapter 5.1.2 - Platform State Machine")."""

    UNINIT = 0
    INIT = 1
    WORKING = 2


class GuestPolicy(enum.IntFlag):
    """SEV guest policy bits 0-5 (sevapi.h SEV_POLICY); bits 16-31 hold the minimum API."""

    NODBG = 0x01
    NOKS = 0x02
    ES = 0x04
    NOSEND = 0x08
    DOMAIN = 0x10
    SEV = 0x20

    @staticmethod
    def api_minimum(policy: int) -> tuple[int, int]:
        """(major, minor) the policy requires of firmware a guest migrates to."""
        return (policy >> 16) & 0xFF, (policy >> 24) & 0xFF


class GuestState(enum.IntEnum):
    """Guest states (sevapi.h SEV_GUEST_STATE, "Chapter 6.1.1"; sev-guests.md 1.3)."""

    UNINIT = 0
    LUPDATE = 1
    LSECRET = 2
    RUNNING = 3
    SUPDATE = 4
    RUPDATE = 5
    SENT = 6


# Bits 6-15 of a SEV guest policy are reserved.
GUEST_POLICY_RESERVED = 0xFFC0


@dataclass(repr=False, eq=False)
class PlatformStatus(Packed, name="PLATFORM_STATUS", size=12):
    """PLATFORM_STATUS command buffer, 12 bytes (sevapi.h sev_platform_status_cmd_buf).

    ``owner`` bit 0: 0 self-owned, 1 externally owned; ``config`` bit 0: SEV-ES initialised.
    """

    api_major: int = at(0, "B")
    api_minor: int = at(1, "B")
    state: int = at(2, "B", PlatformState.UNINIT)
    owner: int = at(3, "B")
    config: int = at(4, "H")
    build: int = at(7, "B")
    guest_count: int = at(8, "I")

    OWNER_EXTERNAL = 0x1
    CONFIG_ES = 0x1


@dataclass(repr=False, eq=False)
class EcPubKey(Packed, name="sev_ecc_pub_key", size=PUB_KEY_SIZE):
    """ECDSA/ECDH public key inside a SEV certificate (Appendix C.3); the rest is zero."""

    curve: int = at(0x00, "I", Curve.P384)
    qx: bytes = at(0x04, f"{ECC_COORD_SIZE}s")
    qy: bytes = at(0x4C, f"{ECC_COORD_SIZE}s")


@dataclass(repr=False, eq=False)
class RsaPubKey(Packed, name="sev_rsa_pub_key", size=PUB_KEY_SIZE):
    """RSA public key inside a SEV certificate (Appendix C.2): sizes in bits, numbers LE."""

    modulus_size: int = at(0x000, "I")
    pub_exp: bytes = at(0x004, "512s")
    modulus: bytes = at(0x204, "512s")


@dataclass(repr=False, eq=False)
class EcdsaSig(Packed, name="sev_ecdsa_sig", size=SIG_SIZE):
    """ECDSA signature in a SEV certificate slot: r and s little-endian, 368 bytes zero."""

    r: bytes = at(0, f"{ECC_COORD_SIZE}s")
    s: bytes = at(ECC_COORD_SIZE, f"{ECC_COORD_SIZE}s")


@dataclass(repr=False, eq=False)
class SevCert(Packed, name="sev_cert", size=SEV_CERT_SIZE):
    """SEV certificate, 0x824 bytes (Appendix C.1; sevapi.h ``sev_cert``).

    A certificate holds up to two signatures; an unused slot has usage INVALID and algo 0.
    """

    version: int = at(0x000, "I", 1)
    api_major: int = at(0x004, "B")
    api_minor: int = at(0x005, "B")
    # Named (not left to the layout's reserved runs) so that parsing keeps them: the
    # signatures cover them, and verification must see them as they are.
    reserved_0: int = at(0x006, "B")
    reserved_1: int = at(0x007, "B")
    pub_key_usage: int = at(0x008, "I", SevUsage.INVALID)
    pub_key_algo: int = at(0x00C, "I", SevAlgo.INVALID)
    pub_key: bytes = at(0x010, f"{PUB_KEY_SIZE}s")
    sig1_usage: int = at(0x414, "I", SevUsage.INVALID)
    sig1_algo: int = at(0x418, "I", SevAlgo.INVALID)
    sig1: bytes = at(0x41C, f"{SIG_SIZE}s")
    sig2_usage: int = at(0x61C, "I", SevUsage.INVALID)
    sig2_algo: int = at(0x620, "I", SevAlgo.INVALID)
    sig2: bytes = at(0x624, f"{SIG_SIZE}s")

    def signed_bytes(self) -> bytes:
        """The bytes both signatures cover: offsets 0x000-0x413."""
        return self.pack()[:SEV_CERT_SIGNED_LEN]

    def slots(self) -> list[tuple[int, int, bytes]]:
        """The two signature slots as (usage, algo, signature)."""
        return [
            (self.sig1_usage, self.sig1_algo, self.sig1),
            (self.sig2_usage, self.sig2_algo, self.sig2),
        ]

    def with_slot(self, index: int, usage: int, algo: int, sig: bytes) -> SevCert:
        """A copy with signature slot ``index`` (0 or 1) replaced."""
        n = index + 1
        fields: dict[str, Any] = {f"sig{n}_usage": usage, f"sig{n}_algo": algo, f"sig{n}": sig}
        return replace(self, **fields)

    def unsigned(self) -> SevCert:
        """A copy with both slots empty (the form PEK_CSR returns)."""
        empty = (SevUsage.INVALID, SevAlgo.INVALID, bytes(SIG_SIZE))
        return self.with_slot(0, *empty).with_slot(1, *empty)


@dataclass(repr=False, eq=False)
class AmdCertHeader(Packed, name="amd_cert", size=AMD_CERT_HEADER_SIZE):
    """Fixed 64-byte head of an AMD signing-key certificate (Appendix B.1, ``amd_cert``)."""

    version: int = at(0x00, "I", 1)
    key_id: bytes = at(0x04, "16s")
    certifying_id: bytes = at(0x14, "16s")
    key_usage: int = at(0x24, "I", SevUsage.ARK)
    reserved: bytes = at(0x28, "16s")  # kept as parsed: the signature covers it
    pub_exp_size: int = at(0x38, "I")
    modulus_size: int = at(0x3C, "I")


# RSA sizes AMD uses: 2048 (Naples) and 4096 (Rome and later).
AMD_KEY_BITS = (2048, 4096)


@dataclass
class AmdCert:
    """AMD root (ARK) or signing (ASK) key certificate: 832 or 1600 bytes.

    Layout: header, pub_exp (pub_exp_size/8), modulus (modulus_size/8), signature
    (modulus_size/8 of the signer, which for AMD's keys is the same size). ``signature`` is
    None for the Naples ARK as AMD first published it, without its signature.
    """

    header: AmdCertHeader
    pub_exp: bytes
    modulus: bytes
    signature: bytes | None

    def signed_bytes(self) -> bytes:
        """Header, exponent and modulus: what the signature covers (amd_cert_validate_sig)."""
        return self.header.pack() + self.pub_exp + self.modulus

    def pack(self) -> bytes:
        return self.signed_bytes() + (self.signature or b"")

    @classmethod
    def unpack(cls, data: bytes) -> AmdCert:
        """Parse a whole certificate; a body without the trailing signature is accepted."""
        if len(data) < AMD_CERT_HEADER_SIZE:
            raise FormatError(f"AMD certificate is {len(data)} bytes, shorter than its header")
        header = AmdCertHeader.unpack(data[:AMD_CERT_HEADER_SIZE])
        for field in ("pub_exp_size", "modulus_size"):
            bits = getattr(header, field)
            if bits not in AMD_KEY_BITS:
                raise FormatError(f"AMD certificate {field} is {bits} bits, not 2048 or 4096")
        exp_len, mod_len = header.pub_exp_size // 8, header.modulus_size // 8
        body = AMD_CERT_HEADER_SIZE + exp_len + mod_len
        if len(data) not in (body, body + mod_len):
            raise FormatError(
                f"AMD certificate with a {header.modulus_size}-bit key must be {body + mod_len}"
                f" bytes (or {body} without its signature), got {len(data)}"
            )
        signature = data[body:] if len(data) > body else None
        pub_exp = data[AMD_CERT_HEADER_SIZE : AMD_CERT_HEADER_SIZE + exp_len]
        return cls(header, pub_exp, data[AMD_CERT_HEADER_SIZE + exp_len : body], signature)


@dataclass(repr=False, eq=False)
class GuestStatus(Packed, name="GUEST_STATUS", size=0x0D):
    """GUEST_STATUS command buffer, 13 bytes (sevapi.h sev_guest_status_cmd_buf)."""

    handle: int = at(0x00, "I")
    policy: int = at(0x04, "I")
    asid: int = at(0x08, "I")
    state: int = at(0x0C, "B", GuestState.UNINIT)


# -- Guest launch transport (SEV API chapter 6; sevapi.h sev_session_buf, sev_measure_buf,
# sev_hdr_buf; shared/reference/sev.md 2.3-2.5). Keys are 16 bytes, MACs HMAC-SHA256.

SESSION_SIZE = 0x80
MEASURE_SIZE = 48
SECRET_HEADER_SIZE = 52


@dataclass(repr=False, eq=False)
class LaunchSession(Packed, name="sev_session_buf", size=SESSION_SIZE):
    """LAUNCH_START session buffer, 0x80 bytes (``sev_session_buf``).

    ``wrap_tk`` is TEK || TIK under AES-128-CTR with the KEK and ``wrap_iv``; ``wrap_mac``
    is HMAC-SHA256 of ``wrap_tk`` with the KIK; ``policy_mac`` HMAC-SHA256 of LE32(policy)
    with the TIK. ``nonce`` is the KDF context of the master secret.
    """

    nonce: bytes = at(0x00, "16s")
    wrap_tk: bytes = at(0x10, "32s")
    wrap_iv: bytes = at(0x30, "16s")
    wrap_mac: bytes = at(0x40, "32s")
    policy_mac: bytes = at(0x60, "32s")


@dataclass(repr=False, eq=False)
class LaunchMeasure(Packed, name="sev_measure_buf", size=MEASURE_SIZE):
    """LAUNCH_MEASURE output, 48 bytes (``sev_measure_buf``): what QEMU's
    ``query-sev-launch-measure`` and libvirt's ``domlaunchsecinfo`` report in base64."""

    measure: bytes = at(0x00, "32s")
    mnonce: bytes = at(0x20, "16s")


@dataclass(repr=False, eq=False)
class SecretHeader(Packed, name="sev_hdr_buf", size=SECRET_HEADER_SIZE):
    """LAUNCH_SECRET packet header, 52 bytes (``sev_hdr_buf``; SEV API 6.6, Table 55)."""

    flags: int = at(0x00, "I")
    iv: bytes = at(0x04, "16s")
    mac: bytes = at(0x14, "32s")

    COMPRESSED = 0x1


# -- SEV-ES VMSA ------------------------------------------------------------------------
# The encrypted save area of one vCPU, a 4 KiB page (AMD APM vol. 2 15.35; Linux
# ``struct sev_es_save_area``). Rows to 0x408 carry the names of ``struct vmcb_save_area``
# plus the GHCB fields as virtee/sev ``vmsa::Vmsa`` declares them, whose JSON is what
# ``sevctl vmsa show`` prints (reserved runs named, since that output lists them); the x87
# and SSE rows after them are Linux's (``shared/reference/sev-guests.md`` 3.1).
VMSA_SIZE = 4096
VMSA_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr")
VMSA_SEGMENT_FIELDS = (("selector", "H"), ("attrib", "H"), ("limit", "I"), ("base", "Q"))


def _u64_run(start: int, names: str) -> list[tuple[int, str, str]]:
    """Consecutive u64 fields from ``start``, named in order."""
    return [(start + 8 * i, name, "Q") for i, name in enumerate(names.split())]


def _segment_rows() -> list[tuple[int, str, str]]:
    # Each segment is {selector u16, attrib u16, limit u32, base u64}, 16 bytes.
    return [
        (0x10 * i + off, f"{seg}_{name}", fmt)
        for i, seg in enumerate(VMSA_SEGMENTS)
        for (name, fmt), off in zip(VMSA_SEGMENT_FIELDS, (0, 2, 4, 8), strict=True)
    ]


VMSA_ROWS: tuple[tuple[int, str, str], ...] = (
    *_segment_rows(),
    (0x0A0, "reserved_1", "43s"),
    (0x0CB, "cpl", "B"),
    (0x0CC, "reserved_2", "4s"),
    (0x0D0, "efer", "Q"),
    (0x0D8, "reserved_3", "104s"),
    *_u64_run(0x140, "xss cr4 cr3 cr0 dr7 dr6 rflags rip"),
    (0x180, "reserved_4", "88s"),
    (0x1D8, "rsp", "Q"),
    (0x1E0, "reserved_5", "24s"),
    *_u64_run(
        0x1F8,
        "rax star lstar cstar sfmask kernel_gs_base sysenter_cs sysenter_esp sysenter_eip cr2",
    ),
    (0x248, "reserved_6", "32s"),
    *_u64_run(0x268, "g_pat dbgctl br_from br_to last_excp_from last_excp_to"),
    (0x298, "reserved_7", "72s"),
    (0x2E0, "spec_ctrl", "I"),
    (0x2E4, "reserved_7b", "4s"),
    (0x2E8, "pkru", "I"),
    (0x2EC, "reserved_7a", "20s"),
    *_u64_run(0x300, "reserved_8 rcx rdx rbx reserved_9 rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15"),
    (0x380, "reserved_10", "16s"),
    *_u64_run(0x390, "sw_exit_code sw_exit_info_1 sw_exit_info_2 sw_scratch"),
    (0x3B0, "reserved_11", "56s"),
    (0x3E8, "xcr0", "Q"),
    (0x3F0, "valid_bitmap", "16s"),
    (0x400, "x87_state_gpa", "Q"),
    # Linux sev_es_save_area: its x87_dp shares 0x400 with the GHCB's x87_state_gpa.
    (0x408, "mxcsr", "I"),
    (0x40C, "x87_ftw", "H"),
    (0x40E, "x87_fsw", "H"),
    (0x410, "x87_fcw", "H"),
)
VMSA_LAYOUT = Layout("sev_es_save_area", VMSA_SIZE, VMSA_ROWS)
# Where sevctl's ``Vmsa`` struct (and so its ``show`` output) ends.
VMSA_SEVCTL_END = 0x408


class Vmsa:
    """One VMSA page as named fields (``VMSA_ROWS``); every other byte is zero."""

    def __init__(self, fields: dict[str, Any] | None = None) -> None:
        self.fields: dict[str, Any] = VMSA_LAYOUT.unpack(bytes(VMSA_SIZE))
        for name, value in (fields or {}).items():
            self[name] = value

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self.fields:
            raise KeyError(f"VMSA has no field {name!r}")
        self.fields[name] = value

    def pack(self) -> bytes:
        return VMSA_LAYOUT.pack(self.fields)

    @classmethod
    def unpack(cls, data: bytes) -> Vmsa:
        """Parse a 4096-byte VMSA; bytes outside the named rows must be zero."""
        if len(data) != VMSA_SIZE:
            raise FormatError(f"a VMSA is {VMSA_SIZE} bytes, got {len(data)}")
        stray = VMSA_LAYOUT.nonzero_reserved(data)
        if stray:
            off, n = stray[0]
            raise FormatError(f"VMSA bytes {off:#x}-{off + n - 1:#x} are not zero")
        vmsa = cls()
        vmsa.fields = VMSA_LAYOUT.unpack(data)
        return vmsa
