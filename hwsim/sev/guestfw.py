"""The simulated PSP's guest commands: launch, keys and ASIDs, debug, decommission.

Follows the SEV API guest state machine (``sevapi.h`` "Chapter 6.1.1";
``shared/reference/sev-guests.md`` 1.3): LAUNCH_START makes a context in LUPDATE,
LAUNCH_MEASURE moves it to LSECRET, LAUNCH_FINISH to RUNNING. A command outside the states
:data:`GUEST_STATES` lists fails with INVALID_GUEST_STATE, an unknown handle with
INVALID_GUEST; every failure is a :class:`~hwsim.sev.psp.PspError` with the API status.

Keys and ASIDs (sev-guests.md 1.4, KVM ``sev_asid_new`` / ``sev_flush_asids``): ACTIVATE
binds a guest to an ASID and loads its VEK into that memory-encryption key slot; SEV-ES
guests take ASIDs 1..min_sev_asid-1, plain SEV guests min_sev_asid..CPUID 0x8000001F ECX.
DEACTIVATE unloads the key and leaves the ASID dirty: it can be bound again only after a
DF_FLUSH, and DEACTIVATE clears the WBINVD indicator, so that flush needs WBINVD on every
core first (WBINVD_REQUIRED otherwise).

What a context holds lives in ``boot.sev.guest`` (volatile: a power cycle ends every
guest, as on hardware): handle, policy, state, VEK, TEK/TIK, ASID, the launch digest's
running SHA-256 state and, after LAUNCH_MEASURE, the measurement LAUNCH_SECRET is bound to.
Where the SEV API leaves a rule unstated, the choice is marked *simulator rule*.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from hwsim.errors import HwsimError
from hwsim.sev._sha256 import ResumableSha256
from hwsim.sev.arch import (
    GuestPolicy,
    GuestState,
    GuestStatus,
    PlatformState,
    SevCommand,
    SevStatus,
)
from hwsim.sev.psp import ASID_NS, GUEST_NS, STATE_NS, KeySlots, Psp, PspError
from hwsim.sev.session import TransportKeys, launch_measurement, open_secret

__all__ = ["GUEST_STATES", "MAX_SECRET", "MAX_UPDATE", "GuestContext", "GuestFirmware"]

_G = GuestState
_LIVE = (_G.LUPDATE, _G.LSECRET, _G.RUNNING, _G.SUPDATE, _G.RUPDATE, _G.SENT)
# sevapi.h "Chapter 6.1.1": the states each guest command is allowed in. DBG_* are not in
# that table (it predates them): simulator rule, any state of a live guest.
GUEST_STATES: dict[SevCommand, tuple[GuestState, ...]] = {
    SevCommand.LAUNCH_UPDATE_DATA: (_G.LUPDATE,),
    SevCommand.LAUNCH_MEASURE: (_G.LUPDATE,),
    SevCommand.LAUNCH_SECRET: (_G.LSECRET,),
    SevCommand.LAUNCH_FINISH: (_G.LSECRET,),
    SevCommand.ACTIVATE: _LIVE,
    SevCommand.DEACTIVATE: _LIVE,
    SevCommand.DECOMMISSION: _LIVE,
    SevCommand.GUEST_STATUS: _LIVE,
    SevCommand.DBG_DECRYPT: _LIVE,
    SevCommand.DBG_ENCRYPT: _LIVE,
}

# Largest LAUNCH_UPDATE_DATA / DBG_* / LAUNCH_SECRET transfer in one command: 1 GiB of
# guest image (the security issue's bound on large work; KVM splits larger regions).
MAX_UPDATE = 1 << 30
MAX_SECRET = 16 * 1024  # sevctl's limit on a secret payload
_CHUNK = 4 << 20  # bytes encrypted and hashed per step (more than the engine's hot cache)
_UNIT = 16  # LAUNCH_UPDATE_DATA and DBG_* work in 16-byte blocks (KVM doc)


@dataclass
class GuestContext:
    """One guest's firmware context (GCTX)."""

    handle: int
    policy: int
    state: int
    vek: bytes
    tek: bytes
    tik: bytes
    asid: int = 0  # 0: not activated
    digest: bytes = b""  # ResumableSha256 state
    measure: bytes = b""  # set by LAUNCH_MEASURE

    def dumps(self) -> bytes:
        fields = {k: v.hex() if isinstance(v, bytes) else v for k, v in asdict(self).items()}
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def loads(cls, raw: bytes) -> GuestContext:
        try:
            fields = json.loads(raw)
            for name in ("vek", "tek", "tik", "digest", "measure"):
                fields[name] = bytes.fromhex(fields[name])
            return cls(**fields)
        except (ValueError, TypeError, KeyError) as exc:
            raise HwsimError(f"state.db: a SEV guest context is corrupt ({exc})") from exc


