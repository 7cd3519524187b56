"""CPUID leaves and model-specific registers, with the access rules of real parts.

MSR values live in the volatile namespace ``boot.msr`` (one 8-byte little-endian value per
register), set by the simulated BIOS at each power cycle (:func:`bios_boot`). Software
access goes through :func:`rdmsr` / :func:`wrmsr`, which refuse what the hardware refuses
by raising :class:`GeneralProtection`, as RDMSR/WRMSR raise #GP(0).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from hwsim.bios import BiosConfig
from hwsim.errors import HwsimError
from hwsim.profiles import Profile
from hwsim.store import StateTxn
from memcrypt.errors import InvalidInput

__all__ = [
    "FC_LOCK",
    "FC_SGX_ENABLE",
    "FC_SGX_LC",
    "IA32_FEATURE_CONTROL",
    "IA32_SGXLEPUBKEYHASH0",
    "MSRS",
    "MSR_SEV_STATUS",
    "MSR_SYSCFG",
    "SYSCFG_MEM_ENCRYPT_MOD_EN",
    "GeneralProtection",
    "bios_boot",
    "cpuid",
    "le_pubkey_hash",
    "msr_index",
    "raw_msr",
    "rdmsr",
    "wrmsr",
]

# SDM vol. 4 table 2-2; Linux arch/x86/include/asm/msr-index.h.
IA32_FEATURE_CONTROL = 0x3A
FC_LOCK = 1 << 0
FC_SGX_LC = 1 << 17
FC_SGX_ENABLE = 1 << 18
IA32_SGXLEPUBKEYHASH0 = 0x8C  # ..0x8F, the SHA-256 of the LE signer's modulus
# AMD APM vol. 2 / Linux amd-memory-encryption.rst.
MSR_SYSCFG = 0xC0010010
SYSCFG_MEM_ENCRYPT_MOD_EN = 1 << 23
MSR_SEV_STATUS = 0xC0010131

_NS = "boot.msr"
_U64 = (1 << 64) - 1


class GeneralProtection(HwsimError):
    """#GP(0): what RDMSR/WRMSR (and other instructions) raise on a refused access."""

    vector = 13

    def __init__(self, message: str) -> None:
        super().__init__(f"#GP(0): {message}")


# A rule gets the profile, a reader of the current MSR values and the value to write
# (0 for reads), and returns why the access is refused, or None when it is allowed.
Reader = Callable[[int], int]
Rule = Callable[[Profile, Reader, int], "str | None"]


def _always(_p: Profile, _r: Reader, _v: int) -> str | None:
    return None


def _fc_write(_p: Profile, read: Reader, _v: int) -> str | None:
    if read(IA32_FEATURE_CONTROL) & FC_LOCK:
        return "IA32_FEATURE_CONTROL is locked (bit 0 set by the BIOS)"
    return None


def _lehash_read(profile: Profile, _r: Reader, _v: int) -> str | None:
    # KVM vmx_get_msr: the hash MSRs exist only with SGX_LC (CPUID.(7,0):ECX[30]).
    return None if profile.flc else "no Flexible Launch Control (CPUID.(7,0):ECX[30] = 0)"


def _lehash_write(profile: Profile, read: Reader, value: int) -> str | None:
    # sim.md 2.1 / KVM vmx_set_msr: #GP if !SGX_LC || (LOCKED && !SGX_LC_ENABLED).
    refused = _lehash_read(profile, read, value)
    if refused:
        return refused
    fc = read(IA32_FEATURE_CONTROL)
    if fc & FC_LOCK and not fc & FC_SGX_LC:
        return "IA32_FEATURE_CONTROL is locked with SGX_LC (bit 17) clear"
    return None


def _read_only(_p: Profile, _r: Reader, _v: int) -> str | None:
    return "the register is read-only"


def _syscfg_write(_p: Profile, read: Reader, value: int) -> str | None:
    # Simulation rule: only the BIOS (the sme_enabled setting) flips MemEncryptionModEn.
    if (read(MSR_SYSCFG) ^ value) & SYSCFG_MEM_ENCRYPT_MOD_EN:
        return "MemEncryptionModEn (bit 23) is set by the BIOS only (sme_enabled)"
    return None


@dataclass(frozen=True)
class Msr:
    index: int
    name: str
    present: Callable[[Profile], bool]
    read_rule: Rule = _always
    write_rule: Rule = _always


def _intel_sgx(p: Profile) -> bool:
    return p.is_intel_like and p.sgx1


