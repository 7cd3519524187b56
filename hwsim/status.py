"""What ``hwsim status`` reports about a machine, as one typed snapshot.

Read in one transaction, so the figures are consistent with each other. Secrets never
appear: key slots are listed by id only, fused and boot roots not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsim import cpu
from hwsim.machine import Machine
from hwsim.profiles import Profile

__all__ = ["MachineStatus", "machine_status", "profile_dict"]


@dataclass(frozen=True)
class MachineStatus:
    path: Path
    profile: Profile
    schema_version: int
    boot_count: int
    bios: dict[str, Any]  # the settings in force since the last power cycle
    pending: dict[str, Any]  # machine.toml settings that differ, applied at the next one
    msrs: dict[str, int]
    key_slots: list[int]
    dram_pages: int
    sgx_vendor_mrsigner: bytes
    namespaces: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        """The stable ``hwsim status --json`` schema."""
        return {
            "path": str(self.path),
            "profile": profile_dict(self.profile),
            "schema_version": self.schema_version,
            "boot_count": self.boot_count,
            "bios": self.bios,
            "pending_bios": self.pending,
            "msrs": {name: f"{value:#018x}" for name, value in self.msrs.items()},
            "key_slots": self.key_slots,
            "dram_pages": self.dram_pages,
            "sgx_vendor_mrsigner": self.sgx_vendor_mrsigner.hex(),
            "namespaces": self.namespaces,
        }


def profile_dict(profile: Profile) -> dict[str, Any]:
    """A profile as JSON: identity, feature list and the figures CPUID reports."""
    return {
        "name": profile.name,
        "description": profile.description,
        "real": profile.real,
        "vendor": profile.vendor,
        "features": profile.features(),
        "epc_size": profile.epc_size,
        "cbit": profile.cbit,
        "phys_addr_reduction": profile.phys_addr_reduction,
        "sev_asids": profile.sev_asids,
        "min_sev_asid": profile.min_sev_asid,
        "sev_api": ".".join(str(x) for x in profile.sev_api[:2]) if profile.sev else None,
    }


def machine_status(machine: Machine) -> MachineStatus:
    """A consistent snapshot of ``machine`` for people and scripts."""
    with machine.transaction(write=False) as txn:
        booted = txn.booted_config().as_dict()
        current = machine.config.as_dict()
        present = [m for m in cpu.MSRS.values() if m.present(machine.profile)]
        counts = txn.db.execute("SELECT ns, count(*) FROM kv GROUP BY ns ORDER BY ns")
        return MachineStatus(
            path=machine.path,
            profile=machine.profile,
            schema_version=machine.schema_version,
            boot_count=machine.boot_count,
            bios=booted,
            pending={k: v for k, v in current.items() if booted.get(k) != v},
            # The raw values, as a debugger on the package would show them.
            msrs={m.name: cpu.raw_msr(txn, m.index) for m in present},
            key_slots=txn.engine.key_ids(),
            dram_pages=txn.engine.page_count(),
            sgx_vendor_mrsigner=txn.sgx_vendor_key_hash(),
            namespaces={str(ns): int(n) for ns, n in counts},
        )
