"""The victims of the attack lab: what each scenario plants, and the victim's own steps.

A victim reaches its memory the way its owner does (the kernel through the host view of
:mod:`hwsim.memview`, a guest through its own key, an enclave inside the CPU package);
attackers never use the victims' own steps, they have only the access of
:mod:`hwsim.attacks._lab` (the views, and the hypervisor's methods below). Every secret is made
fresh by the scenario (``os.urandom``, a new TLS key), so finding it anywhere means the
attacker's access reached it.

- :class:`HostVictim`: a disk encryption key in kernel memory, a TLS private key in a
  process and a file on persistent memory, at fixed places of the host's map
  (:data:`hwsim.sme.boot.HOST_RANGES`).
- :class:`PlainVm`: a VM without SEV (KVM's plain guest): its RAM is host memory, its
  registers are the hypervisor's VMCB and GPR copy.
- :class:`SevGuest`: an SEV (or SEV-ES) guest the lab launches as its owner would, with a
  launch secret injected by LAUNCH_SECRET; its code loads the secret into registers, halts,
  and after resuming writes RAX's low byte to its serial port.
- :class:`EnclaveVictim`: a production enclave holding a key (:mod:`._enclave`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hwsim.errors import HwsimError
from hwsim.memory import PAGE_SIZE
from hwsim.memview import read_in, region_in, write_in
from hwsim.sev.arch import GuestPolicy, Vmsa
from hwsim.sev.device import SevDevice
from hwsim.sev.kvm import SevVm
from hwsim.sev.psp import PspError
from hwsim.sev.session import build_session, seal_secret
from hwsim.sme.boot import KernelBoot

if TYPE_CHECKING:
    from hwsim.machine import Transaction
    from hwsim.sev.kvm import VmRecord
    from hwsim.sgx.device import SgxEnclaveDevice

__all__ = [
    "BOUNCE_GPA",
    "PUBLIC_GPA",
    "SECRET_GPA",
    "EnclaveVictim",
    "HostVictim",
    "KernelMemory",
    "PlainVm",
    "Planted",
    "SevGuest",
    "Unavailable",
    "hypervisor_read",
    "hypervisor_write",
]

DISK_KEY_AT = 0x0120_0000  # kernel memory (System RAM)
TLS_KEY_AT = 0x2000_0000  # a process's heap page (System RAM)
PMEM_FILE_AT = 0x4000_1000  # a file's block on pmem0
VM_RAM_AT = 0x3000_0000  # a plain VM's RAM (System RAM)
SECRET_GPA = 0x80_0000  # guest physical: the launch secret, in a private page
PUBLIC_GPA = 0x90_0000  # guest physical: the page the guest serves (its web root, say)
BOUNCE_GPA = 0x20_0000  # guest physical: the shared SWIOTLB bounce page
_MIB = 1 << 20
_VM_MEMORY = 16 * _MIB


class Unavailable(HwsimError):
    """The scenario cannot be set up on this machine (missing feature, not modelled yet)."""


@dataclass(frozen=True)
class Planted:
    """One secret a scenario planted: its bytes and where DRAM holds it."""

    name: str
    value: bytes
    paddr: int
    where: str


def _tls_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class KernelMemory:
    """Host memory through the kernel's own mapping: the host view, whose C-bit is the
    booted kernel's SME map (or TSME)."""

    def __init__(self, txn: Transaction, boot: KernelBoot) -> None:
        self.txn, self.boot = txn, boot

    def write(self, paddr: int, data: bytes) -> None:
        write_in(self.txn, "host", paddr, data)

    def read(self, paddr: int, n: int) -> bytes:
        return read_in(self.txn, "host", paddr, n)

    def protection(self, paddr: int) -> str | None:
        """What the memory map says encrypts ``paddr`` (None: nothing)."""
        region = region_in(self.txn, paddr)
        if region is None or region.keyid is None:
            return None
        return "the host key (TSME)" if self.boot.tsme else "the host key (SME, C-bit set)"


