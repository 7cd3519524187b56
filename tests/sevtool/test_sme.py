"""``sevtool sme``: SME's states at boot, the next boot's missing link, the kernel's era
and command line in machine.toml, and the memory map the simulated kernel boots with."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from hwsim.bios import KernelConfig
from hwsim.machine import Machine
from hwsim.memory import HOST_KEYID
from hwsim.sme.boot import HOST_RANGES, booted_kernel, mapping_at
from sevtool.sme import sme_status
from tests.sevtool.test_cli import one_error_line, sevtool


def _status(machine: Machine) -> dict[str, object]:
    result = sevtool("--machine", machine.path, "sme", "status", "--json")
    assert result.code == 0, result.err
    data: dict[str, object] = json.loads(result.out)
    return data


@pytest.mark.parametrize(
    ("era", "cmdline", "active"),
    [
        ("new", "", False),  # the option is gone: off unless mem_encrypt=on
        ("old", "", True),  # CONFIG_AMD_MEM_ENCRYPT_ACTIVE_BY_DEFAULT=y
        ("new", "on", True),
        ("new", "off", False),
        ("old", "off", False),
    ],
)
def test_the_kernel_era_and_command_line_decide_active(
    machine: Machine, era: str, cmdline: str, active: bool
) -> None:
    kernel = KernelConfig(mem_encrypt=cmdline, era=era)
    machine.change_config(lambda _txn, now: dataclasses.replace(now, kernel=kernel))
    assert f'era = "{era}"' in (machine.path / "machine.toml").read_text()
    assert _status(machine)["next_boot"]["active"] is active  # type: ignore[index]
    machine.power_cycle()
    after = _status(machine)
    assert after["active"] is active and after["kernel_era"] == era
    assert after["kernel_cmdline"] == (f"mem_encrypt={cmdline}" if cmdline else "")


def test_status_names_the_missing_link_and_the_command(machine: Machine) -> None:
    info = sme_status(machine)  # a new machine: BIOS on, a new kernel without mem_encrypt=on
    assert info.supported.ok and info.enabled.ok and not info.kernel.sme_active
    assert info.missing == "mem_encrypt=on on the kernel command line"
    assert info.fix == "sevtool sme enable, then hwsim power-cycle"
    assert (info.cbit, info.reduction) == (51, 1)
    machine.set_config("sme_enabled", "false")
    assert sme_status(machine).missing == "MemEncryptionModEn (SYSCFG[23]) in the BIOS"
    sevtool("--machine", machine.path, "sme", "enable")
    pending = sme_status(machine)
    assert pending.next_active and pending.fix == "hwsim power-cycle"
    machine.power_cycle()
    done = sme_status(machine)
    assert done.kernel.sme_active and done.missing is None and done.fix is None
    text = sevtool("--machine", machine.path, "sme", "status")
    assert "active: yes (mem_encrypt=on on the kernel command line)" in text.out
    assert "\thost-decrypted\t-\thost: persistent memory (pmem0) (pmem)\tpersistent" in text.out


def test_active_sme_maps_ram_with_the_c_bit_and_leaves_the_rest_decrypted(
    machine: Machine,
) -> None:
    sevtool("--machine", machine.path, "sme", "enable")
    machine.power_cycle()
    entries = {e["start"]: e for e in _status(machine)["memory_map"]}  # type: ignore[attr-defined]
    ram = entries["0x100000"]
    assert (ram["kind"], ram["keyid"]) == ("host-encrypted", HOST_KEYID)
    assert ram["owner"] == "host: System RAM (kernel, processes, VMs) (ram)"
    decrypted_ranges = [r for r in HOST_RANGES if r.decrypted]
    assert len(decrypted_ranges) == 6
    for r in decrypted_ranges:
        entry = entries[f"{r.start:#x}"]
        assert (entry["kind"], entry["keyid"], entry["why"]) == (
            "host-decrypted",
            None,
            r.decrypted,
        )
    with machine.transaction(write=False) as txn:
        boot = booted_kernel(txn, machine.profile, txn.booted_config())
    assert mapping_at(boot, 0x0100_0000).encrypted
    assert not mapping_at(boot, 0x4000_0000).encrypted


def test_tsme_encrypts_everything_without_the_kernel(machine: Machine) -> None:
    sevtool("--machine", machine.path, "sme", "enable", "--tsme")
    sevtool("--machine", machine.path, "sme", "disable")  # kernel off, TSME off
    config = Machine.open(machine.path).config
    assert config.tsme is False and config.kernel.mem_encrypt == "off"
    sevtool("--machine", machine.path, "sme", "enable", "--tsme")
    sevtool("--machine", machine.path, "sme", "disable", "--tsme")  # TSME only
    config = Machine.open(machine.path).config
    assert config.kernel.mem_encrypt == "on" and not config.tsme
    machine.set_config("tsme", "true")
    machine.set_config("sme_enabled", "false")
    machine.power_cycle()
    status = _status(machine)
    assert status["tsme"] is True and status["active"] is False and status["enabled"] is False
    host = [e for e in status["memory_map"] if e["kind"].startswith("host")]  # type: ignore[attr-defined]
    assert host and all(e["kind"] == "host-encrypted" and "TSME" in e["why"] for e in host)
    with machine.transaction(write=False) as txn:
        boot = booted_kernel(txn, machine.profile, txn.booted_config())
    assert mapping_at(boot, 0x4000_0000).encrypted


def test_profiles_without_sme_refuse_with_one_line(
    machine_factory: Callable[..., Machine],
) -> None:
    skylake = machine_factory("skylake")
    result = sevtool("--machine", skylake.path, "sme", "enable")
    assert result.code == 1
    assert "has no SME" in one_error_line(result)
    assert _status(skylake)["supported"] is False


def test_old_machine_toml_without_the_kernel_table_reads_as_the_defaults(
    machine: Machine,
) -> None:
    path = machine.path / "machine.toml"
    old = path.read_text().split("\n# Transparent SME")[0] + "\n"
    path.write_text(old)
    reopened = Machine.open(machine.path)
    assert reopened.config.kernel.era == "new" and reopened.config.tsme is False
    path.write_text(old + '\n[kernel]\nera = "ancient"\n')
    result = sevtool("--machine", machine.path, "sme", "status")
    assert result.code == 1 and "era = 'ancient'" in one_error_line(result)
    path.write_text(old + "\n[kernel]\nmem_encrypt = true\n")
    assert "mem_encrypt" in one_error_line(sevtool("--machine", machine.path, "sme", "status"))


def test_sme_status_hwsim_status_and_mem_map_show_the_same_map(machine: Machine) -> None:
    """One map: the three commands print :func:`hwsim.memview.memory_map`'s regions."""
    from tests.hwsim.test_cli import hwsim

    sevtool("--machine", machine.path, "sme", "enable")
    machine.power_cycle()
    m = str(machine.path)
    hwsim("--machine", m, "mem", "write", "0x90000000", "00ff", "--view", "host")
    mem_map = json.loads(hwsim("--machine", m, "mem", "map", "--json").out)
    status = json.loads(hwsim("--machine", m, "status", "--json").out)["memory_map"]
    sme = _status(machine)["memory_map"]
    assert mem_map == status == sme
    kinds = {r["kind"] for r in mem_map}
    assert {"host-encrypted", "host-decrypted", "epc"} <= kinds
    table = hwsim("--machine", m, "mem", "map").out.splitlines()[1:]
    assert "\n".join(table) in sevtool("--machine", machine.path, "sme", "status").out
    assert "\n".join(table) in hwsim("--machine", m, "status").out