class GuestFirmware:
    """The guest commands of one machine's PSP, in one open transaction."""

    def __init__(self, psp: Psp, memory: KeySlots, *, sev_asids: int, min_sev_asid: int) -> None:
        self.psp = psp
        self._store = psp.store
        self._memory = memory
        self.sev_asids = sev_asids
        self.min_sev_asid = min_sev_asid

    # -- contexts ---------------------------------------------------------------------

    def handles(self) -> list[int]:
        return sorted(int(k) for k in self._store.keys(GUEST_NS))

    def context(self, command: SevCommand, handle: int) -> GuestContext:
        """The context of ``handle`` for ``command``: platform and guest state checked."""
        self._platform(command, (PlatformState.WORKING,))
        raw = self._store.get(GUEST_NS, str(handle))
        if raw is None:
            raise PspError(command, SevStatus.INVALID_GUEST, f"no guest has handle {handle}")
        ctx = GuestContext.loads(raw)
        allowed = GUEST_STATES[command]
        if ctx.state not in allowed:
            names = ", ".join(s.name for s in allowed)
            raise PspError(
                command,
                SevStatus.INVALID_GUEST_STATE,
                f"guest {handle} is {GuestState(ctx.state).name}; {command.name} needs {names}",
            )
        return ctx

    def _save(self, ctx: GuestContext) -> None:
        self._store.put(GUEST_NS, str(ctx.handle), ctx.dumps())

    def _platform(self, command: SevCommand, allowed: tuple[PlatformState, ...]) -> None:
        state = self.psp.state
        if state not in allowed:
            names = ", ".join(s.name for s in allowed)
            raise PspError(
                command,
                SevStatus.INVALID_PLATFORM_STATE,
                f"platform is {state.name}; {command.name} needs {names}",
                hint="INIT the platform first" if state == PlatformState.UNINIT else None,
            )

    def _active(self, command: SevCommand, ctx: GuestContext) -> int:
        if not ctx.asid:
            raise PspError(
                command,
                SevStatus.INACTIVE,
                f"guest {ctx.handle} has no ASID: its key is not loaded",
                hint="ACTIVATE it first",
            )
        return ctx.asid

    # -- launch -----------------------------------------------------------------------

    def launch_start(
        self, policy: int, godh: bytes | None, session: bytes | None, *, share_with: int = 0
    ) -> int:
        """LAUNCH_START: a new context in LUPDATE; returns its handle.

        With the guest owner's GODH certificate and session buffer the TEK and TIK are
        unwrapped from the session and the policy's MAC checked (sev.md 2.3); without
        them the firmware makes its own (the guest owner then cannot inject secrets).
        ``share_with`` is the handle whose VEK the new guest shares (0: a new VEK).
        """
        cmd = SevCommand.LAUNCH_START
        self._platform(cmd, (PlatformState.INIT, PlatformState.WORKING))
        _check_policy(cmd, policy, self.psp.api)
        if (godh is None) != (session is None):
            raise PspError(cmd, SevStatus.INVALID_PARAM, "give both the GODH and the session")
        if godh is not None and session is not None:
            tek, tik = self.psp.open_session(godh, session, policy)
        else:
            tek, tik = os.urandom(16), os.urandom(16)
        vek = self._shared_vek(share_with, policy) if share_with else os.urandom(16)
        handle = self._new_handle()
        digest = ResumableSha256().save()
        ctx = GuestContext(handle, policy, _G.LUPDATE, vek, tek, tik, digest=digest)
        self._save(ctx)
        self.psp.set_working(True)
        return handle

    def _shared_vek(self, other: int, policy: int) -> bytes:
        """Key sharing (LAUNCH_START with a handle): both policies must allow it (NOKS)."""
        cmd = SevCommand.LAUNCH_START
        raw = self._store.get(GUEST_NS, str(other))
        if raw is None:
            raise PspError(cmd, SevStatus.INVALID_GUEST, f"no guest has handle {other} to share")
        peer = GuestContext.loads(raw)
        if (policy | peer.policy) & GuestPolicy.NOKS:
            raise PspError(
                cmd,
                SevStatus.POLICY_FAILURE,
                f"guest {other} and the new guest may not share a key: NOKS is set",
            )
        return peer.vek

    def _new_handle(self) -> int:
        raw = self._store.get(STATE_NS, "next_handle")
        handle = int.from_bytes(raw, "little") if raw else 1
        self._store.put(STATE_NS, "next_handle", (handle + 1).to_bytes(4, "little"))
        return handle

    def launch_update_data(self, handle: int, paddr: int, length: int) -> None:
        """LAUNCH_UPDATE_DATA: encrypt ``length`` bytes at ``paddr`` in place with the
        guest's key and extend the launch digest with their plaintext."""
        cmd = SevCommand.LAUNCH_UPDATE_DATA
        ctx = self.context(cmd, handle)
        asid = self._active(cmd, ctx)
        _check_range(cmd, paddr, length, MAX_UPDATE)
        digest = ResumableSha256.load(ctx.digest)
        for at in range(paddr, paddr + length, _CHUNK):
            n = min(_CHUNK, paddr + length - at)
            plain = self._memory.read(at, n, None)
            digest.update(plain)
            self._memory.write(at, plain, asid)
        ctx.digest = digest.save()
        self._save(ctx)

    def launch_measure(self, handle: int) -> tuple[bytes, bytes]:
        """LAUNCH_MEASURE: (measurement, mnonce); the guest moves to LSECRET."""
        ctx = self.context(SevCommand.LAUNCH_MEASURE, handle)
        mnonce = os.urandom(16)
        major, minor, build = self.psp.api
        ctx.measure = launch_measurement(
            ctx.tik,
            api_major=major,
            api_minor=minor,
            build=build,
            policy=ctx.policy,
            digest=ResumableSha256.load(ctx.digest).digest(),
            mnonce=mnonce,
        )
        ctx.state = _G.LSECRET
        self._save(ctx)
        return ctx.measure, mnonce

    def launch_secret(self, handle: int, header: bytes, payload: bytes, paddr: int) -> None:
        """LAUNCH_SECRET: check the packet's MAC with the TIK, decrypt it with the TEK and
        write it at ``paddr`` through the guest's key."""
        cmd = SevCommand.LAUNCH_SECRET
        ctx = self.context(cmd, handle)
        asid = self._active(cmd, ctx)
        _check_range(cmd, paddr, len(payload), MAX_SECRET)
        plain = open_secret(TransportKeys(ctx.tek, ctx.tik), header, payload, ctx.measure)
        self._memory.write(paddr, plain, asid)

    def launch_finish(self, handle: int) -> None:
        """LAUNCH_FINISH: the guest is RUNNING; nothing more can be measured into it."""
        ctx = self.context(SevCommand.LAUNCH_FINISH, handle)
        ctx.state = _G.RUNNING
        self._save(ctx)

    def guest_status(self, handle: int) -> GuestStatus:
        ctx = self.context(SevCommand.GUEST_STATUS, handle)
        return GuestStatus(handle, ctx.policy, ctx.asid, ctx.state)

    # -- ASIDs and keys ---------------------------------------------------------------

    def activate(self, handle: int, asid: int) -> None:
        """ACTIVATE: bind the guest to ``asid`` and load its VEK into that key slot."""
        cmd = SevCommand.ACTIVATE
        ctx = self.context(cmd, handle)
        self._check_asid(cmd, ctx, asid)
        owner = self._asid_owner(asid)
        if owner is not None and owner != handle:
            other = GuestContext.loads(self._store.get(GUEST_NS, str(owner)) or b"")
            if other.vek != ctx.vek:  # guests sharing a key may share its ASID
                raise PspError(cmd, SevStatus.ASID_OWNED, f"ASID {asid} belongs to guest {owner}")
        if self._store.get(ASID_NS, f"dirty.{asid}") is not None:
            raise PspError(
                cmd,
                SevStatus.DF_FLUSH_REQUIRED,
                f"ASID {asid} was deactivated and not flushed since",
                hint="WBINVD on every core, then DF_FLUSH",
            )
        if ctx.asid and ctx.asid != asid:
            raise PspError(cmd, SevStatus.ACTIVE, f"guest {handle} is active on ASID {ctx.asid}")
        self._store.put(ASID_NS, str(asid), str(handle).encode())
        self._memory.set_key(asid, ctx.vek)
        ctx.asid = asid
        self._save(ctx)

    def _check_asid(self, cmd: SevCommand, ctx: GuestContext, asid: int) -> None:
        es = bool(ctx.policy & GuestPolicy.ES)
        low, high = (1, self.min_sev_asid - 1) if es else (self.min_sev_asid, self.sev_asids)
        if not low <= asid <= high:
            kind = "SEV-ES" if es else "SEV"
            raise PspError(
                cmd,
                SevStatus.INVALID_ASID,
                f"ASID {asid} is not one for {kind} guests on this part ({low}-{high})",
            )

    def _asid_owner(self, asid: int) -> int | None:
        raw = self._store.get(ASID_NS, str(asid))
        return None if raw is None else int(raw)

    def deactivate(self, handle: int) -> None:
        """DEACTIVATE: unbind the ASID; it needs WBINVD and DF_FLUSH before reuse."""
        cmd = SevCommand.DEACTIVATE
        ctx = self.context(cmd, handle)
        asid = self._active(cmd, ctx)
        sharers = [h for h in self.handles() if h != handle and self._asid_of(h) == asid]
        if not sharers:
            self._store.delete(ASID_NS, str(asid))
            self._store.put(ASID_NS, f"dirty.{asid}", b"\x01")
            self._memory.clear_key(asid)
        elif self._asid_owner(asid) == handle:
            self._store.put(ASID_NS, str(asid), str(sharers[0]).encode())
        self._store.delete(STATE_NS, "wbinvd")  # the WBINVD indicator (KVM sev_flush_asids)
        ctx.asid = 0
        self._save(ctx)

    def _asid_of(self, handle: int) -> int:
        raw = self._store.get(GUEST_NS, str(handle))
        return GuestContext.loads(raw).asid if raw else 0

    def free_asid(self, es: bool) -> int | None:
        """The lowest ASID of the kind a guest needs that is neither bound nor dirty."""
        low, high = (1, self.min_sev_asid - 1) if es else (self.min_sev_asid, self.sev_asids)
        used = set(self._store.keys(ASID_NS))
        return next(
            (a for a in range(low, high + 1) if str(a) not in used and f"dirty.{a}" not in used),
            None,
        )

    def dirty_asids(self) -> int:
        return sum(k.startswith("dirty.") for k in self._store.keys(ASID_NS))

    def decommission(self, handle: int) -> None:
        """DECOMMISSION: delete an inactive guest's context; the last one ends WORKING."""
        cmd = SevCommand.DECOMMISSION
        ctx = self.context(cmd, handle)
        if ctx.asid:
            raise PspError(
                cmd,
                SevStatus.ACTIVE,
                f"guest {handle} is active on ASID {ctx.asid}",
                hint="DEACTIVATE it first",
            )
        self._store.delete(GUEST_NS, str(handle))
        if not self.handles():
            self.psp.set_working(False)

    # -- debugging ----------------------------------------------------------------------

    def dbg_decrypt(self, handle: int, src: int, dst: int, length: int) -> None:
        """DBG_DECRYPT: ``length`` bytes at ``src`` through the guest's key, to ``dst``
        in plain; refused under NODBG."""
        asid = self._debuggable(SevCommand.DBG_DECRYPT, handle, (src, dst), length)
        self._memory.write(dst, self._memory.read(src, length, asid), None)

    def dbg_encrypt(self, handle: int, src: int, dst: int, length: int) -> None:
        """DBG_ENCRYPT: plaintext at ``src`` written to ``dst`` through the guest's key."""
        asid = self._debuggable(SevCommand.DBG_ENCRYPT, handle, (src, dst), length)
        self._memory.write(dst, self._memory.read(src, length, None), asid)

    def _debuggable(self, cmd: SevCommand, handle: int, addrs: tuple[int, int], length: int) -> int:
        ctx = self.context(cmd, handle)
        if ctx.policy & GuestPolicy.NODBG:
            raise PspError(
                cmd, SevStatus.POLICY_FAILURE, f"guest {handle}'s policy forbids debugging (NODBG)"
            )
        asid = self._active(cmd, ctx)
        for addr in addrs:
            _check_range(cmd, addr, length, MAX_UPDATE)
        return asid


