"""SEV guests on a machine: what the hypervisor's admin does, as QEMU and KVM do it.

One function per ``sevtool guest`` command, each one transaction on the machine through
the simulated hypervisor (:mod:`hwsim.sev.kvm`): ``launch`` places the firmware image
below 4 GiB, encrypts and measures it with LAUNCH_UPDATE_DATA, and, given a kernel,
initrd or command line, measures QEMU's kernel-hashes table at the address the firmware's
footer names (``SEV_HASH_TABLE_RV``), so the launch digest is the one
``sevtool measurement build`` computes for the same files. Guests are named by handle or
by name; with one guest on the machine, neither is needed.

Size bounds: firmware images up to :data:`hwsim.sev.kvm.MAX_FIRMWARE`, guest memory
16 MiB-1 GiB, kernel and initrd up to 256 MiB each (only hashed), secrets up to 16 KiB,
session and GODH files up to 8 KiB.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwsim.sev.arch import SECRET_HEADER_SIZE, GuestState, SevCommand
from hwsim.sev.device import SevDevice
from hwsim.sev.errors import PspError
from hwsim.sev.guest import GuestRun, run_guest
from hwsim.sev.guestfw import MAX_SECRET
from hwsim.sev.kvm import MAX_FIRMWARE, SevVm
from hwsim.sev.ovmf import (
    SEV_HASH_TABLE_RV,
    SEV_SECRET_BLOCK,
    cmdline_hash,
    footer_table,
    footer_u32,
    kernel_hashes_table,
)
from memcrypt.files import read_file
from sevtool.errors import SevInputError, SevToolError
from sevtool.session import explain_launch_start, read_blob, read_session_files

if TYPE_CHECKING:
    from hwsim.machine import Machine

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_MEMORY",
    "GuestInfo",
    "LaunchInfo",
    "MeasureInfo",
    "RunInfo",
    "debug_decrypt",
    "decommission",
    "dump",
    "finish",
    "inject_secret",
    "launch",
    "list_guests",
    "measure",
    "run",
    "status",
]

DEFAULT_MEMORY = 64 << 20
DEFAULT_BUDGET = 100_000_000  # instructions per `guest run`
MAX_KERNEL = 256 << 20
MAX_DUMP = 1 << 20
_MAX_OWNER_FILE = 8192


@dataclass(frozen=True)
class GuestInfo:
    """One guest as the firmware (state, ASID, policy) and the hypervisor see it."""

    handle: int
    name: str
    state: str
    asid: int
    policy: int
    status: str
    memory: int
    firmware_size: int
    secret_gpa: int
    secret_size: int

    @classmethod
    def of(cls, vm: SevVm) -> GuestInfo:
        fw, r = vm.status(), vm.record
        return cls(r.handle, r.name, GuestState(fw.state).name, fw.asid, fw.policy, r.status,
                   r.memory_size, r.firmware_size, r.secret_gpa, r.secret_size)  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {
            "handle": self.handle,
            "name": self.name,
            "state": self.state,
            "asid": self.asid,
            "policy": f"{self.policy:#x}",
            "status": self.status,
            "memory": self.memory,
            "firmware_size": self.firmware_size,
            "secret_gpa": f"{self.secret_gpa:#x}" if self.secret_size else None,
            "secret_size": self.secret_size,
        }


@dataclass(frozen=True)
class LaunchInfo:
    """A launched guest and the launch digest of what LAUNCH_UPDATE_DATA measured."""

    guest: GuestInfo
    launch_digest: bytes
    hashes_gpa: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            **self.guest.as_json(),
            "launch_digest": self.launch_digest.hex(),
            "kernel_hashes_gpa": None if self.hashes_gpa is None else f"{self.hashes_gpa:#x}",
        }


@dataclass(frozen=True)
class MeasureInfo:
    """LAUNCH_MEASURE's blob and what the guest owner needs to check it."""

    handle: int
    blob: bytes
    api_major: int
    api_minor: int
    build: int
    policy: int

    def as_json(self) -> dict[str, Any]:
        return {
            "handle": self.handle,
            "measurement": base64.b64encode(self.blob).decode(),
            "api_major": self.api_major,
            "api_minor": self.api_minor,
            "build_id": self.build,
            "policy": f"{self.policy:#x}",
        }


