"""Intel's 2015 Launch Enclave runs in hwsim on a machine holding Intel's launch key hash,
and the tokens it issues are what EINIT accepts there, and nowhere else."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.machine import Machine
from hwsim.sgx.arch import INTEL_LE_PUBKEY_HASH, Attributes, Einittoken
from hwsim.sgx.device import SgxEnclaveDevice
from hwsim.sgx.errors import LaunchRefused, SgxStatusError
from hwsim.sgx.launch import LaunchPolicy, launch_control
from memcrypt.errors import InvalidInput
from sgxtool.intelrt import IntelEnclave
from sgxtool.loader import load_enclave
from sgxtool.sgxs import read_sgxs
from sgxtool.token import le_token, load_sigstruct
from tests.cli.conftest import Runner, sgxtool
from tests.conftest import MachineFactory

__all__ = ["sgxtool"]  # the CLI runner fixture

Vector = Callable[[str], Path]
LE = "sgx/fortanix-rust-sgx/le.signed.sgxs"
LE_SIG = "sgx/fortanix-rust-sgx/le.signed.sig"
HASH = "sgx/intel-sdk-enclaves/ShuntaIshihara+test_hash_SGX"


def intel_machine(factory: MachineFactory, name: str) -> Machine:
    """A Skylake part whose hardwired launch key hash is Intel's, as sold."""
    machine = factory("skylake", name)
    machine.set_config("le_pubkey_hash", INTEL_LE_PUBKEY_HASH.hex())
    machine.power_cycle()
    return machine


def token_for(vector: Vector, machine: Machine, **kw: object) -> bytes:
    grant = le_token(vector(f"{HASH}/enclave.signed.so"), machine, vector(LE),
                     le_sig=vector(LE_SIG), **kw)  # type: ignore[arg-type]  # fmt: skip
    return grant.token.pack()


def load_hash(vector: Vector, machine: Machine, token: bytes | None) -> IntelEnclave:
    so = vector(f"{HASH}/enclave.signed.so")
    return IntelEnclave.load(so, edl=so.parent / "Enclave.edl", machine=machine, token=token)


def test_intel_le_issues_a_token_einit_accepts(
    vector: Vector, machine_factory: MachineFactory
) -> None:
    machine = intel_machine(machine_factory, "intel")
    assert launch_control(machine).policy == LaunchPolicy.VENDOR_KEY  # Intel as the vendor
    token = token_for(vector, machine)
    with load_hash(vector, machine, token) as enclave:
        assert enclave.ecall("ecall_test", message="Hello Enclave.", message_len=14).retval == 31337
    with pytest.raises(LaunchRefused, match="Intel's Launch Enclave") as info:
        load_hash(vector, machine, None)
    assert "sgxtool token" in str(info.value.hint)


def test_the_token_fails_on_another_machine_and_when_tampered(
    vector: Vector, machine_factory: MachineFactory
) -> None:
    first, second = (intel_machine(machine_factory, n) for n in ("one", "two"))
    token = token_for(vector, first)
    with pytest.raises(SgxStatusError, match="INVALID_EINITTOKEN"):
        load_hash(vector, second, token)
    parsed = Einittoken.unpack(token)
    cpusvn = bytes([parsed.cpusvnle[0] ^ 1]) + parsed.cpusvnle[1:]
    tampered = dataclasses.replace(parsed, cpusvnle=cpusvn).pack()
    # Above the CPU's SVN: INVALID_CPUSVN; below it: the MAC (keyed by it) fails.
    with pytest.raises(SgxStatusError, match=r"INVALID_(CPUSVN|EINITTOKEN)"):
        load_hash(vector, first, tampered)


def test_a_production_token_needs_the_white_list(
    vector: Vector, machine_factory: MachineFactory
) -> None:
    machine = intel_machine(machine_factory, "intel")
    with pytest.raises(LaunchRefused, match=r"42 \(LE_WHITELIST_UNINITIALIZED_ERROR\)") as info:
        token_for(vector, machine, attributes=Attributes(0x4, 0x3))  # no DEBUG
    assert "white list" in str(info.value.hint)
    # The shared list names LE product id 0x20; this LE's ISVPRODID is 0.
    assert load_sigstruct(vector(LE_SIG)).isvprodid == 0
    wl = vector("sgx/intel-linux-sgx/white_list_cert_to_be_verify.bin").read_bytes()
    with pytest.raises(LaunchRefused, match=r"white list: 38 \(LE_INVALID_PARAMETER\)"):
        token_for(vector, machine, white_list=wl)


def test_the_le_needs_intels_hash(vector: Vector, machine_factory: MachineFactory) -> None:
    """EINITTOKEN_KEY is granted only to the signer of the locked launch key hash."""
    legacy = machine_factory("skylake", "vendor")
    with SgxEnclaveDevice(legacy) as device, pytest.raises(LaunchRefused, match="EINITTOKEN_KEY"):
        load_enclave(device, read_sgxs(vector(LE)), load_sigstruct(vector(LE_SIG)))


def test_legacy_parts_take_only_a_hardwired_hash(machine_factory: MachineFactory) -> None:
    legacy = machine_factory("skylake", "legacy")
    with pytest.raises(InvalidInput, match="hardwired, the vendor's or Intel's"):
        legacy.set_config("le_pubkey_hash", "11" * 32)


def test_cli_token_with_the_intel_le_and_run(
    sgxtool: Runner, vector: Vector, machine_factory: MachineFactory, tmp_path: Path
) -> None:
    machine = intel_machine(machine_factory, "intel")
    so = vector(f"{HASH}/enclave.signed.so")
    token = tmp_path / "token"
    m = ["--machine", str(machine.path)]
    got = sgxtool("token", str(so), "--le", str(vector(LE)), "--le-sig", str(vector(LE_SIG)),
                  "-o", str(token), "--json", *m)  # fmt: skip
    assert got.code == 0, got.err
    shown = json.loads(got.out)
    assert shown["debug"] and shown["mrenclave"].startswith("ca9df6d7")
    assert token.stat().st_size == 304
    ran = sgxtool("run", str(so), "ecall_test", "--edl", str(so.parent / "Enclave.edl"),
                  "--arg", "message=Hello Enclave.", "--arg", "message_len=14",
                  "--token", str(token), *m)  # fmt: skip
    assert (ran.code, ran.out) == (0, "retval 31337\n"), ran.err
    refused = sgxtool("run", str(so), "ecall_test", "--edl", str(so.parent / "Enclave.edl"), *m)
    assert refused.code == 1 and "Intel's Launch Enclave" in refused.one_error_line()
    assert sgxtool("token", str(so), "--le-sig", str(vector(LE_SIG)), *m).code == 2
