"""Every attack under every protection, each column on a scratch machine of its own.

The scratch machines live in a temporary directory that is deleted at the end: the
user's machine, its BIOS settings and its guests are never touched. A column runs on the
preferred profile (the user's machine's, by default) when that part has the feature, else
on the first real part that has it (SGX1's MEE exists only on ``skylake``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwsim.attacks import ATTACKS, AttackResult, Target, run_attack
from hwsim.machine import Machine
from hwsim.profiles import DEFAULT_PROFILE, PROFILES, EpcEngine, Profile
from hwsim.sme.boot import configure

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from hwsim.bios import BiosConfig
    from hwsim.machine import Transaction

__all__ = ["COLUMNS", "DESIGNED_FOR", "Column", "Matrix", "run_matrix"]


def _no_encryption(machine: Machine) -> None:
    p = machine.profile

    def change(_txn: Transaction, now: BiosConfig) -> BiosConfig:
        return now.with_setting(p, "sme_enabled", "false").with_setting(p, "tsme", "false")

    if p.sme:
        machine.change_config(change)


def _sme(machine: Machine) -> None:
    configure(machine, enable=True)


def _tsme(machine: Machine) -> None:
    p = machine.profile

    def change(_txn: Transaction, now: BiosConfig) -> BiosConfig:
        now = now.with_setting(p, "tsme", "true").with_setting(p, "sme_enabled", "false")
        return dataclasses.replace(now, kernel=dataclasses.replace(now.kernel, mem_encrypt=""))

    machine.change_config(change)


def _as_made(_machine: Machine) -> None:
    """The part's defaults: SEV needs MemEncryptionModEn, which is on by default."""


@dataclass(frozen=True)
class Column:
    name: str
    target: Target
    fits: Callable[[Profile], bool]
    setup: Callable[[Machine], None]


COLUMNS: tuple[Column, ...] = (
    Column("none", Target.HOST, lambda p: True, _no_encryption),
    Column("SME", Target.HOST, lambda p: p.sme, _sme),
    Column("TSME", Target.HOST, lambda p: p.sme, _tsme),
    Column("SEV", Target.SEV, lambda p: p.sev, _as_made),
    Column("SEV-ES", Target.SEV_ES, lambda p: p.sev_es, _as_made),
    Column("SGX (MEE)", Target.ENCLAVE,
           lambda p: p.sgx1 and p.epc_engine is EpcEngine.MEE, _as_made),
    Column("SGX (XTS)", Target.ENCLAVE,
           lambda p: p.sgx1 and p.epc_engine is EpcEngine.XTS, _as_made),
)  # fmt: skip

# Which attacker each protection was designed for, in the terms of the article the
# project started from (LWN, "Two approaches to x86 memory encryption", 2016).
DESIGNED_FOR = {
    "none": "Nothing: every attacker with access to memory reads it.",
    "SME": "Cold-boot attacks, snooping on the memory bus and the disclosure of data left "
    "in persistent memory; not a compromised kernel, to which a running system's memory "
    "might as well not be encrypted. Linux leaves persistent memory decrypted (its key "
    "would change at every boot), so the third threat stays open (pmem row).",
    "TSME": "The same physical attackers as SME, with the BIOS encrypting everything and "
    "no help from the operating system; devices still read through the memory controller.",
    "SEV": "Guests against a benign but vulnerable hypervisor (one key per VM); not a "
    "hypervisor running the attacker's code, which still has the registers, the page "
    "tables and the ciphertext to replay or move (AMD's first-generation threat model).",
    "SEV-ES": "SEV plus the guest's registers, encrypted at every VM exit.",
    "SGX (MEE)": "Enclave contents even when the BIOS, VMM, OS and drivers are compromised, "
    "and against physical attackers: SGX1's engine adds integrity and freshness.",
    "SGX (XTS)": "The same software attackers; in DRAM only encryption, so a physical "
    "attacker can replay enclave pages (Ice Lake-SP's scalable SGX).",
}


@dataclass(frozen=True)
class Matrix:
    """Results by (attack, column name); the profile each column ran on."""

    columns: tuple[Column, ...]
    profiles: dict[str, str]
    cells: dict[tuple[str, str], AttackResult]

    def cell(self, attack: str, column: str) -> AttackResult:
        return self.cells[(attack, column)]

    def as_json(self) -> dict[str, Any]:
        return {
            "columns": [
                {
                    "name": c.name,
                    "target": c.target.value,
                    "profile": self.profiles[c.name],
                    "designed_for": DESIGNED_FOR[c.name],
                }
                for c in self.columns
            ],
            "rows": [
                {
                    "attack": a.name,
                    "attacker": a.attacker,
                    "sim_row": a.row,
                    "cells": {c.name: self.cells[(a.name, c.name)].as_json() for c in self.columns},
                }
                for a in ATTACKS.values()
            ],
        }


def column_profile(column: Column, preferred: str) -> str:
    """The preferred profile if it has the column's feature, else the first real one."""
    if column.fits(PROFILES[preferred]):
        return preferred
    return next(p.name for p in PROFILES.values() if p.real and column.fits(p))


def run_matrix(
    preferred: str = DEFAULT_PROFILE,
    *,
    vendor_key: RSAPrivateKey | None = None,
    workdir: Path | None = None,
) -> Matrix:
    """Run every attack under every column on scratch machines, deleted afterwards.

    ``vendor_key`` (an RSA-3072 e=3 key) is shared by the scratch machines; one is made
    when None. ``workdir`` is where the temporary directory goes.
    """
    if vendor_key is None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        vendor_key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    profiles = {c.name: column_profile(c, preferred) for c in COLUMNS}
    cells: dict[tuple[str, str], AttackResult] = {}
    with tempfile.TemporaryDirectory(prefix="hwsim-matrix-", dir=workdir) as tmp:
        for i, column in enumerate(COLUMNS):
            with Machine.init(Path(tmp) / f"m{i}", profiles[column.name],
                              vendor_key=vendor_key) as machine:  # fmt: skip
                column.setup(machine)
                machine.power_cycle()
                for attack in ATTACKS:
                    cells[(attack, column.name)] = run_attack(machine, attack, column.target)
    return Matrix(COLUMNS, profiles, cells)
