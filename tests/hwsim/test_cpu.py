"""CPUID leaves and MSR access rules per profile."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import pytest

from hwsim.cpu import (
    FC_LOCK,
    FC_SGX_ENABLE,
    FC_SGX_LC,
    IA32_FEATURE_CONTROL,
    IA32_SGXLEPUBKEYHASH0,
    MSR_SEV_STATUS,
    MSR_SYSCFG,
    SYSCFG_MEM_ENCRYPT_MOD_EN,
    GeneralProtection,
    msr_index,
)
from hwsim.errors import HwsimError
from hwsim.machine import Machine
from memcrypt.errors import InvalidInput

MachineFactory = Callable[..., Machine]


def _rd(m: Machine, index: int) -> int:
    with m.transaction(write=False) as txn:
        return txn.rdmsr(index)


def _wr(m: Machine, index: int, value: int) -> None:
    with m.transaction() as txn:
        txn.wrmsr(index, value)


def test_general_protection_is_hwsim_error() -> None:
    assert issubclass(GeneralProtection, HwsimError)
    assert GeneralProtection.vector == 13


def test_feature_control_set_and_locked_by_bios(machine_factory: MachineFactory) -> None:
    sim, skl = machine_factory("sim"), machine_factory("skylake")
    assert _rd(sim, IA32_FEATURE_CONTROL) == FC_LOCK | FC_SGX_ENABLE | FC_SGX_LC
    assert _rd(skl, IA32_FEATURE_CONTROL) == FC_LOCK | FC_SGX_ENABLE
    with pytest.raises(GeneralProtection, match="locked"):
        _wr(sim, IA32_FEATURE_CONTROL, FC_LOCK)


def test_feature_control_follows_bios_settings(machine: Machine) -> None:
    machine.set_config("lc_locked", "true")
    machine.power_cycle()
    assert _rd(machine, IA32_FEATURE_CONTROL) == FC_LOCK | FC_SGX_ENABLE
    machine.set_config("sgx_enabled", "off")
    machine.power_cycle()
    assert _rd(machine, IA32_FEATURE_CONTROL) == FC_LOCK


def _hash_words(digest: bytes) -> tuple[int, ...]:
    return struct.unpack("<4Q", digest)


def test_le_hash_reset_value_is_vendor_key_hash(machine: Machine) -> None:
    words = tuple(_rd(machine, IA32_SGXLEPUBKEYHASH0 + i) for i in range(4))
    assert words == _hash_words(machine.sgx_vendor_key_hash())
    with machine.transaction(write=False) as txn:
        assert txn.le_pubkey_hash() == machine.sgx_vendor_key_hash()


def test_le_hash_writable_with_flc_and_lc_enabled(machine: Machine) -> None:
    owner = hashlib.sha256(b"owner modulus").digest()
    with machine.transaction() as txn:
        for i, word in enumerate(_hash_words(owner)):
            txn.wrmsr(IA32_SGXLEPUBKEYHASH0 + i, word)
        assert txn.le_pubkey_hash() == owner
    machine.power_cycle()  # back to the reset value
    with machine.transaction(write=False) as txn:
        assert txn.le_pubkey_hash() == machine.sgx_vendor_key_hash()


def test_le_hash_locked_when_bios_locks_launch_control(machine: Machine) -> None:
    machine.set_config("lc_locked", "true")
    machine.power_cycle()
    assert _rd(machine, IA32_SGXLEPUBKEYHASH0) == _hash_words(machine.sgx_vendor_key_hash())[0]
    with pytest.raises(GeneralProtection, match=r"SGX_LC \(bit 17\) clear"):
        _wr(machine, IA32_SGXLEPUBKEYHASH0, 1)


def test_bios_writes_owner_hash_before_locking(machine: Machine) -> None:
    owner = hashlib.sha256(b"owner").digest()
    machine.set_config("le_pubkey_hash", owner.hex())
    machine.set_config("lc_locked", "true")
    machine.power_cycle()
    with machine.transaction(write=False) as txn:
        assert txn.le_pubkey_hash() == owner


def test_le_hash_absent_without_flc(machine_factory: MachineFactory) -> None:
    skl = machine_factory("skylake")
    with pytest.raises(GeneralProtection, match="no Flexible Launch Control"):
        _rd(skl, IA32_SGXLEPUBKEYHASH0 + 3)
    with pytest.raises(GeneralProtection):
        _wr(skl, IA32_SGXLEPUBKEYHASH0, 0)
    with skl.transaction(write=False) as txn:  # but EINIT still sees the fused value
        assert txn.le_pubkey_hash() == skl.sgx_vendor_key_hash()


@pytest.mark.parametrize("profile", ["naples", "rome"])
def test_intel_msrs_absent_on_amd(machine_factory: MachineFactory, profile: str) -> None:
    amd = machine_factory(profile)
    for index in (IA32_FEATURE_CONTROL, IA32_SGXLEPUBKEYHASH0):
        with pytest.raises(GeneralProtection, match="no such MSR"):
            _rd(amd, index)
    assert _rd(amd, MSR_SYSCFG) == SYSCFG_MEM_ENCRYPT_MOD_EN
    assert _rd(amd, MSR_SEV_STATUS) == 0


def test_amd_msrs_absent_on_intel(machine_factory: MachineFactory) -> None:
    icx = machine_factory("icelake-sp")
    for index in (MSR_SYSCFG, MSR_SEV_STATUS, 0x1234):
        with pytest.raises(GeneralProtection, match="no such MSR"):
            _rd(icx, index)


def test_syscfg_memory_encryption_bit_owned_by_bios(machine: Machine) -> None:
    with pytest.raises(GeneralProtection, match="MemEncryptionModEn"):
        _wr(machine, MSR_SYSCFG, 0)
    _wr(machine, MSR_SYSCFG, SYSCFG_MEM_ENCRYPT_MOD_EN | 1 << 18)
    assert _rd(machine, MSR_SYSCFG) == SYSCFG_MEM_ENCRYPT_MOD_EN | 1 << 18
    machine.set_config("sme_enabled", "false")
    machine.power_cycle()
    assert _rd(machine, MSR_SYSCFG) == 0


def test_sev_status_read_only(machine: Machine) -> None:
    with pytest.raises(GeneralProtection, match="read-only"):
        _wr(machine, MSR_SEV_STATUS, 1)


def test_refused_write_changes_nothing(machine: Machine) -> None:
    with pytest.raises(GeneralProtection), machine.transaction() as txn:
        txn.wrmsr(IA32_SGXLEPUBKEYHASH0, 7)
        txn.wrmsr(IA32_FEATURE_CONTROL, 0)
    assert _rd(machine, IA32_SGXLEPUBKEYHASH0) != 7


def test_wrmsr_value_must_fit_64_bits(machine: Machine) -> None:
    with pytest.raises(InvalidInput, match="64 bits"):
        _wr(machine, IA32_SGXLEPUBKEYHASH0, 1 << 64)


def test_msr_index_by_name_or_number() -> None:
    assert msr_index("ia32_feature_control") == 0x3A
    assert msr_index("0xC0010010") == MSR_SYSCFG
    with pytest.raises(InvalidInput, match="unknown MSR"):
        msr_index("TURBO")


def test_cpuid_vendor_strings(machine_factory: MachineFactory) -> None:
    for profile, vendor in (("skylake", b"GenuineIntel"), ("naples", b"AuthenticAMD")):
        _eax, ebx, ecx, edx = machine_factory(profile).cpuid(0)
        assert struct.pack("<3I", ebx, edx, ecx) == vendor


def test_cpuid_sgx_bits(machine_factory: MachineFactory) -> None:
    skl, icx, rome = (machine_factory(p) for p in ("skylake", "icelake-sp", "rome"))
    assert skl.cpuid(7)[1] >> 2 & 1 and not skl.cpuid(7)[2] >> 30 & 1
    assert icx.cpuid(7)[1] >> 2 & 1 and icx.cpuid(7)[2] >> 30 & 1
    assert rome.cpuid(7) == (0, 0, 0, 0)
    assert skl.cpuid(0x12)[0] == 1 and icx.cpuid(0x12)[0] == 3
    assert icx.cpuid(0x12, 1)[0] & 0x80  # KSS from Ice Lake


def test_cpuid_epc_section_reports_bios_size(machine_factory: MachineFactory) -> None:
    icx = machine_factory("icelake-sp")
    icx.set_config("epc_size", "64M")
    icx.power_cycle()
    eax, ebx, ecx, edx = icx.cpuid(0x12, 2)
    assert eax & 0xF == 1 and ecx & 0xF == 2  # an EPC section, confidentiality only (XTS)
    assert (eax & 0xFFFFF000) | ebx << 32 == icx.profile.epc_base
    assert (ecx & 0xFFFFF000) | edx << 32 == 64 << 20
    assert icx.cpuid(0x12, 3) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("profile", "protection"),
    [("skylake", 1), ("icelake-sp", 2), ("sim", 2)],  # MEE: + integrity and replay; XTS: not
)
def test_cpuid_epc_section_reports_the_epc_engine(
    machine_factory: MachineFactory, profile: str, protection: int
) -> None:
    machine = machine_factory(profile)
    assert machine.cpuid(0x12, 2)[2] & 0xF == protection
    engine = machine.profile.epc_engine
    assert engine.integrity == engine.freshness == (protection == 1)


def test_cpuid_naples_memory_encryption_leaf(machine_factory: MachineFactory) -> None:
    eax, ebx, ecx, edx = machine_factory("naples").cpuid(0x8000001F)
    assert eax & 0b1011 == 0b11  # SME, SEV, no SEV-ES
    assert ebx & 0x3F == 47 and ebx >> 6 & 0x3F == 5
    assert (ecx, edx) == (15, 1)


def test_cpuid_rome_has_sev_es(machine_factory: MachineFactory) -> None:
    eax, _ebx, ecx, edx = machine_factory("rome").cpuid(0x8000001F)
    assert eax >> 3 & 1 and ecx == 509 and edx == 100


def test_cpuid_unknown_leaf_is_zero(machine: Machine) -> None:
    assert machine.cpuid(0x4000_0000) == (0, 0, 0, 0)
    assert machine.cpuid(0x8000_0000)[0] == 0x8000001F
