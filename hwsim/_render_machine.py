"""What ``hwsim status`` and ``hwsim profiles`` print (tables on a terminal, plain in a pipe)."""

from __future__ import annotations

from collections.abc import Iterator

from hwsim.bios import format_size
from hwsim.memview import MAP_COLUMNS, map_rows
from hwsim.profiles import Profile
from hwsim.status import MachineStatus
from memcrypt.cli import is_plain, print_fields, print_records

__all__ = ["render_profiles", "render_status"]


def render_profiles(profiles: list[Profile]) -> None:
    print_records(
        ("name", "vendor", "features", "details", "description"),
        [
            (
                p.name + ("" if p.real else " (not a real part)"),
                p.vendor,
                " ".join(p.features()),
                _details(p),
                p.description,
            )
            for p in profiles
        ],
        title="CPU profiles",
    )


def _details(p: Profile) -> str:
    parts = []
    if p.sgx1:
        parts.append(f"EPC up to {format_size(p.epc_size)}")
    if p.sme:
        parts.append(f"C-bit {p.cbit}, -{p.phys_addr_reduction} addr bits")
    if p.sev:
        major, minor, _build = p.sev_api
        parts.append(f"{p.sev_asids} ASIDs (SEV from {p.min_sev_asid}), API {major}.{minor}")
    return "; ".join(parts)


def render_status(st: MachineStatus) -> None:
    head = [("machine", str(st.path))] if is_plain() else []
    print_fields([*head, *_status_rows(st)], title=f"machine {st.path}")
    print_records(MAP_COLUMNS, map_rows(st.memory_map), title="physical memory map")


def _status_rows(st: MachineStatus) -> Iterator[tuple[str, str]]:
    real = "" if st.profile.real else " (not a real part)"
    yield "profile", f"{st.profile.name}{real}: {st.profile.description}"
    yield "features", " ".join(st.profile.features()) or "-"
    yield "boot count", str(st.boot_count)
    for key, value in st.bios.items():
        pending = f"  (next boot: {st.pending[key]})" if key in st.pending else ""
        yield f"bios {key}", f"{_value(value)}{pending}"
    for name, value in st.msrs.items():
        yield f"msr {name}", f"{value:#018x}"
    yield "key slots", ", ".join(str(k) for k in st.key_slots) or "-"
    yield "DRAM pages", str(st.dram_pages)
    for usage in st.dram_by_key:
        keyid = "unencrypted" if usage.keyid is None else f"key id {usage.keyid:#x}"
        yield f"DRAM {keyid}", f"{usage.pages} pages ({usage.owner})"
    epc = st.epc_protection
    if epc is not None:
        guards = [g for g, on in (("integrity", epc.integrity), ("freshness", epc.freshness)) if on]
        what = ", ".join(["confidentiality", *guards])
        cpuid = f"CPUID.(12H,2):ECX[3:0] = {epc.cpuid_protection}"
        yield "EPC engine", f"{epc.engine}: {what} ({cpuid})"
    if st.profile.sgx1:
        yield "SGX vendor MRSIGNER", st.sgx_vendor_mrsigner.hex()
    yield "schema version", str(st.schema_version)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) or '""'
