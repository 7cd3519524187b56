"""What a host needs for SME, SEV and SEV-ES, one check each, as ``sevctl ok`` lists them.

The machine is read once into :class:`Facts` (CPUID, SYSCFG, the BIOS settings booted and
pending, the SEV firmware's status); each check is a pure function of those facts that
says pass or fail, what it saw, and what to change. ``sevtool ok`` runs the table;
other commands (``sme status``) call the same functions, so each rule exists once.

Sources: CPUID 0x8000001F and SYSCFG[23] from Linux
``Documentation/arch/x86/amd-memory-encryption.rst``; the list and names follow virtee
sevctl ``src/ok.rs`` (``shared/reference/sev.md`` 3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hwsim.cpu import MSR_SYSCFG, SYSCFG_MEM_ENCRYPT_MOD_EN, GeneralProtection
from hwsim.errors import HwsimError
from hwsim.sev.arch import PlatformState, PlatformStatus
from hwsim.sev.device import SevDevice

if TYPE_CHECKING:
    from hwsim.bios import BiosConfig
    from hwsim.machine import Machine
    from hwsim.profiles import Profile

__all__ = [
    "CHECKS",
    "FEATURES",
    "Check",
    "CheckResult",
    "Facts",
    "Outcome",
    "gather",
    "run_checks",
]

LEAF_MEM_ENCRYPT = 0x8000001F
FEATURES = ("sme", "sev", "es")
_BIOS_SME = "hwsim config set sme_enabled true, then hwsim power-cycle"


@dataclass(frozen=True)
class Facts:
    """What the checks read from one machine, in one transaction."""

    profile: Profile
    booted: BiosConfig
    pending: BiosConfig
    max_ext_leaf: int
    leaf: tuple[int, int, int, int]  # CPUID 0x8000001F: EAX, EBX, ECX, EDX
    syscfg: int | None  # None where RDMSR faults (not an AMD part)
    status: PlatformStatus | None
    sev_error: str | None  # why the SEV device could not be opened

    @property
    def eax(self) -> int:
        return self.leaf[0]


def gather(machine: Machine) -> Facts:
    """Read every fact the checks use."""
    with machine.transaction() as txn:
        max_ext = txn.cpuid(0x80000000)[0]
        leaf = txn.cpuid(LEAF_MEM_ENCRYPT) if max_ext >= LEAF_MEM_ENCRYPT else (0, 0, 0, 0)
        try:
            syscfg: int | None = txn.rdmsr(MSR_SYSCFG)
        except GeneralProtection:
            syscfg = None
        booted = txn.booted_config()
        status, error = None, None
        try:
            status = SevDevice(txn).platform_status()
        except HwsimError as exc:
            error = str(exc)
    return Facts(machine.profile, booted, machine.config, max_ext, leaf, syscfg, status, error)


@dataclass(frozen=True)
class Outcome:
    """One check's verdict: what was seen, and what to change when it fails."""

    ok: bool
    seen: str
    change: str | None = None


def _bit(facts: Facts, bit: int, remedy: str) -> Outcome:
    on = bool(facts.eax >> bit & 1)
    return Outcome(on, f"CPUID 0x8000001F EAX[{bit}] = {int(on)}", None if on else remedy)


def leaf_present(facts: Facts) -> Outcome:
    ok = facts.max_ext_leaf >= LEAF_MEM_ENCRYPT
    return Outcome(
        ok,
        f"highest extended CPUID leaf {facts.max_ext_leaf:#x}",
        None if ok else "an AMD part with memory encryption (EPYC): hwsim init --profile rome",
    )


def sme_supported(facts: Facts) -> Outcome:
    return _bit(facts, 0, "this part has no SME: use an AMD EPYC part (naples, rome)")


def sme_enabled(facts: Facts) -> Outcome:
    """SYSCFG[23] MemEncryptionModEn: set by the BIOS only; Linux does not set it."""
    on = facts.syscfg is not None and bool(facts.syscfg & SYSCFG_MEM_ENCRYPT_MOD_EN)
    seen = "SYSCFG (MSR 0xc0010010) " + (
        "not readable" if facts.syscfg is None else f"{facts.syscfg:#x}, bit 23 = {int(on)}"
    )
    if on:
        return Outcome(True, seen)
    if facts.pending.sme_enabled:
        return Outcome(False, seen, "enabled in machine.toml, in force after: hwsim power-cycle")
    return Outcome(False, seen, f"enable memory encryption in the BIOS: {_BIOS_SME}")


