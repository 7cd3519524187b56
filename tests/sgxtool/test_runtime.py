"""sgxtool.runtime: loading under each launch policy, and the errors a host program sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwsim.machine import Machine
from hwsim.sgx.errors import LaunchRefused
from hwsim.sgx.launch import LaunchPolicy, set_launch_policy
from memcrypt.errors import FormatError
from sgxtool.runtime import Enclave, EnclaveCallError, read_ecalls, run_ecall
from tests.conftest import MachineFactory
from tests.examples.conftest import Built, other_key, signed_example

__all__ = ["other_key", "signed_example"]  # fixtures shared with the example tests


def test_vendor_key_machine_gets_a_token_for_debug_only(
    signed_example: Built, machine_factory: MachineFactory
) -> None:
    legacy = machine_factory("skylake", "legacy")
    assert run_ecall(signed_example("hello", "hello"), "hello", b"LE", machine=legacy).output == (
        b"Hello, LE!"  # debug enclave: the Launch Enclave grants a token to any signer
    )
    with pytest.raises(LaunchRefused) as info:
        Enclave.load(signed_example("signing-oracle", "oracle"), machine=legacy)
    assert "Launch Enclave" in str(info.value)
    assert info.value.hint


def test_owner_allow_list_refuses_other_signers(
    signed_example: Built, machine: Machine, other_key: Path
) -> None:
    mine = signed_example("hello", "hello")
    theirs = signed_example("hello", "hello", key=other_key)
    with Enclave.load(theirs, machine=machine) as enclave:
        allowed = enclave.mrsigner
    set_launch_policy(machine, LaunchPolicy.FLC_LOCKED, allow=(allowed,))
    assert run_ecall(theirs, "hello", b"", machine=machine).output == b"Hello, world!"
    with pytest.raises(LaunchRefused, match="owner's allow-list"):
        Enclave.load(mine, machine=machine)


def test_call_errors_name_the_code(signed_example: Built, machine: Machine) -> None:
    with Enclave.load(signed_example("hello", "hello"), machine=machine) as enclave:
        with pytest.raises(EnclaveCallError, match="does not fit the output buffer") as info:
            enclave.call("hello", b"a long name", out_size=4)
        assert info.value.code == -4
        assert enclave.call("hello", b"ok") == b"Hello, ok!"  # the enclave is still usable


def test_an_elf_without_the_sdk_table(enclave_elf: Path) -> None:
    with pytest.raises(FormatError, match=r"no \.sgx_ecalls table"):
        read_ecalls(enclave_elf)


def _ecall_section_header(image: Path) -> tuple[int, int]:
    """File offsets of the .sgx_ecalls section header and of the section's bytes."""
    from elftools.elf.elffile import ELFFile

    with image.open("rb") as f:
        elf = ELFFile(f)
        index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == ".sgx_ecalls")
        return elf["e_shoff"] + index * elf["e_shentsize"], elf.get_section(index)["sh_offset"]


def test_damaged_ecall_table_is_refused(signed_example: Built, tmp_path: Path) -> None:
    """Section headers are not measured, so the table is read with bounds and checks."""
    import struct

    good = signed_example("hello", "hello").read_bytes()
    header, data = _ecall_section_header(signed_example("hello", "hello"))
    huge = bytearray(good)
    struct.pack_into("<Q", huge, header + 32, 1 << 40)  # sh_size
    (tmp_path / "huge").write_bytes(bytes(huge))
    with pytest.raises(FormatError, match="claims 1099511627776 bytes"):
        read_ecalls(tmp_path / "huge")
    odd = bytearray(good)
    odd[data + 8] = 0xFF  # first byte of the first name
    (tmp_path / "odd").write_bytes(bytes(odd))
    with pytest.raises(FormatError, match="not ASCII"):
        read_ecalls(tmp_path / "odd")
