"""``sevtool ok``: each requirement of SME, SEV and SEV-ES on a simulated machine, with
what to change; the checks are functions of one snapshot, reusable by other commands."""

from __future__ import annotations

import json
from collections.abc import Callable

from hwsim.machine import Machine
from sevtool.checks import gather, run_checks, sme_enabled
from tests.sevtool.test_cli import one_error_line, sevtool


def _statuses(out: str) -> dict[str, str]:
    return {c["name"]: c["status"] for c in json.loads(out)["checks"]}


def test_rome_passes_everything(machine_factory: Callable[..., Machine]) -> None:
    rome = machine_factory("rome")
    result = sevtool("--machine", rome.path, "ok", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["ok"] and len(report["checks"]) == 11
    seen = {c["name"]: c["seen"] for c in report["checks"]}
    assert seen["C-bit location"] == "47"
    assert seen["ASIDs for SEV-ES guests"] == "99"
    assert "firmware API 0.24 build 15" in seen["SEV firmware"]
    text = sevtool("--machine", rome.path, "ok")
    assert "PASS     - C-bit location: 47" in text.out


def test_naples_has_no_sev_es(machine_factory: Callable[..., Machine]) -> None:
    naples = machine_factory("naples")
    result = sevtool("--machine", naples.path, "ok", "--json")
    assert result.code == 1
    statuses = _statuses(result.out)
    assert statuses["Encrypted State (SEV-ES)"] == "fail"
    assert statuses["ASIDs for SEV-ES guests"] == "skip"
    assert "no SEV-ES" in result.err
    assert sevtool("--machine", naples.path, "ok", "sev").code == 0


def test_bios_left_sme_off_says_what_to_change(machine_factory: Callable[..., Machine]) -> None:
    rome = machine_factory("rome")
    rome.set_config("sme_enabled", "false")
    pending = sevtool("--machine", rome.path, "ok", "--json")
    assert pending.code == 0  # still on until the next power cycle
    rome.power_cycle()
    result = sevtool("--machine", rome.path, "ok")
    assert result.code == 1
    assert "FAIL     - SME enabled by the BIOS" in result.out
    assert "hwsim config set sme_enabled true" in result.out
    assert "SME enabled by the BIOS" in one_error_line(result)
    statuses = _statuses(sevtool("--machine", rome.path, "ok", "--json").out)
    assert statuses["SEV firmware"] == "fail"
    rome.set_config("sme_enabled", "true")
    outcome = sme_enabled(gather(rome))
    assert not outcome.ok and outcome.change and "hwsim power-cycle" in outcome.change


def test_intel_part_has_no_memory_encryption(machine_factory: Callable[..., Machine]) -> None:
    results = run_checks(gather(machine_factory("skylake")))
    by_name = {r.name: r for r in results}
    assert by_name["Secure Memory Encryption (SME)"].status == "fail"
    assert by_name["SME enabled by the BIOS (SYSCFG MemEncryptionModEn)"].status == "skip"
    assert {r.status for r in results[1:]} <= {"skip", "fail"}