def _check_policy(cmd: SevCommand, policy: int, api: tuple[int, int, int]) -> None:
    if not 0 <= policy <= 0xFFFF_FFFF:
        raise PspError(cmd, SevStatus.INVALID_PARAM, f"policy {policy:#x} is not 32 bits")
    if policy & GuestPolicy.ES:
        raise PspError(
            cmd,
            SevStatus.POLICY_FAILURE,
            "policy bit 2 (ES) asks for an SEV-ES guest, which this simulator does not "
            "launch yet (VMSA, GHCB and #VC are not modelled)",
            hint="clear bit 2 of the policy for a plain SEV guest",
        )
    need = GuestPolicy.api_minimum(policy)
    if need > api[:2]:
        raise PspError(
            cmd,
            SevStatus.POLICY_FAILURE,
            f"the policy needs firmware API {need[0]}.{need[1]} or later; "
            f"this firmware is {api[0]}.{api[1]}",
        )


def _check_range(cmd: SevCommand, paddr: int, length: int, limit: int) -> None:
    if paddr % _UNIT:
        raise PspError(cmd, SevStatus.INVALID_ADDRESS, f"address {paddr:#x} is not 16-byte aligned")
    if length <= 0 or length % _UNIT or length > limit:
        raise PspError(
            cmd,
            SevStatus.INVALID_LENGTH,
            f"length {length:#x} must be a positive multiple of 16, at most {limit:#x}",
        )
