"""The attack lab: what each memory-encryption protection stops, shown on the simulator.

:func:`run_attack` runs one attack of :data:`ATTACKS` against a machine as it is
configured and returns an :class:`AttackResult` with the bytes the attacker read;
:func:`run_matrix` (:mod:`hwsim.attacks.matrix`) runs them all under each protection on
scratch machines it makes and deletes. Attackers use only their own access (see
:mod:`hwsim.attacks._lab`); the expected results are ``shared/reference/sim.md`` 4.5's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hwsim.attacks._lab import (
    ATTACKS,
    Attack,
    Lab,
    NotApplicable,
    Outcome,
    SecretResult,
    Target,
    Verdict,
)
from hwsim.attacks._victims import Unavailable
from hwsim.prm import MachineCheck
from hwsim.sme.boot import booted_kernel
from memcrypt.errors import InvalidInput

if TYPE_CHECKING:
    from hwsim.machine import Machine

__all__ = ["ATTACKS", "Attack", "AttackResult", "Outcome", "SecretResult", "Target", "run_attack"]

EXCERPT = 32


@dataclass(frozen=True)
class AttackResult:
    """One attack's result: outcome, why, what the attacker read, each planted secret."""

    attack: str
    attacker: str
    target: Target
    profile: str
    outcome: Outcome
    detail: str
    observed: bytes
    secrets: tuple[SecretResult, ...]
    power_cycled: bool

    @property
    def cell(self) -> str:
        """The matrix cell: ``recovered``, ``partial: ...``, ``blocked: ...`` or ``n/a``."""
        if self.outcome is Outcome.NA:
            return "n/a (not yet available)" if self.detail.startswith("not yet") else "n/a"
        if self.outcome is Outcome.RECOVERED:
            return "recovered"
        return f"{self.outcome.value!s}: {self.detail}"

    def excerpt(self, n: int = EXCERPT) -> str:
        return self.observed[:n].hex(" ")

    def as_json(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "attacker": self.attacker,
            "target": self.target.value,
            "profile": self.profile,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "read_excerpt": self.observed[:EXCERPT].hex(),
            "read_length": len(self.observed),
            "secrets": [s.as_json() for s in self.secrets],
            "power_cycled": self.power_cycled,
        }


def attack_named(name: str) -> Attack:
    attack = ATTACKS.get(name)
    if attack is None:
        raise InvalidInput(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    return attack


def run_attack(machine: Machine, name: str, target: Target = Target.HOST) -> AttackResult:
    """Plant the target's secrets on ``machine``, run attack ``name``, clean up.

    Physical attacks that take the power away (cold boot, pmem) and an MEE machine check
    end with a power cycle of the machine, as they would on hardware.
    """
    attack = attack_named(name)
    with machine.transaction() as txn:
        lab = Lab(txn, target, booted_kernel(txn, machine.profile, txn.booted_config()))
        try:
            verdict = attack.run(lab)
        except NotApplicable as why:
            verdict = Verdict(Outcome.NA, str(why))
        except Unavailable as why:
            verdict = Verdict(Outcome.NA, f"not yet available: {why}")
        finally:
            _clean(lab)
    if lab.power_cycle_after:
        machine.power_cycle()
    return AttackResult(attack.name, attack.attacker, target, machine.profile.name,
                        verdict.outcome, verdict.detail, verdict.observed, verdict.secrets,
                        lab.power_cycle_after)  # fmt: skip


def _clean(lab: Lab) -> None:
    """Undo what the scenario planted (after a machine check the power cycle does)."""
    for undo in reversed(lab.cleanup):
        try:
            undo()
        except MachineCheck:
            lab.power_cycle_after = True
