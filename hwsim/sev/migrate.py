"""SEV guest migration: the firmware's SEND_* / RECEIVE_* commands and the hypervisor's flow.

Firmware side (``sevapi.h``; ``shared/reference/sev-guests.md`` 2): SEND_START checks the
policy (NOSEND refuses; DOMAIN needs the target's OCA to be ours; the policy's minimum API
against the target's PEK) and the target's chain (PDH <- PEK <- OCA and CEK, CEK <- ASK <-
ARK, the ARK being the simulated AMD's), makes fresh transport keys and wraps them for
the target's PDH in a session buffer (the LAUNCH_START format, Z = ECDH of the two
platforms' PDH keys); the guest goes to SUPDATE. SEND_UPDATE_DATA / _VMSA read a page
through the guest's key and re-encrypt it for transport; SEND_FINISH moves the guest to
SENT, where it can no longer run. On the target RECEIVE_START makes a context in RUPDATE
with a new VEK, RECEIVE_UPDATE_DATA / _VMSA check and decrypt each packet into the new
guest's memory under its own key, RECEIVE_FINISH moves it to RUNNING.

What the SEV API does not publish, the simulator's choices (label them ours):

* packet MAC = HMAC-SHA256(TIK, ctx || LE32 flags || IV || LE32 length || ciphertext),
  ctx 0x02 for data, 0x03 for a VMSA; data = AES-128-CTR(TEK, IV, plaintext);
* SEND_FINISH also returns a finish record, launch digest || measurement || LE32 pages
  || HMAC-SHA256(TIK, 0x05 || those), which RECEIVE_FINISH checks: the guest keeps its
  measurement, and a stream with a page dropped or added is refused.

A MAC that does not verify is BAD_MEASUREMENT, as for LAUNCH_SECRET.
"""

from __future__ import annotations

import hmac
import os

from cryptography.hazmat.primitives.asymmetric import ec

from hwsim.sev.arch import (
    VMSA_SIZE,
    AmdCert,
    GuestPolicy,
    GuestState,
    PlatformState,
    SecretHeader,
    SevCert,
    SevCommand,
    SevStatus,
    SevUsage,
)
from hwsim.sev.certs import CertificateError, sev_public_key, verify_amd_cert, verify_sev_cert
from hwsim.sev.errors import PspError
from hwsim.sev.guestfw import GuestContext, GuestFirmware, check_policy
from hwsim.sev.kdf import aes128_ctr, hmac_sha256
from hwsim.sev.session import TransportKeys, wrap_session

__all__ = [
    "FINISH_RECORD_SIZE",
    "PACKET_MAX",
    "TargetChain",
    "receive_finish",
    "receive_start",
    "receive_update",
    "send_cancel",
    "send_finish",
    "send_start",
    "send_update",
]

PACKET_MAX = 4096  # one page per SEND_UPDATE_DATA (KVM: no page crossing)
_DATA, _VMSA_CTX, _FINISH = 0x02, 0x03, 0x05
FINISH_RECORD_SIZE = 32 + 32 + 4 + 32

TargetChain = tuple[SevCert, SevCert, SevCert, SevCert, AmdCert, AmdCert]  # PDH..CEK, ASK, ARK


def _verify_target(fw: GuestFirmware, chain: TargetChain) -> None:
    from hwsim.sev.vendor import sim_ark_cert

    pdh, pek, oca, cek, ask, ark = chain
    try:
        verify_sev_cert(pdh, SevUsage.PDH, pek, "target PDH")
        verify_sev_cert(pek, SevUsage.PEK, oca, "target PEK")
        verify_sev_cert(pek, SevUsage.PEK, cek, "target PEK")
        verify_sev_cert(cek, SevUsage.CEK, ask, "target CEK")
        verify_amd_cert(ask, SevUsage.ASK, ark, "target ASK")
        verify_amd_cert(ark, SevUsage.ARK, ark, "target ARK")
    except CertificateError as exc:
        status = (
            SevStatus.BAD_SIGNATURE if exc.check == "signature" else SevStatus.INVALID_CERTIFICATE
        )
        raise PspError(SevCommand.SEND_START, status, str(exc)) from exc
    if ark.pack() != sim_ark_cert().pack():
        raise PspError(
            SevCommand.SEND_START,
            SevStatus.INVALID_CERTIFICATE,
            "the target's ARK is not the AMD root this firmware trusts (the simulator's)",
        )


