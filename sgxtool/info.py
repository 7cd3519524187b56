"""Inspecting enclaves: decode SIGSTRUCTs, measure, and verify signed images.

Each function returns a typed result whose ``as_json()`` is the ``--json`` schema;
rendering is the CLI's job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsim.sgx.arch import (
    SIGSTRUCT_HEADER,
    SIGSTRUCT_HEADER2,
    VENDOR_INTEL,
    Attributes,
    Sigstruct,
    Xfrm,
)
from hwsim.sgx.sigcheck import SigstructError, check_sigstruct
from memcrypt.files import read_file
from sgxtool.config import EnclaveConfig
from sgxtool.errors import UsageError, VerificationError
from sgxtool.image import ImageKind, detect, layout_of, read_image
from sgxtool.intelso import IntelMetadata, intel_layout, read_metadata
from sgxtool.layout import EnclaveLayout
from sgxtool.measure import Progress, mrenclave
from sgxtool.sgxs import sgxs_mrenclave

__all__ = [
    "Description",
    "LayoutSummary",
    "Loaded",
    "Measurement",
    "Verification",
    "describe",
    "describe_sigstruct",
    "load_sigstruct",
    "measure",
    "verify",
]


@dataclass(frozen=True)
class Loaded:
    """A file's SIGSTRUCT (if any) and how to get its layout."""

    kind: ImageKind
    sigstruct_raw: bytes | None
    config: EnclaveConfig | None


def load_sigstruct(path: Path) -> Loaded:
    """Read whatever ``path`` is: signed image, raw SIGSTRUCT, ELF or SGXS."""
    kind = detect(path)
    if kind is ImageKind.SIGNED_ELF:
        image = read_image(path)
        return Loaded(kind, image.sigstruct_raw, image.config)
    if kind is ImageKind.SIGSTRUCT:
        return Loaded(kind, read_file(path, "SIGSTRUCT"), None)
    if kind is ImageKind.INTEL_SO:
        # Every copy carries the same SIGSTRUCT (sgx_sign copies it after signing).
        return Loaded(kind, read_metadata(path)[0].sigstruct_raw, None)
    return Loaded(kind, None, None)


def describe_sigstruct(sig: Sigstruct) -> dict[str, Any]:
    """Every SIGSTRUCT field, decoded: attributes by name, DATE as a date."""
    from sgxtool.sign import decode_bcd_date  # here: sign loads cryptography, measure must not

    date = decode_bcd_date(sig.date)
    vendor = {0: "0 (none)", VENDOR_INTEL: "0x8086 (Intel)"}.get(sig.vendor, hex(sig.vendor))
    return {
        "header": sig.header.hex(),
        "header2": sig.header2.hex(),
        "vendor": vendor,
        "date": date.isoformat() if date else f"invalid ({sig.date:#010x})",
        "swdefined": sig.swdefined,
        "exponent": sig.exponent,
        "modulus": sig.modulus[::-1].hex(),
        "signature": sig.signature[::-1].hex(),
        "miscselect": f"{sig.miscselect:#010x}",
        "miscmask": f"{sig.miscmask:#010x}",
        "cet_attributes": sig.cet_attributes,
        "cet_attributes_mask": sig.cet_attributes_mask,
        "attributes": _attrs(sig.attributes),
        "attributemask": _attrs(sig.attributemask),
        "isvprodid": sig.isvprodid,
        "isvsvn": sig.isvsvn,
        "isvfamilyid": sig.isvfamilyid.hex(),
        "isvextprodid": sig.isvextprodid.hex(),
        "enclavehash": sig.enclavehash.hex(),
        "mrenclave": sig.enclavehash.hex(),
        "mrsigner": sig.mrsigner.hex(),
        "debug": bool(sig.attributes.flags & 0x2),
        "debug_enforced": bool(sig.attributemask.flags & 0x2),
        "q1": sig.q1[::-1].hex(),
        "q2": sig.q2[::-1].hex(),
    }


def _attrs(a: Attributes) -> dict[str, Any]:
    xfrm = [x.name for x in Xfrm if a.xfrm & x and x.name]
    return {
        "flags": f"{a.flags:#018x}",
        "flag_names": a.flag_names(),
        "xfrm": f"{a.xfrm:#018x}",
        "xfrm_names": xfrm,
    }


