"""The simulated AMD secure processor (PSP): SEV firmware platform commands.

Follows the SEV API platform state machine (``sevapi.h`` "Chapter 5.1.2"; reference
``shared/reference/sev.md`` 2.7): UNINIT -> INIT (INIT) -> WORKING (first guest) and back
to UNINIT (SHUTDOWN). Each command runs only in the states listed in :data:`ALLOWED_STATES`
and otherwise fails with INVALID_PLATFORM_STATE; every failure is a :class:`PspError`
carrying the API status code.

What the firmware keeps where:

* ``sev.nv`` (non-volatile, survives power cycles, wiped by PLATFORM_RESET): the OCA, PEK
  and PDH certificates and private keys, and whether the platform is externally owned.
* ``boot.sev`` (volatile, wiped at power cycle): the platform state; with the guest
  contexts in ``boot.sev.guest`` and the ASID table in ``boot.sev.asid``
  (:mod:`hwsim.sev.guestfw` runs the guest commands).
* nowhere: the CEK, re-derived on demand from the chip-unique fused secret, so it is stable
  across PLATFORM_RESET and power cycles and changes only if the machine is re-fused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from hwsim.errors import HwsimError
from hwsim.sev.arch import (
    CHIP_ID_SIZE,
    PlatformState,
    PlatformStatus,
    SevAlgo,
    SevCert,
    SevCommand,
    SevStatus,
    SevUsage,
)
from hwsim.sev.certs import CertificateError, make_sev_cert, sign_sev_cert, verify_sev_cert
from hwsim.sev.errors import PspError

__all__ = [
    "ALLOWED_STATES",
    "ASID_NS",
    "GUEST_NS",
    "NV_NS",
    "STATE_NS",
    "KeySlots",
    "NvStore",
    "Psp",
    "PspError",
]

NV_NS = "sev.nv"
STATE_NS = "boot.sev"
GUEST_NS = "boot.sev.guest"
ASID_NS = "boot.sev.asid"

_U, _I, _W = PlatformState.UNINIT, PlatformState.INIT, PlatformState.WORKING
# sevapi.h "Chapter 5.1.2 - Platform State Machine": the platform commands each state allows.
ALLOWED_STATES: dict[SevCommand, tuple[PlatformState, ...]] = {
    SevCommand.INIT: (_U,),
    SevCommand.SHUTDOWN: (_I, _W),
    SevCommand.PLATFORM_RESET: (_U,),
    SevCommand.PLATFORM_STATUS: (_U, _I, _W),
    SevCommand.PEK_GEN: (_I,),
    SevCommand.PEK_CSR: (_I,),
    SevCommand.PEK_CERT_IMPORT: (_I,),
    SevCommand.PDH_GEN: (_I, _W),
    SevCommand.PDH_CERT_EXPORT: (_I, _W),
    SevCommand.DF_FLUSH: (_I, _W),
    SevCommand.GET_ID: (_U, _I, _W),
}

# The firmware's own keys are P-384 (SEV API Appendix C; real chains in shared/vectors).
_CURVE = ec.SECP384R1()
_SIGN_ALGO = SevAlgo.ECDSA_SHA256
# The order n of P-384 (FIPS 186-4 appendix D.1.2.4); a private scalar must be in [1, n-1].
_P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
    "581a0db248b0a77aecec196accc52973",
    16,
)


class NvStore(Protocol):
    """The slice of a machine transaction the firmware uses (``hwsim.store.StateTxn``)."""

    def get(self, ns: str, key: str) -> bytes | None: ...
    def put(self, ns: str, key: str, value: bytes) -> None: ...
    def delete(self, ns: str, key: str) -> None: ...
    def keys(self, ns: str) -> list[str]: ...


class KeySlots(Protocol):
    """The memory controller's key slots and DRAM, as the firmware drives them."""

    def set_key(self, keyid: int, key: bytes) -> None: ...
    def clear_key(self, keyid: int) -> None: ...
    def read(self, paddr: int, n: int, keyid: int | None) -> bytes: ...
    def write(self, paddr: int, data: bytes, keyid: int | None) -> None: ...


