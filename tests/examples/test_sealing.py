"""examples/sealing: sealed data survives restarts and stays bound to machine and identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwsim.machine import Machine
from sgxtool.runtime import Enclave, EnclaveCallError
from tests.conftest import MachineFactory
from tests.examples.conftest import Built

SECRET = b"the launch codes"


def call(image: Path, machine: Machine, name: str, data: bytes) -> bytes:
    """One ECALL in a freshly loaded enclave: every call is a separate run."""
    with Enclave.load(image, machine=machine) as enclave:
        return enclave.call(name, data)


def refused(image: Path, machine: Machine, blob: bytes) -> None:
    with pytest.raises(EnclaveCallError, match="unsealing failed") as info:
        call(image, machine, "unseal", blob)
    assert info.value.code == -6


@pytest.mark.parametrize("policy", ["seal_enclave", "seal_signer"])
def test_sealed_data_survives_a_restart(
    signed_example: Built, machine: Machine, policy: str
) -> None:
    image = signed_example("sealing", "sealing")
    blob = call(image, machine, policy, SECRET)
    assert SECRET not in blob
    assert len(blob) == len(SECRET) + 96
    assert call(image, machine, "unseal", blob) == SECRET
    assert call(image, machine, policy, SECRET) != blob  # a fresh KEYID for every blob


@pytest.mark.parametrize("policy", ["seal_enclave", "seal_signer"])
def test_another_machine_cannot_unseal(
    signed_example: Built, machine: Machine, machine_factory: MachineFactory, policy: str
) -> None:
    image = signed_example("sealing", "sealing")
    blob = call(image, machine, policy, SECRET)
    refused(image, machine_factory("sim", "elsewhere"), blob)


def test_a_rebuild_keeps_only_signer_sealed_data(signed_example: Built, machine: Machine) -> None:
    v1 = signed_example("sealing", "sealing")
    v2 = signed_example("sealing", "sealing", VERSION="2")
    assert call(v2, machine, "build", b"") == b"sealing example build 2"
    to_enclave = call(v1, machine, "seal_enclave", SECRET)
    to_signer = call(v1, machine, "seal_signer", SECRET)
    refused(v2, machine, to_enclave)
    assert call(v2, machine, "unseal", to_signer) == SECRET


def test_another_signer_cannot_unseal(
    signed_example: Built, machine: Machine, other_key: Path
) -> None:
    mine = signed_example("sealing", "sealing")
    theirs = signed_example("sealing", "sealing", key=other_key)
    refused(theirs, machine, call(mine, machine, "seal_signer", SECRET))


def test_altered_blobs_are_refused(signed_example: Built, machine: Machine) -> None:
    image = signed_example("sealing", "sealing")
    blob = bytearray(call(image, machine, "seal_enclave", SECRET))
    for at in (8, 40, 70, len(blob) - 1):  # policy, KEYID, ciphertext, tag
        changed = bytearray(blob)
        changed[at] ^= 1
        refused(image, machine, bytes(changed))
    refused(image, machine, bytes(blob[:50]))