def implausible(sig: Sigstruct) -> list[str]:
    """Why ``sig`` does not look like a SIGSTRUCT at all (SDM 38.13's fixed fields), so that
    1808 arbitrary bytes are not shown as if they were one."""
    from sgxtool.sign import decode_bcd_date  # here: sign loads cryptography, measure must not

    problems = []
    if sig.header != SIGSTRUCT_HEADER:
        problems.append(f"HEADER is {sig.header.hex()}, not {SIGSTRUCT_HEADER.hex()}")
    if sig.header2 != SIGSTRUCT_HEADER2:
        problems.append(f"HEADER2 is {sig.header2.hex()}, not {SIGSTRUCT_HEADER2.hex()}")
    if sig.vendor not in (0, VENDOR_INTEL):
        problems.append(f"VENDOR is {sig.vendor:#x}, not 0 or 0x8086")
    if decode_bcd_date(sig.date) is None:
        problems.append(f"DATE {sig.date:#010x} is not a BCD date")
    return problems


@dataclass(frozen=True)
class LayoutSummary:
    """The shape of an enclave's layout: what ECREATE gets and how much is measured."""

    size: int
    ssaframesize: int
    pages: int
    measured_bytes: int
    threads: int
    entry: int

    @classmethod
    def of(cls, layout: EnclaveLayout) -> LayoutSummary:
        return cls(layout.size, layout.ssaframesize, layout.page_count, layout.measured_bytes,
                   len(layout.threads), layout.entry)  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Description:
    """What ``dump`` shows: a file's SIGSTRUCT (and its config), or an SGXS's MRENCLAVE."""

    file: Path
    kind: ImageKind
    mrenclave: bytes
    sigstruct: Sigstruct | None = None
    config: EnclaveConfig | None = None
    intel_metadata: tuple[IntelMetadata, ...] = ()  # an Intel-signed enclave's copies
    warnings: tuple[str, ...] = ()  # why the SIGSTRUCT does not look like one

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": str(self.file), "kind": self.kind.value,
                               "mrenclave": self.mrenclave.hex()}  # fmt: skip
        if self.sigstruct is not None:
            out["sigstruct"] = describe_sigstruct(self.sigstruct)
            out["mrsigner"] = self.sigstruct.mrsigner.hex()
            out["warnings"] = list(self.warnings)
        if self.config is not None:
            out["config"] = self.config.to_toml_dict()
        if self.intel_metadata:
            out["intel_metadata"] = [_describe_copy(c) for c in self.intel_metadata]
        return out


@dataclass(frozen=True)
class Measurement:
    """The MRENCLAVE of a file, with its layout's shape when it was laid out here."""

    file: Path
    kind: ImageKind
    mrenclave: bytes
    layout: LayoutSummary | None = None

    def as_json(self) -> dict[str, Any]:
        out = {"file": str(self.file), "kind": self.kind.value, "mrenclave": self.mrenclave.hex()}
        return out | (self.layout.as_json() if self.layout else {})


@dataclass(frozen=True)
class Verification:
    """The checks a SIGSTRUCT passed, and the identity it carries."""

    file: Path
    checks: tuple[str, ...]
    mrenclave: bytes
    mrsigner: bytes

    @property
    def measured(self) -> bool:
        return "MRENCLAVE" in self.checks

    def as_json(self) -> dict[str, Any]:
        return {"file": str(self.file), "checks": list(self.checks),
                "mrenclave": self.mrenclave.hex(), "mrsigner": self.mrsigner.hex(),
                "measured": self.measured}  # fmt: skip


def describe(path: Path) -> Description:
    """The SIGSTRUCT of a signed image or raw SIGSTRUCT, or the measurement of an SGXS."""
    loaded = load_sigstruct(path)
    if loaded.sigstruct_raw is not None:
        sig = Sigstruct.unpack(loaded.sigstruct_raw)
        intel = tuple(read_metadata(path)) if loaded.kind is ImageKind.INTEL_SO else ()
        return Description(path, loaded.kind, sig.enclavehash, sig, loaded.config, intel,
                           tuple(implausible(sig)))  # fmt: skip
    if loaded.kind is ImageKind.SGXS:
        return Description(path, loaded.kind, sgxs_mrenclave(path))
    raise UsageError(
        f"{path} is an unsigned ELF: nothing to dump",
        hint="use `sgxtool measure ELF -c enclave.toml`",
    )