MSRS: dict[int, Msr] = {
    m.index: m
    for m in [
        Msr(IA32_FEATURE_CONTROL, "IA32_FEATURE_CONTROL", lambda p: p.is_intel_like,
            write_rule=_fc_write),
        *(
            Msr(IA32_SGXLEPUBKEYHASH0 + i, f"IA32_SGXLEPUBKEYHASH{i}", _intel_sgx,
                _lehash_read, _lehash_write)
            for i in range(4)
        ),
        Msr(MSR_SYSCFG, "SYSCFG", lambda p: p.is_amd_like, write_rule=_syscfg_write),
        Msr(MSR_SEV_STATUS, "SEV_STATUS", lambda p: p.is_amd_like and p.sev,
            write_rule=_read_only),
    ]
}  # fmt: skip


def msr_index(name_or_number: str) -> int:
    """An MSR index from a name (``IA32_FEATURE_CONTROL``) or a number (``0x3a``)."""
    for msr in MSRS.values():
        if msr.name.lower() == name_or_number.strip().lower():
            return msr.index
    try:
        index = int(name_or_number, 0)
    except ValueError:
        names = ", ".join(m.name for m in MSRS.values())
        raise InvalidInput(f"unknown MSR {name_or_number!r}; known: {names}") from None
    return _u32("MSR number", index)


def _u32(what: str, value: int) -> int:
    # RDMSR/WRMSR take the index in ECX, CPUID its operands in EAX and ECX: 32 bits each.
    if not 0 <= value <= 0xFFFF_FFFF:
        raise InvalidInput(f"{what} {value:#x} does not fit in 32 bits")
    return value


def raw_msr(txn: StateTxn, index: int) -> int:
    """The stored value of an MSR, without access rules (for status displays and the BIOS)."""
    value = txn.get(_NS, f"{index:08x}")
    return 0 if value is None else int.from_bytes(value, "little")


def _set_raw(txn: StateTxn, index: int, value: int) -> None:
    txn.put(_NS, f"{index:08x}", value.to_bytes(8, "little"))


def _lookup(profile: Profile, index: int, op: str) -> Msr:
    msr = MSRS.get(index)
    if msr is None or not msr.present(profile):
        raise GeneralProtection(f"{op} {index:#x}: no such MSR on profile {profile.name}")
    return msr


def rdmsr(txn: StateTxn, profile: Profile, index: int) -> int:
    """RDMSR: the register's value, or #GP for an absent or unreadable MSR."""
    msr = _lookup(profile, index, "rdmsr")
    refused = msr.read_rule(profile, lambda i: raw_msr(txn, i), 0)
    if refused:
        raise GeneralProtection(f"rdmsr {msr.name}: {refused}")
    return raw_msr(txn, index)


def wrmsr(txn: StateTxn, profile: Profile, index: int, value: int) -> None:
    """WRMSR: store ``value``, or #GP for an absent, locked or read-only MSR."""
    if not 0 <= value <= _U64:
        raise InvalidInput(f"MSR value {value:#x} does not fit in 64 bits")
    msr = _lookup(profile, index, "wrmsr")
    refused = msr.write_rule(profile, lambda i: raw_msr(txn, i), value)
    if refused:
        raise GeneralProtection(f"wrmsr {msr.name}: {refused}")
    _set_raw(txn, index, value)


def le_pubkey_hash(txn: StateTxn) -> bytes:
    """The 32-byte hash held in IA32_SGXLEPUBKEYHASH0-3, as EINIT compares it.

    This is the processor's internal view (EINIT reads the registers whatever RDMSR's
    access rules), so it works on parts without Flexible Launch Control too.
    """
    return b"".join(raw_msr(txn, IA32_SGXLEPUBKEYHASH0 + i).to_bytes(8, "little") for i in range(4))


def bios_boot(txn: StateTxn, profile: Profile, config: BiosConfig, vendor_hash: bytes) -> None:
    """What the simulated BIOS does at power-on: reset values, then settings, then lock."""
    if profile.is_intel_like:
        le_hash = config.le_pubkey_hash or vendor_hash
        for i, word in enumerate(struct.unpack("<4Q", le_hash)):
            _set_raw(txn, IA32_SGXLEPUBKEYHASH0 + i, word if profile.sgx1 else 0)
        fc = FC_LOCK
        fc |= FC_SGX_ENABLE if config.sgx_enabled else 0
        fc |= FC_SGX_LC if config.sgx_enabled and not config.lc_locked else 0
        _set_raw(txn, IA32_FEATURE_CONTROL, fc)
    if profile.is_amd_like:
        _set_raw(txn, MSR_SYSCFG, SYSCFG_MEM_ENCRYPT_MOD_EN if config.sme_enabled else 0)
        _set_raw(txn, MSR_SEV_STATUS, 0)  # the host is not an SEV guest


