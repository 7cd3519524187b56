"""The attacks: each one uses only the access its attacker has.

Attackers and their one code path each, a view of :mod:`hwsim.memview` (the same views
``hwsim mem read`` gives a person):

- physical (cold boot, bus interposer, DIMM replay): the ``physical`` view, the DRAM as
  it is on the DIMM; the MEE's metadata is found through the memory map;
- a rogue DMA device: the ``device`` view, the memory controller without the C-bit (so
  with TSME, which the controller applies to everything, it is decrypted), the PRM's
  abort page included;
- a compromised kernel: the ``host`` view, the kernel's own mapping (C-bit where the
  booted kernel's SME map sets it; the EPC is the abort page);
- a compromised hypervisor: its nested page table and the ``host`` view of guest memory
  (ciphertext for private pages), the VMCB (``registers``/``set_register`` of the VM);
  a VM it runs with another guest's ASID loads through the ``guest`` view of that ASID.

No attacker reads a key: key slots stay inside the memory engine. The victims' own steps
(the guest writing its memory, the enclave reading its page) are the victim's, through
its key, inside the package (:mod:`._victims`). Whether a secret was recovered is judged
by comparing what the attacker ended with against the planted bytes; each secret's
result names the region of the memory map that holds it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from hwsim._pagecrypt import TAG_SIZE
from hwsim.attacks._victims import (
    BOUNCE_GPA,
    PUBLIC_GPA,
    SECRET_GPA,
    EnclaveVictim,
    HostVictim,
    KernelMemory,
    PlainVm,
    Planted,
    SevGuest,
    hypervisor_read,
    hypervisor_write,
)
from hwsim.machine import Transaction
from hwsim.memory import PAGE_SIZE
from hwsim.memview import Region, map_in, read_in, region_at, region_in, write_in
from hwsim.prm import MachineCheck
from hwsim.sev.kvm import KvmError, SevVm
from hwsim.sme.boot import KernelBoot

__all__ = ["ATTACKS", "Attack", "Lab", "Outcome", "SecretResult", "Target", "Verdict"]


class Outcome(Enum):
    RECOVERED = "recovered"
    PARTIAL = "partial"
    BLOCKED = "blocked"
    NA = "n/a"


class Target(Enum):
    """Whose secrets the attack goes after."""

    HOST = "host"  # the host's secrets, and a plain VM for the hypervisor's attacks
    SEV = "sev"
    SEV_ES = "sev-es"
    ENCLAVE = "enclave"


@dataclass(frozen=True)
class SecretResult:
    name: str
    where: str
    recovered: bool
    why: str
    region: Region | None = None  # the memory map's region that held it

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "where": self.where, "recovered": self.recovered,
                "why": self.why,
                "map_region": None if self.region is None else self.region.as_json()}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """What one attack achieved: the outcome, why, the attacker's bytes, each secret."""

    outcome: Outcome
    detail: str
    observed: bytes = b""
    secrets: tuple[SecretResult, ...] = ()


class NotApplicable(Exception):
    """The attack does not apply to this target (the reason is the message)."""


class _Protected(Protocol):
    def protection(self, paddr: int) -> str | None: ...


@dataclass
class Lab:
    """One attack's world: an open transaction, the target, the kernel's boot decision."""

    txn: Transaction
    target: Target
    boot: KernelBoot
    power_cycle_after: bool = False
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def host(self) -> HostVictim:
        if self.target is not Target.HOST:
            raise NotApplicable("no host secrets in this scenario")
        victim = HostVictim(self.txn, self.boot)
        self.cleanup.append(victim.close)
        return victim

    def vm(self) -> PlainVm | SevGuest:
        if self.target is Target.ENCLAVE:
            raise NotApplicable("an enclave has no hypervisor view")
        vm: PlainVm | SevGuest
        if self.target is Target.HOST:
            vm = PlainVm(self.txn, self.boot)
        else:
            vm = SevGuest(self.txn, es=self.target is Target.SEV_ES)
        self.cleanup.append(vm.close)
        return vm

    def sev(self) -> SevGuest:
        if self.target not in (Target.SEV, Target.SEV_ES):
            raise NotApplicable("an attack on SEV's own mechanisms (no SEV guest here)")
        vm = self.vm()
        assert isinstance(vm, SevGuest)
        return vm

    def enclave(self) -> EnclaveVictim:
        victim = EnclaveVictim(self.txn)
        self.cleanup.append(victim.close)
        return victim

    def victim(self) -> tuple[_Protected, list[Planted]]:
        """The target's main secrets, in DRAM: host RAM, the guest's, the enclave's."""
        if self.target is Target.HOST:
            host = self.host()
            return host, host.ram_secrets()
        if self.target is Target.ENCLAVE:
            enclave = self.enclave()
            return enclave, [enclave.secret]
        guest = self.sev()
        return guest, [guest.secret]

    # -- the attackers' access --------------------------------------------------------
    def physical_read(self, paddr: int, n: int) -> bytes:
        return read_in(self.txn, "physical", paddr, n)

    def physical_write(self, paddr: int, data: bytes) -> None:
        write_in(self.txn, "physical", paddr, data)

    def dma_read(self, paddr: int, n: int) -> bytes:
        return read_in(self.txn, "device", paddr, n)

    def kernel(self) -> KernelMemory:
        return KernelMemory(self.txn, self.boot)

    def memory_map(self) -> list[Region]:
        """The machine's memory map now (the one ``hwsim mem map`` prints)."""
        return map_in(self.txn)

    def region(self, paddr: int) -> Region | None:
        """The memory map's region holding ``paddr`` (its page, for a guest's)."""
        return region_in(self.txn, paddr)


