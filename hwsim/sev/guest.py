"""Running an SEV guest's own x86-64 code, and the guest's view of its memory.

The CPU is :class:`hwsim._exec.Cpu` in virtual-TLB mode. On every TLB miss the simulator
walks the guest's 4-level page tables itself (``shared/reference/sev-guests.md`` 5): each
table entry's address is guest physical, the hypervisor's nested page table maps it to
system physical, and the entry's C-bit (CPUID 0x8000001F EBX[5:0], the profile's position,
whatever width Unicorn's addresses have) decides the key the data goes through: set, the
guest's key (its ASID's slot); clear, none, so a shared page is plaintext in DRAM. Table
walks are always private, as on hardware; an instruction fetch from a shared page faults
here (hardware would fetch through the guest key and run garbage). No hook runs per access.

Pages are plaintext only inside the simulated CPU package: a page is decrypted into a
slot of Unicorn RAM on first touch and, when the run ends, every slot mapped writable whose
plaintext changed is written back through its key, so DRAM always holds the current
ciphertext (DESIGN.md, "Running code").

Boot contract (what a guest image can rely on; ``examples/sev-guest`` does):

* RAM is guest physical ``0 .. memory size``; the firmware image ends at 4 GiB (its last
  16 bytes hold the reset vector, as on a PC).
* The vCPU leaves reset in 64-bit mode at the reset vector, ``0xFFFFFFF0`` (instead of
  real mode: the simulated firmware needs no 16- and 32-bit start), with RSP at the top of
  RAM and CR3 = ``0x1000`` with the C-bit set.
* Page tables at ``0x1000 - 0x6FFF`` (PML4, PDPT, four page directories) map the first
  4 GiB one to one with 2 MiB pages, writable, executable, all private (C-bit set). They
  are written through the guest's key at the first run, as the first instructions of a
  firmware would; so they are private and not part of the launch digest. A guest shares a
  2 MiB page by clearing the C-bit of its entry (the directory for guest physical
  ``n * 1 GiB`` is at ``0x3000 + n * 0x1000``) and reloading CR3.
* CPUID 0x8000001F reports SEV and the C-bit position; other leaves are Unicorn's.
* Port I/O exits to the host: bytes written to COM1 (``0x3F8``) are the serial output,
  its line status register (``0x3FD``) always reads "transmitter empty" (0x60); a write
  to port ``0xF4`` (QEMU's isa-debug-exit) powers the guest off with that exit code. HLT
  stops the run; running again resumes after it.

SEV-ES guests (policy bit 2; sev-guests.md 3; the CPU side is :mod:`hwsim.sev.vc`):

* Each vCPU's registers live in its VMSA page, encrypted under the guest's key: VMRUN
  decrypts it, #VMEXIT encrypts the state back; the hypervisor's record holds none of
  them (:meth:`hwsim.sev.kvm.SevVm.vcpu_view`). A VMSA with CR0.PG clear is at reset: the
  vCPU starts at CS.base + RIP (the reset vector for the BSP, the firmware's SEV-ES reset
  address for APs built as sevctl builds them) under the same long-mode contract as
  above, with the VMSA's general registers (RDX: the CPU signature) and RSP 64 KiB lower
  per vCPU (vCPU n at the top of RAM - n * 64 KiB); only the BSP's reset writes the boot
  page tables. The vCPUs run round-robin in the one run.
* IN, OUT, CPUID and RDMSR/WRMSR of intercepted MSRs raise #VC through the guest's IDT
  (vector 29, error code the SVM exit code, RIP the instruction's address); the guest's
  handler asks the hypervisor through its GHCB (exit code, exit info, the registers it
  chooses to expose, their valid bits), writes the page's address to the GHCB MSR
  (0xC0010130) and executes VMGEXIT (``rep vmmcall``); the hypervisor reads the page
  through its own mapping (:mod:`hwsim.sev.ghcb`), so a GHCB the guest did not share is
  ciphertext to it. The GHCB MSR reads back what the hypervisor answers to the MSR
  protocol (SEV information, CPUID, GHCB registration, hypervisor features, termination).
  CPUID answers carry each vCPU's APIC id (leaf 1 EBX[31:24], leaf 0xB EDX).
* Simulator limits: the interception happens at code-hook addresses found by scanning a
  code page when a vCPU's turn first fetches from it, so an IN, OUT or CPUID written into
  a page after it ran in the same turn stops the guest ("ran without its #VC") instead
  of raising #VC (and such a WRMSR of the GHCB MSR is lost);
  INS/OUTS, MMIO (#NPF reflected as #VC), RDTSC/RDPMC/DR7/WBINVD/MONITOR intercepts and
  the AP reset hold / INIT-SIPI are not modelled; a #VC gate must use the running code
  segment; the VMSA round trip keeps the general registers, RIP, RFLAGS, CR3, segment
  selectors, GDTR, IDTR, TR and FS/GS bases (not XMM, x87 or the SYSCALL MSRs); plain SEV
  guests run vCPU 0 only.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwsim._exec import (
    FETCH,
    PAGE,
    PF,
    RW,
    WRITE,
    Cpu,
    ExecError,
    PageDenied,
    Stop,
    pf_error_code,
)
from hwsim.memory import MemoryEngine
from hwsim.sev.arch import GuestState
from hwsim.sev.kvm import SevVm
from hwsim.sev.vc import STACK_PER_VCPU, EsCpu, GuestStopped

__all__ = [
    "BOOT_CR3",
    "COM1",
    "DEBUG_EXIT_PORT",
    "MAX_SERIAL",
    "RESET_VECTOR",
    "GuestRun",
    "guest_read",
    "run_guest",
]

RESET_VECTOR = 0xFFFF_FFF0
BOOT_CR3 = 0x1000
COM1 = 0x3F8
_LSR = COM1 + 5
DEBUG_EXIT_PORT = 0xF4
MAX_SERIAL = 1 << 20  # bytes of serial output kept per guest
_TABLES = 6  # PML4, PDPT, 4 page directories
_P, _RWBIT, _PS = 0x1, 0x2, 0x80
_R, _X = 1, 4  # UC_PROT_READ, UC_PROT_EXEC
_NX = 1 << 63
_SLOTS_BASE = 0x40_0000_0000  # where the package's plaintext slots sit in Unicorn's space
_CHUNK = 256  # slots mapped at a time
_SAVED = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
          "r12", "r13", "r14", "r15", "rip", "rflags", "fs_base", "gs_base")  # fmt: skip
_CPUID_SEV = 0x8000_001F


@dataclass(frozen=True)
class GuestRun:
    """How a run ended: ``halt``, ``shutdown`` (exit code), ``fault``, ``budget``."""

    stop: str
    serial: bytes
    exit_code: int | None = None
    detail: str = ""
    io_exits: int = 0


def boot_tables(cbit: int) -> bytes:
    """The loader's page tables (see the module docstring), as 6 pages from 0x1000."""
    c = 1 << cbit
    pml4 = (BOOT_CR3 + PAGE) | c | _P | _RWBIT
    pdpt = [(BOOT_CR3 + 2 * PAGE + i * PAGE) | c | _P | _RWBIT for i in range(4)]
    pds = [(i << 21) | c | _P | _RWBIT | _PS for i in range(4 * 512)]
    entries = [pml4] + [0] * 511 + pdpt + [0] * 508 + pds
    return b"".join(e.to_bytes(8, "little") for e in entries)