def _scalar(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_numbers().private_value.to_bytes(48, "big")


def _key(scalar: bytes) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(scalar, "big"), _CURVE)


class Psp:
    """SEV firmware of one machine, working inside one open store transaction."""

    def __init__(
        self,
        store: NvStore,
        api: tuple[int, int, int],
        *,
        es: bool,
        fused_secret: Callable[[str], bytes],
        memory: KeySlots | None = None,
    ) -> None:
        self._store = store
        self.api = api
        self._es = es
        self._fused_secret = fused_secret
        self.memory = memory

    @property
    def store(self) -> NvStore:
        return self._store

    # -- state ------------------------------------------------------------------------

    @property
    def state(self) -> PlatformState:
        raw = self._store.get(STATE_NS, "state")
        return PlatformState(raw[0]) if raw else PlatformState.UNINIT

    def _set_state(self, state: PlatformState) -> None:
        self._store.put(STATE_NS, "state", bytes([state]))

    def set_working(self, working: bool) -> None:
        """INIT -> WORKING with the first guest, back to INIT when the last is gone."""
        state = self.state
        if working and state == PlatformState.INIT:
            self._set_state(PlatformState.WORKING)
        elif not working and state == PlatformState.WORKING:
            self._set_state(PlatformState.INIT)

    @property
    def guest_count(self) -> int:
        return len(self._store.keys(GUEST_NS))

    def _require(self, command: SevCommand) -> None:
        state = self.state
        allowed = ALLOWED_STATES[command]
        if state not in allowed:
            names = ", ".join(s.name for s in allowed)
            raise PspError(
                command,
                SevStatus.INVALID_PLATFORM_STATE,
                f"platform is {state.name}; {command.name} needs {names}",
            )

    @property
    def externally_owned(self) -> bool:
        return self._store.get(NV_NS, "owner") == b"\x01"

    def _get(self, key: str) -> bytes:
        value = self._store.get(NV_NS, key)
        if value is None:
            raise HwsimError(f"SEV firmware state is missing {key}; the platform has no keys")
        return value

    def _cert(self, key: str) -> SevCert:
        return SevCert.unpack(self._get(key))

    # -- key material -----------------------------------------------------------------

    def _cek_key(self) -> ec.EllipticCurvePrivateKey:
        # 64 hashed bytes reduced mod n-1: a negligible bias (FIPS 186-4 B.4.1 style).
        wide = hashlib.sha512(b"SEV CEK" + self._fused_secret("sev.cek")).digest()
        return ec.derive_private_key(int.from_bytes(wide, "big") % (_P384_ORDER - 1) + 1, _CURVE)

    def cek_cert(self) -> SevCert:
        """The CEK certificate as the firmware has it: no signature (AMD signs it off-chip)."""
        return make_sev_cert(self._cek_key().public_key(), SevUsage.CEK, _SIGN_ALGO, self.api[:2])

    def _new_cert(
        self, usage: SevUsage, algo: SevAlgo
    ) -> tuple[ec.EllipticCurvePrivateKey, SevCert]:
        key = ec.generate_private_key(_CURVE)
        return key, make_sev_cert(key.public_key(), usage, algo, self.api[:2])

    def _gen_oca(self) -> ec.EllipticCurvePrivateKey:
        """A self-owned platform's OCA: generated by the firmware and self-signed."""
        key, cert = self._new_cert(SevUsage.OCA, _SIGN_ALGO)
        self._put_cert("oca", key, sign_sev_cert(cert, key, SevUsage.OCA, _SIGN_ALGO))
        self._store.delete(NV_NS, "owner")
        return key

    def _gen_pek(self, oca: ec.EllipticCurvePrivateKey) -> None:
        key, cert = self._new_cert(SevUsage.PEK, _SIGN_ALGO)
        cert = sign_sev_cert(cert, oca, SevUsage.OCA, _SIGN_ALGO)
        self._put_cert("pek", key, sign_sev_cert(cert, self._cek_key(), SevUsage.CEK, _SIGN_ALGO))

    def _gen_pdh(self) -> None:
        key, cert = self._new_cert(SevUsage.PDH, SevAlgo.ECDH_SHA256)
        pek = _key(self._get("pek.key"))
        self._put_cert("pdh", key, sign_sev_cert(cert, pek, SevUsage.PEK, _SIGN_ALGO))

    def _put_cert(self, name: str, key: ec.EllipticCurvePrivateKey | None, cert: SevCert) -> None:
        self._store.put(NV_NS, f"{name}.cert", cert.pack())
        if key is None:
            self._store.delete(NV_NS, f"{name}.key")
        else:
            self._store.put(NV_NS, f"{name}.key", _scalar(key))

    def _regenerate_identity(self) -> None:
        """New self-owned OCA, PEK and PDH (PEK_GEN; INIT after a PLATFORM_RESET)."""
        self._gen_pek(self._gen_oca())
        self._gen_pdh()

    # -- commands ---------------------------------------------------------------------

    def init(self) -> None:
        """INIT: load the persistent state, creating the platform identity if it has none."""
        self._require(SevCommand.INIT)
        if self._store.get(NV_NS, "pek.cert") is None:
            self._regenerate_identity()
        self._set_state(PlatformState.INIT)

    def shutdown(self) -> None:
        """SHUTDOWN: back to UNINIT (the persistent keys stay, every guest context goes)."""
        self._require(SevCommand.SHUTDOWN)
        for key in self._store.keys(ASID_NS):
            if key.isdecimal() and self.memory is not None:
                self.memory.clear_key(int(key))
            self._store.delete(ASID_NS, key)
        for key in self._store.keys(GUEST_NS):
            self._store.delete(GUEST_NS, key)
        self._set_state(PlatformState.UNINIT)

    def platform_reset(self) -> None:
        """PLATFORM_RESET: erase OCA, PEK, PDH and ownership; new ones come at next INIT."""
        self._require(SevCommand.PLATFORM_RESET)
        for key in self._store.keys(NV_NS):
            self._store.delete(NV_NS, key)

    def platform_status(self) -> PlatformStatus:
        state = self.state
        es = self._es and state != PlatformState.UNINIT
        return PlatformStatus(
            api_major=self.api[0],
            api_minor=self.api[1],
            state=state,
            owner=PlatformStatus.OWNER_EXTERNAL if self.externally_owned else 0,
            config=PlatformStatus.CONFIG_ES if es else 0,
            build=self.api[2],
            guest_count=self.guest_count,
        )

    def pek_gen(self) -> None:
        """PEK_GEN: new PEK (and so new PDH) under a new firmware OCA: self-owned again."""
        self._require(SevCommand.PEK_GEN)
        self._regenerate_identity()

    def pek_csr(self) -> SevCert:
        """PEK_CSR: the current PEK certificate without signatures, for an owner to sign."""
        self._require(SevCommand.PEK_CSR)
        return self._cert("pek.cert").unsigned()

    def pek_cert_import(self, pek: SevCert, oca: SevCert) -> None:
        """PEK_CERT_IMPORT: take the owner-signed PEK and the owner's OCA; externally owned."""
        cmd = SevCommand.PEK_CERT_IMPORT
        self._require(cmd)
        if self.externally_owned:
            raise PspError(
                cmd,
                SevStatus.ALREADY_OWNED,
                "the platform is externally owned",
                hint="return it to self-owned first (PEK_GEN: sevtool rotate --pek)",
            )
        current = self._cert("pek.cert")
        if pek.signed_bytes() != current.unsigned().signed_bytes():
            raise PspError(
                cmd,
                SevStatus.INVALID_CERTIFICATE,
                "the PEK certificate is not for this platform's current PEK",
                hint="a CSR is void once the PEK changes; make a new one",
            )
        _check_owner_certs(pek, oca)
        slot = next(i for i, (u, _, _) in enumerate(pek.slots()) if u == SevUsage.OCA)
        usage, algo, sig = pek.slots()[slot]
        signed = current.unsigned().with_slot(0, usage, algo, sig)
        signed = sign_sev_cert(signed, self._cek_key(), SevUsage.CEK, _SIGN_ALGO)
        self._store.put(NV_NS, "pek.cert", signed.pack())
        self._put_cert("oca", None, oca)
        self._store.put(NV_NS, "owner", b"\x01")

    def pdh_gen(self) -> None:
        """PDH_GEN: a new PDH signed by the PEK (the PEK stays)."""
        self._require(SevCommand.PDH_GEN)
        self._gen_pdh()

    def pdh_cert_export(self) -> tuple[SevCert, tuple[SevCert, SevCert, SevCert]]:
        """PDH_CERT_EXPORT: the PDH, and the chain PEK, OCA, CEK (``sev_cert_chain_buf``)."""
        self._require(SevCommand.PDH_CERT_EXPORT)
        chain = (self._cert("pek.cert"), self._cert("oca.cert"), self.cek_cert())
        return self._cert("pdh.cert"), chain

    def open_session(self, godh: bytes, session: bytes, policy: int) -> tuple[bytes, bytes]:
        """LAUNCH_START's unwrap: (TEK, TIK) from the guest owner's session buffer.

        The shared secret is ECDH of this platform's PDH key and the owner's GODH; a
        wrap or policy MAC that does not verify is BAD_MEASUREMENT, as on hardware.
        """
        from hwsim.sev.session import open_session

        keys = open_session(_key(self._get("pdh.key")), godh, session, policy)
        return keys.tek, keys.tik

    def get_id(self) -> bytes:
        """GET_ID: the 64-byte chip id AMD's key server indexes CEKs by."""
        self._require(SevCommand.GET_ID)
        return hashlib.sha512(b"SEV GET_ID" + self._fused_secret("sev.cek")).digest()[:CHIP_ID_SIZE]

    def df_flush(self) -> None:
        """DF_FLUSH: every ASID deactivated since the last flush becomes free again.

        DEACTIVATE clears the WBINVD indicator, so a flush with deactivated ASIDs needs
        WBINVD on every core first (KVM ``sev_flush_asids``; sev-guests.md 1.4).
        """
        self._require(SevCommand.DF_FLUSH)
        dirty = [k for k in self._store.keys(ASID_NS) if k.startswith("dirty.")]
        if dirty and self._store.get(STATE_NS, "wbinvd") is None:
            raise PspError(
                SevCommand.DF_FLUSH,
                SevStatus.WBINVD_REQUIRED,
                "a guest was deactivated since the last WBINVD",
                hint="run WBINVD on every core first",
            )
        for key in dirty:
            self._store.delete(ASID_NS, key)

    def wbinvd(self) -> None:
        """WBINVD ran on every core: the caches hold no deactivated guest's lines.

        Not a firmware command: the CPU instruction, whose effect the firmware sees
        through the WBINVD indicator DF_FLUSH checks.
        """
        self._store.put(STATE_NS, "wbinvd", b"\x01")


def _check_owner_certs(pek: SevCert, oca: SevCert) -> None:
    """PEK_CERT_IMPORT's checks: a self-signed OCA that signed the PEK."""
    cmd = SevCommand.PEK_CERT_IMPORT
    try:
        verify_sev_cert(oca, SevUsage.OCA, oca)
        verify_sev_cert(pek, SevUsage.PEK, oca)
    except CertificateError as exc:
        status = (
            SevStatus.BAD_SIGNATURE if exc.check == "signature" else SevStatus.INVALID_CERTIFICATE
        )
        raise PspError(cmd, status, str(exc)) from exc