def _judge(
    lab: Lab,
    victim: _Protected,
    reads: list[tuple[Planted, bytes]],
    blocked: Callable[[str], str],
) -> Verdict:
    """Recovered when every secret is in what the attacker read, partial when some are."""
    results = []
    for planted, read in reads:
        found = planted.value in read
        prot = victim.protection(planted.paddr)
        why = ("read in the clear" if prot is None else "decrypted by the attacker's access") \
            if found else blocked(prot or "nothing")  # fmt: skip
        region = lab.region(planted.paddr)
        results.append(SecretResult(planted.name, planted.where, found, why, region))
    observed = b"".join(read for _, read in reads)
    hits = [r for r in results if r.recovered]
    if len(hits) == len(results):
        return Verdict(Outcome.RECOVERED, hits[0].why, observed, tuple(results))
    if hits:
        leaked = ", ".join(r.name for r in hits)
        return Verdict(Outcome.PARTIAL, f"{leaked} leaked", observed, tuple(results))
    return Verdict(Outcome.BLOCKED, results[0].why, observed, tuple(results))


def _goal(name: str, reached: bool, why: str, observed: bytes) -> Verdict:
    """The verdict of an active attack: its goal reached (recovered) or not."""
    outcome = Outcome.RECOVERED if reached else Outcome.BLOCKED
    return Verdict(outcome, why, observed, (SecretResult(name, "", reached, why),))


# -- physical attackers -----------------------------------------------------------------


def cold_boot(lab: Lab) -> Verdict:
    """The DIMMs' contents at power-off; the machine then powers on with new keys."""
    victim, secrets = lab.victim()
    reads = [(p, lab.physical_read(p.paddr, len(p.value))) for p in secrets]
    lab.power_cycle_after = True
    return _judge(lab, victim, reads, lambda k: f"ciphertext under {k}, which is lost at power-off")


def bus_snoop(lab: Lab) -> Verdict:
    """Three writes of one line, seen on the bus: the secret, another value, the secret."""
    victim, secrets = lab.victim()
    p = secrets[0]
    seen = [lab.physical_read(p.paddr, 16)]
    for value in (os.urandom(len(p.value)), p.value):
        _rewrite(lab, victim, p, value)
        seen.append(lab.physical_read(p.paddr, 16))
    observed = b"".join(seen)
    if seen[0] == p.value[:16]:
        return Verdict(Outcome.RECOVERED, "plaintext on the memory bus", observed)
    if seen[0] == seen[2] != seen[1]:
        why = "equal ciphertext at one address: writes 1 and 3 carried the same value"
        return Verdict(Outcome.PARTIAL, why, observed)
    why = "no pattern: every write's ciphertext is new (the MEE's version counter)"
    return Verdict(Outcome.BLOCKED, why, observed)


def _rewrite(lab: Lab, victim: _Protected, p: Planted, value: bytes) -> None:
    """The victim writes its own secret's location again."""
    if isinstance(victim, EnclaveVictim):
        victim.rewrite(value)
    elif isinstance(victim, SevGuest):
        victim.guest_write(SECRET_GPA, value)
    else:
        KernelMemory(lab.txn, lab.boot).write(p.paddr, value)