def _hv_pieces(record: VmRecord, gpa: int, n: int) -> list[tuple[int, int, int]]:
    """(system address, offset, length) per page of ``gpa..gpa+n`` through the NPT."""
    out = []
    at = gpa
    while at < gpa + n:
        size = min(PAGE_SIZE - at % PAGE_SIZE, gpa + n - at)
        spa = record.npt(at)
        if spa is None:
            raise HwsimError(f"{at:#x} is not guest memory")
        out.append((spa, at - gpa, size))
        at += size
    return out


def hypervisor_read(txn: Transaction, record: VmRecord, gpa: int, n: int) -> bytes:
    """What the hypervisor reads of guest memory: its nested page table, then its own
    mapping (the host view: ciphertext for private pages)."""
    return b"".join(read_in(txn, "host", spa, size) for spa, _o, size in _hv_pieces(record, gpa, n))


def hypervisor_write(txn: Transaction, record: VmRecord, gpa: int, data: bytes) -> None:
    """The hypervisor writes guest memory through its own mapping (no guest key)."""
    for spa, offset, size in _hv_pieces(record, gpa, len(data)):
        write_in(txn, "host", spa, data[offset : offset + size])


class HostVictim:
    """Host secrets written through the kernel's own mapping."""

    def __init__(self, txn: Transaction, boot: KernelBoot) -> None:
        self.mem = KernelMemory(txn, boot)
        self.disk_key = Planted("disk encryption key", os.urandom(64), DISK_KEY_AT,
                                "dm-crypt master key in kernel memory")  # fmt: skip
        self.tls_key = Planted("TLS private key", _tls_key(), TLS_KEY_AT,
                               "PEM private key in a web server's memory")  # fmt: skip
        self.pmem_file = Planted("file on persistent memory",
                                 b"payroll.csv: " + os.urandom(16).hex().encode(),
                                 PMEM_FILE_AT, "a file's block on pmem0 (DAX)")  # fmt: skip
        for p in (self.disk_key, self.tls_key, self.pmem_file):
            self.mem.write(p.paddr, p.value)

    def ram_secrets(self) -> list[Planted]:
        return [self.disk_key, self.tls_key]

    def protection(self, paddr: int) -> str | None:
        return self.mem.protection(paddr)

    def close(self) -> None:
        for p in (self.disk_key, self.tls_key, self.pmem_file):
            self.mem.write(p.paddr, bytes(len(p.value)))


@dataclass
class _Vcpu:
    """A vCPU's registers as the hypervisor holds them at an exit."""

    regs: dict[str, int] = field(default_factory=dict)


