"""SME at boot: whether the simulated kernel activates it, and how it maps host memory.

Linux tells three states apart (``Documentation/arch/x86/amd-memory-encryption.rst``;
``shared/reference/sev.md`` 3): *Supported* (CPUID 0x8000001F EAX[0]), *Enabled*
(SYSCFG[23] MemEncryptionModEn, which only the BIOS sets: "if this bit is not set upon
Linux startup then Linux itself will not set it") and *Active* (the kernel puts the C-bit
in its page tables). Whether the kernel activates SME depends on ``mem_encrypt=`` and on
how it was built: kernels with ``CONFIG_AMD_MEM_ENCRYPT_ACTIVE_BY_DEFAULT=y`` (era
``old``) activate it unless ``mem_encrypt=off``; since that option was removed (upstream
commit 29956748339a, February 2024, also in 6.8-stable; era ``new``) only
``mem_encrypt=on`` does. Transparent SME (TSME) is the BIOS's alone: the memory
controller encrypts every DRAM access with the host key, whatever the page tables say.

With SME active the kernel maps every page with the C-bit except what stays decrypted on
real systems (``arch/x86/mm/ioremap.c`` ``memremap_should_map_decrypted`` and friends):
firmware reserved and ACPI ranges, MMIO and the framebuffer, boot setup data, persistent
memory (its key would change at every boot) and the SWIOTLB bounce buffers of devices that
cannot address the C-bit. :data:`HOST_RANGES` is the simulated host's physical map, below
2 GiB so that it never meets an EPC or the SEV guest pool of any profile.

This map is the only model of the host's C-bit: :func:`mapping_at` answers for any
address, and :mod:`hwsim.memview`'s host view and memory map (hence ``hwsim mem``,
``hwsim status``, ``sevtool sme status`` and the attack lab) ask it, nothing else.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hwsim.errors import HwsimError
from hwsim.memory import PAGE_SIZE

if TYPE_CHECKING:
    from hwsim.bios import BiosConfig
    from hwsim.machine import Machine, Transaction
    from hwsim.profiles import Profile
    from hwsim.store import StateTxn

__all__ = [
    "HOST_RANGES",
    "KERNEL_NS",
    "OUTSIDE_RAM",
    "HostRange",
    "KernelBoot",
    "MapEntry",
    "booted_kernel",
    "configure",
    "host_range",
    "kernel_boot",
    "kernel_decision",
    "mapping_at",
    "memory_map",
]

KERNEL_NS = "boot.kernel"
MiB = 1 << 20
OUTSIDE_RAM = "RAM outside the firmware map (hypervisor memory)"


@dataclass(frozen=True)
class HostRange:
    """One range of the host's physical map; ``decrypted`` says why the kernel leaves it
    without the C-bit even with SME active (empty: it is encrypted)."""

    start: int
    end: int
    name: str
    kind: str  # E820-like type: ram, reserved, acpi, mmio, pmem
    decrypted: str = ""


HOST_RANGES: tuple[HostRange, ...] = (
    HostRange(0x0000_0000, 0x0008_F000, "low memory", "ram"),
    HostRange(0x0008_F000, 0x0009_0000, "boot setup_data", "ram",
              "handed over by the firmware in the clear (memremap_is_setup_data)"),
    HostRange(0x0009_0000, 0x000A_0000, "low memory", "ram"),
    HostRange(0x000A_0000, 0x0010_0000, "legacy VGA and BIOS ROM", "reserved",
              "firmware reserved range, created decrypted"),
    HostRange(0x0010_0000, 0x3C00_0000, "System RAM (kernel, processes, VMs)", "ram"),
    HostRange(0x3C00_0000, 0x4000_0000, "SWIOTLB bounce buffers", "ram",
              "DMA bounce buffers for devices that cannot address the C-bit"),
    HostRange(0x4000_0000, 0x6000_0000, "persistent memory (pmem0)", "pmem",
              "persistent memory: the SME key changes at every boot"),
    HostRange(0x7000_0000, 0x7100_0000, "framebuffer", "mmio",
              "MMIO and framebuffers are mapped decrypted (pgprot_decrypted)"),
    HostRange(0x7F00_0000, 0x7F10_0000, "ACPI tables and NVS", "acpi",
              "ACPI ranges are created by the firmware decrypted"),
)  # fmt: skip


def host_range(paddr: int) -> HostRange | None:
    """The range of :data:`HOST_RANGES` holding ``paddr``, if any."""
    return next((r for r in HOST_RANGES if r.start <= paddr < r.end), None)


@dataclass(frozen=True)
class KernelBoot:
    """What the kernel decided at this boot."""

    sme_active: bool
    tsme: bool
    why: str  # why SME is active or not
    cmdline: str
    era: str

    def as_json(self) -> dict[str, Any]:
        return {
            "sme_active": self.sme_active,
            "tsme": self.tsme,
            "why": self.why,
            "cmdline": self.cmdline,
            "era": self.era,
        }


def kernel_decision(profile: Profile, config: BiosConfig) -> tuple[bool, str]:
    """(whether the kernel activates SME with these settings, why) - sev.md 3."""
    kernel = config.kernel
    if not profile.sme:
        return False, "the part has no SME (CPUID 0x8000001F EAX[0] = 0)"
    if not config.sme_enabled:
        return False, "the BIOS leaves SYSCFG[23] MemEncryptionModEn clear; Linux never sets it"
    if kernel.mem_encrypt == "on":
        return True, "mem_encrypt=on on the kernel command line"
    if kernel.era == "old":
        if kernel.mem_encrypt == "off":
            return False, "mem_encrypt=off on the kernel command line"
        return True, "the kernel is built with CONFIG_AMD_MEM_ENCRYPT_ACTIVE_BY_DEFAULT=y"
    return False, (
        "no mem_encrypt=on: off by default since CONFIG_AMD_MEM_ENCRYPT_ACTIVE_BY_DEFAULT "
        "was removed (2024, 6.8-stable)"
    )


def kernel_boot(txn: StateTxn, profile: Profile, config: BiosConfig) -> None:
    """At power-on: the kernel reads its command line and decides (kept for this boot)."""
    active, why = kernel_decision(profile, config)
    state = KernelBoot(
        active, profile.sme and config.tsme, why, config.kernel.cmdline, config.kernel.era
    )
    txn.put(KERNEL_NS, "state", json.dumps(state.as_json()).encode())


def booted_kernel(txn: StateTxn, profile: Profile, booted: BiosConfig) -> KernelBoot:
    """The kernel's decision at this boot (``booted``: the BIOS settings in force, used for
    a machine booted before the kernel kept its decision)."""
    raw = txn.get(KERNEL_NS, "state")
    if raw is None:
        active, why = kernel_decision(profile, booted)
        kernel = booted.kernel
        return KernelBoot(active, profile.sme and booted.tsme, why, kernel.cmdline, kernel.era)
    try:
        return KernelBoot(**json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise HwsimError(f"state.db: {KERNEL_NS}/state is corrupt ({exc})") from exc


@dataclass(frozen=True)
class MapEntry:
    """One range of the booted kernel's map: C-bit in its page tables, and whether DRAM
    holds ciphertext there (C-bit, or TSME)."""

    range: HostRange
    cbit: bool
    encrypted: bool

    def as_json(self) -> dict[str, Any]:
        r = self.range
        return {
            "start": f"{r.start:#x}",
            "end": f"{r.end:#x}",
            "name": r.name,
            "kind": r.kind,
            "cbit": self.cbit,
            "encrypted": self.encrypted,
            "decrypted_why": r.decrypted,
        }


def memory_map(boot: KernelBoot) -> list[MapEntry]:
    """The host's physical map as the kernel booted with ``boot`` maps it."""
    return [_entry(boot, r) for r in HOST_RANGES]