def send_start(fw: GuestFirmware, handle: int, chain: TargetChain) -> tuple[int, bytes]:
    """SEND_START to the platform whose chain is ``chain``: (policy, session buffer)."""
    cmd = SevCommand.SEND_START
    ctx = fw.context(cmd, handle)
    if ctx.policy & GuestPolicy.NOSEND:
        raise PspError(
            cmd, SevStatus.POLICY_FAILURE, f"guest {handle}'s policy forbids sending (NOSEND)"
        )
    _verify_target(fw, chain)
    pdh, pek, oca = chain[:3]
    if ctx.policy & GuestPolicy.DOMAIN and oca.pack() != fw.psp.pdh_cert_export()[1][1].pack():
        raise PspError(
            cmd,
            SevStatus.POLICY_FAILURE,
            "the policy's DOMAIN bit keeps the guest with its owner's OCA; the target has another",
        )
    need = GuestPolicy.api_minimum(ctx.policy)
    if need > (pek.api_major, pek.api_minor):
        raise PspError(
            cmd,
            SevStatus.POLICY_FAILURE,
            f"the policy needs firmware API {need[0]}.{need[1]}; the target's is "
            f"{pek.api_major}.{pek.api_minor}",
        )
    peer = sev_public_key(pdh, "target PDH")
    if not isinstance(peer, ec.EllipticCurvePublicKey):
        raise PspError(cmd, SevStatus.INVALID_CERTIFICATE, "the target PDH is not an ECDH key")
    keys = TransportKeys.random()
    z = fw.psp.pdh_secret(peer)
    session = wrap_session(z, keys, ctx.policy, nonce=os.urandom(16), iv=os.urandom(16))
    ctx.transfer, ctx.moved, ctx.state = keys.pack(), 0, GuestState.SUPDATE
    fw.save(ctx)
    return ctx.policy, session.pack()


def _packet_mac(keys: TransportKeys, kind: int, head: SecretHeader, data: bytes) -> bytes:
    message = bytes([kind]) + head.flags.to_bytes(4, "little") + head.iv
    return hmac_sha256(keys.tik, message + len(data).to_bytes(4, "little") + data)


def _check_packet(cmd: SevCommand, ctx: GuestContext, paddr: int, length: int, vmsa: bool) -> None:
    if vmsa and not ctx.policy & GuestPolicy.ES:
        raise PspError(cmd, SevStatus.POLICY_FAILURE, f"guest {ctx.handle} is not SEV-ES")
    if vmsa and (length != VMSA_SIZE or paddr % VMSA_SIZE):
        raise PspError(cmd, SevStatus.INVALID_ADDRESS, "a VMSA is one whole page")
    if not 0 < length <= PACKET_MAX or paddr % 16 or length % 16 or paddr % 4096 + length > 4096:
        raise PspError(
            cmd, SevStatus.INVALID_LENGTH, f"{length:#x} bytes at {paddr:#x} is not within one page"
        )


def send_update(
    fw: GuestFirmware, handle: int, paddr: int, length: int, *, vmsa: bool = False
) -> tuple[bytes, bytes]:
    """SEND_UPDATE_DATA (or _VMSA): (packet header, transport ciphertext) of ``length``
    bytes read at ``paddr`` through the guest's key."""
    cmd = SevCommand.SEND_UPDATE_VMSA if vmsa else SevCommand.SEND_UPDATE_DATA
    ctx = fw.context(cmd, handle)
    asid = fw.active(cmd, ctx)
    _check_packet(cmd, ctx, paddr, length, vmsa)
    keys = TransportKeys.unpack(ctx.transfer)
    head = SecretHeader(flags=0, iv=os.urandom(16))
    data = aes128_ctr(keys.tek, head.iv, fw.memory.read(paddr, length, asid))
    head.mac = _packet_mac(keys, _VMSA_CTX if vmsa else _DATA, head, data)
    ctx.moved += 1
    fw.save(ctx)
    return head.pack(), data


