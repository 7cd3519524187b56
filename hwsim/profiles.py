"""CPU profiles: the parts a simulated machine can be, as data.

Each profile models one real part (or, for ``sim``, a simulator-only part with both
vendors' features). The figures come from public sources: the SGX leaves and MSRs from the
SDM vol. 3D ch. 36-38 and Linux ``arch/x86/kernel/cpu/sgx``; the SME/SEV figures from
``Documentation/arch/x86/amd-memory-encryption.rst`` and the SEV API specification
(see ``../shared/reference/sim.md`` and ``sev.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from memcrypt.errors import InvalidInput

__all__ = ["DEFAULT_PROFILE", "PROFILES", "EpcEngine", "Profile", "get_profile"]

MiB = 1 << 20
GiB = 1 << 30


class EpcEngine(Enum):
    """What protects the EPC in DRAM (``sim.md`` 3.9; SDM vol. 2A, CPUID leaf 12H)."""

    # SGX1's Memory Encryption Engine: encryption, a MAC per line and a counter tree.
    MEE = "mee"
    # TME-MK AES-XTS (Ice Lake Xeon, "scalable SGX"): encryption only.
    XTS = "xts"

    @property
    def integrity(self) -> bool:
        """A changed ciphertext is detected when the CPU next reads it."""
        return self is EpcEngine.MEE

    @property
    def freshness(self) -> bool:
        """An old ciphertext written back (a replay) is detected."""
        return self is EpcEngine.MEE


@dataclass(frozen=True)
class Profile:
    """One CPU part: what CPUID reports and which MSRs exist.

    ``epc_size`` is the largest EPC the part's BIOS can reserve (the ``epc_size`` BIOS
    setting may choose less); ``epc_base`` is where the EPC section starts in the
    simulated physical address space; ``epc_engine`` is what protects it in DRAM.
    ``cbit`` and ``phys_addr_reduction`` are CPUID 0x8000001F EBX[5:0] and EBX[11:6];
    ``sev_asids`` is ECX (guests at once) and ``min_sev_asid`` EDX (ASIDs below it are for
    SEV-ES guests).
    """

    name: str
    description: str
    real: bool
    vendor: str  # "intel", "amd" or "sim"
    phys_addr_bits: int
    sgx1: bool = False
    sgx2: bool = False
    flc: bool = False
    epc_base: int = 0
    epc_size: int = 0
    epc_engine: EpcEngine = EpcEngine.XTS
    sgx_xfrm: int = 0
    sgx_attributes: int = 0
    sme: bool = False
    sev: bool = False
    sev_es: bool = False
    cbit: int = 0
    phys_addr_reduction: int = 0
    sev_asids: int = 0
    min_sev_asid: int = 0
    sev_api: tuple[int, int, int] = (0, 0, 0)

    @property
    def sgx(self) -> bool:
        return self.sgx1

    @property
    def is_intel_like(self) -> bool:
        """True for parts that have Intel's MSRs (IA32_FEATURE_CONTROL, the LE hash)."""
        return self.vendor in ("intel", "sim")

    @property
    def is_amd_like(self) -> bool:
        """True for parts that have AMD's MSRs (SYSCFG, SEV_STATUS)."""
        return self.vendor in ("amd", "sim")

    def features(self) -> list[str]:
        """Short feature names, in a stable order, for listings."""
        flags = [
            ("SGX1", self.sgx1),
            ("SGX2", self.sgx2),
            ("FLC", self.flc),
            ("SME", self.sme),
            ("SEV", self.sev),
            ("SEV-ES", self.sev_es),
        ]
        return [name for name, on in flags if on]


# ATTRIBUTES bits a part lets enclaves set (CPUID.(0x12,1):EAX): INIT 0, DEBUG 1,
# MODE64BIT 2, PROVISIONKEY 4, EINITTOKENKEY 5 (Linux sgx/arch.h); KSS 7 from Ice Lake.
_SGX_ATTRS_SKL = 0x37
_SGX_ATTRS_ICX = 0xB7

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="skylake",
            description="Skylake client: SGX1, legacy launch control (vendor-key LE hash)",
            real=True,
            vendor="intel",
            phys_addr_bits=39,
            sgx1=True,
            epc_base=0x8000_0000,
            # 128 MiB PRM, of which about 93.5 MiB is usable EPC (the rest holds EPCM/MEE).
            epc_size=0x5D8_0000,
            epc_engine=EpcEngine.MEE,
            sgx_xfrm=0x1F,
            sgx_attributes=_SGX_ATTRS_SKL,
        ),
        Profile(
            name="icelake-sp",
            description="Ice Lake Xeon Scalable: SGX2, Flexible Launch Control, TME-MK EPC",
            real=True,
            vendor="intel",
            phys_addr_bits=46,
            sgx1=True,
            sgx2=True,
            flc=True,
            epc_base=0x1_0000_0000,
            epc_size=8 * GiB,
            sgx_xfrm=0x2E7,
            sgx_attributes=_SGX_ATTRS_ICX,
        ),
        Profile(
            name="naples",
            description="EPYC 7001 (Zen 1): SME and SEV, SEV API 0.17",
            real=True,
            vendor="amd",
            phys_addr_bits=48,
            sme=True,
            sev=True,
            cbit=47,
            phys_addr_reduction=5,
            sev_asids=15,
            min_sev_asid=1,
            sev_api=(0, 17, 11),
        ),
        Profile(
            name="rome",
            description="EPYC 7002 (Zen 2): SME, SEV and SEV-ES (ASIDs 1-99 for SEV-ES)",
            real=True,
            vendor="amd",
            phys_addr_bits=48,
            sme=True,
            sev=True,
            sev_es=True,
            cbit=47,
            phys_addr_reduction=5,
            sev_asids=509,
            min_sev_asid=100,
            sev_api=(0, 24, 15),
        ),
        Profile(
            name="sim",
            description="simulator-only part with both vendors' features (not a real CPU)",
            real=False,
            vendor="sim",
            phys_addr_bits=52,
            sgx1=True,
            sgx2=True,
            flc=True,
            epc_base=0x1_0000_0000,
            epc_size=256 * MiB,
            sgx_xfrm=0x2E7,
            sgx_attributes=_SGX_ATTRS_ICX,
            sme=True,
            sev=True,
            sev_es=True,
            cbit=51,
            phys_addr_reduction=1,
            sev_asids=64,
            min_sev_asid=16,
            sev_api=(0, 24, 15),
        ),
    )
}

DEFAULT_PROFILE = "sim"


def get_profile(name: str) -> Profile:
    """The profile called ``name``; :class:`InvalidInput` listing the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise InvalidInput(f"unknown profile {name!r}; known profiles: {known}") from None
