"""What the guest owner and the SEV firmware do with the transport keys (TEK and TIK).

Pure functions both sides call: the owner's tools build with them, the simulated firmware
checks with them (SEV API chapter 6; ``shared/reference/sev.md`` 2.3-2.5).

* LAUNCH_START session: Z = ECDH(GODH, PDH) (the 48-byte X coordinate, as OpenSSL returns
  it); master = KDF(Z, "sev-master-secret", nonce); KEK, KIK = KDF(master, "sev-kek" /
  "sev-kik"); TEK || TIK wrapped with AES-128-CTR under the KEK, MACed with the KIK; the
  policy MACed with the TIK.
* Launch measurement: HMAC-SHA256(TIK, 0x04 || api major || api minor || build ||
  LE32(policy) || launch digest || mnonce).
* LAUNCH_SECRET packet: payload = AES-128-CTR(TEK, IV, plaintext); header MAC =
  HMAC-SHA256(TIK, 0x01 || LE32(flags) || IV || LE32(guest length) || LE32(transport
  length) || payload || measurement) (SEV API 6.6, Table 55; sevctl ``secret.rs``).
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec

from hwsim.sev.arch import (
    SECRET_HEADER_SIZE,
    SESSION_SIZE,
    SEV_CERT_SIZE,
    LaunchSession,
    SecretHeader,
    SevAlgo,
    SevCert,
    SevCommand,
    SevStatus,
    SevUsage,
)
from hwsim.sev.certs import CertificateError, make_sev_cert, sev_public_key
from hwsim.sev.errors import PspError
from hwsim.sev.kdf import LABEL_KEK, LABEL_KIK, LABEL_MASTER, aes128_ctr, hmac_sha256, kdf
from memcrypt.errors import FormatError

__all__ = [
    "KEY_SIZE",
    "MEASURE_CONTEXT",
    "SECRET_CONTEXT",
    "OwnerSession",
    "TransportKeys",
    "build_session",
    "ecdh_secret",
    "launch_measurement",
    "open_secret",
    "open_session",
    "policy_mac",
    "seal_secret",
    "secret_mac",
    "wrap_session",
]

KEY_SIZE = 16
# Leading bytes that keep a measurement MAC and a secret-header MAC from ever colliding.
MEASURE_CONTEXT = 0x04
SECRET_CONTEXT = 0x01
_CURVE = ec.SECP384R1()


@dataclass(frozen=True)
class TransportKeys:
    """TEK and TIK of one launch. Never shown in a repr: they are the guest's secrets."""

    tek: bytes = field(repr=False)
    tik: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for name, key in (("TEK", self.tek), ("TIK", self.tik)):
            if len(key) != KEY_SIZE:
                raise FormatError(f"{name} must be {KEY_SIZE} bytes, got {len(key)}")

    @classmethod
    def random(cls) -> TransportKeys:
        return cls(os.urandom(KEY_SIZE), os.urandom(KEY_SIZE))

    def pack(self) -> bytes:
        """TEK || TIK: libvirt's ``--tk`` file and sev-tool's ``tmp_tk.bin``."""
        return self.tek + self.tik

    @classmethod
    def unpack(cls, data: bytes) -> TransportKeys:
        if len(data) != 2 * KEY_SIZE:
            raise FormatError(f"TEK || TIK must be {2 * KEY_SIZE} bytes, got {len(data)}")
        return cls(data[:KEY_SIZE], data[KEY_SIZE:])


# -- LAUNCH_START session -------------------------------------------------------------


def policy_mac(tik: bytes, policy: int) -> bytes:
    """The session's MAC of the guest policy, with the TIK."""
    return hmac_sha256(tik, policy.to_bytes(4, "little"))