def _finish_record(keys: TransportKeys, ctx: GuestContext) -> bytes:
    body = ctx.final_digest() + ctx.measure.ljust(32, b"\0") + ctx.moved.to_bytes(4, "little")
    return body + hmac_sha256(keys.tik, bytes([_FINISH]) + body)


def send_finish(fw: GuestFirmware, handle: int) -> bytes:
    """SEND_FINISH: the guest is SENT (it cannot run here again); returns the finish record."""
    ctx = fw.context(SevCommand.SEND_FINISH, handle)
    record = _finish_record(TransportKeys.unpack(ctx.transfer), ctx)
    ctx.state, ctx.transfer = GuestState.SENT, b""
    fw.save(ctx)
    return record


def send_cancel(fw: GuestFirmware, handle: int) -> None:
    """SEND_CANCEL: back to RUNNING, the transport keys forgotten."""
    ctx = fw.context(SevCommand.SEND_CANCEL, handle)
    ctx.state, ctx.transfer = GuestState.RUNNING, b""
    fw.save(ctx)


def receive_start(fw: GuestFirmware, policy: int, source_pdh: bytes, session: bytes) -> int:
    """RECEIVE_START: a new context in RUPDATE with the sender's transport keys; its handle."""
    cmd = SevCommand.RECEIVE_START
    fw.platform(cmd, (PlatformState.INIT, PlatformState.WORKING))
    check_policy(cmd, policy, fw.psp.api, es=fw.es)
    tek, tik = fw.psp.open_session(source_pdh, session, policy, cmd)
    handle = fw.new_handle()
    ctx = GuestContext(handle, policy, GuestState.RUPDATE, os.urandom(16), tek, tik)
    ctx.transfer = tek + tik
    fw.save(ctx)
    fw.psp.set_working(True)
    return handle


def receive_update(
    fw: GuestFirmware, handle: int, header: bytes, data: bytes, paddr: int, *, vmsa: bool = False
) -> None:
    """RECEIVE_UPDATE_DATA (or _VMSA): check the packet's MAC, decrypt it and write it at
    ``paddr`` under the guest's key."""
    cmd = SevCommand.RECEIVE_UPDATE_VMSA if vmsa else SevCommand.RECEIVE_UPDATE_DATA
    ctx = fw.context(cmd, handle)
    asid = fw.active(cmd, ctx)
    _check_packet(cmd, ctx, paddr, len(data), vmsa)
    keys = TransportKeys.unpack(ctx.transfer)
    head = SecretHeader.unpack(header)
    if not hmac.compare_digest(
        _packet_mac(keys, _VMSA_CTX if vmsa else _DATA, head, data), head.mac
    ):
        raise PspError(
            cmd,
            SevStatus.BAD_MEASUREMENT,
            f"the packet for {paddr:#x} fails its MAC: changed in transit or not for this session",
        )
    fw.memory.write(paddr, aes128_ctr(keys.tek, head.iv, data), asid)
    ctx.moved += 1
    fw.save(ctx)


def receive_finish(fw: GuestFirmware, handle: int, record: bytes) -> None:
    """RECEIVE_FINISH: the finish record checked; the guest RUNNING with its measurement."""
    cmd = SevCommand.RECEIVE_FINISH
    ctx = fw.context(cmd, handle)
    keys = TransportKeys.unpack(ctx.transfer)
    if len(record) != FINISH_RECORD_SIZE or not hmac.compare_digest(
        hmac_sha256(keys.tik, bytes([_FINISH]) + record[:68]), record[68:]
    ):
        raise PspError(cmd, SevStatus.BAD_MEASUREMENT, "the finish record fails its MAC")
    sent = int.from_bytes(record[64:68], "little")
    if sent != ctx.moved:
        why = f"the source sent {sent} packets; {ctx.moved} arrived"
        raise PspError(cmd, SevStatus.BAD_MEASUREMENT, why)
    ctx.launch_digest, ctx.measure = record[:32], record[32:64]
    ctx.state, ctx.transfer = GuestState.RUNNING, b""
    fw.save(ctx)
