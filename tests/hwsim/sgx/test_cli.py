"""``hwsim vendor`` and ``hwsim sgx launch-control`` through the real entry point."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from hwsim.machine import Machine
from hwsim.sgx.launch import LaunchPolicy, launch_control
from tests.hwsim.test_cli import hwsim

MachineFactory = Callable[..., Machine]
SIGNER = "ab" * 32
KEY = "sgx/intel-linux-sgx/SampleEnclave_Enclave_private_test.pem"
KEY_MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"


def test_vendor_show_list_approve_revoke(machine: Machine, vector: Callable[[str], Path]) -> None:
    m = ("--machine", str(machine.path))
    shown = json.loads(hwsim(*m, "vendor", "show", "--json").out)
    assert shown["vendor_key_hash"] == machine.sgx_vendor_key_hash().hex()
    assert shown["launch_enclave"]["mrsigner"] == shown["vendor_key_hash"]
    assert shown["allow_list"] == {"signers": 0, "version": 0}
    assert hwsim(*m, "vendor", "approve", SIGNER).code == 0
    run = hwsim(*m, "vendor", "approve", str(vector(KEY)))
    assert run.code == 0 and KEY_MRSIGNER in run.out
    listed = json.loads(hwsim(*m, "vendor", "list", "--json").out)
    assert listed == {"version": 2, "signers": [SIGNER, KEY_MRSIGNER]}
    assert hwsim(*m, "vendor", "revoke", SIGNER).code == 0
    assert hwsim(*m, "vendor", "list").out.split() == [KEY_MRSIGNER]
    assert "version 3, 1 approved" in hwsim(*m, "vendor", "show").out


def test_vendor_errors_are_one_line(machine: Machine) -> None:
    m = ("--machine", str(machine.path))
    run = hwsim(*m, "vendor", "approve", "not-a-signer")
    assert run.code == 2 and "64 hex digits" in run.one_error_line()
    run = hwsim(*m, "vendor", "revoke", SIGNER)
    assert run.code == 2 and "not on the vendor allow-list" in run.one_error_line()


def test_launch_control_show_and_set(machine: Machine) -> None:
    m = ("--machine", str(machine.path))
    shown = json.loads(hwsim(*m, "sgx", "launch-control", "show", "--json").out)
    assert shown["policy"] == "flc-open" and shown["msrs_writable"] is True
    run = hwsim(*m, "sgx", "launch-control", "set", "vendor-key")
    assert run.code == 0 and "vendor-key after the next power cycle" in run.out
    run = hwsim(*m, "sgx", "launch-control", "set", "flc-locked", "--owner-key", SIGNER,
                "--power-cycle", "--json")  # fmt: skip
    now = json.loads(run.out)
    assert now["policy"] == "flc-locked" and now["le_pubkey_hash"] == SIGNER
    assert now["msrs_writable"] is False and now["after_power_cycle"] is None
    run = hwsim(*m, "sgx", "launch-control", "set", "flc-locked", "--allow", SIGNER,
                "--power-cycle")  # fmt: skip
    assert f"owner allows:    {SIGNER}" in run.out
    assert launch_control(Machine.open(machine.path)).policy == LaunchPolicy.FLC_LOCKED


def test_launch_control_refusals(machine_factory: MachineFactory) -> None:
    legacy = machine_factory("skylake", "legacy")
    run = hwsim("--machine", str(legacy.path), "sgx", "launch-control", "set", "flc-open")
    assert run.code == 1 and "legacy launch control only" in run.one_error_line()
    amd = machine_factory("naples", "amd")
    run = hwsim("--machine", str(amd.path), "sgx", "launch-control", "show")
    assert run.code == 1 and "has no SGX" in run.one_error_line()
    run = hwsim("--machine", str(legacy.path), "sgx", "launch-control", "set", "bogus")
    assert run.code == 2
    run = hwsim("--machine", str(legacy.path), "sgx", "launch-control", "set", "flc-locked")
    assert run.code == 1  # the profile refusal comes first on a legacy part
