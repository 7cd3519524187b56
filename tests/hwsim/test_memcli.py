"""``hwsim mem`` and the memory lines of ``hwsim status``, through the real entry point."""

from __future__ import annotations

import json

from hwsim.machine import Machine
from hwsim.sme.boot import configure
from tests.hwsim.test_cli import hwsim


def test_mem_write_then_read_through_each_view(machine: Machine) -> None:
    m = str(machine.path)
    configure(machine, enable=True)  # the booted kernel's map puts the C-bit on RAM
    machine.power_cycle()
    wrote = hwsim("--machine", m, "mem", "write", "0x100000", "48656c6c6f", "--view", "host")
    assert wrote.code == 0 and "wrote 5 bytes at 0x100000" in wrote.out
    host = hwsim("--machine", m, "mem", "read", "0x100000", "5", "--view", "host")
    assert host.out.split() == ["0000000000100000", "48", "65", "6c", "6c", "6f", "Hello"]
    dimm = json.loads(hwsim("--machine", m, "mem", "read", "0x100000", "16", "--json").out)
    assert dimm["view"] == "physical" and len(dimm["hex"]) == 32
    assert not dimm["hex"].startswith(b"Hello".hex())  # ciphertext on the DIMM
    with machine.transaction(write=False) as txn:
        assert bytes.fromhex(dimm["hex"]) == txn.physical_read(0x100000, 16)
    device = json.loads(hwsim("--machine", m, "mem", "read", "0x100000", "16", "--view",
                              "device", "--json").out)  # fmt: skip
    assert device["hex"] == dimm["hex"]  # a device has no C-bit


def test_mem_read_raw_and_the_abort_page(machine: Machine) -> None:
    epc = f"{machine.profile.epc_base:#x}"
    from click.testing import CliRunner

    from hwsim._cli import cli

    raw = CliRunner().invoke(cli, ["--machine", str(machine.path), "mem", "read", epc, "8",
                                   "--view", "host", "--raw"])  # fmt: skip
    assert raw.exit_code == 0 and raw.stdout_bytes == b"\xff" * 8


def test_mem_map_and_status(machine: Machine) -> None:
    m = str(machine.path)
    hwsim("--machine", m, "mem", "write", "0x2000", "00ff", "--view", "host")
    regions = json.loads(hwsim("--machine", m, "mem", "map", "--json").out)
    kinds = {(r["kind"], r["keyid"]) for r in regions}
    assert ("epc", 0x10000) in kinds and ("host", None) in kinds
    plain = hwsim("--machine", m, "mem", "map").out.splitlines()
    assert plain[1].split("\t") == ["start", "end", "size", "kind", "key id", "owner", "why"]
    assert all(line == line.rstrip() and line.count("\t") == 6 for line in plain[1:])
    status = json.loads(hwsim("--machine", m, "status", "--json").out)
    assert status["epc"] == {"engine": "xts", "integrity": False, "freshness": False,
                             "cpuid_12_2_ecx_protection": 2}  # fmt: skip
    assert {"keyid": None, "owner": "host", "pages": 1} in status["dram_by_key"]
    text = hwsim("--machine", m, "status").out
    assert "EPC engine: xts: confidentiality (CPUID.(12H,2):ECX[3:0] = 2)" in text
    assert "\n".join(plain) in text  # the same map table, under the fields


def test_status_of_an_mee_part_advertises_integrity(machine_factory: object) -> None:
    skylake = machine_factory("skylake")  # type: ignore[operator]
    status = json.loads(hwsim("--machine", str(skylake.path), "status", "--json").out)
    assert status["epc"]["integrity"] and status["epc"]["freshness"]
    assert status["epc"]["cpuid_12_2_ecx_protection"] == 1


def test_bad_views_and_data_are_one_line_errors(machine: Machine) -> None:
    m = str(machine.path)
    for args in (["read", "0", "--view", "guest"], ["read", "0", "--view", "dimm"],
                 ["write", "0", "zz"], ["read", "0", "--view", "guest:7"]):  # fmt: skip
        run = hwsim("--machine", m, "mem", *args)
        assert run.code == 2, args
        run.one_error_line()
