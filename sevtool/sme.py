"""SME boot configuration: what is in force, what the next boot will do, and changing it.

Supported and Enabled are the checks of :mod:`sevtool.checks` (one rule each, shared with
``sevtool ok``); Active and TSME are the simulated kernel's decision at boot
(:mod:`hwsim.sme.boot`); the memory map is the machine's one map
(:func:`hwsim.memview.memory_map`, the same list ``hwsim mem map`` prints).
``enable``/``disable`` change the BIOS setting through the machine's one settings API
(the same validation as ``hwsim config set``) together with the kernel command line in
machine.toml's ``[kernel]`` table; both apply at the next ``hwsim power-cycle``, as on
hardware.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hwsim.bios import KERNEL_ERAS, BiosConfig
from hwsim.errors import HwsimError
from hwsim.memview import Region, memory_map
from hwsim.sme.boot import KernelBoot, booted_kernel, kernel_decision
from hwsim.sme.boot import configure as boot_configure
from sevtool.checks import Outcome, address_reduction, cbit, gather, sme_enabled, sme_supported
from sevtool.errors import SevToolError

if TYPE_CHECKING:
    from hwsim.machine import Machine

__all__ = ["KERNEL_ERAS", "SmeStatus", "configure", "sme_status"]

_ENABLE = "sevtool sme enable, then hwsim power-cycle"


@dataclass(frozen=True)
class SmeStatus:
    """SME on one machine: this boot's states, and the next boot's."""

    profile: str
    supported: Outcome
    enabled: Outcome
    kernel: KernelBoot
    cbit: int
    reduction: int
    next_active: bool
    next_why: str
    missing: str | None  # the missing link for SME after the next boot
    fix: str | None
    map: list[Region]

    def as_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "supported": self.supported.ok,
            "enabled": self.enabled.ok,
            "active": self.kernel.sme_active,
            "active_why": self.kernel.why,
            "tsme": self.kernel.tsme,
            "kernel_cmdline": self.kernel.cmdline,
            "kernel_era": self.kernel.era,
            "cbit": self.cbit,
            "phys_addr_reduction": self.reduction,
            "next_boot": {
                "active": self.next_active,
                "why": self.next_why,
                "missing": self.missing,
                "fix": self.fix,
            },
            "memory_map": [r.as_json() for r in self.map],
        }


def sme_status(machine: Machine) -> SmeStatus:
    """SME's three states (and TSME) at this boot, and whether the next boot activates it."""
    facts = gather(machine)
    with machine.transaction(write=False) as txn:
        boot = booted_kernel(txn, machine.profile, txn.booted_config())
        pending = txn.machine_config()
    next_active, next_why = kernel_decision(machine.profile, pending)
    missing, fix = _missing_link(machine, boot, pending, next_active)
    return SmeStatus(
        machine.profile.name,
        sme_supported(facts),
        sme_enabled(facts),
        boot,
        int(cbit(facts).seen),
        int(address_reduction(facts).seen),
        next_active,
        next_why,
        missing,
        fix,
        memory_map(machine),
    )


def _missing_link(
    machine: Machine, boot: KernelBoot, pending: BiosConfig, next_active: bool
) -> tuple[str | None, str | None]:
    if next_active:
        if boot.sme_active:
            return None, None
        return "a power cycle: the new settings are not booted yet", "hwsim power-cycle"
    if not machine.profile.sme:
        return "the part has no SME", "hwsim init --profile rome (an SME part)"
    if not pending.sme_enabled:
        return "MemEncryptionModEn (SYSCFG[23]) in the BIOS", _ENABLE
    return "mem_encrypt=on on the kernel command line", _ENABLE


def configure(
    machine: Machine, *, enable: bool, tsme: bool = False, era: str | None = None
) -> BiosConfig:
    """``sme enable``/``sme disable``: :func:`hwsim.sme.boot.configure`, whose rules are
    the simulated BIOS's and kernel's."""
    try:
        return boot_configure(machine, enable=enable, tsme=tsme, era=era)
    except HwsimError as exc:
        raise SevToolError(str(exc), hint=exc.hint) from exc