class _Package:
    """The CPU package's plaintext copies of the system pages a guest touched."""

    def __init__(self, cpu: Cpu, memory: MemoryEngine) -> None:
        self.cpu = cpu
        self.memory = memory
        self.slots: dict[tuple[int, int | None], int] = {}  # (system page, key id) -> slot
        self.clean: dict[tuple[int, int | None], bytes] = {}
        self.writable: set[tuple[int, int | None]] = set()
        self.chunks: list[memoryview] = []

    def load(self, page: int, keyid: int | None) -> int:
        """Unicorn's physical address of ``page``'s plaintext under ``keyid``."""
        key = (page, keyid)
        slot = self.slots.get(key)
        if slot is None:
            if len(self.slots) == len(self.chunks) * _CHUNK:
                base = _SLOTS_BASE + len(self.chunks) * _CHUNK * PAGE
                self.chunks.append(self.cpu.map_buffer(base, _CHUNK * PAGE))
            slot = self.slots[key] = len(self.slots)
            plain = self.memory.read(page * PAGE, PAGE, keyid)
            self.cpu.write_phys(_SLOTS_BASE + slot * PAGE, plain)
            self.clean[key] = plain
        return _SLOTS_BASE + slot * PAGE

    def view(self, page: int, keyid: int | None) -> memoryview:
        self.load(page, keyid)
        chunk, slot = divmod(self.slots[(page, keyid)], _CHUNK)
        return self.chunks[chunk][slot * PAGE : (slot + 1) * PAGE]

    def refresh(self, page: int) -> None:
        """Reload ``page``'s slots after the hypervisor wrote DRAM behind the CPU's back."""
        for key in [k for k in self.slots if k[0] == page]:
            plain = self.memory.read(page * PAGE, PAGE, key[1])
            self.cpu.write_phys(_SLOTS_BASE + self.slots[key] * PAGE, plain)
            self.clean[key] = plain

    def write_back(self, page_only: int | None = None) -> None:
        """Write changed plaintext back to DRAM through its key: every page, or only the
        system page ``page_only`` (what the hypervisor is about to read)."""
        pages = (
            self.writable if page_only is None else {k for k in self.writable if k[0] == page_only}
        )
        for page, keyid in sorted(pages, key=lambda k: (k[0], k[1] is None)):
            plain = self.view(page, keyid).tobytes()
            if plain != self.clean[(page, keyid)]:
                self.memory.write(page * PAGE, plain, keyid)
                self.clean[(page, keyid)] = plain