def dma(lab: Lab) -> Verdict:
    """A device reads the secrets' physical addresses by DMA."""
    victim, secrets = lab.victim()
    reads = [(p, lab.dma_read(p.paddr, len(p.value))) for p in secrets]
    if isinstance(victim, EnclaveVictim):
        return _judge(lab, victim, reads, lambda _k: "the PRM answers devices with the abort page")
    return _judge(lab, victim, reads, lambda k: f"the device has no C-bit: ciphertext under {k}")


def pmem(lab: Lab) -> Verdict:
    """The persistent-memory DIMM read after power-off (the article's third SME threat)."""
    host = lab.host()
    p = host.pmem_file
    read = lab.physical_read(p.paddr, len(p.value))
    lab.power_cycle_after = True
    verdict = _judge(lab, host, [(p, read)], lambda k: f"ciphertext under {k}: the key changes at "
                     "every boot, so its owner loses the file too")  # fmt: skip
    if verdict.outcome is Outcome.RECOVERED and lab.boot.sme_active:
        why = "Linux maps persistent memory decrypted (the SME key changes at every boot)"
        return Verdict(Outcome.RECOVERED, why, verdict.observed, verdict.secrets)
    return verdict


def replay_physical(lab: Lab) -> Verdict:
    """Save a page's DRAM contents, let the victim rotate its secret, write them back."""
    if lab.target is Target.ENCLAVE:
        return _replay_epc(lab)
    vm = lab.vm()
    spans = [(vm.secret.paddr & ~(PAGE_SIZE - 1), PAGE_SIZE)]
    old = [lab.physical_read(a, n) for a, n in spans]
    vm.guest_write(SECRET_GPA, os.urandom(16))
    for (a, _), data in zip(spans, old, strict=True):
        lab.physical_write(a, data)
    reached = vm.guest_read(SECRET_GPA, 16) == vm.secret.value
    why = "the guest reads its old secret: no integrity or freshness" if reached else "refused"
    return _goal("the revoked secret back in use", reached, why, old[0][:64])


def _replay_epc(lab: Lab) -> Verdict:
    enclave = lab.enclave()
    spans = [(enclave.secret.paddr, PAGE_SIZE)]
    regions = lab.memory_map()
    epc = region_at(regions, enclave.secret.paddr)
    meta = [r for r in regions if r.kind == "epc-metadata"]
    if epc is not None and meta:  # the page's MAC too: all the DIMM holds (MEE)
        index = (enclave.secret.paddr - epc.start) // PAGE_SIZE
        tag_page = (meta[0].start + index * TAG_SIZE) & ~(PAGE_SIZE - 1)
        spans.append((tag_page, PAGE_SIZE))
    old = [lab.physical_read(a, n) for a, n in spans]
    enclave.rewrite(os.urandom(32))
    for (a, _), data in zip(spans, old, strict=True):
        lab.physical_write(a, data)
    try:
        back = enclave.reread(32)
    except MachineCheck:
        lab.power_cycle_after = True
        why = "the MEE's version counter (freshness): machine check, memory locked"
        return _goal("the revoked key back in use", False, why, old[0][:64])
    reached = back == enclave.secret.value
    why = "the enclave reads its old key: AES-XTS has no freshness" if reached else "refused"
    return _goal("the revoked key back in use", reached, why, old[0][:64])


# -- software attackers -----------------------------------------------------------------


def kernel_read(lab: Lab) -> Verdict:
    """The compromised kernel reads the secrets through its own mapping."""
    if lab.target in (Target.SEV, Target.SEV_ES):
        raise NotApplicable("the host kernel is the hypervisor here: see hv-read")
    victim, secrets = lab.victim()
    kernel = lab.kernel()
    reads = [(p, kernel.read(p.paddr, len(p.value))) for p in secrets]
    verdict = _judge(
        lab, victim, reads, lambda _k: "abort page: host reads of the EPC give all ones"
    )
    if verdict.outcome is Outcome.RECOVERED and lab.boot.sme_active | lab.boot.tsme:
        why = "the kernel's own mapping decrypts: SME does not stop privileged software"
        return Verdict(Outcome.RECOVERED, why, verdict.observed, verdict.secrets)
    return verdict


def hv_read(lab: Lab) -> Verdict:
    """The hypervisor reads the guest's secret through its own mapping of guest memory."""
    vm = lab.vm()
    read = vm.host_read(SECRET_GPA, 16)
    return _judge(lab, vm, [(vm.secret, read)], lambda k: f"ciphertext under {k}")