def mapping_at(boot: KernelBoot, paddr: int) -> MapEntry:
    """How the booted kernel maps the page holding ``paddr``: its range of
    :data:`HOST_RANGES`, or, outside them, RAM the kernel maps like System RAM (the
    hypervisor's memory outside the firmware's map) as a one-page range."""
    where = host_range(paddr)
    if where is None:
        page = paddr - paddr % PAGE_SIZE
        where = HostRange(page, page + PAGE_SIZE, OUTSIDE_RAM, "ram")
    return _entry(boot, where)


def _entry(boot: KernelBoot, r: HostRange) -> MapEntry:
    cbit = boot.sme_active and not r.decrypted
    return MapEntry(r, cbit, cbit or boot.tsme)


def configure(
    machine: Machine, *, enable: bool, tsme: bool = False, era: str | None = None
) -> BiosConfig:
    """Enable: BIOS MemEncryptionModEn on and ``mem_encrypt=on`` (with ``tsme``, TSME on
    too). Disable: ``mem_encrypt=off`` and TSME off (with ``tsme``, TSME only;
    MemEncryptionModEn stays, SEV needs it). ``era`` picks the kernel's default. Written
    to machine.toml through :meth:`Machine.change_config`; in force at the next boot."""
    from hwsim.bios import KERNEL_ERAS, KernelConfig
    from memcrypt.errors import InvalidInput

    profile = machine.profile
    if not profile.sme:
        raise HwsimError(
            f"profile {profile.name} has no SME (CPUID 0x8000001F EAX[0] = 0)",
            hint="make a machine with an SME part: hwsim init --profile naples, rome or sim",
        )
    if era is not None and era not in KERNEL_ERAS:
        raise InvalidInput(f"kernel era {era!r}: allowed {' or '.join(KERNEL_ERAS)}")

    def change(_txn: Transaction, now: BiosConfig) -> BiosConfig:
        kernel = now.kernel if era is None else dataclasses.replace(now.kernel, era=era)
        if enable:
            now = now.with_setting(profile, "sme_enabled", "true")
            kernel = dataclasses.replace(kernel, mem_encrypt="on")
        elif not tsme:
            kernel = dataclasses.replace(kernel, mem_encrypt="off")
        if tsme or not enable:
            now = now.with_setting(profile, "tsme", "true" if enable else "false")
        return dataclasses.replace(now, kernel=KernelConfig.from_table(kernel.as_dict()))

    return machine.change_config(change)
