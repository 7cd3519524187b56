"""The simulated hypervisor: SEV virtual machines, shaped like KVM's SEV interface.

What KVM does around the firmware (``arch/x86/kvm/svm/sev.c``; sev-guests.md 1.5) is done
here: guest memory is allocated in the machine's DRAM and mapped by a nested page table
(guest physical -> system physical) the hypervisor owns; LAUNCH_START is followed at once
by ACTIVATE on a free ASID (``sev_asid_new``), recycling deactivated ASIDs with WBINVD and
DF_FLUSH when none is free (``__sev_recycle_asids``); LAUNCH_UPDATE_DATA is issued per
physically contiguous run; teardown is DEACTIVATE then DECOMMISSION. Methods are named
after the ``KVM_SEV_*`` commands of ``KVM_MEMORY_ENCRYPT_OP``.

A VM is a record in ``boot.kvm`` (volatile: a power cycle ends it, as it ends the guest
context in the firmware), keyed by its firmware handle. Guest memory is two slots: RAM at
guest physical 0 and the firmware flash, which ends at 4 GiB as a PC's does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from hwsim.errors import HwsimError
from hwsim.memory import PAGE_SIZE
from hwsim.sev.arch import GuestPolicy, GuestStatus

if TYPE_CHECKING:
    from hwsim.sev.device import SevDevice

__all__ = [
    "FLASH_END",
    "MAX_FIRMWARE",
    "MAX_MEMORY",
    "MAX_VCPUS",
    "MIN_MEMORY",
    "VM_NS",
    "KvmError",
    "SevVm",
    "VcpuView",
    "VmRecord",
]

VM_NS = "boot.kvm"
FLASH_END = 1 << 32  # the firmware flash ends at 4 GiB (its reset vector is at 4 GiB - 16)
MIN_MEMORY = 16 << 20
MAX_MEMORY = 1 << 30
MAX_FIRMWARE = 64 << 20  # QEMU maps OVMF below 4 GiB; 64 MiB bounds the work of a launch
MAX_VCPUS = 64  # VMSA pages an SEV-ES VM has
# Host pages after a VM's memory: the debug bounce page, then one VMSA page per vCPU.
_HOST_PAGES = 1 + MAX_VCPUS
_POOL_BASE = 8 << 30  # guest RAM is allocated from here up (above any EPC of the profiles)


class KvmError(HwsimError):
    """The simulated hypervisor refused a request (not a firmware status)."""


@dataclass
class VmRecord:
    """What the hypervisor keeps about one SEV VM."""

    handle: int
    name: str
    memory_size: int
    firmware_size: int
    spa: int  # system physical base of the VM's RAM; the flash follows it
    npt_overrides: dict[int, int] = field(default_factory=dict)  # gfn -> spfn remaps
    vcpu: dict[str, int] = field(default_factory=dict)  # empty: at reset
    status: str = "launching"  # launching, ready, running, halted, shutdown, crashed
    serial: str = ""  # hex of every byte the guest wrote to its serial port
    exits: int = 0
    # What the VMM learned from the firmware's footer at launch (QEMU keeps its flash
    # copy for the same reason): where LAUNCH_SECRET may put a secret, 0 if nowhere.
    secret_gpa: int = 0
    secret_size: int = 0
    es: bool = False
    vcpus: int = 0  # VMSAs given to LAUNCH_UPDATE_VMSA (SEV-ES)
    ghcb_msr: int = 0  # vCPU 0's VMCB control ghcb_gpa: its GHCB MSR
    ap_ghcb_msrs: list[int] = field(default_factory=list)  # the same of vCPUs 1, 2, ...
    ghcb_gfns: dict[str, int] = field(default_factory=dict)  # vCPU -> GHCB page it registered
    last_exit: dict[str, object] = field(default_factory=dict)  # the last GHCB exit seen
    # System pages the guest mapped shared (C-bit clear), as it announces them to KVM
    # (KVM_HC_MAP_GPA_RANGE): migration sends these as plain RAM.
    shared: list[int] = field(default_factory=list)

    def get_ghcb_msr(self, cpu: int) -> int:
        """vCPU ``cpu``'s GHCB MSR (kept in its VMCB, so the hypervisor sees it)."""
        if cpu == 0:
            return self.ghcb_msr
        return self.ap_ghcb_msrs[cpu - 1] if cpu <= len(self.ap_ghcb_msrs) else 0

    def set_ghcb_msr(self, cpu: int, value: int) -> None:
        if cpu == 0:
            self.ghcb_msr = value
            return
        self.ap_ghcb_msrs += [0] * (cpu - len(self.ap_ghcb_msrs))
        self.ap_ghcb_msrs[cpu - 1] = value

    def vmsa_spa(self, cpu: int) -> int:
        """System physical address of vCPU ``cpu``'s VMSA page (host memory, as the
        VMCB's ``vmsa_pa``)."""
        return self.spa + self.span + PAGE_SIZE * (1 + cpu)

    @property
    def flash_gpa(self) -> int:
        return FLASH_END - _pages(self.firmware_size)

    @property
    def span(self) -> int:
        return self.memory_size + _pages(self.firmware_size)

    def dumps(self) -> bytes:
        fields = asdict(self)
        fields["npt_overrides"] = {str(k): v for k, v in self.npt_overrides.items()}
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def loads(cls, raw: bytes) -> VmRecord:
        try:
            fields = json.loads(raw)
            fields["npt_overrides"] = {int(k): int(v) for k, v in fields["npt_overrides"].items()}
            return cls(**fields)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise HwsimError(f"state.db: a SEV VM record is corrupt ({exc})") from exc

    def npt(self, gpa: int) -> int | None:
        """The system physical address the nested page table maps ``gpa`` to."""
        gfn, offset = divmod(gpa, PAGE_SIZE)
        override = self.npt_overrides.get(gfn)
        if override is not None:
            return override * PAGE_SIZE + offset
        if 0 <= gpa < self.memory_size:
            return self.spa + gpa
        if self.flash_gpa <= gpa < FLASH_END:
            return self.spa + self.memory_size + (gpa - self.flash_gpa)
        return None