# --- CPUID -----------------------------------------------------------------------------

Regs = tuple[int, int, int, int]
_VENDOR_ID = {"intel": b"GenuineIntel", "amd": b"AuthenticAMD", "sim": b"HwsimSimCPU!"}
_MAX_EXT_LEAF = 0x8000001F


def _vendor_regs(profile: Profile, eax: int) -> Regs:
    ebx, edx, ecx = struct.unpack("<3I", _VENDOR_ID[profile.vendor])
    return (eax, ebx, ecx, edx)


def _leaf_0(profile: Profile, _c: BiosConfig, _s: int) -> Regs:
    return _vendor_regs(profile, 0x12 if profile.sgx1 else 0x10)


def _leaf_7(profile: Profile, _c: BiosConfig, subleaf: int) -> Regs:
    # CPUID.(7,0):EBX[2] SGX, ECX[30] SGX_LC (Linux X86_FEATURE_SGX / _SGX_LC).
    if subleaf != 0:
        return (0, 0, 0, 0)
    return (0, int(profile.sgx1) << 2, int(profile.flc) << 30, 0)


def _leaf_12(profile: Profile, config: BiosConfig, subleaf: int) -> Regs:
    # SDM vol. 3D 36.7.2: subleaf 0 capabilities, 1 ATTRIBUTES/XFRM, 2+ EPC sections.
    # With SGX disabled by the BIOS no EPC is reserved and the leaf reads as zeros.
    if not (profile.sgx1 and config.sgx_enabled):
        return (0, 0, 0, 0)
    if subleaf == 0:
        eax = int(profile.sgx1) | int(profile.sgx2) << 1
        return (eax, 1, 0, 36 << 8 | 31)  # MISCSELECT.EXINFO; max enclave size 2^31/2^36
    if subleaf == 1:
        attrs, xfrm = profile.sgx_attributes, profile.sgx_xfrm
        return (attrs & 0xFFFFFFFF, attrs >> 32, xfrm & 0xFFFFFFFF, xfrm >> 32)
    if subleaf == 2:
        base, size = profile.epc_base, config.epc_size
        # EAX[3:0] = 1 (EPC section), EAX[31:12]/EBX[19:0] base; ECX[31:12]/EDX[19:0] size;
        # ECX[3:0] what the EPC engine protects: 1 confidentiality, integrity and replay
        # (SGX1's MEE), 2 confidentiality only (TME-MK AES-XTS).
        protection = 1 if profile.epc_engine.integrity else 2
        return (base & 0xFFFFF000 | 1, base >> 32, size & 0xFFFFF000 | protection, size >> 32)
    return (0, 0, 0, 0)


def _leaf_ext_0(profile: Profile, _c: BiosConfig, _s: int) -> Regs:
    return _vendor_regs(profile, _MAX_EXT_LEAF)


def _leaf_8000001f(profile: Profile, _c: BiosConfig, _s: int) -> Regs:
    # Linux amd-memory-encryption.rst: EAX[0] SME, [1] SEV, [3] SEV-ES; EBX[5:0] C-bit,
    # EBX[11:6] physical address reduction; ECX ASIDs; EDX minimum SEV (non-ES) ASID.
    if not profile.sme:
        return (0, 0, 0, 0)
    eax = int(profile.sme) | int(profile.sev) << 1 | int(profile.sev_es) << 3
    ebx = profile.cbit | profile.phys_addr_reduction << 6
    return (eax, ebx, profile.sev_asids, profile.min_sev_asid)


LEAVES: dict[int, Callable[[Profile, BiosConfig, int], Regs]] = {
    0x0: _leaf_0,
    0x7: _leaf_7,
    0x12: _leaf_12,
    0x80000000: _leaf_ext_0,
    0x8000001F: _leaf_8000001f,
}


def cpuid(profile: Profile, config: BiosConfig, leaf: int, subleaf: int = 0) -> Regs:
    """CPUID(leaf, subleaf) as (EAX, EBX, ECX, EDX); leaves not modelled read as zeros."""
    handler = LEAVES.get(_u32("CPUID leaf", leaf))
    _u32("CPUID subleaf", subleaf)
    return (0, 0, 0, 0) if handler is None else handler(profile, config, subleaf)
