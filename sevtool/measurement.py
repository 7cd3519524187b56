"""The guest owner's launch measurement: compute it as sevctl does, check the platform's.

measure = HMAC-SHA256(TIK, 0x04 || api major || api minor || build || LE32(policy) ||
launch digest || mnonce) (``hwsim.sev.session.launch_measurement``). The launch digest is
given, or computed from the guest's images as QEMU loads them: SHA-256 over the OVMF
image, then, with a kernel, OVMF's kernel-hashes table (cmdline with its trailing NUL,
initrd, kernel; ``hwsim.sev.ovmf``), the algorithm of sevctl ``measurement build`` and
libvirt's ``virt-qemu-sev-validate``. Images are hashed as streams, so memory stays flat.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwsim.sev.arch import MEASURE_SIZE, GuestPolicy, LaunchMeasure
from hwsim.sev.ovmf import (
    SEV_HASH_TABLE_RV,
    cmdline_hash,
    footer_table,
    footer_u32,
    kernel_hashes_table,
)
from hwsim.sev.session import launch_measurement
from memcrypt.errors import InvalidInput
from sevtool.errors import SevInputError, SevToolError

if TYPE_CHECKING:
    from hwsim.sev.session import TransportKeys

__all__ = [
    "MAX_FIRMWARE",
    "MAX_KERNEL",
    "GuestImage",
    "Measurement",
    "MeasurementMismatch",
    "PlatformVersion",
    "build_measurement",
    "launch_digest",
    "split_measure_blob",
    "verify_measurement",
]

# OVMF images are 2-4 MiB; the flash window below 4 GiB that holds them is far smaller
# than this. Kernel and initrd are streamed, so their bound only caps the time spent.
MAX_FIRMWARE = 64 * 1024 * 1024
MAX_KERNEL = 1024 * 1024 * 1024
_CHUNK = 1024 * 1024
_FOOTER_SPAN = 4096


@dataclass(frozen=True)
class PlatformVersion:
    """The firmware's API version and build, as PLATFORM_STATUS (``sevtool show``) has them."""

    api_major: int
    api_minor: int
    build_id: int

    def __post_init__(self) -> None:
        for name in ("api_major", "api_minor", "build_id"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise SevInputError(f"--{name.replace('_', '-')} must be 0-255")


@dataclass(frozen=True)
class GuestImage:
    """The images QEMU measures: OVMF, and optionally a kernel with initrd and cmdline."""

    firmware: Path
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    # SEV-ES: the boot vCPU's VMSA, and the one every other vCPU starts with.
    num_cpus: int = 0
    vmsa_cpu0: Path | None = None
    vmsa_cpu1: Path | None = None

    def __post_init__(self) -> None:
        if self.kernel is None and (self.initrd is not None or self.cmdline is not None):
            raise SevInputError("--initrd and --cmdline are measured only with --kernel")
        given = self.num_cpus > 0 or self.vmsa_cpu0 is not None or self.vmsa_cpu1 is not None
        whole = self.num_cpus > 0 and self.vmsa_cpu0 is not None
        if given and not (whole and (self.vmsa_cpu1 is not None or self.num_cpus == 1)):
            raise SevInputError(
                "an SEV-ES digest needs --num-cpus N (1 or more), --vmsa-cpu0 and, for more "
                "than one vCPU, --vmsa-cpu1 (`sevtool vmsa build`)"
            )


@dataclass(frozen=True)
class Measurement:
    """A launch measurement with the inputs it came from (the TIK is not kept)."""

    measure: bytes
    mnonce: bytes
    digest: bytes

    @property
    def blob(self) -> bytes:
        """measure || mnonce: LAUNCH_MEASURE's output, and what sevctl prints."""
        return LaunchMeasure(self.measure, self.mnonce).pack()

    def as_json(self) -> dict[str, Any]:
        return {
            "measurement": base64.b64encode(self.blob).decode(),
            "measure": self.measure.hex(),
            "mnonce": self.mnonce.hex(),
            "launch_digest": self.digest.hex(),
        }


def split_measure_blob(blob: bytes, what: str = "launch measure blob") -> LaunchMeasure:
    """The 48 bytes QEMU's ``query-sev-launch-measure`` reports: measure, then nonce."""
    if len(blob) != MEASURE_SIZE:
        raise SevInputError(f"{what} must be {MEASURE_SIZE} bytes, got {len(blob)}")
    return LaunchMeasure.unpack(blob)


def _stream(path: Path, what: str, limit: int, into: Any) -> None:
    try:
        with path.open("rb") as f:
            total = 0
            while chunk := f.read(_CHUNK):
                total += len(chunk)
                if total > limit:
                    raise SevInputError(f"{what} {path} is larger than {limit} bytes")
                into.update(chunk)
    except OSError as exc:
        raise SevInputError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _file_hash(path: Path | None, what: str) -> bytes:
    digest = hashlib.sha256()
    if path is not None:
        _stream(path, what, MAX_KERNEL, digest)
    return digest.digest()


def _footer(path: Path) -> dict[Any, bytes]:
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - _FOOTER_SPAN))
            tail = f.read()
    except OSError as exc:
        raise SevInputError(f"cannot read firmware {path}: {exc.strerror}") from exc
    try:
        return footer_table(tail)
    except InvalidInput as exc:
        raise SevInputError(f"firmware {path}: {exc}") from exc


def _hashes_table(image: GuestImage, cmdline: str | None) -> bytes:
    if image.kernel is None:
        return b""
    if footer_u32(_footer(image.firmware), SEV_HASH_TABLE_RV) is None:
        raise SevInputError(
            f"Kernel specified but OVMF doesn't support kernel/initrd/cmdline measurement: "
            f"{image.firmware} has no SEV hash table entry in its footer",
            hint="use an OVMF built for SEV (AmdSevX64), or boot the kernel from the disk",
        )
    return kernel_hashes_table(
        _file_hash(image.kernel, "kernel"),
        _file_hash(image.initrd, "initrd"),
        cmdline_hash(cmdline),
    )