def _pages(n: int) -> int:
    return -(-n // PAGE_SIZE) * PAGE_SIZE


class SevVm:
    """One SEV VM of a machine, inside the device's transaction."""

    def __init__(self, dev: SevDevice, record: VmRecord) -> None:
        self.dev = dev
        self.record = record

    # -- life cycle ---------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        dev: SevDevice,
        *,
        name: str,
        memory_size: int,
        firmware_size: int,
        policy: int,
        godh: bytes | None = None,
        session: bytes | None = None,
    ) -> SevVm:
        """KVM_SEV_INIT + KVM_SEV_LAUNCH_START: memory, a firmware context and an ASID."""
        _check_sizes(memory_size, firmware_size)
        if any(vm.record.name == name for vm in cls.all(dev)):
            raise KvmError(f"a SEV VM named {name!r} exists already")
        dev.platform_init()
        if policy & GuestPolicy.ES and not dev.guests.es:  # KVM_SEV_ES_INIT is refused
            raise KvmError(
                "policy bit 2 (ES) asks for an SEV-ES guest; this part has no SEV-ES",
                hint="clear bit 2 of the policy, or use a part with SEV-ES (profile rome or sim)",
            )
        asid = cls._take_asid(dev, bool(policy & GuestPolicy.ES))
        handle = dev.guests.launch_start(policy, godh, session)
        dev.guests.activate(handle, asid)
        span = memory_size + _pages(firmware_size)
        record = VmRecord(handle, name, memory_size, firmware_size, _allocate(dev, span))
        record.es = bool(policy & GuestPolicy.ES)
        vm = cls(dev, record)
        vm.save()
        return vm

    @staticmethod
    def _take_asid(dev: SevDevice, es: bool) -> int:
        asid = dev.guests.free_asid(es)
        if asid is None and dev.guests.dirty_asids():
            dev.psp.wbinvd()  # __sev_recycle_asids: WBINVD on all CPUs, then DF_FLUSH
            dev.psp.df_flush()
            asid = dev.guests.free_asid(es)
        if asid is None:
            g = dev.guests
            kind, span = ("SEV-ES", f"1-{g.min_sev_asid - 1}") if es else (
                "SEV", f"{g.min_sev_asid}-{g.sev_asids}")  # fmt: skip
            raise KvmError(
                f"no free {kind} ASID: all of {span} are in use by running guests",
                hint="decommission a guest first (sevtool guest decommission)",
            )
        return asid

    @classmethod
    def all(cls, dev: SevDevice) -> list[SevVm]:
        return [cls(dev, VmRecord.loads(dev.txn.get(VM_NS, k) or b"")) for k in _vm_keys(dev)]

    @classmethod
    def get(cls, dev: SevDevice, handle: int) -> SevVm:
        raw = dev.txn.get(VM_NS, str(handle))
        if raw is None:
            raise KvmError(f"no SEV guest has handle {handle} on this machine")
        return cls(dev, VmRecord.loads(raw))

    def save(self) -> None:
        self.dev.txn.put(VM_NS, str(self.record.handle), self.record.dumps())

    def decommission(self) -> None:
        """Tear down (``sev_vm_destroy``): DEACTIVATE, DECOMMISSION, free the memory."""
        guests, handle = self.dev.guests, self.record.handle
        if guests.guest_status(handle).asid:
            guests.deactivate(handle)
        guests.decommission(handle)
        self.dev.txn.delete(VM_NS, str(handle))

    # -- launch ------------------------------------------------------------------------

    def load(self, gpa: int, data: bytes) -> None:
        """The VMM copies ``data`` into guest memory at ``gpa`` (plain, before encryption)."""
        for spa, chunk in self._runs(gpa, len(data)):
            self.dev.memory.write(spa, data[chunk], None)

    def launch_update_data(self, gpa: int, length: int) -> None:
        """KVM_SEV_LAUNCH_UPDATE_DATA: encrypt and measure ``length`` bytes at ``gpa``."""
        for spa, chunk in self._runs(gpa, length):
            self.dev.guests.launch_update_data(self.record.handle, spa, chunk.stop - chunk.start)

    def launch_update_vmsa(self, vmsas: list[bytes]) -> None:
        """KVM_SEV_LAUNCH_UPDATE_VMSA: each vCPU's VMSA, in index order, copied into its
        page and encrypted and measured by the firmware (``__sev_launch_update_vmsa``);
        from then on the register state is the guest's, not the hypervisor's."""
        if not self.record.es:
            raise KvmError(f"guest {self.record.handle} is not an SEV-ES guest")
        if not 1 <= len(vmsas) <= MAX_VCPUS or self.record.vcpus:
            raise KvmError(f"an SEV-ES VM has 1 to {MAX_VCPUS} vCPUs, given once")
        for cpu, page in enumerate(vmsas):
            spa = self.record.vmsa_spa(cpu)
            self.dev.memory.write(spa, page, None)
            self.dev.guests.launch_update_vmsa(self.record.handle, spa)
        self.record.vcpus = len(vmsas)
        self.save()

    def launch_measure(self) -> bytes:
        """KVM_SEV_LAUNCH_MEASURE: the 48-byte blob, measurement || mnonce."""
        measure, mnonce = self.dev.guests.launch_measure(self.record.handle)
        return measure + mnonce

    def launch_secret(self, header: bytes, payload: bytes, gpa: int) -> None:
        """KVM_SEV_LAUNCH_SECRET: inject a guest owner's packet at ``gpa`` (one page)."""
        runs = self._runs(gpa, len(payload))
        if len(runs) != 1:
            raise KvmError(f"the secret at {gpa:#x} must not cross a discontiguous page")
        self.dev.guests.launch_secret(self.record.handle, header, payload, runs[0][0])

    def launch_finish(self) -> None:
        """KVM_SEV_LAUNCH_FINISH."""
        self.dev.guests.launch_finish(self.record.handle)
        self.record.status = "ready"
        self.save()

    def status(self) -> GuestStatus:
        """KVM_SEV_GUEST_STATUS."""
        return self.dev.guests.guest_status(self.record.handle)

    # -- debugging and the hypervisor's view -------------------------------------------

    def dbg_decrypt(self, gpa: int, length: int) -> bytes:
        """KVM_SEV_DBG_DECRYPT: guest memory through the guest key (debug policy only).

        The firmware works in 16-byte blocks and decrypts into a host bounce page (the
        page after the VM's memory stands in for it); KVM rounds the range out to blocks
        (``__sev_dbg_decrypt``).
        """
        out = bytearray()
        for spa, chunk in self._runs(gpa, length, merge=False):
            lo, hi = spa & ~15, _round16(spa + chunk.stop - chunk.start)
            bounce = self.record.spa + self.record.span
            self.dev.guests.dbg_decrypt(self.record.handle, lo, bounce, hi - lo)
            out += self.dev.memory.read(bounce + spa - lo, chunk.stop - chunk.start, None)
        return bytes(out)

    def dbg_encrypt(self, gpa: int, data: bytes) -> None:
        """KVM_SEV_DBG_ENCRYPT: ``data`` into guest memory through the guest key; partial
        blocks are read, patched and written back (``__sev_dbg_encrypt_user``)."""
        handle = self.record.handle
        for spa, chunk in self._runs(gpa, len(data), merge=False):
            lo, hi = spa & ~15, _round16(spa + chunk.stop - chunk.start)
            bounce = self.record.spa + self.record.span
            self.dev.guests.dbg_decrypt(handle, lo, bounce, hi - lo)
            self.dev.memory.write(bounce + spa - lo, data[chunk], None)
            self.dev.guests.dbg_encrypt(handle, bounce, lo, hi - lo)

    def host_read(self, gpa: int, length: int) -> bytes:
        """What the hypervisor reads at ``gpa`` through its own mapping: the DRAM bytes,
        ciphertext for private pages and plaintext for shared ones."""
        return b"".join(
            self.dev.memory.physical_read(spa, chunk.stop - chunk.start)
            for spa, chunk in self._runs(gpa, length)
        )

    def host_write(self, gpa: int, data: bytes) -> None:
        """The hypervisor writes guest memory through its own mapping (no guest key)."""
        for spa, chunk in self._runs(gpa, len(data)):
            self.dev.memory.physical_write(spa, data[chunk])

    def vcpu_view(self, cpu: int = 0) -> VcpuView:
        """What the hypervisor sees of vCPU ``cpu``'s registers at a VM exit (sev-guests.md
        4): plain SEV, every register (the VMCB save area and KVM's copy of the GPRs; a
        plain SEV guest runs vCPU 0 only); SEV-ES, only the encrypted VMSA as DRAM holds
        it, its GHCB MSR and the GHCB fields of the VM's last exit."""
        if not self.record.es:
            if cpu:
                raise KvmError(f"guest {self.record.handle} runs vCPU 0 only (plain SEV)")
            return VcpuView(False, dict(self.record.vcpu), b"", {})
        if not 0 <= cpu < max(self.record.vcpus, 1):
            raise KvmError(f"guest {self.record.handle} has no vCPU {cpu}")
        vmsa = self.dev.memory.physical_read(self.record.vmsa_spa(cpu), PAGE_SIZE)
        ghcb = {**self.record.last_exit, "msr": f"{self.record.get_ghcb_msr(cpu):#x}"}
        return VcpuView(True, {}, vmsa, ghcb)

    def set_registers(self, **values: int) -> None:
        """The hypervisor changes guest registers before resuming it: possible for a plain
        SEV guest (RIP included), refused for SEV-ES, whose registers are in its VMSA."""
        if self.record.es:
            raise KvmError(
                f"guest {self.record.handle} is SEV-ES: its registers are in the encrypted "
                "VMSA; the hypervisor can only answer through the GHCB"
            )
        if not self.record.vcpu:
            raise KvmError(f"guest {self.record.handle} has not run: its vCPU is at reset")
        unknown = set(values) - set(self.record.vcpu)
        if unknown:
            raise KvmError(f"no such register: {', '.join(sorted(unknown))}")
        self.record.vcpu.update(values)
        self.save()

    def remap(self, gpa: int, to_gpa: int) -> None:
        """Point the nested page table's entry for ``gpa``'s page at the system page
        that ``to_gpa`` uses (a hypervisor's NPT edit, as in the SEVered attack)."""
        target = self.record.npt(to_gpa)
        if target is None or self.record.npt(gpa) is None:
            raise KvmError(f"{gpa:#x} or {to_gpa:#x} is not guest memory")
        self.record.npt_overrides[gpa // PAGE_SIZE] = target // PAGE_SIZE
        self.save()

    def _runs(self, gpa: int, length: int, *, merge: bool = True) -> list[tuple[int, slice]]:
        """(system physical address, slice of the range) for each physically contiguous
        run of ``gpa..gpa+length``; one per page with ``merge=False``."""
        if length < 0 or gpa < 0:
            raise KvmError(f"bad guest range {gpa:#x}+{length:#x}")
        runs: list[tuple[int, slice]] = []
        at = 0
        while at < length:
            spa = self.record.npt(gpa + at)
            if spa is None:
                raise KvmError(f"guest physical address {gpa + at:#x} is not guest memory")
            n = min(PAGE_SIZE - (gpa + at) % PAGE_SIZE, length - at)
            prev = runs[-1] if runs else None
            if merge and prev and prev[0] + (prev[1].stop - prev[1].start) == spa:
                runs[-1] = (prev[0], slice(prev[1].start, at + n))
            else:
                runs.append((spa, slice(at, at + n)))
            at += n
        return runs


@dataclass(frozen=True)
class VcpuView:
    """A hypervisor's view of a vCPU: ``registers`` in plain (SEV), or for SEV-ES the
    ``vmsa`` page's ciphertext and the ``ghcb`` fields the guest last exposed."""

    protected: bool
    registers: dict[str, int]
    vmsa: bytes
    ghcb: dict[str, object]


def _round16(n: int) -> int:
    return -(-n // 16) * 16


def _check_sizes(memory_size: int, firmware_size: int) -> None:
    if not MIN_MEMORY <= memory_size <= MAX_MEMORY or memory_size % (2 << 20):
        raise KvmError(
            f"guest memory must be a multiple of 2 MiB from {MIN_MEMORY >> 20} MiB to "
            f"{MAX_MEMORY >> 20} MiB, not {memory_size:#x} bytes"
        )
    if not 16 <= firmware_size <= MAX_FIRMWARE or firmware_size % 16:
        raise KvmError(
            f"a firmware image must be a multiple of 16 bytes, at most {MAX_FIRMWARE >> 20} MiB "
            f"(this one is {firmware_size} bytes)"
        )


def _vm_keys(dev: SevDevice) -> list[str]:
    return sorted(dev.txn.keys(VM_NS), key=int)


def _allocate(dev: SevDevice, span: int) -> int:
    """The lowest free system physical range of ``span`` bytes in the guest pool (first
    fit), so a decommissioned guest's memory is used again."""
    taken = sorted(
        (r.spa, r.spa + r.span + _HOST_PAGES * PAGE_SIZE)
        for r in (SevVm.get(dev, int(k)).record for k in _vm_keys(dev))
    )
    base = _POOL_BASE
    for lo, hi in taken:
        if base + span + _HOST_PAGES * PAGE_SIZE <= lo:
            break
        base = max(base, hi)
    limit = 1 << dev.address_bits
    if base + span + _HOST_PAGES * PAGE_SIZE > limit:
        raise KvmError("the machine's physical address space has no room for this guest")
    return base