@dataclass(frozen=True)
class RunInfo:
    """How a ``guest run`` ended, and what the guest wrote to its serial port."""

    handle: int
    stop: str
    serial: bytes
    exit_code: int | None
    detail: str

    @classmethod
    def of(cls, handle: int, run_: GuestRun) -> RunInfo:
        return cls(handle, run_.stop, run_.serial, run_.exit_code, run_.detail)

    def as_json(self) -> dict[str, Any]:
        return {
            "handle": self.handle,
            "stop": self.stop,
            "serial": self.serial.decode("utf-8", "replace"),
            "exit_code": self.exit_code,
            "detail": self.detail,
        }


@contextmanager
def _vm(machine: Machine, guest: str | None) -> Iterator[SevVm]:
    with SevDevice.open(machine) as dev:
        yield _select(dev, guest)


def _select(dev: SevDevice, guest: str | None) -> SevVm:
    vms = SevVm.all(dev)
    if guest is None:
        if len(vms) == 1:
            return vms[0]
        if not vms:
            raise SevToolError("no SEV guest on this machine (sevtool guest launch starts one)")
        names = ", ".join(f"{vm.record.handle} ({vm.record.name})" for vm in vms)
        raise SevInputError(f"several guests run here; name one with --guest: {names}")
    for vm in vms:
        if guest in (str(vm.record.handle), vm.record.name):
            return vm
    raise SevInputError(f"no SEV guest {guest!r} on this machine (sevtool guest list)")


def launch(
    machine: Machine,
    firmware: Path,
    *,
    policy: int,
    session: Path | None = None,
    dh_cert: Path | None = None,
    kernel: Path | None = None,
    initrd: Path | None = None,
    cmdline: str | None = None,
    name: str | None = None,
    memory: int = DEFAULT_MEMORY,
) -> LaunchInfo:
    """Start a guest from ``firmware``: LAUNCH_START, ACTIVATE, LAUNCH_UPDATE_DATA."""
    if (session is None) != (dh_cert is None):
        raise SevInputError("--session and --dh-cert come together (the guest owner's files)")
    image = read_file(firmware, "firmware image", max_size=MAX_FIRMWARE)
    blobs = (
        read_session_files(dh_cert, session)
        if dh_cert is not None and session is not None
        else (None, None)
    )
    footer = footer_table(image[-4096:])
    table = _hashes_table(kernel, initrd, cmdline)
    with SevDevice.open(machine) as dev:
        label = name or f"guest{len(SevVm.all(dev)) + 1}"
        try:
            vm = SevVm.create(dev, name=label, memory_size=memory, firmware_size=len(image),
                              policy=policy, godh=blobs[0], session=blobs[1])  # fmt: skip
        except PspError as exc:
            if dh_cert is None or session is None or exc.command != SevCommand.LAUNCH_START:
                raise
            raise explain_launch_start(exc, dh_cert, session, policy) from exc
        vm.load(vm.record.flash_gpa, image)
        vm.launch_update_data(vm.record.flash_gpa, len(image))
        digest = hashlib.sha256(image)
        hashes_gpa = None
        if table is not None:
            hashes_gpa = _hashes_gpa(footer, len(table), firmware)
            vm.load(hashes_gpa, table)
            vm.launch_update_data(hashes_gpa, len(table))
            digest.update(table)
        vm.record.secret_gpa = footer_u32(footer, SEV_SECRET_BLOCK) or 0
        vm.record.secret_size = footer_u32(footer, SEV_SECRET_BLOCK, 1) or 0
        vm.save()
        return LaunchInfo(GuestInfo.of(vm), digest.digest(), hashes_gpa)


def _hashes_table(kernel: Path | None, initrd: Path | None, cmdline: str | None) -> bytes | None:
    if kernel is None:
        if initrd is not None or cmdline is not None:
            raise SevInputError("--initrd and --cmdline need --kernel")
        return None

    def digest(path: Path | None, what: str) -> bytes:
        data = b"" if path is None else read_file(path, what, max_size=MAX_KERNEL)
        return hashlib.sha256(data).digest()

    kernel_hash = digest(kernel, "kernel")
    return kernel_hashes_table(kernel_hash, digest(initrd, "initrd"), cmdline_hash(cmdline))


def _hashes_gpa(footer: dict[Any, bytes], size: int, firmware: Path) -> int:
    base = footer_u32(footer, SEV_HASH_TABLE_RV)
    room = footer_u32(footer, SEV_HASH_TABLE_RV, 1) or 0
    if base is None:
        raise SevInputError(
            f"kernel specified but firmware {firmware} does not support kernel/initrd/cmdline "
            "measurement (its footer has no SEV hash table entry)"
        )
    if size > room:
        raise SevInputError(
            f"firmware {firmware}'s SEV hash table area ({room} bytes) is too small"
        )
    return base


