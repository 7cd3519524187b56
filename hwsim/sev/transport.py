"""Moving an SEV VM between two simulated machines: the hypervisor's side and its file.

The source's hypervisor (QEMU ``sev_send_*``, KVM ``sev_send_*``; sev-guests.md 2.1) runs
SEND_START to the target's chain, SEND_UPDATE_DATA for every populated private page and
SEND_UPDATE_VMSA for each vCPU of an SEV-ES guest, sends the pages the guest shared as
plain RAM, and SEND_FINISH. The target's runs RECEIVE_START, ACTIVATE, RECEIVE_UPDATE_*
into the new VM's memory and RECEIVE_FINISH. What the VMM itself carries (name, sizes,
run status, serial output so far, and a plain SEV guest's registers, which the
hypervisor holds in the clear) travels unprotected beside the packets, as in QEMU's stream.

The transport file (the simulator's format, little-endian): ``MCSEVMG1``, LE32 length of
a JSON header (policy, the source's PDH and the session, the finish record, the VMM
state), then records: kind u8 (1 private page, 2 VMSA, 3 shared page), LE64 guest address
or vCPU index, LE32 length, for kinds 1 and 2 the 52-byte packet header, then the data.
Its size is bounded by :data:`MAX_TRANSPORT`: guest memory and firmware at most
(:data:`~hwsim.sev.kvm.MAX_MEMORY` + :data:`~hwsim.sev.kvm.MAX_FIRMWARE`), 65 bytes of
framing per page, the VMSAs and 4 MiB of header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hwsim.errors import HwsimError
from hwsim.memory import PAGE_SIZE
from hwsim.sev import migrate
from hwsim.sev.arch import SECRET_HEADER_SIZE, GuestPolicy
from hwsim.sev.kvm import MAX_FIRMWARE, MAX_MEMORY, MAX_VCPUS, KvmError, SevVm, VmRecord, _pages

if TYPE_CHECKING:
    from hwsim.sev.device import SevDevice

__all__ = ["MAX_TRANSPORT", "Transport", "receive_vm", "send_vm"]

MAGIC = b"MCSEVMG1"
_PRIVATE, _VMSA, _SHARED = 1, 2, 3
_FRAME = 1 + 8 + 4 + SECRET_HEADER_SIZE
_MAX_HEADER = 4 << 20
MAX_TRANSPORT = (
    len(MAGIC) + 4 + _MAX_HEADER
    + (MAX_MEMORY + MAX_FIRMWARE) // PAGE_SIZE * (PAGE_SIZE + _FRAME)
    + MAX_VCPUS * (PAGE_SIZE + _FRAME)
)  # fmt: skip
_ZERO = bytes(PAGE_SIZE)


@dataclass
class Transport:
    """One VM in transit: the firmware's packets and the VMM's own state."""

    header: dict[str, Any]
    records: list[tuple[int, int, bytes, bytes]] = field(default_factory=list)

    def pack(self) -> bytes:
        head = json.dumps(self.header, sort_keys=True).encode()
        out = [MAGIC, len(head).to_bytes(4, "little"), head]
        for kind, where, hdr, data in self.records:
            out += [bytes([kind]), where.to_bytes(8, "little"), len(data).to_bytes(4, "little")]
            out += [hdr, data]
        return b"".join(out)

    @classmethod
    def unpack(cls, raw: bytes) -> Transport:
        if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + 4:
            raise HwsimError("not an SEV migration file (no MCSEVMG1 magic)")
        at = len(MAGIC) + 4
        size = int.from_bytes(raw[at - 4 : at], "little")
        try:
            header = json.loads(raw[at : at + size])
        except ValueError as exc:
            raise HwsimError(f"the migration file's header is damaged ({exc})") from exc
        records, at = [], at + size
        while at < len(raw):
            kind, where = raw[at], int.from_bytes(raw[at + 1 : at + 9], "little")
            n = int.from_bytes(raw[at + 9 : at + 13], "little")
            hsize = 0 if kind == _SHARED else SECRET_HEADER_SIZE
            end = at + 13 + hsize + n
            if kind not in (_PRIVATE, _VMSA, _SHARED) or end > len(raw) or n > PAGE_SIZE:
                raise HwsimError(f"the migration file is damaged at byte {at}")
            records.append(
                (kind, where, raw[at + 13 : at + 13 + hsize], raw[at + 13 + hsize : end])
            )
            at = end
        return cls(header, records)


def send_vm(vm: SevVm, chain: migrate.TargetChain) -> Transport:
    """Send ``vm`` to the platform whose chain is ``chain``; the VM is then SENT here."""
    fw, handle, r = vm.dev.guests, vm.record.handle, vm.record
    policy, session = migrate.send_start(fw, handle, chain)
    transport = Transport({})
    for gpa in _guest_pages(r):
        spa = r.npt(gpa)
        assert spa is not None
        if vm.dev.memory.physical_read(spa, PAGE_SIZE) == _ZERO:
            continue  # never written: the target's memory is zero there too
        if spa // PAGE_SIZE in r.shared:
            transport.records.append((_SHARED, gpa, b"", vm.host_read(gpa, PAGE_SIZE)))
            continue
        hdr, data = migrate.send_update(fw, handle, spa, PAGE_SIZE)
        transport.records.append((_PRIVATE, gpa, hdr, data))
    for cpu in range(r.vcpus):
        hdr, data = migrate.send_update(fw, handle, r.vmsa_spa(cpu), PAGE_SIZE, vmsa=True)
        transport.records.append((_VMSA, cpu, hdr, data))
    finish = migrate.send_finish(fw, handle)
    pdh = vm.dev.psp.pdh_cert_export()[0].pack()
    transport.header = {
        "policy": policy, "source_pdh": pdh.hex(), "session": session.hex(),
        "finish": finish.hex(), "vm": _vmm_state(r),
    }  # fmt: skip
    r.status = "sent"
    vm.save()
    return transport


def _guest_pages(r: VmRecord) -> list[int]:
    flash = range(r.flash_gpa, r.flash_gpa + _pages(r.firmware_size), PAGE_SIZE)
    return [*range(0, r.memory_size, PAGE_SIZE), *flash]


_CARRIED = ("name", "memory_size", "firmware_size", "status", "serial", "exits", "vcpu",
            "secret_gpa", "secret_size", "es", "vcpus", "ghcb_msr", "ap_ghcb_msrs",
            "ghcb_gfns")  # fmt: skip


def _vmm_state(r: VmRecord) -> dict[str, Any]:
    state = {k: getattr(r, k) for k in _CARRIED}
    state["shared_gpas"] = [g for g in _guest_pages(r) if (r.npt(g) or 0) // PAGE_SIZE in r.shared]
    return state


def receive_vm(dev: SevDevice, transport: Transport, name: str | None = None) -> SevVm:
    """RECEIVE_START ... RECEIVE_FINISH of ``transport`` into a new VM on ``dev``."""
    head = transport.header
    try:
        state, policy = dict(head["vm"]), int(head["policy"])
        pdh, session = bytes.fromhex(head["source_pdh"]), bytes.fromhex(head["session"])
        finish = bytes.fromhex(head["finish"])
    except (KeyError, ValueError, TypeError) as exc:
        raise HwsimError(f"the migration file's header is incomplete ({exc})") from exc
    label = name or str(state.get("name", "migrated"))
    if any(v.record.name == label for v in SevVm.all(dev)):
        raise KvmError(f"a SEV VM named {label!r} exists already", hint="give another --name")
    vm = _new_vm(dev, policy, pdh, session, state, label)
    fw, handle = dev.guests, vm.record.handle
    for kind, where, hdr, data in transport.records:
        if kind == _SHARED:
            vm.host_write(where, data)
            continue
        spa = vm.record.vmsa_spa(where) if kind == _VMSA else vm.record.npt(where)
        if spa is None or (kind == _VMSA and where >= MAX_VCPUS):
            raise KvmError(f"the migration file names {where:#x}, which this VM does not have")
        migrate.receive_update(fw, handle, hdr, data, spa, vmsa=kind == _VMSA)
    migrate.receive_finish(fw, handle, finish)
    vm.record.shared = [(vm.record.npt(g) or 0) // PAGE_SIZE for g in state.get("shared_gpas", [])]
    vm.save()
    return vm


def _new_vm(
    dev: SevDevice, policy: int, pdh: bytes, session: bytes, state: dict[str, Any], name: str
) -> SevVm:
    """KVM_SEV_INIT + KVM_SEV_RECEIVE_START + ACTIVATE, and the VMM state restored."""
    from hwsim.sev.kvm import _allocate, _check_sizes

    memory, firmware = int(state["memory_size"]), int(state["firmware_size"])
    _check_sizes(memory, firmware)
    dev.platform_init()
    asid = SevVm._take_asid(dev, bool(policy & GuestPolicy.ES))
    handle = migrate.receive_start(dev.guests, policy, pdh, session)
    dev.guests.activate(handle, asid)
    record = VmRecord(handle, name, memory, firmware, _allocate(dev, memory + _pages(firmware)))
    for key in _CARRIED:
        if key not in ("name", "memory_size", "firmware_size") and key in state:
            setattr(record, key, state[key])
    vm = SevVm(dev, record)
    vm.save()
    return vm
