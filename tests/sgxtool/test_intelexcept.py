"""Exceptions inside an Intel SDK enclave: the uRTS's ECMD_EXCEPT after the AEX, ERESUME
while the tRTS accepts, and the ECALL failing (the enclave crashed) when it does not.

SgxRandTest registers no exception handler, so its faults end as Intel's runtime ends
them: a failed assert() is abort(), which marks the enclave crashed and executes ud2, so
the tRTS refuses the first ECMD_EXCEPT; a #PF on a bad host pointer is accepted once (the
tRTS runs its handler phase, finds no handler and retries the instruction) and refused
the second time."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from hwsim.machine import Machine
from sgxtool.intelexcept import EnclaveException, ExceptionRecord
from sgxtool.intelrt import IntelCallError, IntelEnclave
from sgxtool.runtime import EnclaveCrashed
from tests.sgxtool.conftest import SAMPLE, USER_TYPES, Vector

UD, PF = 6, 14
CRASHED = 0x1006  # SGX_ERROR_ENCLAVE_CRASHED


def abort_ud2(so: Path) -> int:
    """Where the tRTS's abort() executes ud2 (sdk/trts/linux/trts_pic.S: it stores
    ENCLAVE_CRASHED in g_enclave_state first)."""
    with open(so, "rb") as f:
        elf = ELFFile(f)
        start = int(elf.get_section_by_name(".symtab").get_symbol_by_name("abort")[0]["st_value"])  # type: ignore[union-attr]
        (offset,) = elf.address_offsets(start)
        f.seek(offset)
        return start + f.read(32).index(b"\x0f\x0b")


def test_a_failed_assert_crashes_the_enclave(sample: IntelEnclave, vector: Vector) -> None:
    """assert(val == 1234) -> abort() -> #UD; ECMD_EXCEPT answers ENCLAVE_CRASHED."""
    ud2 = abort_ud2(vector(f"{SAMPLE}/enclave.signed.so"))
    with pytest.raises(EnclaveException) as info:
        sample.ecall("ecall_type_int", val=1)
    assert str(info.value).startswith(
        f"ECALL ecall_type_int took an exception the enclave did not handle: #UD "
        f"(error code 0x0) at enclave offset {ud2:#x}"
    )
    assert "(ECMD_EXCEPT answered 0x1006, SGX_ERROR_ENCLAVE_CRASHED)" in str(info.value)
    assert sample.exceptions == [ExceptionRecord(UD, ud2, CRASHED)]
    with pytest.raises(EnclaveCrashed, match="crashed earlier"):
        sample.ecall("ecall_type_int", val=1234)
    # The tRTS itself holds the enclave crashed: let the runtime through, it refuses.
    sample.crashed = None
    with pytest.raises(IntelCallError) as refused:
        sample.ecall("ecall_type_int", val=1234)
    assert refused.value.status == CRASHED


def test_a_page_fault_is_retried_once_then_crashes(sample: IntelEnclave) -> None:
    """ecall_pointer_user_check copies from a host pointer the host has not mapped: the
    first ECMD_EXCEPT succeeds, ERESUME runs internal_handle_exception, which (no handler)
    restores the context from the SSA copy and retries the same instruction."""
    with pytest.raises(EnclaveException, match=r"#PF \(error code 0x4\) at enclave offset "
                       r"0x[0-9a-f]+, address 0x1000: no memory at 0x1000") as info:  # fmt: skip
        sample.ecall("ecall_pointer_user_check", val=0x1000, sz=8)
    first, second = sample.exceptions
    assert (first.vector, first.status) == (PF, 0)
    assert second == ExceptionRecord(PF, first.offset, CRASHED)
    assert info.value.status == CRASHED
    assert sample.crashed is not None and "#PF" in sample.crashed


def test_the_runtimes_own_stop_is_no_enclave_exception(vector: Vector, machine: Machine) -> None:
    """A budget ran out: an AEX without EXITINFO, not for the tRTS to handle."""
    so = vector(f"{SAMPLE}/enclave.signed.so")
    with IntelEnclave.load(so, edl=so.parent / "Enclave.edl", typedefs=USER_TYPES,
                           machine=machine, console=io.StringIO()) as enclave:  # fmt: skip
        enclave.budget = 50_000  # after ECMD_INIT_ENCLAVE, which needs more
        with pytest.raises(EnclaveCrashed, match="its budget for one call") as info:
            enclave.ecall("ecall_increase_counter")
        assert not isinstance(info.value, EnclaveException)
        assert enclave.exceptions == []