def hv_regs_read(lab: Lab) -> Verdict:
    """The guest loads its secret into RAX/RCX and halts; the hypervisor reads them."""
    vm = lab.vm()
    vm.run_to_halt()
    regs = vm.registers()
    if regs is None:  # SEV-ES: all the hypervisor has is the VMSA page as DRAM holds it
        read = vm.vmsa()
    else:
        read = b"".join(regs.get(r, 0).to_bytes(8, "little") for r in ("rax", "rcx"))
    return _judge(lab, vm, [(vm.secret, read)], lambda _k: "the registers are encrypted (VMSA)")


def hv_regs_write(lab: Lab) -> Verdict:
    """At the exit the hypervisor sets RAX; the resumed guest writes AL to its serial."""
    vm = lab.vm()
    vm.run_to_halt()
    try:
        vm.set_register("rax", ord("X"))
    except KvmError as exc:  # SEV-ES: the registers are in the encrypted VMSA
        return _goal("control of the guest's RAX", False, f"refused: {exc}", b"")
    out = vm.resume()
    reached = out == b"X"
    why = "the guest resumed with the hypervisor's RAX" if reached else "RAX kept its value"
    return _goal("control of the guest's RAX", reached, why, out)


def replay(lab: Lab) -> Verdict:
    """Software replay: the hypervisor (or kernel) saves and restores a page's ciphertext."""
    if lab.target is Target.ENCLAVE:
        enclave = lab.enclave()
        kernel = lab.kernel()
        old = kernel.read(enclave.secret.paddr, 32)
        enclave.rewrite(os.urandom(32))
        kernel.write(enclave.secret.paddr, old)
        reached = enclave.reread(32) == enclave.secret.value
        why = "abort page: the kernel can neither read nor write the EPC"
        return _goal("the revoked key back in use", reached, why, old)
    vm = lab.vm()
    old = vm.host_read(SECRET_GPA, 16)
    vm.guest_write(SECRET_GPA, os.urandom(16))
    vm.host_write(SECRET_GPA, old)
    reached = vm.guest_read(SECRET_GPA, 16) == vm.secret.value
    why = "the guest reads its old secret: no integrity or freshness" if reached else "refused"
    return _goal("the revoked secret back in use", reached, why, old)


def remap(lab: Lab) -> Verdict:
    """SEVered: the page the guest serves is remapped to its secret's page."""
    vm = lab.vm()
    vm.remap(PUBLIC_GPA, SECRET_GPA)
    served = vm.guest_read(PUBLIC_GPA, 16)  # the guest sends its page out, in the clear
    return _judge(lab, vm, [(vm.secret, served)], lambda _k: "the guest served its own page")


def block_move(lab: Lab) -> Verdict:
    """Copy the secret's first 16-byte block into the page the guest serves."""
    if lab.target is Target.ENCLAVE:
        enclave = lab.enclave()
        kernel = lab.kernel()
        kernel.write(enclave.secret.paddr + 16, kernel.read(enclave.secret.paddr, 16))
        reached = enclave.reread(32) != enclave.secret.value
        return _goal("a moved block in the enclave", reached,
                     "abort page: the kernel can neither read nor write the EPC", b"")  # fmt: skip
    vm = lab.vm()
    before = vm.guest_read(PUBLIC_GPA, 16)
    vm.host_write(PUBLIC_GPA, vm.host_read(SECRET_GPA, 16))
    served = vm.guest_read(PUBLIC_GPA, 16)
    verdict = _judge(lab, vm, [(vm.secret, served)], lambda _k: "")
    if verdict.outcome is Outcome.RECOVERED:
        return verdict
    if served != before:
        why = ("the block decrypts to garbage at its new address (the tweak is per address, "
               "XTS): integrity lost, content safe; Zen 1's XE tweak is not modelled")  # fmt: skip
        return Verdict(Outcome.PARTIAL, why, served, verdict.secrets)
    return Verdict(Outcome.BLOCKED, "the write did not reach the guest", served, verdict.secrets)


def bounce_oracle(lab: Lab) -> Verdict:
    """The shared bounce page as an encryption oracle (Li et al. 2019)."""
    vm = lab.sev()
    chosen = b"hypervisor chose"
    vm.host_write(BOUNCE_GPA, chosen)  # a "disk read" completes into the bounce page
    vm.guest_write(PUBLIC_GPA, vm.guest_read(BOUNCE_GPA, 16))  # SWIOTLB copies it in
    oracle = vm.host_read(PUBLIC_GPA, 16)  # chosen plaintext's ciphertext at that address
    vm.guest_write(PUBLIC_GPA, b"guest's own data")  # later, the guest reuses the buffer
    vm.host_write(PUBLIC_GPA, oracle)
    reached = vm.guest_read(PUBLIC_GPA, 16) == chosen
    why = "the guest reads the hypervisor's chosen plaintext in private memory"
    return _goal("chosen plaintext in private memory", reached, why if reached else "refused",
                 oracle)  # fmt: skip


