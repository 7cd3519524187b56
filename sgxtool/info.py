"""Inspecting enclaves: decode SIGSTRUCTs, measure, and verify signed images.

Each function returns plain data (the ``--json`` schema); rendering is the CLI's job.
"""

from __future__ import annotations

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
from sgxtool.build import layout_of
from sgxtool.config import EnclaveConfig
from sgxtool.errors import UsageError, VerificationError
from sgxtool.image import ImageKind, detect, read_image
from sgxtool.intelso import IntelMetadata, intel_layout, read_metadata
from sgxtool.layout import EnclaveLayout
from sgxtool.measure import Progress, mrenclave
from sgxtool.sgxs import read_sgxs, sgxs_mrenclave
from sgxtool.sign import decode_bcd_date

__all__ = ["Loaded", "describe", "describe_sigstruct", "load_sigstruct", "measure", "verify"]


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


def describe(path: Path, progress: Progress | None = None) -> dict[str, Any]:
    """What ``dump`` shows: the SIGSTRUCT decoded, or the measurement of an SGXS stream."""
    loaded = load_sigstruct(path)
    out: dict[str, Any] = {"file": str(path), "kind": loaded.kind.value}
    if loaded.sigstruct_raw is not None:
        sig = Sigstruct.unpack(loaded.sigstruct_raw)
        out["sigstruct"] = describe_sigstruct(sig)
        out["warnings"] = implausible(sig)
        out["mrenclave"] = out["sigstruct"]["mrenclave"]
        out["mrsigner"] = out["sigstruct"]["mrsigner"]
    elif loaded.kind is ImageKind.SGXS:
        out["mrenclave"] = sgxs_mrenclave(path).hex()
    else:
        raise UsageError(
            f"{path} is an unsigned ELF: nothing to dump",
            hint="use `sgxtool measure ELF -c enclave.toml`",
        )
    if loaded.config is not None:
        out["config"] = loaded.config.to_toml_dict()
    if loaded.kind is ImageKind.INTEL_SO:
        out["intel_metadata"] = [_describe_copy(c) for c in read_metadata(path)]
    return out


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
) -> dict[str, Any]:
    """MRENCLAVE of an ELF with its config, of a signed image, or of an SGXS stream."""
    kind = detect(path)
    if kind is ImageKind.SGXS:
        return {"file": str(path), "kind": kind.value, "mrenclave": sgxs_mrenclave(path).hex()}
    layout = _layout(path, kind, config)
    return {
        "file": str(path),
        "kind": kind.value,
        "mrenclave": mrenclave(layout, progress).hex(),
        **layout_summary(layout),
    }


def _layout(path: Path, kind: ImageKind, config: EnclaveConfig | None) -> EnclaveLayout:
    if kind is ImageKind.SIGSTRUCT:
        raise UsageError(
            f"{path} is a SIGSTRUCT; it holds a measurement, it is not one",
            hint="use `sgxtool dump`",
        )
    if kind is ImageKind.SGXS:
        return read_sgxs(path)
    if kind is ImageKind.INTEL_SO:
        return intel_layout(path)
    if config is None and kind is ImageKind.SIGNED_ELF:
        config = read_image(path).config
    if config is None:
        raise UsageError(
            f"{path} is an ELF: its layout needs an enclave.toml", hint="pass --config enclave.toml"
        )
    return layout_of(path, config)


def layout_summary(layout: EnclaveLayout) -> dict[str, Any]:
    return {
        "size": layout.size,
        "ssaframesize": layout.ssaframesize,
        "pages": layout.page_count,
        "measured_bytes": layout.measured_bytes,
        "threads": len(layout.threads),
        "entry": layout.entry,
    }


def verify(
    path: Path,
    *,
    config: EnclaveConfig | None = None,
    enclave: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
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
        layout = _layout(source, detect(source), config or loaded.config)
        measured = mrenclave(layout, progress)
        if measured != sig.enclavehash:
            raise VerificationError(
                f"{path}: MRENCLAVE mismatch: the enclave measures {measured.hex()}, "
                f"the SIGSTRUCT says {sig.enclavehash.hex()}",
                hint="the enclave or its configuration changed after signing",
            )
        checks.append("MRENCLAVE")
    return {
        "file": str(path),
        "checks": checks,
        "mrenclave": sig.enclavehash.hex(),
        "mrsigner": sig.mrsigner.hex(),
        "measured": source is not None,
    }