def _describe_copy(c: IntelMetadata) -> dict[str, Any]:
    """What sgx_sign recorded in one metadata copy, besides the SIGSTRUCT."""
    return {
        "version": c.version_text,
        "file_offset": c.file_offset,
        "enclave_size": c.enclave_size,
        "ssa_frame_size": c.ssa_frame_size,
        "tcs_policy": "unbind" if c.tcs_policy else "bind",
        "tcs_min_pool": c.tcs_min_pool,
        "desired_misc_select": f"{c.desired_misc_select:#010x}",
        "attributes": {"flags": f"{c.attributes[0]:#018x}", "xfrm": f"{c.attributes[1]:#018x}"},
        "layout_records": len(c.entries),
        "patches": len(c.patches),
    }


def measure(
    path: Path, config: EnclaveConfig | None, progress: Progress | None = None
) -> Measurement:
    """MRENCLAVE of an ELF with its config, of a signed image, or of an SGXS stream."""
    kind = detect(path)
    if kind is ImageKind.SGXS:
        return Measurement(path, kind, sgxs_mrenclave(path))
    layout = _layout(path, kind, config)
    return Measurement(path, kind, mrenclave(layout, progress), LayoutSummary.of(layout))


def _mrenclave(path: Path, config: EnclaveConfig | None, progress: Progress | None) -> bytes:
    """MRENCLAVE of an enclave file, streamed: an SGXS is hashed as it is read."""
    kind = detect(path)
    if kind is ImageKind.SGXS:
        return sgxs_mrenclave(path)
    return mrenclave(_layout(path, kind, config), progress)


def _layout(path: Path, kind: ImageKind, config: EnclaveConfig | None) -> EnclaveLayout:
    if kind is ImageKind.SIGSTRUCT:
        raise UsageError(
            f"{path} is a SIGSTRUCT; it holds a measurement, it is not one",
            hint="use `sgxtool dump`",
        )
    if kind is ImageKind.INTEL_SO:
        return intel_layout(path)
    if config is None and kind is ImageKind.SIGNED_ELF:
        config = read_image(path).config
    if config is None:
        raise UsageError(
            f"{path} is an ELF: its layout needs an enclave.toml", hint="pass --config enclave.toml"
        )
    return layout_of(path, config)


def verify(
    path: Path,
    *,
    config: EnclaveConfig | None = None,
    enclave: Path | None = None,
    progress: Progress | None = None,
) -> Verification:
    """Check a signature, its exponent and Q1/Q2, and the MRENCLAVE against the enclave.

    ``path`` is a signed image (everything is inside), or a raw SIGSTRUCT with ``enclave``
    (an ELF plus ``config``, or an SGXS stream) to measure. Raises naming the failing check.
    """
    loaded = load_sigstruct(path)
    if loaded.sigstruct_raw is None:
        raise UsageError(f"{path} is a {loaded.kind.value}, not a signed image or SIGSTRUCT")
    try:
        sig = check_sigstruct(loaded.sigstruct_raw)
    except SigstructError as exc:
        raise VerificationError(f"{path}: {exc}") from exc
    checks = ["format", "exponent", "signature", "Q1/Q2"]
    source = path if loaded.kind in (ImageKind.SIGNED_ELF, ImageKind.INTEL_SO) else enclave
    if source is not None:
        measured = _mrenclave(source, config or loaded.config, progress)
        if measured != sig.enclavehash:
            raise VerificationError(
                f"{path}: MRENCLAVE mismatch: the enclave measures {measured.hex()}, "
                f"the SIGSTRUCT says {sig.enclavehash.hex()}",
                hint="the enclave or its configuration changed after signing",
            )
        checks.append("MRENCLAVE")
    return Verification(path, tuple(checks), sig.enclavehash, sig.mrsigner)