def asid_swap(lab: Lab) -> Verdict:
    """CROSSLINE: the hypervisor runs its own VM with the victim's ASID in the VMCB."""
    victim = lab.sev()
    helper = SevVm.create(victim.dev, name="lab-attacker", memory_size=16 << 20,
                          firmware_size=PAGE_SIZE, policy=0)  # fmt: skip
    lab.cleanup.insert(0, helper.decommission)
    helper.record.npt_overrides[PUBLIC_GPA // PAGE_SIZE] = victim.secret.paddr // PAGE_SIZE
    # VMRUN with VMCB.ASID = the victim's: the helper's loads decrypt with that key slot.
    spa = helper.record.npt(PUBLIC_GPA)
    assert spa is not None
    loaded = read_in(lab.txn, "guest", spa, 16, victim.asid)
    hypervisor_write(lab.txn, helper.record, BOUNCE_GPA, loaded)  # into a shared page
    read = hypervisor_read(lab.txn, helper.record, BOUNCE_GPA, 16)
    return _judge(lab, victim, [(victim.secret, read)], lambda _k: "the ASID check held")


def cipherleaks(lab: Lab) -> Verdict:
    """A loop stores each bit of the secret to one private word; the hypervisor watches
    that word's ciphertext and knows the initial 0's (CipherLeaks)."""
    vm = lab.sev()
    word = PUBLIC_GPA + 0x100
    vm.guest_write(word, bytes(8))
    zero = vm.host_read(word, 16)
    bits = []
    for byte in vm.secret.value:
        for i in range(8):
            vm.guest_write(word, (byte >> i & 1).to_bytes(8, "little"))
            bits.append(int(vm.host_read(word, 16) != zero))
    guess = bytes(sum(b << i for i, b in enumerate(bits[k : k + 8])) for k in range(0, 128, 8))
    return _judge(lab, vm, [(vm.secret, guess)], lambda _k: "no two ciphertexts were equal")


@dataclass(frozen=True)
class Attack:
    name: str
    attacker: str
    row: str  # sim.md 4.5's row, "" where it has none
    summary: str
    run: Callable[[Lab], Verdict]


ATTACKS: dict[str, Attack] = {
    a.name: a
    for a in (
        Attack("cold-boot", "physical: cold boot / DIMM dump", "1",
               "DRAM after power-off: ciphertext survives, keys do not", cold_boot),
        Attack("bus-snoop", "physical: memory-bus interposer", "2",
               "traffic between CPU and DRAM; equal plaintext at one address", bus_snoop),
        Attack("dma", "rogue DMA device", "3", "a device reads memory by DMA", dma),
        Attack("kernel-read", "compromised kernel", "",
               "the kernel reads host memory (or the EPC) through its mapping", kernel_read),
        Attack("pmem", "physical: persistent memory", "",
               "a file on persistent memory, read from the DIMM after power-off", pmem),
        Attack("hv-read", "compromised hypervisor", "4",
               "the hypervisor reads guest memory through its mapping", hv_read),
        Attack("hv-regs-read", "compromised hypervisor", "5",
               "guest registers read at a VM exit", hv_regs_read),
        Attack("hv-regs-write", "compromised hypervisor", "6",
               "guest registers changed at a VM exit", hv_regs_write),
        Attack("replay", "compromised hypervisor (or kernel)", "7",
               "a page's ciphertext saved and written back later", replay),
        Attack("replay-physical", "physical: DRAM replay", "7b",
               "the same replay by a physical attacker (EPC: page and MAC)", replay_physical),
        Attack("remap", "compromised hypervisor", "8",
               "a guest page remapped to another physical page (SEVered)", remap),
        Attack("block-move", "compromised hypervisor (or kernel)", "9",
               "a 16-byte ciphertext block moved to another address", block_move),
        Attack("bounce-oracle", "compromised hypervisor", "10",
               "the I/O bounce buffer as an encryption oracle", bounce_oracle),
        Attack("asid-swap", "compromised hypervisor", "11",
               "another VM run with the victim's ASID (CROSSLINE)", asid_swap),
        Attack("cipherleaks", "compromised hypervisor", "12",
               "equal ciphertext at one address over time (CipherLeaks)", cipherleaks),
    )
}  # fmt: skip
