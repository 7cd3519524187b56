"""Running enclave threads: EENTER, ERESUME, EEXIT, AEX and the ENCLU leaves.

The CPU package boundary is modelled as on hardware (DESIGN.md, "Running code"): a page
an enclave touches is plaintext only in the package's cache (:mod:`hwsim.sgx._pagecache`),
filled from the encrypted EPC on first touch; at every exit (EEXIT or AEX) changed pages
are written back through the EPC's encryption, so DRAM always holds current ciphertext.
The cost of an entry or exit depends on the pages touched, never on the enclave's size.

Enclave pages are reachable only in enclave mode: the translator maps ELRANGE to cached
EPC pages after the EPCM checks of SDM vol. 3D 38.5 (valid, owned by this enclave, at this
address, PT_REG, not blocked/pending/modified, R/W/X), and outside enclave mode to the abort
page. A violation is a #PF with the SGX bit (error code 0x8000 | P/W/U/I); a code fetch
outside ELRANGE is #GP. Entry and exit semantics: ``shared/reference/sim.md`` 3.4.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hwsim._exec import (
    FETCH,
    GP,
    PAGE,
    PF,
    READ,
    RW,
    RWX,
    UD,
    WRITE,
    Cpu,
    Fault,
    PageDenied,
    Stop,
    pf_error_code,
)
from hwsim.sgx._enclu import eaccept, egetkey_leaf, emodpe, ereport
from hwsim.sgx._pagecache import PageCache
from hwsim.sgx.arch import PageType, SecinfoFlag, SgxStatus, Tcs
from hwsim.sgx.epc import Enclave
from hwsim.sgx.errors import SgxError, SgxFault, SgxStatusError

__all__ = ["FIRST_SLICE", "MAX_SLICE", "EnclaveCpu", "Exit"]

ENCLU = b"\x0f\x01\xd7"
_ABORT_PAGE = 0x3F_FFFF_F000
_GPRSGX = struct.Struct("<18Q2QI4x2Q")  # SDM table 38-8 (GPRSGX), 184 bytes
_GPR_ORDER = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10",
              "r11", "r12", "r13", "r14", "r15", "rflags", "rip")  # fmt: skip
_EEXIT_OUT = ("rdi", "rsi", "rdx", "rax", "rbx")  # the registers an EEXIT hands the host
_EEXIT_IN = ("rdi", "rsi", "rdx", "rbx")  # read with RIP and RAX at every ENCLU trap
_ZERO_ON_AEX = ("rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_EXITINFO_VECTORS = {0, 1, 3, 4, 5, 6, 13, 14, 16, 17, 19}  # SDM 40.4.1
_ZF = 1 << 6
_ARITH_FLAGS = 0x8D5  # CF PF AF ZF SF OF
_BARE = frozenset({"cpuid", "syscall", "sysenter", "in", "out"})  # #UD in enclaves (sim.md 3.4)
# A budgeted entry runs in slices of Unicorn's exact count, doubling from FIRST_SLICE to
# MAX_SLICE: Unicorn does not say how many instructions ran before an EEXIT, so an entry
# is charged the slices it started (at most twice what it ran, plus FIRST_SLICE).
FIRST_SLICE = 4096
MAX_SLICE = 1 << 22


@dataclass
class _Thread:
    """What the CPU keeps about one TCS (the parts of the TCS page it updates)."""

    tcs: Tcs
    addr: int
    cssa: int
    active: bool = False
    aep: int = 0
    host_fs: int = 0
    host_gs: int = 0
    urs: tuple[int, int] | None = None  # URSP/URBP last written into each SSA frame
    frame_ok: tuple[int, int] | None = None  # (EPC generation, CSSA) of the last good check
    tcs_ok: int | None = None  # EPC generation of the last good check of the TCS page


@dataclass(slots=True)  # not frozen: its __init__ would cost 1.5 us more per entry
class Exit:
    """How control came back: ``eexit`` (the enclave left) or ``aex`` (it was interrupted)."""

    kind: str
    regs: dict[str, int] = field(default_factory=dict)
    fault: Fault | None = None
    budget_exhausted: bool = False
    base: int = 0
    size: int = 0  # ELRANGE is base..base+size
    instructions: int = 0  # charged to the budget: at least what ran (0 without a budget)
    timed_out: bool = False

    def describe(self) -> str:
        if self.budget_exhausted or self.timed_out:
            return f"stopped at enclave offset {self.regs['rip'] - self.base:#x}"
        f = self.fault
        if f is None:
            return "left the enclave"
        where = f"at enclave offset {f.rip - self.base:#x}"
        text = f"{f.name} (error code {f.error_code:#x}) {where}"
        if f.address is not None:
            text += f", address {_offset_text(f.address, self.base, self.size)}"
        return text + (f": {f.detail}" if f.detail else "")


def _offset_text(addr: int, base: int, size: int) -> str:
    inside = base <= addr < base + size
    return f"enclave offset {addr - base:#x}" if inside else f"{addr:#x}"


class EnclaveCpu:
    """Runs the threads of one initialized enclave on its own :class:`Cpu`."""

    def __init__(self, enclave: Enclave, host_base: int, host_size: int) -> None:
        self.enclave = enclave
        self.epc = enclave.epc
        self.base = enclave.secs.baseaddr
        self.size = enclave.secs.size
        self.frame = enclave.secs.ssaframesize * PAGE
        self.sgx2 = bool(self.epc.profile.sgx2)
        self.host = (host_base, host_size)  # untrusted host memory, identity-mapped
        self._cpu = Cpu()
        self._cpu.map_ram(host_base, host_size)
        self._cpu.map_abort_page(_ABORT_PAGE)
        self._cpu.translate = self._translate
        self._cpu.on_invalid = self._enclu
        self._cpu.read_at_trap(*_EEXIT_IN)
        self._host_segs: tuple[int, int] | None = None  # host FS/GS base, when known
        # Registers an exit gives the host, written to the CPU when the host looks (or with
        # the next entry's registers): a register transfer less per ECALL.
        self._host_due: dict[str, int] = {}
        self._trap_regs: tuple[int, ...] = ()  # _EEXIT_IN at the last ENCLU
        self.inside: _Thread | None = None
        self._exit_regs: dict[str, int] = {}  # at the last EEXIT
        self._threads: dict[int, _Thread] = {}
        self._cache = PageCache(self._cpu, self.epc)
        # The accessed bits of ELRANGE's PTEs: set when a translation is filled (the
        # reclaimer clears them, and the TLB with them, to age pages: hwsim.sgx._reclaim).
        self._accessed: set[int] = set()
        self._leaves = {0: self._ereport, 1: self._egetkey, 4: self._eexit,
                        5: self._eaccept, 6: self._emodpe}  # fmt: skip

    # -- the host side: EENTER / ERESUME --------------------------------------------------
    def eenter(
        self, tcs: int, regs: dict[str, int], budget: int = 0, *, ret: int = 0,
        deadline: float | None = None,
    ) -> Exit:  # fmt: skip
        """EENTER the thread at linear address ``tcs`` with the host's ``regs``; it runs
        until it leaves, faults, runs ``budget`` instructions (0: no limit) or reaches the
        ``time.monotonic()`` ``deadline`` (the last two are an AEX, as a timer would)."""
        t = self._thread_for_entry(tcs, "EENTER")
        if t.cssa >= t.tcs.nssa:
            raise SgxFault(GP, f"EENTER: every SSA frame is in use (CSSA {t.cssa})")
        self._check_frame(t, "EENTER")
        if self._host_segs is None or "rsp" not in regs or "rbp" not in regs:
            host = self.host_regs("rsp", "rbp", "fs_base", "gs_base")
            self._host_segs = host["fs_base"], host["gs_base"]
            regs = {"rsp": host["rsp"], "rbp": host["rbp"]} | regs
        t.host_fs, t.host_gs = self._host_segs
        self._save_user_stack(t, regs["rsp"], regs["rbp"])
        rip = self.base + t.tcs.oentry
        # RBX is EENTER's TCS operand and keeps it: enclave code finds its TCS there.
        entry = dict(
            rax=t.cssa,
            rbx=tcs,
            rcx=ret or self.host[0],
            rip=rip,
            fs_base=self.base + t.tcs.ofsbase,
            gs_base=self.base + t.tcs.ogsbase,
        )
        self._cpu.set_regs(**(self._take_host_due() | regs | entry))
        return self._enter(t, rip, ret or self.host[0], budget, deadline)

    def eresume(
        self, tcs: int, budget: int = 0, *, ret: int = 0, deadline: float | None = None
    ) -> Exit:
        """ERESUME the thread at ``tcs`` from its last SSA frame (after an AEX)."""
        t = self._thread_for_entry(tcs, "ERESUME")
        if t.cssa == 0:
            raise SgxFault(GP, "ERESUME: no SSA frame to resume from (CSSA 0)")
        t.cssa -= 1
        try:
            self._check_frame(t, "ERESUME")
        except SgxFault:
            t.cssa += 1
            raise
        self._store_cssa(t)
        gpr = self._read(self._gpr_area(t), _GPRSGX.size, "SSA")
        values = _GPRSGX.unpack(gpr)
        if self._host_segs is None:
            host = self.host_regs("fs_base", "gs_base")
            self._host_segs = host["fs_base"], host["gs_base"]
        t.host_fs, t.host_gs = self._host_segs
        saved = dict(zip(_GPR_ORDER, values[:18], strict=True))
        saved.update(fs_base=values[21], gs_base=values[22])
        self._cpu.set_regs(**(self._take_host_due() | saved))
        xsave = self._read(self._frame(t), 416, "SSA")
        self._cpu.set_xmm([int.from_bytes(xsave[160 + 16 * i : 176 + 16 * i], "little")
                          for i in range(16)])  # fmt: skip
        self._cpu.set_mxcsr(struct.unpack_from("<I", xsave, 24)[0])
        return self._enter(t, values[17], ret or self.host[0], budget, deadline)

    def run_host(
        self, rip: int, regs: dict[str, int], budget: int = 0, deadline: float | None = None
    ) -> Stop:
        """Run untrusted host code from the host window, outside enclave mode."""
        if self.inside is not None:
            raise SgxFault(GP, "the CPU is in enclave mode")
        self._cache.forget_tlb()  # no enclave translation may survive into host mode
        self._host_segs = None  # host code may change FS and GS
        self._cpu.set_regs(**(self._take_host_due() | regs))
        # Host memory is written through Unicorn's memory API, which does not drop code
        # translated from it (probed on 2.1.4); host code is rare, so translate it afresh.
        self._cpu.flush_code()
        stop = self._cpu.run(rip, budget, deadline)
        self._cache.forget_tlb()  # nor a host one into enclave mode
        return stop

    def host_regs(self, *names: str) -> dict[str, int]:
        """Registers as host code sees them (after an exit or :meth:`run_host`)."""
        if self.inside is not None:
            raise SgxFault(GP, "the CPU is in enclave mode")
        if self._host_due:
            self._cpu.set_regs(**self._take_host_due())
        return self._cpu.regs(*names)

    def _take_host_due(self) -> dict[str, int]:
        due, self._host_due = self._host_due, {}
        return due

    # -- host loads and stores: the same view host code gets --------------------------
    def host_read(self, addr: int, size: int) -> bytes:
        """A load by host (non-enclave) code: ELRANGE reads as the abort page (all 0xFF),
        the host window as itself; anything else, the CPU's page cache included, is a
        #PF, exactly as for code run with :meth:`run_host`."""
        return b"".join(
            b"\xff" * n if p == _ABORT_PAGE else self._cpu.read_phys(p, n)
            for p, n in self._host_pieces(addr, size, READ)
        )

    def host_write(self, addr: int, data: bytes) -> None:
        """A store by host code: dropped in ELRANGE (abort page), #PF outside host memory."""
        at = 0
        for p, n in self._host_pieces(addr, len(data), WRITE):
            if p != _ABORT_PAGE:
                self._cpu.write_phys(p, data[at : at + n])
            at += n

    def _host_pieces(self, addr: int, size: int, access: int) -> list[tuple[int, int]]:
        pieces = []
        while size > 0:
            n = min(size, PAGE - addr % PAGE)
            try:
                paddr = self._host_translate(addr, access)
            except PageDenied as denied:
                raise SgxFault(denied.vector, f"host access: {denied.detail}") from None
            pieces.append((paddr if paddr == _ABORT_PAGE else paddr + addr % PAGE, n))
            addr, size = addr + n, size - n
        return pieces

    def _host_translate(self, vaddr: int, access: int) -> int:
        """The host's page tables: untrusted memory identity-mapped, ELRANGE aborts."""
        if not -(1 << 47) <= _signed64(vaddr) < 1 << 47:  # SDM vol. 1 3.3.7.1: #GP(0)
            raise PageDenied(GP, 0, f"non-canonical address {vaddr:#x}")
        if self.base <= vaddr < self.base + self.size:
            return _ABORT_PAGE
        return self._host_page(vaddr & ~(PAGE - 1), access)[0]

    def _thread_for_entry(self, tcs: int, leaf: str) -> _Thread:
        if self.inside is not None:
            raise SgxFault(GP, f"{leaf}: the CPU is already in enclave mode")
        if not self.enclave.initialized:
            raise SgxFault(GP, f"{leaf}: the enclave is not initialized")
        if tcs % PAGE or not self.base <= tcs < self.base + self.size:
            raise SgxFault(GP, f"{leaf}: TCS {tcs:#x} is not a page inside ELRANGE")
        t = self._threads.get(tcs)
        if t is None or t.tcs_ok != self.epc.generation:  # as for _check_frame
            index = self.enclave.page(tcs)
            entry = self.epc.entry(index)
            if entry.page_type != PageType.TCS or entry.secs != self.enclave.secs_page:
                raise SgxFault(PF, f"{leaf}: {tcs:#x} is not a TCS of this enclave")
            if t is None:
                parsed = Tcs.unpack(self.epc.read(index))
                t = self._threads[tcs] = _Thread(parsed, tcs, parsed.cssa)
            t.tcs_ok = self.epc.generation
        if t.active:
            raise SgxFault(GP, f"{leaf}: the TCS at {tcs:#x} is already in use")
        return t

    def _check_frame(self, t: _Thread, leaf: str) -> None:
        """The current SSA frame must be writable PT_REG pages of this enclave (#PF).
        The EPCM changes only with the EPC generation, so a passed check holds until then."""
        if t.frame_ok == (self.epc.generation, t.cssa):
            return
        for at in range(self._frame(t), self._frame(t) + self.frame, PAGE):
            try:
                self._check_page(at, WRITE, "SSA frame")
            except PageDenied as denied:
                raise SgxFault(PF, f"{leaf}: {denied.detail}") from None
        t.frame_ok = (self.epc.generation, t.cssa)

    def _enter(self, t: _Thread, rip: int, aep: int, budget: int, deadline: float | None) -> Exit:
        t.active, t.aep = True, aep
        self._cpu.illegal = _BARE
        self.inside = t
        self.enclave.enter()
        try:
            self._cache.enter()  # may refill pages from DRAM: the engine can refuse (#MC)
            stop, charged = self._run_slices(rip, budget, deadline)
        except BaseException:
            if self.inside is t:
                self._leave(t)
            raise
        return self._finish(t, stop, charged)

    def _run_slices(self, rip: int, budget: int, deadline: float | None) -> tuple[Stop, int]:
        """Run until the thread leaves; with a budget, in doubling slices (see FIRST_SLICE)."""
        if not budget:
            return self._cpu.run(rip, 0, deadline), 0
        charged, size = 0, FIRST_SLICE
        while True:
            size = min(size, budget - charged)
            stop = self._cpu.run(rip, size, deadline)
            charged += size
            if stop.kind != "budget" or charged >= budget:
                return stop, charged
            size, rip = min(2 * size, MAX_SLICE), self._cpu.reg("rip")

    def _finish(self, t: _Thread, stop: Stop, charged: int) -> Exit:
        if stop.kind == "trap":
            return Exit("eexit", self._exit_regs, base=self.base, instructions=charged)
        saved = self._aex(t, stop.fault)
        return Exit("aex", saved, stop.fault, stop.kind == "budget", self.base, self.size,
                    charged, stop.kind == "timeout")  # fmt: skip

    def _leave(self, t: _Thread, **regs: int) -> None:
        t.active = False
        self.inside = None
        self.enclave.leave()
        self._cpu.illegal = frozenset()
        self._host_due = dict(fs_base=t.host_fs, gs_base=t.host_gs, **regs)
        self._cache.leave()

    # -- SSA frames -----------------------------------------------------------------------
    def _frame(self, t: _Thread) -> int:
        return self.base + t.tcs.ossa + t.cssa * self.frame

    def _gpr_area(self, t: _Thread) -> int:
        return self._frame(t) + self.frame - _GPRSGX.size

    def _save_user_stack(self, t: _Thread, rsp: int, rbp: int) -> None:
        urs = (rsp, rbp)
        if t.urs != urs:  # unchanged values need no write (and no dirty SSA page)
            self._write(self._gpr_area(t) + 144, struct.pack("<2Q", *urs), "SSA")
            t.urs = urs

    def _aex(self, t: _Thread, fault: Fault | None) -> dict[str, int]:
        """Asynchronous exit (SDM 40.3-40.4): save state to SSA[CSSA], load synthetic state."""
        regs = self._cpu.regs(*_GPR_ORDER)
        exitinfo = 0
        if fault is not None and fault.vector in _EXITINFO_VECTORS:
            kind = 6 if fault.vector in (1, 3) else 3  # software vs hardware exception
            exitinfo = 1 << 31 | kind << 8 | fault.vector
        ursp, urbp = t.urs or (0, 0)
        gpr = _GPRSGX.pack(*(regs[n] for n in _GPR_ORDER), ursp, urbp, exitinfo,
                           self._cpu.reg("fs_base"), self._cpu.reg("gs_base"))  # fmt: skip
        self._write(self._gpr_area(t), gpr, "SSA")
        self._save_xmm(t)
        if fault is not None and self.enclave.secs.miscselect & 1 and fault.vector in (GP, PF):
            misc = struct.pack("<QI4x", (fault.address or 0) & ~0xFFF, fault.error_code)
            self._write(self._gpr_area(t) - 16, misc, "SSA")
        t.cssa += 1
        self._store_cssa(t)
        self._leave(t, rax=3, rbx=t.addr, rcx=t.aep, rip=t.aep, rsp=ursp, rbp=urbp,
                    rflags=regs["rflags"] & ~(_ARITH_FLAGS | 1 << 16),
                    **dict.fromkeys(_ZERO_ON_AEX, 0))  # fmt: skip
        self._cpu.set_xmm([0] * 16)
        return regs

    def _store_cssa(self, t: _Thread) -> None:
        """TCS.CSSA in the EPC, where a debugger reads it with EDBGRD to find the frame an
        AEX saved (sgx-gdb does so). AEX and ERESUME change it; EENTER and EEXIT do not."""
        index = self.enclave.page(t.addr)
        page = bytearray(self.epc.read(index))
        struct.pack_into("<I", page, Tcs.LAYOUT.offset("cssa"), t.cssa)
        self.epc.write(index, bytes(page))

    def _save_xmm(self, t: _Thread) -> None:
        # The legacy region of the XSAVE area at the start of the frame (SDM 13.4.1).
        xmm = b"".join(v.to_bytes(16, "little") for v in self._cpu.xmm())
        self._write(self._frame(t) + 24, struct.pack("<I", self._cpu.mxcsr()), "SSA")
        self._write(self._frame(t) + 160, xmm, "SSA")

    # -- address translation and the page cache -----------------------------------------
    def _translate(self, vaddr: int, access: int) -> tuple[int, int]:
        if not -(1 << 47) <= _signed64(vaddr) < 1 << 47:  # SDM vol. 1 3.3.7.1: #GP(0)
            raise PageDenied(GP, 0, f"non-canonical address {vaddr:#x}")
        inside = self.base <= vaddr < self.base + self.size
        if self.inside is None:  # host code: untrusted memory is RWX, ELRANGE aborts
            if inside:
                return _ABORT_PAGE, RW
            return self._host_page(vaddr, access)[0], RWX
        if not inside:
            if access == FETCH:
                raise PageDenied(GP, 0, "code fetch outside ELRANGE")
            return self._host_page(vaddr, access)
        index = self._check_page(vaddr, access, "access")
        self._accessed.add(vaddr & ~(PAGE - 1))
        return self._cache.tlb_entry(index, int(self.epc.epcm[index].perms), access == WRITE)

    def test_and_clear_young(self, page: int) -> bool:
        """Was the page at linear address ``page`` accessed since the last ask? The bit is
        cleared and the TLB flushed, so that the next access fills and sets it again."""
        if page not in self._accessed:
            return False
        self._accessed.discard(page)
        self._cache.flush()
        return True

    def _host_page(self, vaddr: int, access: int) -> tuple[int, int]:
        lo, size = self.host
        if lo <= vaddr < lo + size:
            return vaddr, RW
        raise PageDenied(PF, pf_error_code(access, present=False), f"no memory at {vaddr:#x}")

    def _check_page(self, vaddr: int, access: int, what: str) -> int:
        """The EPC index behind ``vaddr`` after the EPCM checks; #PF (SGX) otherwise."""
        page = vaddr & ~(PAGE - 1)
        index = self.enclave.pages.get(page)
        if index is None:
            code = pf_error_code(access, present=False)
            raise PageDenied(PF, code, f"{what}: no enclave page there")
        e = self.epc.epcm.get(index)
        need = _NEED.get(access, int(SecinfoFlag.R))
        problem = (
            "not a valid EPC page" if e is None
            else "another enclave's page" if e.secs != self.enclave.secs_page or e.linaddr != page
            else f"a {e.page_type.name} page" if e.page_type != PageType.REG
            else "blocked, pending or modified" if e.blocked or e.pending or e.modified
            else f"EPCM denies {_ACCESS_NAMES[access]}" if not int(e.perms) & need
            else ""
        )  # fmt: skip
        if problem:
            code = pf_error_code(access, present=True, sgx=True)
            raise PageDenied(PF, code, f"{what}: {problem}")
        return index

    def _access(self, addr: int, size: int, access: int, what: str) -> list[tuple[int, int]]:
        """Physical pieces of an ENCLU operand, after the leaf's ELRANGE and EPCM checks."""
        if not (self.base <= addr and addr + size <= self.base + self.size):
            raise SgxFault(GP, f"{what} at {addr:#x} is not inside ELRANGE")
        pieces = []
        while size:
            n = min(size, PAGE - addr % PAGE)
            try:
                index = self._check_page(addr, access, what)
            except PageDenied as denied:
                raise _OperandFault(denied, addr) from None
            self._accessed.add(addr & ~(PAGE - 1))
            slot = self._cache.store(index) if access == WRITE else self._cache.load(index)
            pieces.append((slot + addr % PAGE, n))
            addr, size = addr + n, size - n
        return pieces

    def _read(self, addr: int, size: int, what: str) -> bytes:
        return b"".join(self._cpu.read_phys(p, n) for p, n in self._access(addr, size, 16, what))

    def _write(self, addr: int, data: bytes, what: str) -> None:
        at = 0
        for p, n in self._access(addr, len(data), WRITE, what):
            self._cpu.write_phys(p, data[at : at + n])
            at += n

    # -- ENCLU ----------------------------------------------------------------------------
    def _enclu(self, rip: int, leaf: int, *eexit_in: int) -> None:
        self._trap_regs = eexit_in
        if self.inside is None:
            self._cpu.fault(Fault(UD, 0, rip, None, "invalid instruction outside an enclave"))
            return
        # The instruction was fetched through a TLB entry that passed the EPCM checks, so
        # its bytes are in the page's slot (when it does not cross into the next page).
        view = self._cache.loaded(self.enclave.pages.get(rip & ~(PAGE - 1), -1))
        try:
            if view is not None and rip % PAGE <= PAGE - 3:
                code = bytes(view[rip % PAGE : rip % PAGE + 3])
            else:
                code = self._read(rip, 3, "code")
        except (SgxError, PageDenied):
            code = b""
        if code != ENCLU:
            self._cpu.fault(Fault(UD, 0, rip, None, f"invalid instruction {code.hex()}"))
            return
        handler = self._leaves.get(leaf)
        try:
            if handler is None:
                raise SgxFault(GP, f"ENCLU leaf {leaf} is not available inside an enclave")
            handler(rip)
        except SgxStatusError as exc:
            flags = self._cpu.reg("rflags") & ~_ARITH_FLAGS
            self._cpu.set_regs(rax=int(exc.status), rflags=flags | _ZF, rip=rip + 3)
        except _OperandFault as exc:
            self._cpu.fault(Fault(PF, exc.error_code, rip, exc.address, f"ENCLU: {exc.detail}"))
        except SgxFault as exc:
            self._cpu.fault(Fault(exc.vector, 0, rip, None, f"ENCLU: {exc.detail}"))

    def _aligned(self, reg: str, align: int, leaf: str) -> int:
        value = self._cpu.reg(reg)
        if value % align:
            raise SgxFault(GP, f"{leaf}: {reg.upper()} {value:#x} is not {align}-byte aligned")
        return value

    def _succeed(self, rip: int) -> None:
        flags = self._cpu.reg("rflags") & ~_ARITH_FLAGS
        self._cpu.set_regs(rax=int(SgxStatus.SUCCESS), rflags=flags, rip=rip + 3)

    def _ereport(self, rip: int) -> None:
        ti = self._aligned("rbx", 512, "EREPORT")
        rd = self._aligned("rcx", 128, "EREPORT")
        out = self._aligned("rdx", 512, "EREPORT")
        report = ereport(self.enclave, self._read(ti, 512, "TARGETINFO"),
                         self._read(rd, 64, "REPORTDATA"))  # fmt: skip
        self._write(out, report, "REPORT")
        self._cpu.set_regs(rip=rip + 3)

    def _egetkey(self, rip: int) -> None:
        req = self._aligned("rbx", 512, "EGETKEY")
        out = self._aligned("rcx", 16, "EGETKEY")
        key = egetkey_leaf(self.enclave, self._read(req, 512, "KEYREQUEST"))
        self._write(out, key, "key output")
        self._succeed(rip)

    def _eexit(self, rip: int) -> None:
        t = self.inside
        assert t is not None
        rdi, rsi, rdx, rbx = self._trap_regs  # what the exit reports, read at the trap
        out = dict(rdi=rdi, rsi=rsi, rdx=rdx, rax=4, rbx=rbx, rip=rbx, rcx=t.aep)
        self._exit_regs = out
        self._leave(t, rip=out["rbx"], rcx=t.aep)
        self._cpu.trap_done()

    def _sgx2(self, leaf: str) -> None:
        if not self.sgx2:
            raise SgxFault(UD, f"{leaf} needs SGX2, which this part lacks")

    def _eaccept(self, rip: int) -> None:
        self._sgx2("EACCEPT")
        secinfo = self._aligned("rbx", 64, "EACCEPT")
        flags = struct.unpack("<Q", self._read(secinfo, 8, "SECINFO"))[0]
        eaccept(self.enclave, self._cpu.reg("rcx"), flags)
        self._cache.flush()  # the EPCM changed under cached translations
        self._succeed(rip)

    def _emodpe(self, rip: int) -> None:
        self._sgx2("EMODPE")
        secinfo = self._aligned("rbx", 64, "EMODPE")
        flags = struct.unpack("<Q", self._read(secinfo, 8, "SECINFO"))[0]
        emodpe(self.enclave, self._cpu.reg("rcx"), flags & 0x7)
        self._cache.flush()
        self._cpu.set_regs(rip=rip + 3)


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


class _OperandFault(SgxFault):
    """A #PF on an ENCLU operand, with the error code and address the AEX reports."""

    def __init__(self, denied: PageDenied, address: int) -> None:
        super().__init__(PF, denied.detail)
        self.error_code = denied.error_code
        self.address = address & ~(PAGE - 1)


_ACCESS_NAMES = {16: "reading", WRITE: "writing", FETCH: "executing"}
_NEED = {WRITE: int(SecinfoFlag.W), FETCH: int(SecinfoFlag.X)}  # the EPCM right needed