def _kek_kik(z: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    master = kdf(z, LABEL_MASTER, nonce, KEY_SIZE)
    return kdf(master, LABEL_KEK, b"", KEY_SIZE), kdf(master, LABEL_KIK, b"", KEY_SIZE)


def wrap_session(
    z: bytes, keys: TransportKeys, policy: int, *, nonce: bytes, iv: bytes
) -> LaunchSession:
    """The session buffer for shared secret ``z`` (deterministic: the vectors' form)."""
    kek, kik = _kek_kik(z, nonce)
    wrapped = aes128_ctr(kek, iv, keys.pack())
    return LaunchSession(
        nonce=nonce,
        wrap_tk=wrapped,
        wrap_iv=iv,
        wrap_mac=hmac_sha256(kik, wrapped),
        policy_mac=policy_mac(keys.tik, policy),
    )


def ecdh_secret(private: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey) -> bytes:
    """Z: the X coordinate of the shared point, big-endian, as both AMD's tools use it."""
    return private.exchange(ec.ECDH(), peer)


@dataclass(frozen=True)
class OwnerSession:
    """What the guest owner makes for one launch: GODH certificate, session, keys."""

    godh: SevCert
    session: LaunchSession
    keys: TransportKeys = field(repr=False)
    policy: int


def build_session(pdh: SevCert, policy: int, *, keys: TransportKeys | None = None) -> OwnerSession:
    """A fresh GODH key and the session for the platform whose PDH is ``pdh``.

    The GODH certificate is unsigned (usage PDH, ECDH_SHA256, P-384), as virtee writes it:
    the firmware uses only its public key. Raises CertificateError for a PDH that is not
    an ECDH P-384 key.
    """
    pdh_key = sev_public_key(pdh, "PDH")
    if not isinstance(pdh_key, ec.EllipticCurvePublicKey) or pdh_key.curve.name != _CURVE.name:
        raise CertificateError("PDH: not an ECDH P-384 key", check="algorithm")
    godh_key = ec.generate_private_key(_CURVE)
    godh = make_sev_cert(godh_key.public_key(), SevUsage.PDH, SevAlgo.ECDH_SHA256)
    keys = keys or TransportKeys.random()
    z = ecdh_secret(godh_key, pdh_key)
    session = wrap_session(z, keys, policy, nonce=os.urandom(16), iv=os.urandom(16))
    return OwnerSession(godh, session, keys, policy)


def _godh_key(command: SevCommand, godh: bytes) -> ec.EllipticCurvePublicKey:
    if len(godh) != SEV_CERT_SIZE:
        raise PspError(
            command,
            SevStatus.INVALID_LENGTH,
            f"the GODH certificate is {len(godh)} bytes, not {SEV_CERT_SIZE}",
        )
    try:
        cert = SevCert.unpack(godh)
        key = sev_public_key(cert, "GODH")
    except (CertificateError, FormatError) as exc:
        raise PspError(command, SevStatus.INVALID_CERTIFICATE, str(exc)) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or SevAlgo(cert.pub_key_algo).kind != "ecdh":
        raise PspError(command, SevStatus.INVALID_CERTIFICATE, "GODH: not an ECDH key")
    if key.curve.name != _CURVE.name:
        raise PspError(command, SevStatus.INVALID_CERTIFICATE, "GODH: not a P-384 key")
    return key


def open_session(
    pdh_private: ec.EllipticCurvePrivateKey,
    godh: bytes,
    session: bytes,
    policy: int,
    *,
    command: SevCommand = SevCommand.LAUNCH_START,
) -> TransportKeys:
    """The firmware's side of LAUNCH_START: unwrap TEK and TIK, check both MACs.

    Raises :class:`PspError` with INVALID_LENGTH or INVALID_CERTIFICATE for buffers it
    cannot use, and BAD_MEASUREMENT when a MAC does not verify ("any modification of the
    policy bits will result in bad measurement", QEMU's SEV documentation).
    """
    if len(session) != SESSION_SIZE:
        raise PspError(
            command,
            SevStatus.INVALID_LENGTH,
            f"the session buffer is {len(session)} bytes, not {SESSION_SIZE}",
        )
    blob = LaunchSession.unpack(session)
    kek, kik = _kek_kik(ecdh_secret(pdh_private, _godh_key(command, godh)), blob.nonce)
    if not hmac.compare_digest(hmac_sha256(kik, blob.wrap_tk), blob.wrap_mac):
        raise PspError(
            command,
            SevStatus.BAD_MEASUREMENT,
            "the session's wrap MAC does not verify: the session was made for another "
            "platform's PDH, or the GODH certificate and the session are not from the same run",
        )
    keys = TransportKeys.unpack(aes128_ctr(kek, blob.wrap_iv, blob.wrap_tk))
    if not hmac.compare_digest(policy_mac(keys.tik, policy), blob.policy_mac):
        raise PspError(
            command,
            SevStatus.BAD_MEASUREMENT,
            f"the policy {policy:#x} is not the one the session's policy MAC was made for",
        )
    return keys


# -- measurement and secret -----------------------------------------------------------


def launch_measurement(
    tik: bytes,
    *,
    api_major: int,
    api_minor: int,
    build: int,
    policy: int,
    digest: bytes,
    mnonce: bytes,
) -> bytes:
    """The 32-byte launch measurement LAUNCH_MEASURE returns (before its mnonce)."""
    if len(digest) != 32 or len(mnonce) != 16:
        raise FormatError("the launch digest is 32 bytes and the mnonce 16")
    head = bytes([MEASURE_CONTEXT, api_major & 0xFF, api_minor & 0xFF, build & 0xFF])
    return hmac_sha256(tik, head + policy.to_bytes(4, "little") + digest + mnonce)


def secret_mac(
    tik: bytes, header: SecretHeader, guest_len: int, payload: bytes, measure: bytes
) -> bytes:
    """The LAUNCH_SECRET header MAC over the packet and the launch measurement."""
    message = b"".join(
        (
            bytes([SECRET_CONTEXT]),
            header.flags.to_bytes(4, "little"),
            header.iv,
            guest_len.to_bytes(4, "little"),
            len(payload).to_bytes(4, "little"),
            payload,
            measure,
        )
    )
    return hmac_sha256(tik, message)


def seal_secret(
    keys: TransportKeys, plaintext: bytes, measure: bytes, *, iv: bytes | None = None
) -> tuple[SecretHeader, bytes]:
    """Header and payload of a LAUNCH_SECRET packet (``iv`` fixed only for reproducibility)."""
    iv = os.urandom(16) if iv is None else iv
    payload = aes128_ctr(keys.tek, iv, plaintext)
    header = SecretHeader(flags=0, iv=iv)
    header.mac = secret_mac(keys.tik, header, len(plaintext), payload, measure)
    return header, payload


def open_secret(
    keys: TransportKeys,
    header: bytes,
    payload: bytes,
    measure: bytes,
    *,
    guest_len: int | None = None,
) -> bytes:
    """The firmware's side of LAUNCH_SECRET: check the MAC, return the plaintext.

    A MAC that does not verify (wrong TIK, another launch's measurement, a changed
    payload) is BAD_MEASUREMENT; compressed packets are not modelled (INVALID_PARAM).
    """
    command = SevCommand.LAUNCH_SECRET
    if len(header) != SECRET_HEADER_SIZE:
        raise PspError(
            command,
            SevStatus.INVALID_LENGTH,
            f"the packet header is {len(header)} bytes, not {SECRET_HEADER_SIZE}",
        )
    head = SecretHeader.unpack(header)
    guest_len = len(payload) if guest_len is None else guest_len
    if head.flags & SecretHeader.COMPRESSED or guest_len != len(payload):
        raise PspError(
            command,
            SevStatus.INVALID_PARAM,
            "compressed secrets (guest length other than the payload's) are not modelled",
        )
    if not hmac.compare_digest(secret_mac(keys.tik, head, guest_len, payload, measure), head.mac):
        raise PspError(
            command,
            SevStatus.BAD_MEASUREMENT,
            "the packet's MAC does not verify: made with another TIK or for another "
            "launch measurement, or the header and payload do not belong together",
        )
    return aes128_ctr(keys.tek, head.iv, payload)