def sev_supported(facts: Facts) -> Outcome:
    return _bit(facts, 1, "this part has no SEV: use an AMD EPYC part (naples, rome)")


def cbit(facts: Facts) -> Outcome:
    return Outcome(True, str(facts.leaf[1] & 0x3F))


def address_reduction(facts: Facts) -> Outcome:
    return Outcome(True, str(facts.leaf[1] >> 6 & 0x3F))


def sev_asids(facts: Facts) -> Outcome:
    count = facts.leaf[2]
    return Outcome(
        count > 0,
        str(count),
        None if count else "the BIOS gives SEV no ASIDs: raise its SEV ASID count",
    )


def min_sev_asid(facts: Facts) -> Outcome:
    first = facts.leaf[3]
    ok = 0 < first <= facts.leaf[2]
    return Outcome(
        ok,
        str(first),
        None if ok else "no ASIDs left for plain SEV guests: lower the BIOS's SEV-ES ASID limit",
    )


def firmware(facts: Facts) -> Outcome:
    """The SEV firmware answers PLATFORM_STATUS: its state and version."""
    if facts.status is None:
        return Outcome(False, facts.sev_error or "no SEV device", f"SEV needs SME on: {_BIOS_SME}")
    st = facts.status
    owner = "externally owned" if st.owner & PlatformStatus.OWNER_EXTERNAL else "self-owned"
    seen = (
        f"firmware API {st.api_major}.{st.api_minor} build {st.build}, "
        f"state {PlatformState(st.state).name}, {owner}, {st.guest_count} guests"
    )
    return Outcome(True, seen)


def es_supported(facts: Facts) -> Outcome:
    return _bit(facts, 3, "this part has no SEV-ES: use a later EPYC part (rome)")


def es_asids(facts: Facts) -> Outcome:
    """ASIDs 1 .. (minimum SEV ASID - 1) are for SEV-ES guests only."""
    count = max(facts.leaf[3] - 1, 0)
    return Outcome(
        count > 0,
        str(count),
        None if count else "the BIOS leaves SEV-ES no ASIDs: raise its SEV-ES ASID space limit",
    )


@dataclass(frozen=True)
class Check:
    name: str
    feature: str  # the first of FEATURES it is needed for
    level: int  # nesting under the check before it of lower level
    run: Callable[[Facts], Outcome]


CHECKS = (
    Check("AMD memory encryption (CPUID 0x8000001F)", "sme", 0, leaf_present),
    Check("Secure Memory Encryption (SME)", "sme", 1, sme_supported),
    Check("SME enabled by the BIOS (SYSCFG MemEncryptionModEn)", "sme", 2, sme_enabled),
    Check("Secure Encrypted Virtualization (SEV)", "sev", 1, sev_supported),
    Check("C-bit location", "sev", 2, cbit),
    Check("Physical address bit reduction", "sev", 2, address_reduction),
    Check("Number of encrypted guests supported simultaneously", "sev", 2, sev_asids),
    Check("Minimum ASID value for SEV-enabled, SEV-ES disabled guest", "sev", 2, min_sev_asid),
    Check("SEV firmware", "sev", 2, firmware),
    Check("Encrypted State (SEV-ES)", "es", 2, es_supported),
    Check("ASIDs for SEV-ES guests", "es", 3, es_asids),
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    feature: str
    level: int
    status: str  # "pass", "fail" or "skip" (a check it depends on failed)
    seen: str | None
    change: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "feature": self.feature,
            "level": self.level,
            "status": self.status,
            "seen": self.seen,
            "change": self.change,
        }


def _wanted(check: Check, features: tuple[str, ...]) -> bool:
    """A check is needed by its feature and every feature built on it (sme < sev < es)."""
    order = FEATURES.index(check.feature)
    return any(FEATURES.index(f) >= order for f in features)


def run_checks(facts: Facts, features: tuple[str, ...] = FEATURES) -> list[CheckResult]:
    """Every check the features need, in order; a check under a failed one is skipped."""
    results: list[CheckResult] = []
    failed_level: int | None = None
    for check in CHECKS:
        if not _wanted(check, features):
            continue
        if failed_level is not None and check.level > failed_level:
            results.append(CheckResult(check.name, check.feature, check.level, "skip", None, None))
            continue
        failed_level = None
        outcome = check.run(facts)
        status = "pass" if outcome.ok else "fail"
        if not outcome.ok:
            failed_level = check.level
        results.append(
            CheckResult(
                check.name, check.feature, check.level, status, outcome.seen, outcome.change
            )
        )
    return results