class _Walker:
    """Guest-virtual -> (system page, key id, rights) through the guest's page tables."""

    def __init__(self, vm: SevVm, package: _Package, cbit: int, asid: int) -> None:
        self.vm = vm
        self.package = package
        self.cbit = 1 << cbit
        self.addr_mask = ((1 << cbit) - 1) & ~0xFFF & ((1 << 52) - 1)
        self.asid = asid

    def translate(self, cr3: int, vaddr: int, access: int) -> tuple[int, int | None, int]:
        """(system page, key id, UC_PROT rights) or raise :class:`PageDenied` (#PF)."""
        table, private, writable, nx = cr3 & self.addr_mask, True, True, False
        for level, shift in enumerate((39, 30, 21, 12)):
            entry = self._entry(table, (vaddr >> shift) & 0x1FF, vaddr, access)
            if not entry & _P:
                raise PageDenied(PF, pf_error_code(access, present=False),
                                 f"not present at level {4 - level}")  # fmt: skip
            writable &= bool(entry & _RWBIT)
            nx |= bool(entry & _NX)
            private = bool(entry & self.cbit)
            base = entry & self.addr_mask
            if shift == 12 or (shift in (30, 21) and entry & _PS):
                gpa = (base & ~((1 << shift) - 1)) | (vaddr & ((1 << shift) - 1))
                return self._leaf(gpa, access, private, writable, nx)
            table = base
        raise AssertionError("unreachable")

    def _entry(self, table: int, index: int, vaddr: int, access: int) -> int:
        spa = self._spa(table + index * 8, vaddr, access)
        view = self.package.view(spa // PAGE, self.asid)  # table walks are always private
        return int.from_bytes(view[spa % PAGE : spa % PAGE + 8], "little")

    def _spa(self, gpa: int, vaddr: int, access: int) -> int:
        spa = self.vm.record.npt(gpa)
        if spa is None:
            why = f"nested page fault: guest physical {gpa:#x} is not mapped"
            raise PageDenied(PF, pf_error_code(access, present=False), why)
        return spa

    def _leaf(
        self, gpa: int, access: int, private: bool, writable: bool, nx: bool
    ) -> tuple[int, int | None, int]:
        code = pf_error_code(access, present=True)
        if access == WRITE and not writable:
            raise PageDenied(PF, code, "write to a read-only page")
        if access == FETCH and (nx or not private):
            why = "a no-execute page" if nx else "a shared page (C-bit clear)"
            raise PageDenied(PF, code, f"instruction fetch from {why}")
        spa = self._spa(gpa, 0, access)
        rights = (RW if writable else _R) | (0 if nx else _X)
        return spa // PAGE, self.asid if private else None, rights


class _Runner:
    """One run of a guest's vCPU on a fresh :class:`Cpu`."""

    def __init__(self, vm: SevVm, asid: int) -> None:
        profile = vm.dev.txn.profile
        self.vm = vm
        self.profile = profile
        self.cpu = Cpu()
        self.package = _Package(self.cpu, vm.dev.memory)
        self.walker = _Walker(vm, self.package, profile.cbit, asid)
        self.serial = bytearray()
        self.shared = set(vm.record.shared)
        self.io_exits = 0
        self.exit_code: int | None = None
        self.cpu.translate = self._translate
        self.es: EsCpu | None = None
        if vm.record.es:
            self.es = EsCpu(self)
        else:
            self.cpu.emulate = {"out": self._out, "in": self._in, "cpuid": self._cpuid}

    def _translate(self, vaddr: int, access: int) -> tuple[int, int]:
        cr3 = int(self.cpu.uc.reg_read(_CR3))
        page, keyid, rights = self.walker.translate(cr3, vaddr, access)
        if keyid is None:
            self.shared.add(page)
        if access == FETCH and self.es is not None:
            self.es.fetched(vaddr, page, keyid)
        if rights & RW == RW:
            self.package.writable.add((page, keyid))
        return self.package.load(page, keyid), rights

    def _out(self, port: int, size: int, value: int) -> int:
        self.io_exits += 1
        if port == COM1:
            self.serial.append(value & 0xFF)
            if len(self.serial) + len(self.vm.record.serial) // 2 > MAX_SERIAL:
                raise GuestStopped(f"the guest wrote more than {MAX_SERIAL} serial bytes")
        elif port == DEBUG_EXIT_PORT:
            self.exit_code = value & ((1 << (8 * size)) - 1)
            self.cpu.trap_done()
        return 0

    def _in(self, port: int, size: int) -> int:
        self.io_exits += 1
        return 0x60 if port == _LSR else (1 << (8 * size)) - 1

    def _cpuid(self) -> int:
        if self.cpu.reg("rax") & 0xFFFF_FFFF != _CPUID_SEV:
            return 0  # Unicorn's own answer
        eax, ebx, ecx, edx = self.vm.dev.txn.cpuid(_CPUID_SEV)
        self.cpu.set_regs(rax=eax, rbx=ebx, rcx=ecx, rdx=edx, rip=self.cpu.reg("rip") + 2)
        return 1

    # -- the VMM's port devices, for GHCB exits (hwsim.sev.ghcb.PortIo) -----------------

    def out(self, port: int, size: int, value: int) -> None:
        self._out(port, size, value)

    def in_(self, port: int, size: int) -> int:
        return self._in(port, size)

    # -- a run --------------------------------------------------------------------------

    def run(self, budget: int) -> GuestRun:
        try:
            stop = self.es.run(budget) if self.es else self._run_plain(budget)
        except GuestStopped as why:
            stop, detail = None, str(why)
        finally:  # DRAM gets every change, whatever ended the run
            self.package.write_back()
        self.vm.record.shared = sorted(self.shared)
        if stop is None:
            return self._result("fault", detail)
        if stop.kind == "trap":
            return self._result("shutdown")
        if stop.kind == "fault" and stop.fault is not None:
            f = stop.fault
            where = f" at {f.address:#x}" if f.address is not None else ""
            text = f"{f.name} (error code {f.error_code:#x}) at rip {f.rip:#x}{where}"
            return self._result("fault", text + (f": {f.detail}" if f.detail else ""))
        return self._result("halt" if stop.kind == "halt" else "budget")

    def _run_plain(self, budget: int) -> Stop:
        """A plain SEV guest's vCPU 0: its state is the hypervisor's record."""
        regs = dict(self.vm.record.vcpu) or self.reset_regs(0)
        self.cpu.uc.reg_write(_CR3, regs.pop("cr3"))
        self.cpu.set_regs(**{k: v for k, v in regs.items() if k != "rip"})
        try:
            stop = self.cpu.run(regs["rip"], budget)
        finally:
            saved = self.cpu.regs(*_SAVED)
            saved["cr3"] = int(self.cpu.uc.reg_read(_CR3))
            self.vm.record.vcpu = saved
        if stop.kind == "budget" and self._after_hlt(saved["cr3"], saved["rip"]):
            return Stop("halt")
        return stop

    def _after_hlt(self, cr3: int, rip: int) -> bool:
        try:
            page, keyid, _ = self.walker.translate(cr3, rip - 1, FETCH)
        except PageDenied:
            return False
        return self.package.view(page, keyid)[(rip - 1) % PAGE] == 0xF4

    def reset_regs(self, vcpu: int) -> dict[str, int]:
        """vCPU ``vcpu`` at reset; for the BSP the loader first writes the boot page tables
        (private), which APs then share; each vCPU's stack starts 64 KiB below the last."""
        if vcpu == 0:
            spa = self.vm.record.npt(BOOT_CR3)
            if spa is None:
                raise ExecError("guest memory does not cover the boot page tables")
            self.vm.dev.memory.write(spa, boot_tables(self.profile.cbit), self.walker.asid)
        top = self.vm.record.memory_size - vcpu * STACK_PER_VCPU
        cr3 = BOOT_CR3 | 1 << self.profile.cbit
        return {"rip": RESET_VECTOR, "rsp": top, "rflags": 0x2, "cr3": cr3}

    def _result(self, stop: str, detail: str = "") -> GuestRun:
        code = self.exit_code if stop == "shutdown" else None
        return GuestRun(stop, bytes(self.serial), code, detail, self.io_exits)


def _cr3_reg() -> int:
    from unicorn import x86_const

    return int(x86_const.UC_X86_REG_CR3)


_CR3 = _cr3_reg()

_STATUS = {"shutdown": "shutdown", "fault": "crashed", "budget": "running", "halt": "halted"}


def run_guest(vm: SevVm, budget: int) -> GuestRun:
    """Run the guest's vCPU for at most ``budget`` instructions (VMRUN until an exit that
    ends the run); its state and serial output are kept in the VM record."""
    asid = vm.status().asid
    if not asid:
        raise ExecError(f"guest {vm.record.handle} is not active: it has no key loaded")
    state = vm.status().state
    if state != GuestState.RUNNING:
        raise ExecError(f"guest {vm.record.handle} is {GuestState(state).name}, not RUNNING")
    if vm.record.es and not vm.record.vcpus:
        raise ExecError(f"SEV-ES guest {vm.record.handle} has no VMSA (LAUNCH_UPDATE_VMSA)")
    if vm.record.status in ("shutdown", "crashed"):
        raise ExecError(f"guest {vm.record.handle} has {vm.record.status}; it cannot run again")
    result = _Runner(vm, asid).run(budget)
    vm.record.status = _STATUS[result.stop]
    vm.record.serial += result.serial.hex()
    vm.record.exits += result.io_exits
    vm.save()
    return result


def guest_read(vm: SevVm, gva: int, length: int) -> bytes:
    """What the guest reads at virtual ``gva``: through its page tables and its key for
    private pages, plain for shared ones (the boot tables before its first run)."""
    asid = vm.status().asid
    cpu_free = _Package(_NoCpu(), vm.dev.memory)  # type: ignore[arg-type]
    walker = _Walker(vm, cpu_free, vm.dev.txn.profile.cbit, asid)
    cr3 = vm.record.vcpu.get("cr3", BOOT_CR3)
    out = bytearray()
    while len(out) < length:
        at = gva + len(out)
        page, keyid, _ = walker.translate(cr3, at, 0)
        n = min(PAGE - at % PAGE, length - len(out))
        out += vm.dev.memory.read(page * PAGE + at % PAGE, n, keyid)
    return bytes(out)


class _NoCpu:
    """Slots in plain host memory, for walks done outside a run."""

    def __init__(self) -> None:
        self.buffers: list[tuple[int, memoryview]] = []

    def map_buffer(self, paddr: int, size: int) -> memoryview:
        view = memoryview(bytearray(size))
        self.buffers.append((paddr, view))
        return view

    def write_phys(self, paddr: int, data: bytes) -> None:
        base, view = next((b, v) for b, v in self.buffers if b <= paddr < b + len(v))
        view[paddr - base : paddr - base + len(data)] = data