def _firmware_hash(image: GuestImage) -> Any:
    digest = hashlib.sha256()
    _stream(image.firmware, "firmware", MAX_FIRMWARE, digest)
    return digest


def launch_digest(image: GuestImage, policy: int) -> bytes:
    """The SEV launch digest of ``image``: SHA-256(OVMF || kernel-hashes table)."""
    es = bool(policy & GuestPolicy.ES)
    if es != (image.num_cpus > 0):
        raise SevInputError(
            f"policy {policy:#x} has the ES bit: an SEV-ES launch digest also covers the vCPUs' "
            "VMSAs; give --num-cpus, --vmsa-cpu0 and --vmsa-cpu1 (`sevtool vmsa build`)"
            if es
            else f"--num-cpus and the VMSAs are measured only with the ES policy bit (0x4); "
            f"policy {policy:#x} does not have it"
        )
    digest = _firmware_hash(image)
    digest.update(_hashes_table(image, image.cmdline))
    if es:
        _update_vmsas(digest, image)
    result: bytes = digest.digest()
    return result


def _update_vmsas(digest: Any, image: GuestImage) -> None:
    """SEV-ES: LAUNCH_UPDATE_VMSA measures VMSA0 then VMSA1 once per other vCPU (sevctl
    ``build_cpu_state``; ``shared/reference/sev.md`` 2.4)."""
    from hwsim.sev.arch import VMSA_SIZE
    from memcrypt.files import read_file

    def vmsa(path: Path | None, what: str) -> bytes:
        assert path is not None
        data = read_file(path, what, max_size=VMSA_SIZE + 1)
        if len(data) != VMSA_SIZE:
            raise SevInputError(f"{what} {path} must be {VMSA_SIZE} bytes, got {len(data)}")
        return data

    digest.update(vmsa(image.vmsa_cpu0, "--vmsa-cpu0"))
    if image.num_cpus > 1:
        ap = vmsa(image.vmsa_cpu1, "--vmsa-cpu1")
        for _ in range(image.num_cpus - 1):
            digest.update(ap)


def build_measurement(
    tik: bytes, version: PlatformVersion, policy: int, digest: bytes, mnonce: bytes
) -> Measurement:
    """The measurement the platform must report for these inputs."""
    if len(digest) != 32:
        raise SevInputError(f"the launch digest must be 32 bytes, got {len(digest)}")
    if len(mnonce) != 16:
        raise SevInputError(f"the nonce must be 16 bytes, got {len(mnonce)}")
    measure = launch_measurement(
        tik,
        api_major=version.api_major,
        api_minor=version.api_minor,
        build=version.build_id,
        policy=policy,
        digest=digest,
        mnonce=mnonce,
    )
    return Measurement(measure, mnonce, digest)


class MeasurementMismatch(SevToolError):
    """The reported measurement is not the expected one (exit 1)."""

    def __init__(self, expected: Measurement, reported: bytes, finding: str | None) -> None:
        recheck = (
            "recheck: the TIK (this session's, not its TEK), --policy, --api-major/"
            "--api-minor/--build-id (the platform's, `sevtool show`), the firmware, kernel, "
            "initrd and --cmdline (exact bytes), and that the blob is from this launch"
        )
        super().__init__(
            "measurement does not match: the platform did not launch what you expected",
            hint=finding or recheck,
        )
        self.expected = expected
        self.reported = reported
        self.finding = finding


def _digest_variants(image: GuestImage) -> Iterator[tuple[str, bytes]]:
    """Digests of the usual mistakes (libvirt's "common mistakes" list), for diagnosis."""
    if image.kernel is None:
        return
    base = _firmware_hash(image)
    yield "the kernel-hashes table was not measured (QEMU kernel-hashes=off)", base.digest()
    cmdline = image.cmdline or ""
    for label, variant in (
        ("the command line without its trailing whitespace", cmdline.rstrip()),
        ("the command line with a trailing newline", cmdline + "\n"),
    ):
        if variant != cmdline:
            with_table = base.copy()
            with_table.update(_hashes_table(image, variant))
            yield f"{label} was measured", with_table.digest()


def verify_measurement(
    keys: TransportKeys,
    version: PlatformVersion,
    policy: int,
    digest: bytes,
    reported: bytes,
    *,
    image: GuestImage | None = None,
    tek_given: bool = False,
) -> Measurement:
    """Check the platform's LAUNCH_MEASURE blob; raise MeasurementMismatch naming a cause."""
    blob = split_measure_blob(reported)
    expected = build_measurement(keys.tik, version, policy, digest, blob.mnonce)
    if hmac.compare_digest(expected.measure, blob.measure):
        return expected
    raise MeasurementMismatch(
        expected, reported, _diagnose(keys, version, policy, digest, blob, image, tek_given)
    )


def _diagnose(
    keys: TransportKeys,
    version: PlatformVersion,
    policy: int,
    digest: bytes,
    blob: LaunchMeasure,
    image: GuestImage | None,
    tek_given: bool,
) -> str | None:
    def matches(key: bytes, candidate: bytes) -> bool:
        mac = build_measurement(key, version, policy, candidate, blob.mnonce).measure
        return hmac.compare_digest(mac, blob.measure)

    if tek_given and matches(keys.tek, digest):
        return "it matches with the TEK as the key: the TIK and TEK files are swapped"
    for what, candidate in _digest_variants(image) if image else ():
        if matches(keys.tik, candidate):
            return f"it matches if {what}: launch with the same settings as measured"
    return None