def measure(machine: Machine, guest: str | None = None) -> MeasureInfo:
    """LAUNCH_MEASURE: the guest moves to LSECRET; the blob goes to its owner."""
    with _vm(machine, guest) as vm:
        blob = vm.launch_measure()
        major, minor, build = vm.dev.psp.api
        return MeasureInfo(vm.record.handle, blob, major, minor, build, vm.status().policy)


def inject_secret(
    machine: Machine, header: Path, payload: Path, *, gpa: int | None = None,
    guest: str | None = None,
) -> int:  # fmt: skip
    """LAUNCH_SECRET of the owner's packet at ``gpa`` (default: the firmware's secret
    area); returns the address used."""
    head = read_blob(header, "secret header", SECRET_HEADER_SIZE)
    body = _read_payload(payload)
    with _vm(machine, guest) as vm:
        if gpa is None:
            if not vm.record.secret_size:
                raise SevInputError(
                    "the guest's firmware names no secret area (footer GUID "
                    f"{SEV_SECRET_BLOCK}); give --gpa"
                )
            if len(body) > vm.record.secret_size:
                raise SevInputError(
                    f"the secret ({len(body)} bytes) is larger than the firmware's secret "
                    f"area ({vm.record.secret_size} bytes)"
                )
            gpa = vm.record.secret_gpa
        vm.launch_secret(head, body, gpa)
        return gpa


def _read_payload(path: Path) -> bytes:
    raw = read_file(path, "secret payload", max_size=2 * MAX_SECRET + 64)
    if len(raw) % 16 == 0 and len(raw) <= MAX_SECRET:
        return raw  # sevctl writes the payload as binary, a multiple of 16 bytes
    try:
        return base64.b64decode(b"".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SevInputError(
            f"secret payload {path} is neither a binary packet (a multiple of 16 bytes, at "
            f"most {MAX_SECRET}) nor base64"
        ) from None


def finish(machine: Machine, guest: str | None = None) -> GuestInfo:
    """LAUNCH_FINISH: the guest can run."""
    with _vm(machine, guest) as vm:
        vm.launch_finish()
        return GuestInfo.of(vm)


def run(machine: Machine, guest: str | None = None, *, budget: int = DEFAULT_BUDGET) -> RunInfo:
    """Run the guest's own code until it halts, powers off, faults or uses ``budget``."""
    with _vm(machine, guest) as vm:
        if GuestState(vm.status().state) != GuestState.RUNNING:
            raise SevToolError(
                f"guest {vm.record.handle} is {GuestState(vm.status().state).name}, not RUNNING",
                hint="finish its launch first (sevtool guest finish)",
            )
        return RunInfo.of(vm.record.handle, run_guest(vm, budget))


def list_guests(machine: Machine) -> list[GuestInfo]:
    with SevDevice.open(machine) as dev:
        return [GuestInfo.of(vm) for vm in SevVm.all(dev)]


def status(machine: Machine, guest: str | None = None) -> GuestInfo:
    """GUEST_STATUS, with the hypervisor's view of the VM."""
    with _vm(machine, guest) as vm:
        return GuestInfo.of(vm)


def _check_span(length: int) -> None:
    if not 0 < length <= MAX_DUMP:
        raise SevInputError(f"length must be 1 to {MAX_DUMP} bytes, not {length}")


def dump(machine: Machine, gpa: int, length: int, guest: str | None = None) -> bytes:
    """Guest memory as the hypervisor reads it: ciphertext where the guest is private."""
    _check_span(length)
    with _vm(machine, guest) as vm:
        return vm.host_read(gpa, length)


def debug_decrypt(machine: Machine, gpa: int, length: int, guest: str | None = None) -> bytes:
    """DBG_DECRYPT: guest memory through the guest's key (refused under NODBG)."""
    _check_span(length)
    with _vm(machine, guest) as vm:
        return vm.dbg_decrypt(gpa, length)


def decommission(machine: Machine, guest: str | None = None) -> int:
    """DEACTIVATE and DECOMMISSION; the guest's memory is freed. Returns its handle."""
    with _vm(machine, guest) as vm:
        vm.decommission()
        return vm.record.handle