class PlainVm:
    """A VM without SEV: RAM in host memory behind the hypervisor's NPT, registers in the
    VMCB. It runs the same program as :class:`SevGuest`, modelled in Python."""

    def __init__(self, txn: Transaction, boot: KernelBoot) -> None:
        self.host = KernelMemory(txn, boot)
        self.npt: dict[int, int] = {}
        self.asid: int | None = None
        value = os.urandom(16)
        self.secret = Planted("guest launch secret", value, self.spa(SECRET_GPA),
                              "a plain VM's secret in its RAM")  # fmt: skip
        self.guest_write(SECRET_GPA, value)
        self.vcpu = _Vcpu()

    def spa(self, gpa: int) -> int:
        page = self.npt.get(gpa // PAGE_SIZE)
        return VM_RAM_AT + gpa if page is None else page * PAGE_SIZE + gpa % PAGE_SIZE

    # the guest's own steps
    def guest_write(self, gpa: int, data: bytes) -> None:
        self.host.write(self.spa(gpa), data)

    def guest_read(self, gpa: int, n: int) -> bytes:
        return self.host.read(self.spa(gpa), n)

    def run_to_halt(self) -> None:
        """The program's first part: RAX and RCX take the secret, then HLT (a VM exit)."""
        v = self.guest_read(SECRET_GPA, 16)
        self.vcpu.regs = {"rax": int.from_bytes(v[:8], "little"),
                          "rcx": int.from_bytes(v[8:], "little"), "rip": 0xFFFF_FFF0}  # fmt: skip

    def resume(self) -> bytes:
        """The second part: write RAX's low byte to the serial port."""
        return bytes([self.vcpu.regs["rax"] & 0xFF])

    # what the hypervisor has
    def host_read(self, gpa: int, n: int) -> bytes:
        return self.host.read(self.spa(gpa), n)

    def host_write(self, gpa: int, data: bytes) -> None:
        self.host.write(self.spa(gpa), data)

    def remap(self, gpa: int, to_gpa: int) -> None:
        self.npt[gpa // PAGE_SIZE] = self.spa(to_gpa) // PAGE_SIZE

    def registers(self) -> dict[str, int] | None:
        return dict(self.vcpu.regs)

    def vmsa(self) -> bytes:
        """No encrypted save area: an unprotected VM's registers are the hypervisor's."""
        return b""

    def set_register(self, name: str, value: int) -> None:
        self.vcpu.regs[name] = value

    def protection(self, paddr: int) -> str | None:
        return self.host.protection(paddr)

    def close(self) -> None:
        self.host.write(self.secret.paddr, bytes(16))


def _guest_program(cbit: int) -> bytes:
    """Flat firmware: load the secret into RAX/RCX, HLT; on resume write AL to COM1, power
    off. Ends with the reset vector's jump back to the start (the boot contract of
    :mod:`hwsim.sev.guest`)."""
    del cbit  # the boot page tables already map everything private
    code = (
        b"\x48\xbb" + SECRET_GPA.to_bytes(8, "little")  # movabs rbx, SECRET_GPA
        + b"\x48\x8b\x03"  # mov rax, [rbx]
        + b"\x48\x8b\x4b\x08"  # mov rcx, [rbx+8]
        + b"\xf4"  # hlt
        + b"\x66\xba\xf8\x03\xee"  # mov dx, 0x3f8; out dx, al
        + b"\xb0\x00\xe6\xf4"  # mov al, 0; out 0xf4, al
    )  # fmt: skip
    image = bytearray(PAGE_SIZE)
    image[: len(code)] = code
    rel = -(PAGE_SIZE - 16 + 5)
    image[PAGE_SIZE - 16 : PAGE_SIZE - 11] = b"\xe9" + (rel & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(image)


def _reset_vmsa() -> bytes:
    """vCPU 0's VMSA at reset (CS base 0xFFFF0000, RIP 0xFFF0): the runner then starts the
    guest at the reset vector as for plain SEV (the boot contract of hwsim.sev.guest)."""
    v = Vmsa()
    v["cs_base"], v["rip"] = 0xFFFF0000, 0xFFF0
    return v.pack()


class SevGuest:
    """An SEV guest launched by the lab as its owner, with a LAUNCH_SECRET."""

    def __init__(self, txn: Transaction, *, es: bool, name: str = "lab-victim") -> None:
        self.dev = SevDevice(txn)
        self.es = es
        policy = int(GuestPolicy.NODBG) | (int(GuestPolicy.ES) if es else 0)
        self.vm = self._launch(policy, name)
        self.asid: int | None = self.vm.status().asid
        value = os.urandom(16)
        self._inject(value)
        self.vm.launch_finish()
        self.secret = Planted("guest launch secret", value, self.spa(SECRET_GPA),
                              "the guest owner's LAUNCH_SECRET in guest memory")  # fmt: skip

    def _launch(self, policy: int, name: str) -> SevVm:
        self.dev.platform_init()
        pdh, _chain = self.dev.pdh_cert_export()
        self.owner = build_session(pdh, policy)
        image = _guest_program(self.dev.txn.profile.cbit)
        try:
            vm = SevVm.create(
                self.dev, name=name, memory_size=_VM_MEMORY, firmware_size=len(image),
                policy=policy, godh=self.owner.godh.pack(), session=self.owner.session.pack(),
            )  # fmt: skip
        except PspError as exc:
            if self.es:
                why = f"SEV-ES guests are not launched by this simulator yet ({exc})"
                raise Unavailable(why) from exc
            raise
        vm.load(vm.record.flash_gpa, image)
        vm.launch_update_data(vm.record.flash_gpa, len(image))
        if self.es:
            vm.launch_update_vmsa([_reset_vmsa()])
        return vm

    def _inject(self, value: bytes) -> None:
        measurement = self.vm.launch_measure()[:32]
        header, payload = seal_secret(self.owner.keys, value, measurement)
        self.vm.launch_secret(header.pack(), payload, SECRET_GPA)

    def spa(self, gpa: int) -> int:
        spa = self.vm.record.npt(gpa)
        if spa is None:
            raise HwsimError(f"{gpa:#x} is not guest memory")
        return spa

    # the guest's own steps (its CPU, its key)
    def guest_write(self, gpa: int, data: bytes) -> None:
        self.dev.memory.write(self.spa(gpa), data, self.asid if gpa != BOUNCE_GPA else None)

    def guest_read(self, gpa: int, n: int) -> bytes:
        return self.dev.memory.read(self.spa(gpa), n, self.asid if gpa != BOUNCE_GPA else None)

    def run_to_halt(self) -> None:
        from hwsim.sev.guest import run_guest

        run = run_guest(self.vm, 10_000)
        if run.stop != "halt":
            raise HwsimError(f"the lab's guest did not halt: {run.stop} {run.detail}")

    def resume(self) -> bytes:
        from hwsim.sev.guest import run_guest

        return run_guest(self.vm, 10_000).serial

    # what the hypervisor has
    def host_read(self, gpa: int, n: int) -> bytes:
        return hypervisor_read(self.dev.txn, self.vm.record, gpa, n)

    def host_write(self, gpa: int, data: bytes) -> None:
        hypervisor_write(self.dev.txn, self.vm.record, gpa, data)

    def remap(self, gpa: int, to_gpa: int) -> None:
        self.vm.remap(gpa, to_gpa)

    def registers(self) -> dict[str, int] | None:
        """The VMCB save area and KVM's GPR copy (plain SEV); None for SEV-ES, whose
        registers the hypervisor has only as the VMSA's ciphertext (:meth:`vmsa`)."""
        view = self.vm.vcpu_view()
        return None if view.protected else dict(view.registers)

    def vmsa(self) -> bytes:
        """The encrypted VMSA page as the hypervisor reads it (SEV-ES), else nothing."""
        return self.vm.vcpu_view().vmsa

    def set_register(self, name: str, value: int) -> None:
        """KVM writes its GPR copy back at VMRUN; for SEV-ES it refuses (KvmError)."""
        self.vm.set_registers(**{name: value})

    def protection(self, paddr: int) -> str | None:
        del paddr
        return f"the guest's key (ASID {self.asid})"

    def close(self) -> None:
        self.vm.decommission()


class EnclaveVictim:
    """A key inside a production enclave the lab loads."""

    def __init__(self, txn: Transaction) -> None:
        from hwsim.attacks._enclave import KEY_OFFSET, load_key_enclave

        machine = txn.machine
        if not (machine.profile.sgx1 and txn.booted_config().sgx_enabled):
            raise Unavailable(f"profile {machine.profile.name} has no SGX enabled")
        value = os.urandom(32)
        self.dev: SgxEnclaveDevice = load_key_enclave(machine, value)
        self.index = self.dev.enclave.page(self.dev.enclave.secs.baseaddr + KEY_OFFSET)
        self.engine = machine.profile.epc_engine
        self.secret = Planted("enclave key", value, self.dev.epc.paddr(self.index),
                              "a key in a production enclave's data page")  # fmt: skip

    def rewrite(self, data: bytes) -> None:
        self.dev.epc.write(self.index, data.ljust(PAGE_SIZE, b"\0"))

    def reread(self, n: int) -> bytes:
        return self.dev.epc.read(self.index)[:n]

    def protection(self, paddr: int) -> str | None:
        del paddr
        return f"the EPC key ({self.engine.name})"

    def close(self) -> None:
        self.dev.close()
