"""Rich tables for ``hwsim status`` and ``hwsim profiles`` (imported only to print)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hwsim.bios import format_size
from hwsim.profiles import Profile
from hwsim.status import MachineStatus

__all__ = ["render_profiles", "render_status"]


def render_profiles(out: Console, profiles: list[Profile]) -> None:
    table = Table(title="CPU profiles")
    for column in ("name", "vendor", "features", "details", "description"):
        table.add_column(column)
    for p in profiles:
        table.add_row(
            p.name + ("" if p.real else " (not a real part)"),
            p.vendor,
            " ".join(p.features()),
            _details(p),
            p.description,
        )
    out.print(table)


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


def render_status(out: Console, st: MachineStatus) -> None:
    # The path is the user's text: escaped, or "[/]" in it is a rich MarkupError.
    table = Table(title=f"machine {escape(str(st.path))}", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    real = "" if st.profile.real else " (not a real part)"
    table.add_row("profile", f"{st.profile.name}{real}: {st.profile.description}")
    table.add_row("features", " ".join(st.profile.features()) or "-")
    table.add_row("boot count", str(st.boot_count))
    for key, value in st.bios.items():
        pending = f"  (next boot: {st.pending[key]})" if key in st.pending else ""
        table.add_row(f"bios {key}", f"{_value(value)}{pending}")
    for name, value in st.msrs.items():
        table.add_row(f"msr {name}", f"{value:#018x}")
    table.add_row("key slots", ", ".join(str(k) for k in st.key_slots) or "-")
    table.add_row("DRAM pages", str(st.dram_pages))
    if st.profile.sgx1:
        table.add_row("SGX vendor MRSIGNER", st.sgx_vendor_mrsigner.hex())
    table.add_row("schema version", str(st.schema_version))
    out.print(table)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) or '""'
