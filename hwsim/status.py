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
from hwsim.memview import KeyUsage, Region, dram_usage, memory_map
from hwsim.profiles import Profile

__all__ = ["EpcProtection", "MachineStatus", "machine_status", "profile_dict"]


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
    dram_by_key: list[KeyUsage]
    epc_protection: EpcProtection | None  # None: no EPC at this boot
    memory_map: list[Region]  # the one map, as ``hwsim mem map`` prints it

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
            "dram_by_key": [u.as_json() for u in self.dram_by_key],
            "epc": None if self.epc_protection is None else self.epc_protection.as_json(),
            "memory_map": [r.as_json() for r in self.memory_map],
        }


@dataclass(frozen=True)
class EpcProtection:
    """What the EPC engine protects against in DRAM, and what CPUID.(12H,2):ECX[3:0] says."""

    engine: str
    integrity: bool
    freshness: bool
    cpuid_protection: int  # 1: confidentiality, integrity and replay; 2: confidentiality

    @property
    def consistent(self) -> bool:
        """CPUID advertises integrity exactly when the engine has it."""
        return (self.cpuid_protection == 1) == self.integrity

    def as_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "integrity": self.integrity,
            "freshness": self.freshness,
            "cpuid_12_2_ecx_protection": self.cpuid_protection,
        }


def _epc_protection(machine: Machine) -> EpcProtection | None:
    with machine.transaction(write=False) as txn:
        prm = txn.engine.prm()
        if prm is None:
            return None
        ecx = txn.cpuid(0x12, 2)[2]
    engine = prm.engine
    return EpcProtection(engine.value, engine.integrity, engine.freshness, ecx & 0xF)


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
            dram_by_key=dram_usage(machine),
            epc_protection=_epc_protection(machine),
            memory_map=memory_map(machine),
        )
