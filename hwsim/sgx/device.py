"""A device shaped like Linux's ``/dev/sgx_enclave``: the only door to the SGX engine.

One :class:`SgxEnclaveDevice` is one open file of the device, holding one enclave, with
the ioctls of ``arch/x86/include/uapi/asm/sgx.h`` as methods: :meth:`create`
(SGX_IOC_ENCLAVE_CREATE), :meth:`add_pages` (ADD_PAGES, with a per-chunk measure mask
as SGXS streams need), :meth:`init` (ENCLAVE_INIT) and the enclave's :attr:`identity`
after it, and the SGX2 calls :meth:`restrict_permissions`, :meth:`modify_types`,
:meth:`remove_pages`, plus the page-fault path :meth:`augment` (EAUG) and the
reclaimer's :meth:`evict` / :meth:`reload` (EWB / ELDU).

Running the enclave is the vDSO's part (``vdso_sgx_enter_enclave``): :meth:`enter`
EENTERs (or ERESUMEs) a thread and returns how it came back. The host process's own
memory is simulated too: :meth:`host_read` / :meth:`host_write` are loads and stores of
host code, with the view host code gets (abort page in ELRANGE, nothing of the CPU's
page cache), and :meth:`debug_read` / :meth:`debug_write` are what a debugger does
through ``/proc/PID/mem`` (EDBGRD / EDBGWR, debug enclaves only).

The kernel-like layer applies the machine's launch policy before EINIT
(``shared/reference/sim.md`` 2.3): with writable LE hash MSRs it writes the enclave's
MRSIGNER into them (Linux ``sgx_update_lepubkeyhash``), unless the owner's allow-list
refuses the signer; with locked MSRs it passes the caller's token or asks the vendor's
Launch Enclave for one, like the legacy driver and aesmd. Every refusal names its rule.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from typing import TYPE_CHECKING

from hwsim.sgx._encls import (
    EAdd,
    EAug,
    EBlock,
    ECreate,
    EDbgRd,
    EDbgWr,
    EExtend,
    EInit,
    ELd,
    EModPr,
    EModT,
    ERemove,
    ETrack,
    EvictedPage,
    EWb,
    encls,
)
from hwsim.sgx._reclaim import (
    EpcStats,
    VersionArrays,
    evicted_fault,
    pinned_offsets,
    reclaimer_of,
)
from hwsim.sgx.arch import (
    EEXTEND_CHUNK,
    INTEL_LE_PUBKEY_HASH,
    PAGE_SIZE,
    VENDOR_INTEL,
    AttributeFlag,
    Attributes,
    Einittoken,
    PageType,
    Secinfo,
    SecinfoFlag,
    Secs,
    SgxStatus,
    Sigstruct,
    secinfo_flags,
)
from hwsim.sgx.errors import LaunchRefused, SgxError, SgxStatusError
from hwsim.sgx.launch import launch_control, msrs_writable, owner_allow_list
from hwsim.sgx.le import LaunchEnclave
from hwsim.sgx.platform import epc_of
from memcrypt.errors import InvalidInput

if TYPE_CHECKING:
    from hwsim._exec import Stop as Stop  # noqa: PLC0414 (re-exported for annotations)
    from hwsim.machine import Machine, Transaction
    from hwsim.sgx._run import EnclaveCpu
    from hwsim.sgx._run import Exit as Exit  # noqa: PLC0414 (re-exported)
    from hwsim.sgx.epc import Enclave
    from hwsim.sgx.keys import EnclaveIdentity

__all__ = [
    "HOST_BASE", "HOST_SIZE", "MEASURE_ALL", "EpcStats", "SgxEnclaveDevice", "launch_token",
]  # fmt: skip

HOST_BASE = 0x1000_0000  # the host process's memory the simulated CPU sees (identity-mapped)
HOST_SIZE = 16 << 20
MEASURE_ALL = (1 << (PAGE_SIZE // EEXTEND_CHUNK)) - 1  # EEXTEND all 16 chunks of a page
_WORD = 8  # EDBGRD/EDBGWR move 8 bytes
_ALIVE_EVERY = 0.05  # seconds between power-cycle checks on the entry path (one SQLite read)

_RWX = int(SecinfoFlag.R | SecinfoFlag.W | SecinfoFlag.X)
_HINTS = {
    SgxStatus.INVALID_SIG_STRUCT: "the SIGSTRUCT is malformed; sign the image again",
    SgxStatus.INVALID_SIGNATURE: "the SIGSTRUCT was changed after signing; sign it again",
    SgxStatus.INVALID_MEASUREMENT: "the pages loaded differ from what was signed (contents, "
    "layout, SSAFRAMESIZE or SIZE); load the signed image, or sign this one",
    SgxStatus.INVALID_ATTRIBUTE: "the SECS ATTRIBUTES/MISCSELECT must match the SIGSTRUCT "
    "under its masks, and EINITTOKEN_KEY is for the Launch Enclave only",
    SgxStatus.INVALID_EINITTOKEN: "get a token for this enclave on this machine, with the "
    "current launch policy: sgxtool token IMAGE",
    SgxStatus.INVALID_CPUSVN: "the token was made for a newer CPU; get a new one here",
}


def _secinfo_ok(flags: int) -> None:
    """Linux ``sgx_validate_secinfo``: only REG/TCS, W needs R, a TCS has no permissions."""
    ptype = Secinfo(flags).page_type
    if flags & ~(0xFF00 | _RWX) or ptype not in (PageType.REG, PageType.TCS):
        raise InvalidInput(f"SECINFO {flags:#x}: pages are PT_REG or PT_TCS, no state bits")
    if flags & SecinfoFlag.W and not flags & SecinfoFlag.R:
        raise InvalidInput(f"SECINFO {flags:#x}: write permission needs read permission")
    if ptype == PageType.TCS and flags & _RWX:
        raise InvalidInput(f"SECINFO {flags:#x}: a TCS page takes no permissions")


class SgxEnclaveDevice:
    """One open ``/dev/sgx_enclave``: build, initialise and manage one enclave."""

    def __init__(self, machine: Machine, host_size: int = HOST_SIZE) -> None:
        self.machine = machine
        self.epc = epc_of(machine)
        self._host_size = host_size
        self._alive_at = 0.0  # time.monotonic() of the last check_alive on entry
        self._cpu: EnclaveCpu | None = None
        self._enclave: Enclave | None = None
        self._backing: dict[int, tuple[EvictedPage, int, int]] = {}  # offset -> page, VA, slot
        self._va = VersionArrays(self.epc)
        self._pinned: set[int] = set()  # TCS and SSA offsets the reclaimer leaves alone
        self.stats = EpcStats()

    def __enter__(self) -> SgxEnclaveDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def enclave(self) -> Enclave:
        if self._enclave is None:
            raise InvalidInput("no enclave: call create() first")
        return self._enclave

    def check_alive(self) -> None:
        """Refuse to touch an enclave whose EPC was lost in a power cycle."""
        if epc_of(self.machine) is not self.epc:
            # The 2016 driver's SGX_POWER_LOST_ENCLAVE: EPC contents do not survive S3/off.
            raise SgxError(
                "the enclave was lost: the machine was power-cycled since it was created",
                hint="load the enclave again",
            )

    def _check_alive_lately(self) -> None:
        """:meth:`check_alive` at most every ``_ALIVE_EVERY`` seconds, for the paths taken
        per entry or per page fault, which cost microseconds where the check (an SQLite
        read) costs more."""
        now = time.monotonic()
        if now - self._alive_at > _ALIVE_EVERY:
            self.check_alive()
            self._alive_at = now

    def _page(self, offset: int) -> int:
        """The EPC page at ``offset``, loaded back first if the reclaimer evicted it."""
        if offset % PAGE_SIZE or not 0 <= offset < self.enclave.secs.size:
            raise InvalidInput(f"offset {offset:#x} is not a page inside the enclave")
        if offset in self._backing:
            self.reload(offset)
        return self.enclave.page(self.enclave.secs.baseaddr + offset)

    @property
    def resident(self) -> Enclave | None:
        """The enclave, for the reclaimer (None once closed)."""
        return self._enclave

    def evictable(self, offset: int) -> bool:
        """May the reclaimer evict the page at ``offset`` (not a TCS or SSA frame)?"""
        return offset not in self._pinned

    def young(self, offset: int) -> bool:
        """Was the page at ``offset`` accessed since the last ask? (The PTE's accessed
        bit, tested and cleared, as Linux's ``sgx_reclaimer_age``.)"""
        cpu = self._cpu
        return cpu is not None and cpu.test_and_clear_young(self.enclave.secs.baseaddr + offset)

    # -- SGX_IOC_ENCLAVE_CREATE / ADD_PAGES / INIT ----------------------------------------
    def create(self, secs: Secs) -> Enclave:
        """ECREATE from the caller's SECS (base, size, SSA frame size, attributes)."""
        if self._enclave is not None:
            raise InvalidInput("this device already holds an enclave")
        page = self.epc.alloc()
        try:
            encls(self.epc, ECreate(page, secs.pack()))
        except SgxError:
            self.epc.release(page)
            raise
        self._enclave = self.epc.enclaves[page]
        reclaimer_of(self.epc).attach(self)
        return self._enclave

    def add_pages(
        self, offset: int, data: bytes, secinfo: int, *, measure: bool | int = True
    ) -> int:
        """EADD each page of ``data`` at ``offset``, then EEXTEND the 256-byte chunks of
        each page whose bit is set in the 16-bit mask ``measure`` (True: all, as Linux's
        SGX_PAGE_MEASURE; False: none; SGXS streams may measure any subset)."""
        self.check_alive()
        if self.enclave.initialized:
            raise InvalidInput("the enclave is initialized; pages can no longer be added")
        if offset % PAGE_SIZE or not data or len(data) % PAGE_SIZE:
            raise InvalidInput("add_pages takes whole pages at a page-aligned offset")
        _secinfo_ok(secinfo)
        mask = MEASURE_ALL if measure is True else int(measure)
        if not 0 <= mask <= MEASURE_ALL:
            raise InvalidInput(f"measure mask {mask:#x}: one bit per 256-byte chunk, 16 bits")
        chunks = [c * EEXTEND_CHUNK for c in range(PAGE_SIZE // EEXTEND_CHUNK) if mask >> c & 1]
        enclave = self.enclave
        for i in range(0, len(data), PAGE_SIZE):
            page = self.epc.alloc()
            op = EAdd(page, enclave.secs_page, enclave.secs.baseaddr + offset + i,
                      data[i : i + PAGE_SIZE], secinfo)  # fmt: skip
            try:
                encls(self.epc, op)
            except SgxError:
                self.epc.release(page)
                raise
            for c in chunks:
                encls(self.epc, EExtend(page, c))
            self.stats.added += 1
            if secinfo >> 8 & 0xFF == PageType.TCS:
                frame = self.enclave.secs.ssaframesize
                self._pinned |= pinned_offsets(offset + i, data[i : i + PAGE_SIZE], frame)
        return len(data) // PAGE_SIZE

    def init(
        self, sigstruct: Sigstruct | bytes, token: Einittoken | bytes | None = None
    ) -> Enclave:
        """EINIT under the machine's launch policy; :class:`LaunchRefused` or the EINIT code.

        ``token`` matters only where the LE hash MSRs are locked to another signer
        (vendor-key policy); without one, the vendor's Launch Enclave is asked for it.
        """
        self.check_alive()
        sig = sigstruct if isinstance(sigstruct, Sigstruct) else Sigstruct.unpack(sigstruct)
        raw_token = token.pack() if isinstance(token, Einittoken) else token
        self._kernel_checks(sig)
        with self.machine.transaction() as txn:
            use = self._launch_token(txn, sig, raw_token)
            try:
                encls(self.epc, EInit(self.enclave.secs_page, sig.pack(), use))
            except SgxStatusError as exc:
                raise SgxStatusError(
                    exc.status, f"EINIT refused the enclave: {exc.detail}",
                    hint=_HINTS.get(exc.status),
                ) from exc  # fmt: skip
        return self.enclave

    @property
    def identity(self) -> EnclaveIdentity:
        """What EINIT committed: MRENCLAVE, MRSIGNER, attributes, product and SVNs."""
        found = self.enclave.identity
        if found is None:
            raise InvalidInput("the enclave is not initialized: call init() first")
        return found

    @property
    def elrange(self) -> tuple[int, int]:
        """The enclave's linear range: BASEADDR and SIZE from its SECS."""
        return self.enclave.secs.baseaddr, self.enclave.secs.size

    # -- running: the vDSO's enter, and the host's own memory ------------------------------
    def enter(
        self, tcs: int, regs: dict[str, int], budget: int = 0, *, resume: bool = False,
        deadline: float | None = None,
    ) -> Exit:  # fmt: skip
        """EENTER (ERESUME with ``resume``) the thread whose TCS is at linear address
        ``tcs``, with the host's ``regs``, like ``vdso_sgx_enter_enclave``. It returns at
        EEXIT, or with an AEX on a fault, after ``budget`` instructions (0: no count;
        counted in slices, so :attr:`Exit.instructions` is an upper bound of what ran) or
        at the ``time.monotonic()`` ``deadline``. The AEX leaves the thread resumable."""
        self._check_alive_lately()
        cpu = self._cpu or self._running()
        if resume:
            ex = cpu.eresume(tcs, budget, deadline=deadline)
        else:
            ex = cpu.eenter(tcs, regs, budget, deadline=deadline)
        spent = ex.instructions
        # The kernel's #PF handler: a fault on an evicted page is served with ELDU and
        # the thread resumed (the vDSO's AEP runs ERESUME), unseen by the caller. The
        # faulting instruction did not complete, so it may run even where the budget is
        # spent (a slice is charged in full, and a one-instruction step must progress).
        while ex.kind == "aex":
            offset = evicted_fault(ex.fault, self.enclave.secs.baseaddr, self._backing)
            if offset is None:
                break
            self.reload(offset)
            ex = cpu.eresume(tcs, budget and max(budget - spent, 1), deadline=deadline)
            spent += ex.instructions
        return dataclasses.replace(ex, instructions=spent) if spent != ex.instructions else ex

    def run_host(
        self, rip: int, regs: dict[str, int], budget: int = 0, deadline: float | None = None
    ) -> Stop:
        """Run the host's own code at ``rip`` (in host memory), outside enclave mode."""
        return self._running().run_host(rip, regs, budget, deadline)

    def host_regs(self, *names: str) -> dict[str, int]:
        """The host's registers after :meth:`enter` or :meth:`run_host`."""
        return self._running().host_regs(*names)

    def host_read(self, addr: int, size: int) -> bytes:
        """A load by host code: host memory as is, ELRANGE as the abort page (0xFF);
        anything else is a #PF (:class:`~hwsim.sgx.errors.SgxFault`)."""
        return self._running().host_read(addr, size)

    def host_write(self, addr: int, data: bytes) -> None:
        """A store by host code: host memory is written, ELRANGE drops it, else #PF."""
        self._running().host_write(addr, data)

    def _running(self) -> EnclaveCpu:
        if not self.enclave.initialized:
            raise InvalidInput("the enclave is not initialized: call init() first")
        if self._cpu is None:
            from hwsim.sgx._run import EnclaveCpu  # the CPU (and Unicorn) only when run

            self._cpu = EnclaveCpu(self.enclave, HOST_BASE, self._host_size)
        return self._cpu

    def debug_read(self, offset: int, size: int) -> bytes:
        """Read enclave memory with EDBGRD, as a debugger does (debug enclaves only)."""
        out = b""
        for word in range(offset & ~(_WORD - 1), offset + size, _WORD):
            page = self._page(word & ~(PAGE_SIZE - 1))
            out += encls(self.epc, EDbgRd(page, word % PAGE_SIZE))
        skip = offset % _WORD
        return out[skip : skip + size]

    def debug_write(self, offset: int, data: bytes) -> None:
        """Write enclave memory with EDBGWR (read-modify-write of each 8-byte word); the
        next entry runs what was written (a breakpoint's int3 traps)."""
        start = offset & ~(_WORD - 1)
        words = bytearray(self.debug_read(start, -(-(offset + len(data) - start) // 8) * 8))
        words[offset - start : offset - start + len(data)] = data
        for at in range(0, len(words), _WORD):
            page = self._page((start + at) & ~(PAGE_SIZE - 1))
            encls(self.epc, EDbgWr(page, (start + at) % PAGE_SIZE, bytes(words[at : at + 8])))

    def _kernel_checks(self, sig: Sigstruct) -> None:
        # Linux sgx_encl_init / sgx_ioc_enclave_init pre-checks (sim.md 2.3).
        if sig.vendor not in (0, VENDOR_INTEL):
            raise InvalidInput(f"SIGSTRUCT VENDOR {sig.vendor:#x}: the kernel takes 0 or 0x8086")
        if self.enclave.initialized:
            raise InvalidInput("the enclave is already initialized")

    def _check_le_attribute(self, txn: Transaction, signer: bytes) -> None:
        """EINITTOKEN_KEY only for the platform's Launch Enclave: the signer whose hash the
        locked LE hash MSRs hold (the legacy driver's rule; with writable MSRs no LE is
        needed, and the kernel would write any signer there, so it is never granted)."""
        if not self.enclave.secs.attributes_flags & AttributeFlag.EINITTOKEN_KEY:
            return
        if not msrs_writable(txn) and signer == txn.le_pubkey_hash():
            return
        raise LaunchRefused(
            "the kernel", "EINITTOKEN_KEY is granted only to the Launch Enclave, whose "
            f"signer is the launch key hash the LE hash MSRs are locked to; {signer.hex()} "
            "is not", hint="clear EINITTOKEN_KEY, or run it on a machine locked to its signer",
        )  # fmt: skip

    def _launch_token(self, txn: Transaction, sig: Sigstruct, token: bytes | None) -> bytes:
        """Apply the launch policy; the token bytes EINIT gets (all zero: tokenless)."""
        from hwsim.cpu import IA32_SGXLEPUBKEYHASH0

        none = bytes(Einittoken.LAYOUT.size)
        signer = sig.mrsigner
        self._check_le_attribute(txn, signer)
        if msrs_writable(txn):
            allow = owner_allow_list(txn)
            if allow and signer not in allow:
                raise LaunchRefused(
                    "the owner's allow-list (flc-locked)",
                    f"signer {signer.hex()} is not on it",
                    hint="sign with an allowed key, or the owner adds it: hwsim sgx "
                    f"launch-control set flc-locked --allow {signer.hex()} ...",
                )
            for i, word in enumerate(struct.unpack("<4Q", signer)):
                txn.wrmsr(IA32_SGXLEPUBKEYHASH0 + i, word)  # as Linux does before EINIT
            return none
        msrs = txn.le_pubkey_hash()
        if signer == msrs:
            return none
        if token is not None:
            return token
        if msrs == txn.sgx_vendor_key_hash():
            le = LaunchEnclave.start(self.machine, self.epc)
            return le.get_token(sig, self.enclave.secs.attributes).pack()
        if msrs == INTEL_LE_PUBKEY_HASH:
            raise LaunchRefused(
                "the launch key hash (Intel's, hardwired)", "this enclave needs an EINITTOKEN "
                "from Intel's Launch Enclave, and none was given",
                hint="get one: sgxtool token IMAGE --le LE (--le-sig SIG for an SGXS LE), "
                "then load with the token (sgxtool run --token)",
            )  # fmt: skip
        raise LaunchRefused(
            "the owner's launch control (flc-locked)",
            f"the LE hash MSRs are locked to the owner's key {msrs.hex()}, and this "
            f"enclave is signed by {signer.hex()}",
            hint="sign the enclave with the owner's key, or load it with a token from a "
            "Launch Enclave the owner signed (sgxtool token IMAGE --le LE, then --token), "
            "or the owner changes the policy: hwsim sgx launch-control set ...",
        )

    # -- SGX2 (SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS / MODIFY_TYPES / REMOVE_PAGES) ---------
    def augment(self, offset: int) -> None:
        """EAUG a zero page at ``offset`` (the kernel's #PF handler; the enclave EACCEPTs)."""
        self.check_alive()
        if offset % PAGE_SIZE or not 0 <= offset < self.enclave.secs.size:
            raise InvalidInput(f"offset {offset:#x} is not a page inside the enclave")
        page = self.epc.alloc()
        try:
            encls(self.epc, EAug(page, self.enclave.secs_page, self.enclave.secs.baseaddr + offset))
        except SgxError:
            self.epc.release(page)
            raise
        self.stats.added += 1

    def _each(self, offset: int, length: int) -> list[int]:
        self.check_alive()
        if length <= 0 or length % PAGE_SIZE:
            raise InvalidInput("length must be a positive multiple of 4096")
        return [self._page(offset + i) for i in range(0, length, PAGE_SIZE)]

    def restrict_permissions(self, offset: int, length: int, perms: int) -> None:
        """EMODPR each page to ``perms`` (R/W/X bits), then ETRACK."""
        for page in self._each(offset, length):
            encls(self.epc, EModPr(page, perms))
        encls(self.epc, ETrack(self.enclave.secs_page))

    def modify_types(self, offset: int, length: int, page_type: PageType) -> None:
        """EMODT each page to PT_TCS or PT_TRIM, then ETRACK."""
        for page in self._each(offset, length):
            encls(self.epc, EModT(page, secinfo_flags(page_type)))
        encls(self.epc, ETrack(self.enclave.secs_page))

    def remove_pages(self, offset: int, length: int) -> None:
        """EREMOVE trimmed pages the enclave has EACCEPTed."""
        pages = self._each(offset, length)
        for page in pages:
            entry = self.epc.entry(page)
            if entry.page_type != PageType.TRIM or entry.modified:
                raise InvalidInput("only PT_TRIM pages the enclave has accepted can be removed")
        for page in pages:
            encls(self.epc, ERemove(page))

    # -- the reclaimer ---------------------------------------------------------------------
    def evict(self, offset: int) -> None:
        """Swap a page out: EBLOCK, ETRACK, EWB into the kernel's backing store."""
        self._check_alive_lately()
        va, slot = self._va.take()  # first: making a VA page may evict pages, this one too
        try:
            page = self._page(offset)
            encls(self.epc, EBlock(page))
            encls(self.epc, ETrack(self.enclave.secs_page))
            evicted = encls(self.epc, EWb(page, va, slot))
        except (SgxError, InvalidInput):
            self._va.give_back(va, slot)
            raise
        self._backing[offset] = (evicted, va, slot)
        self.stats.evicted += 1

    def reload(self, offset: int) -> None:
        """Swap a page back in with ELDU (refused if the stored copy was tampered with)."""
        self._check_alive_lately()
        found = self._backing.get(offset)
        if found is None:
            raise InvalidInput(f"the page at offset {offset:#x} is not evicted")
        evicted, va, slot = found
        page = self.epc.alloc()
        try:
            encls(self.epc, ELd(page, self.enclave.secs_page, evicted, va, slot))
        except SgxError:
            self.epc.release(page)
            raise
        del self._backing[offset]
        self._va.give_back(va, slot)
        self.stats.reloaded += 1

    def backing_store(self) -> dict[int, EvictedPage]:
        """The kernel's backing store: each evicted page (ciphertext and PCMD) by offset."""
        return {offset: found[0] for offset, found in self._backing.items()}

    def version_slot(self, offset: int) -> tuple[int, int]:
        """The VA page (EPC index) and slot holding the version of an evicted page."""
        found = self._backing.get(offset)
        if found is None:
            raise InvalidInput(f"the page at offset {offset:#x} is not evicted")
        return found[1], found[2]

    @property
    def va_pages(self) -> list[int]:
        """The EPC indices of the enclave's version-array pages."""
        return self._va.pages

    def close(self) -> None:
        """Release the enclave: EREMOVE every page, then the SECS (and the VA pages)."""
        enclave, self._enclave = self._enclave, None
        self._cpu = None
        reclaimer_of(self.epc).detach(self)
        if enclave is not None:
            for page in list(enclave.pages.values()):
                encls(self.epc, ERemove(page))
            encls(self.epc, ERemove(enclave.secs_page))
        self._va.close()
        self._backing.clear()


def launch_token(
    machine: Machine, sigstruct: Sigstruct, attributes: Attributes | None = None
) -> Einittoken:
    """An EINITTOKEN from the machine's Launch Enclave (the launch service aesmd offers).

    ``attributes`` are the SECS attributes the enclave will be created with (default: the
    SIGSTRUCT's). Refused with :class:`LaunchRefused` where no token can help, saying why.
    """
    with machine.transaction():  # the policy cannot change between its check and the LE
        lc = launch_control(machine)
        if lc.msrs_writable:
            decides = "the owner's allow-list decides" if lc.owner_allow else "any signer runs"
            raise LaunchRefused(
                f"the launch policy ({lc.policy.value})",
                "no token is needed or used: the kernel writes each enclave's MRSIGNER into the "
                f"LE hash MSRs before EINIT ({decides})",
                hint="load the enclave without a token",
            )
        if lc.msr_hash == INTEL_LE_PUBKEY_HASH:
            raise LaunchRefused(
                "the launch key hash (Intel's)", "only Intel's Launch Enclave issues tokens here",
                hint="run it: sgxtool token IMAGE --le LE (--le-sig SIG for an SGXS LE)",
            )  # fmt: skip
        if lc.msr_hash != lc.vendor_hash:
            raise LaunchRefused(
                "the launch policy (flc-locked)",
                "the LE hash MSRs are locked to the owner's key "
                f"{lc.msr_hash.hex()}, so the vendor's Launch Enclave cannot run here",
                hint="sign the enclave with the owner's key, or run a Launch Enclave the "
                "owner signed: sgxtool token IMAGE --le LE",
            )
        le = LaunchEnclave.start(machine, epc_of(machine))
        return le.get_token(sigstruct, attributes or sigstruct.attributes)
