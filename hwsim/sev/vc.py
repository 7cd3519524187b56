"""SEV-ES on the simulated CPU: #VC, the GHCB MSR, VMGEXIT and one VMSA per vCPU.

An SEV-ES vCPU cannot let the hypervisor emulate an instruction: its registers are in the
encrypted VMSA. So the instructions a hypervisor intercepts raise #VC (vector 29) in the
guest instead (sev-guests.md 3.6), precisely at the instruction, and the guest's #VC
handler asks the hypervisor through the GHCB page it shares. Unicorn cannot trap these
instructions before they run (its IN/OUT/CPUID hooks come too late to redirect RIP, and
RDMSR/WRMSR cannot be hooked from Python), so an SEV-ES vCPU runs with a code hook that
looks at each instruction's bytes before it executes (:func:`decode`) and, for an
intercepted one, does what the CPU does:

* IN/OUT (``E4-E7``, ``EC-EF``, any prefixes), CPUID and RDMSR/WRMSR of an intercepted MSR
  raise #VC with the SVM exit code as error code (IOIO 0x7B, CPUID 0x72, MSR 0x7C): the
  frame SS, RSP, RFLAGS, CS, RIP (the instruction's own address), error code is pushed
  through the guest's page tables on the 16-byte aligned stack, or the IST stack the gate
  names (read from the TSS), and RIP moves to the gate's handler; an interrupt gate also
  clears IF. No IDT entry 29 (a present interrupt or trap gate) stops the vCPU as a
  triple fault would, naming the missing #VC handler. The handler's IRETQ is the CPU's
  own, so the guest must run with a GDT whose selectors are in CS and SS.
* INS/OUTS stop the vCPU with a clear message: string port I/O is not modelled.
* RDMSR/WRMSR of the GHCB MSR (0xC0010130) are not intercepted (its value is the VMCB's
  ``ghcb_gpa``, kept per vCPU by the hypervisor); the MSRs an SEV-ES VMSA holds (FS/GS
  bases, SYSCALL and SYSENTER MSRs, EFER) run natively; any other MSR raises #VC 0x7C,
  which KVM answers by injecting #GP (no guest MSR is modelled behind it).
* VMGEXIT (``rep vmmcall``, invalid to Unicorn) is the world switch: a GHCB MSR holding a
  GHCB address has the hypervisor read that page (:func:`hwsim.sev.ghcb.handle_ghcb`);
  anything else is a GHCB MSR protocol request (:func:`hwsim.sev.ghcb.msr_protocol`)
  whose response the guest reads back with RDMSR.

A code hook on every instruction would cost a Python call each (65x slower): instead each
code page is scanned once when its fetch TLB entry fills (:func:`candidates`), and hooks go
only on the bytes where an intercepted instruction could start, so other code runs without
a callback (plain SEV guests run without any); ``bench/bench_sev_guest.py`` measures it.

vCPUs: an SEV-ES VM launched with N VMSAs runs N vCPUs, round-robin in slices of
:data:`SLICE` instructions on the one simulated CPU, each loaded from and saved to its own
VMSA (general registers, RIP, RFLAGS, CR3, the segment selectors, GDTR, IDTR and TR).
A VMSA at reset (CR0.PG clear) starts at CS.base + RIP under the boot contract of
:mod:`hwsim.sev.guest`; APs built as sevctl does start at the SEV-ES reset address from
the firmware's footer. A run ends when every vCPU has halted, one powers the VM off or
crashes, or the budget (counted over all vCPUs, a slice at a time) is spent. There is no
INIT-SIPI: every VMSA runs from the first VMRUN (the AP reset hold request is not served).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any, Protocol

from unicorn import UC_HOOK_CODE
from unicorn import x86_const as x86

from hwsim._exec import FETCH, PAGE, READ, UD, WRITE, Cpu, ExecError, Fault, PageDenied, Stop
from hwsim.sev.arch import Vmsa
from hwsim.sev.ghcb import (
    EXIT_CPUID,
    EXIT_IOIO,
    EXIT_MSR,
    GHCB_MSR,
    GHCB_SIZE,
    MSR_GHCB_GPA,
    VC_VECTOR,
    PortIo,
    handle_ghcb,
    msr_protocol,
)
from hwsim.sev.kvm import SevVm
from memcrypt.errors import FormatError

__all__ = ["SLICE", "EsCpu", "GuestStopped", "candidates", "decode"]

SLICE = 10_000  # instructions a vCPU runs before the next one's turn
STACK_PER_VCPU = 64 << 10  # the boot contract's stack spacing of vCPUs at reset
_VMGEXIT = b"\xf3\x0f\x01\xd9"  # rep vmmcall
_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})
_REX = range(0x40, 0x50)
_IN_OUT = frozenset({0xE4, 0xE5, 0xE6, 0xE7, 0xEC, 0xED, 0xEE, 0xEF})
_STRING_IO = frozenset({0x6C, 0x6D, 0x6E, 0x6F})
_TWO_BYTE = {0xA2: "cpuid", 0x32: "rdmsr", 0x30: "wrmsr"}
_PREFIX_BYTES = _PREFIXES | frozenset(_REX)
# Opcodes of intercepted instructions, and a 0F the next page may complete.
# Opcodes of intercepted instructions and HLT (hooked to tell a halt from a spent turn),
# and a 0F the next page may complete.
_OPCODES = re.compile(rb"[\xe4-\xe7\xec-\xef\x6c-\x6f\xf4]|\x0f[\xa2\x30\x32]|\x0f\Z")
_MAX_PREFIXES = 4
_LONGEST = 5  # bytes: no intercepted instruction with sane prefixes is longer
# MSRs in the VMSA (KVM lets an SEV-ES guest access them directly).
_NATIVE_MSRS = frozenset(
    {
        0xC000_0080,
        0xC000_0081,
        0xC000_0082,
        0xC000_0083,
        0xC000_0084,
        0xC000_0100,
        0xC000_0101,
        0xC000_0102,
        0x174,
        0x175,
        0x176,
    }
)
_GATE_INTERRUPT, _GATE_TRAP = 0xE, 0xF
_TF, _IF, _NT, _RF = 1 << 8, 1 << 9, 1 << 14, 1 << 16
_TSS_IST1 = 0x24
_CR0_PG = 1 << 31
_CR0_LONG = _CR0_PG | 0x11  # PG, ET, PE
_EFER_LONG = 0x500  # LME, LMA
_GPRS = (
    "rax",
    "rcx",
    "rdx",
    "rbx",
    "rsp",
    "rbp",
    "rsi",
    "rdi",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
)
_SEGMENTS = {"es": x86.UC_X86_REG_ES, "cs": x86.UC_X86_REG_CS, "ss": x86.UC_X86_REG_SS,
             "ds": x86.UC_X86_REG_DS, "fs": x86.UC_X86_REG_FS, "gs": x86.UC_X86_REG_GS}  # fmt: skip
_TABLES = {"gdtr": x86.UC_X86_REG_GDTR, "idtr": x86.UC_X86_REG_IDTR}
_CR3, _TR = x86.UC_X86_REG_CR3, x86.UC_X86_REG_TR


class GuestStopped(Exception):
    """Raised by an exit or intercept handler: the run ends with the guest crashed."""


def decode(code: bytes) -> str | None:
    """What an SEV-ES vCPU does before executing ``code`` (one instruction's bytes):
    ``ioio``, ``cpuid``, ``rdmsr``, ``wrmsr`` (intercepted), ``string`` (INS/OUTS,
    refused), ``hlt`` (noted, runs natively), or None (it runs natively)."""
    at = 0
    while at < len(code) and code[at] in _PREFIXES:
        at += 1
    if at < len(code) and code[at] in _REX:
        at += 1
    if at >= len(code):
        return None
    op = code[at]
    if op in _IN_OUT:
        return "ioio"
    if op in _STRING_IO:
        return "string"
    if op == 0xF4:
        return "hlt"
    if op == 0x0F and at + 1 < len(code):
        return _TWO_BYTE.get(code[at + 1])
    return None


def candidates(page: bytes) -> list[int]:
    """Offsets in a code page where an intercepted instruction could start: each opcode
    byte of one (wherever it is: the scan does not know instruction boundaries), with the
    prefix bytes before it, and trailing prefixes the next page could complete. A hook
    there costs only when an instruction really starts at it."""
    starts: set[int] = set()
    for match in _OPCODES.finditer(page):
        at = match.start()
        starts.add(at)
        while at > 0 and match.start() - at < _MAX_PREFIXES and page[at - 1] in _PREFIX_BYTES:
            at -= 1
            starts.add(at)
    tail = len(page)
    while tail > 0 and len(page) - tail < _MAX_PREFIXES and page[tail - 1] in _PREFIX_BYTES:
        tail -= 1
        starts.add(tail)
    return sorted(starts)


def _runs(addresses: list[int]) -> list[tuple[int, int]]:
    """Sorted addresses as (first, last) runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for a in addresses:
        if runs and runs[-1][1] == a - 1:
            runs[-1] = (runs[-1][0], a)
        else:
            runs.append((a, a))
    return runs


class _Package(Protocol):
    writable: set[tuple[int, int | None]]

    def load(self, page: int, keyid: int | None) -> int: ...
    def view(self, page: int, keyid: int | None) -> memoryview: ...
    def refresh(self, page: int) -> None: ...
    def write_back(self, page_only: int | None = None) -> None: ...


class _Walker(Protocol):
    asid: int

    def translate(self, cr3: int, vaddr: int, access: int) -> tuple[int, int | None, int]: ...


class Host(PortIo, Protocol):
    """What :class:`EsCpu` needs of the guest runner (:mod:`hwsim.sev.guest`)."""

    io_exits: int

    @property
    def cpu(self) -> Cpu: ...
    @property
    def vm(self) -> SevVm: ...
    @property
    def package(self) -> _Package: ...
    @property
    def walker(self) -> _Walker: ...

    def reset_regs(self, vcpu: int) -> dict[str, int]: ...


class EsCpu:
    """The simulated CPU running an SEV-ES VM's vCPUs (see the module docstring)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.cpu = host.cpu
        self.vcpu = 0
        self.scanned: set[tuple[int, int, int | None]] = set()  # (virtual page, page, key)
        self.hooked: set[int] = set()  # addresses the code hook covers
        self.code: dict[int, memoryview] = {}  # virtual page -> the plaintext fetched there
        self.pending: BaseException | None = None
        self.hlt_at: int | None = None  # the last HLT this turn reached
        self.cpu.on_invalid = self._invalid
        self.cpu.emulate = {name: self._missed(name) for name in ("in", "out", "cpuid")}

    def fetched(self, vaddr: int, page: int, keyid: int | None) -> None:
        """The TLB was filled for an instruction fetch, before any of the page's code is
        translated: hook every place an intercepted instruction could start."""
        base = vaddr & ~(PAGE - 1)
        # Unicorn fills the fetch TLB entry again after every flush before it runs code
        # from the page, so this is always the mapping being executed.
        self.code[base // PAGE] = self.host.package.view(page, keyid)
        if (base, page, keyid) in self.scanned:
            return
        self.scanned.add((base, page, keyid))
        starts = [base + off for off in candidates(bytes(self.host.package.view(page, keyid)))]
        new = sorted(set(starts) - self.hooked)
        self.hooked.update(new)
        for lo, hi in _runs(new):
            self.cpu.uc.hook_add(UC_HOOK_CODE, self._code, begin=lo, end=hi)

    # -- the vCPUs ------------------------------------------------------------------------

    def run(self, budget: int) -> Stop:
        """Run every vCPU round-robin; Stop ``halt`` when all of them halted."""
        halted: set[int] = set()
        left = budget
        count = self.host.vm.record.vcpus
        while left > 0:
            for vcpu in [n for n in range(count) if n not in halted]:
                turn = min(SLICE, left) if count > 1 else left  # one vCPU: no switches
                stop = self._turn(vcpu, turn)
                left -= turn
                if stop.kind != "budget":
                    return stop
                if self._halted():
                    halted.add(vcpu)
                if left <= 0:
                    break
            if len(halted) == count:
                return Stop("halt")
        return Stop("budget")

    def _turn(self, vcpu: int, budget: int) -> Stop:
        self.vcpu = vcpu
        regs = self._load_vmsa(vcpu)
        self.code.clear()
        self.scanned.clear()  # code written since the last turn is scanned again
        self.hlt_at = None
        self.cpu.flush_tlb()
        try:
            stop = self.cpu.run(regs["rip"], budget)
            if self.pending is not None:
                raise self.pending
        except GuestStopped as why:
            raise GuestStopped(f"vCPU {vcpu}: {why}") from None
        finally:
            self.pending = None
            self._save_vmsa(vcpu)
        if stop.kind == "fault" and stop.fault is not None:
            f = stop.fault
            return Stop(
                "fault", Fault(f.vector, f.error_code, f.rip, f.address, f"vCPU {vcpu}: {f.detail}")
            )
        return stop

    def _halted(self) -> bool:
        """The turn ended on a HLT, not on its instruction count."""
        return self.hlt_at is not None and self.cpu.reg("rip") == self.hlt_at + 1

    def _load_vmsa(self, vcpu: int) -> dict[str, int]:
        """VMRUN: the CPU decrypts the vCPU's VMSA with the guest's key."""
        v = self._vmsa(vcpu)
        uc = self.cpu.uc
        if not v["cr0"] & _CR0_PG:  # at reset: the loader's long-mode start (boot contract)
            regs = self.host.reset_regs(vcpu)
            regs.update({r: v[r] for r in _GPRS if v[r]})
            regs["rip"] = v["cs_base"] + v["rip"]
            tables = {"gdtr": (0, 0), "idtr": (0, 0)}
            selectors = dict.fromkeys(_SEGMENTS, 0)
            tr = (0, 0, 0, 0)
        else:
            regs = {r: v[r] for r in (*_GPRS, "rip", "rflags", "cr3")}
            regs.update(fs_base=v["fs_base"], gs_base=v["gs_base"])
            tables = {t: (v[f"{t}_base"], v[f"{t}_limit"]) for t in _TABLES}
            selectors = {s: v[f"{s}_selector"] for s in _SEGMENTS}
            tr = (v["tr_selector"], v["tr_base"], v["tr_limit"], _qemu_flags(v["tr_attrib"]))
        for name, (base, limit) in tables.items():
            uc.reg_write(_TABLES[name], (0, base, limit, 0))
        uc.reg_write(_CR3, regs.pop("cr3"))
        for name, selector in selectors.items():
            uc.reg_write(_SEGMENTS[name], selector)
        uc.reg_write(_TR, tr)
        self.cpu.set_regs(**{k: val for k, val in regs.items() if k != "rip"})
        return regs

    def _save_vmsa(self, vcpu: int) -> None:
        """#VMEXIT: the CPU encrypts the vCPU's state back into its VMSA."""
        v = self._vmsa(vcpu)
        uc = self.cpu.uc
        for name, value in self.cpu.regs(*_GPRS, "rip", "rflags", "fs_base", "gs_base").items():
            v[name] = value
        v["cr3"] = int(uc.reg_read(_CR3))
        for name, reg in _SEGMENTS.items():
            v[f"{name}_selector"] = int(uc.reg_read(reg))
        for name, reg in _TABLES.items():
            _, v[f"{name}_base"], v[f"{name}_limit"], _ = uc.reg_read(reg)
        selector, v["tr_base"], v["tr_limit"], flags = uc.reg_read(_TR)
        v["tr_selector"], v["tr_attrib"] = selector, _svm_attrib(flags)
        v["cs_base"], v["cr0"], v["efer"] = 0, v["cr0"] | _CR0_LONG, v["efer"] | _EFER_LONG
        memory, asid = self.host.vm.dev.memory, self.host.walker.asid
        memory.write(self.host.vm.record.vmsa_spa(vcpu), v.pack(), asid)

    def _vmsa(self, vcpu: int) -> Vmsa:
        spa = self.host.vm.record.vmsa_spa(vcpu)
        try:
            return Vmsa.unpack(self.host.vm.dev.memory.read(spa, PAGE, self.host.walker.asid))
        except FormatError as exc:
            why = f"VMRUN of vCPU {vcpu} failed: its VMSA does not decrypt to a save area ({exc})"
            raise ExecError(why) from exc

    # -- intercepts -----------------------------------------------------------------------

    def _code(self, uc: Any, addr: int, size: int, _data: object) -> None:
        """Before an instruction at a hooked address: raise #VC if it is intercepted."""
        try:
            if size > _LONGEST:  # not one of ours (Unicorn passes garbage for invalid ones)
                return
            kind = decode(self._fetch(addr, size))
            if kind == "hlt":
                self.hlt_at = addr
            elif kind is not None:
                self._intercept(kind, addr, size)
        except BaseException as exc:  # Unicorn would mask it (see hwsim._exec)
            self.pending = exc
            uc.emu_stop()

    def _intercept(self, kind: str, rip: int, size: int) -> None:
        if kind == "string":
            raise GuestStopped(
                f"INS/OUTS at rip {rip:#x}: string port I/O of an SEV-ES guest (through the "
                "GHCB's shared buffer) is not modelled"
            )
        if kind in ("rdmsr", "wrmsr"):
            index = self.cpu.reg("rcx") & 0xFFFF_FFFF
            if index in _NATIVE_MSRS:
                return
            if index == GHCB_MSR:
                self._ghcb_msr_access(kind, rip + size)
                return
        code = {"ioio": EXIT_IOIO, "cpuid": EXIT_CPUID}.get(kind, EXIT_MSR)
        self._deliver_vc(rip, code)

    def _ghcb_msr_access(self, kind: str, next_rip: int) -> None:
        record = self.host.vm.record
        if kind == "rdmsr":
            value = record.get_ghcb_msr(self.vcpu)
            self.cpu.set_regs(rax=value & 0xFFFF_FFFF, rdx=value >> 32)
        else:
            regs = self.cpu.regs("rax", "rdx")
            value = (regs["rdx"] & 0xFFFF_FFFF) << 32 | regs["rax"] & 0xFFFF_FFFF
            record.set_ghcb_msr(self.vcpu, value)
        self._jump(next_rip)

    def _jump(self, rip: int) -> None:
        """Move RIP from a code hook: only Unicorn's single-register write makes it leave
        the translation block (a batch write of RIP is ignored there; probed on 2.1.4)."""
        self.cpu.uc.reg_write(x86.UC_X86_REG_RIP, rip)

    def _deliver_vc(self, rip: int, exit_code: int) -> None:
        """Raise #VC at ``rip``: push the frame and enter the IDT's vector 29 handler."""
        uc = self.cpu.uc
        what = f"#VC (exit code {exit_code:#x}) at rip {rip:#x}"
        _, idt, limit, _ = uc.reg_read(x86.UC_X86_REG_IDTR)
        if limit < VC_VECTOR * 16 + 15:
            raise GuestStopped(
                f"{what} with no #VC handler: the IDT (limit {limit:#x}) has "
                "no vector 29, so the vCPU shuts down (triple fault)"
            )
        gate = self._read(idt + VC_VECTOR * 16, 16, READ, what)
        kind = gate[5] & 0xF
        if not gate[5] & 0x80 or kind not in (_GATE_INTERRUPT, _GATE_TRAP):
            raise GuestStopped(
                f"{what} with no #VC handler: IDT entry 29 is not a present "
                "interrupt or trap gate, so the vCPU shuts down (triple fault)"
            )
        offset = int.from_bytes(gate[0:2] + gate[6:12], "little")
        cs, ss = int(uc.reg_read(x86.UC_X86_REG_CS)), int(uc.reg_read(x86.UC_X86_REG_SS))
        selector = int.from_bytes(gate[2:4], "little")
        if selector != cs:
            raise GuestStopped(
                f"{what}: the #VC gate's code segment {selector:#x} is not the "
                f"current one ({cs:#x}); switching CS on delivery is not modelled"
            )
        regs = self.cpu.regs("rsp", "rflags")
        ist = gate[4] & 0x7
        stack = self._ist(ist, what) if ist else regs["rsp"]
        top = (stack & ~0xF) - 48
        frame = struct.pack("<6Q", exit_code, rip, cs, regs["rflags"], regs["rsp"], ss)
        self._write(top, frame, what)
        flags = regs["rflags"] & ~(_TF | _NT | _RF | (_IF if kind == _GATE_INTERRUPT else 0))
        self.cpu.set_regs(rsp=top, rflags=flags)
        self._jump(offset)

    def _ist(self, ist: int, what: str) -> int:
        _, base, limit, _ = self.cpu.uc.reg_read(_TR)
        at = _TSS_IST1 + 8 * (ist - 1)
        if limit < at + 7:
            raise GuestStopped(
                f"{what}: the #VC gate names IST{ist}, which the TSS (limit "
                f"{limit:#x}) does not hold"
            )
        return int.from_bytes(self._read(base + at, 8, READ, what), "little")

    def _missed(self, name: str) -> Callable[..., int]:
        def missed(*_args: int) -> int:
            rip = self.cpu.reg("rip")
            raise GuestStopped(f"{name.upper()} at rip {rip:#x} ran without its #VC")

        return missed

    # -- guest memory as the CPU sees it (supervisor accesses through its tables) ----------

    def _pieces(self, vaddr: int, n: int, access: int) -> list[tuple[int, int, int]]:
        """(slot address, offset in the data, length) for each page of the range."""
        cr3 = int(self.cpu.uc.reg_read(_CR3))
        pieces, done = [], 0
        while done < n:
            at = vaddr + done
            page, keyid, _ = self.host.walker.translate(cr3, at, access)
            if access == WRITE:
                self.host.package.writable.add((page, keyid))
            chunk = min(PAGE - at % PAGE, n - done)
            pieces.append((self.host.package.load(page, keyid) + at % PAGE, done, chunk))
            done += chunk
        return pieces

    def _fetch(self, vaddr: int, n: int) -> bytes:
        """The bytes of the instruction being run at ``vaddr``."""
        view = self.code.get(vaddr // PAGE)
        if view is None or vaddr % PAGE + n > PAGE:
            return self._read(vaddr, n, FETCH)
        return bytes(view[vaddr % PAGE : vaddr % PAGE + n])

    def _read(self, vaddr: int, n: int, access: int, what: str = "") -> bytes:
        try:
            pieces = self._pieces(vaddr, n, access)
        except PageDenied as denied:
            raise GuestStopped(f"{what or 'fetch'}: reading {vaddr:#x} faulted "
                               f"({denied.detail}): a double fault") from None  # fmt: skip
        return b"".join(self.cpu.read_phys(slot, size) for slot, _, size in pieces)

    def _write(self, vaddr: int, data: bytes, what: str) -> None:
        try:
            pieces = self._pieces(vaddr, len(data), WRITE)
        except PageDenied as denied:
            raise GuestStopped(f"{what}: pushing its frame at {vaddr:#x} faulted "
                               f"({denied.detail}): a double fault") from None  # fmt: skip
        for slot, at, size in pieces:
            self.cpu.write_phys(slot, data[at : at + size])

    # -- VMGEXIT ---------------------------------------------------------------------------

    def _invalid(self, rip: int, _rax: int) -> None:
        if self._fetch(rip, len(_VMGEXIT)) != _VMGEXIT:
            self.cpu.fault(Fault(UD, 0, rip, None, "invalid instruction"))
            return
        self.vmgexit()
        self.cpu.set_regs(rip=rip + len(_VMGEXIT))

    def vmgexit(self) -> None:
        """The world switch: the hypervisor reads this vCPU's GHCB MSR, then the GHCB page
        it names or the MSR protocol request it holds (sev-guests.md 3.5-3.6)."""
        record = self.host.vm.record
        msr = record.get_ghcb_msr(self.vcpu)  # (port exits are counted by the port devices)
        if msr & 0xFFF != MSR_GHCB_GPA:
            self._msr_protocol(msr)
            return
        gpa = msr & ~0xFFF
        registered = record.ghcb_gfns.get(str(self.vcpu))
        if registered is not None and registered != gpa >> 12:
            raise GuestStopped(
                f"VMGEXIT with the GHCB at {gpa:#x}, not at the page this "
                f"vCPU registered ({registered << 12:#x})"
            )
        spa = record.npt(gpa)
        if spa is None:
            raise GuestStopped(f"VMGEXIT with the GHCB at {gpa:#x}: not guest memory")
        # The hypervisor reads the GHCB from DRAM: what the guest wrote there must be in it.
        self.host.package.write_back(spa // PAGE)
        page = self.host.vm.host_read(gpa, GHCB_SIZE)
        reply, seen = handle_ghcb(gpa, page, self.host, self.cpuid)
        record.last_exit = {"vcpu": self.vcpu, **seen.as_json()}
        self.host.vm.host_write(gpa, reply)
        self.host.package.refresh(spa // PAGE)

    def _msr_protocol(self, msr: int) -> None:
        record = self.host.vm.record
        reply = msr_protocol(msr, self.host.vm.dev.txn.profile.cbit, self.cpuid)
        if reply.terminate:
            raise GuestStopped(f"the guest terminated itself ({reply.terminate})")
        record.set_ghcb_msr(self.vcpu, reply.value)
        if reply.registered_gfn is not None:
            record.ghcb_gfns[str(self.vcpu)] = reply.registered_gfn
        record.last_exit = {"vcpu": self.vcpu, "ghcb_msr": f"{msr:#x}",
                            "reply": f"{reply.value:#x}", "error": reply.error}  # fmt: skip

    def cpuid(self, leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        """The hypervisor's CPUID answer for this vCPU: the machine's, with the vCPU's
        APIC id and the VM's logical processor count (leaf 1 EBX, leaf 0xB EDX)."""
        eax, ebx, ecx, edx = self.host.vm.dev.txn.cpuid(leaf, subleaf)
        if leaf == 1:
            count = self.host.vm.record.vcpus & 0xFF
            ebx = ebx & 0xFFFF | count << 16 | (self.vcpu & 0xFF) << 24
            edx |= 1 << 28  # HTT: the count field is valid
        elif leaf == 0xB:
            edx = self.vcpu
        return eax, ebx, ecx, edx


def _svm_attrib(flags: int) -> int:
    """QEMU's segment flags -> the VMSA's 12-bit attribute (KVM ``svm_get_segment``)."""
    return (flags >> 8) & 0xFF | (flags >> 12) & 0xF00


def _qemu_flags(attrib: int) -> int:
    return (attrib & 0xFF) << 8 | (attrib & 0xF00) << 12
