"""Memory views: for each kind of page, each view returns what that actor would see.

Kinds: a plain host page (SME not active), a host page the booted kernel maps with the
C-bit (SME key), a host page SME leaves decrypted (one test per reason of the boot map),
a host page under TSME, an EPC page, a guest's private page and a guest's shared page.
Views: ``physical`` (the DIMM), ``device`` (DMA), ``host`` (host kernel code), ``guest``
(the SEV guest with that ASID). Which host pages carry the C-bit is the boot map's alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from hwsim.machine import Machine
from hwsim.memory import EPC_KEYID, HOST_KEYID, PAGE_SIZE
from hwsim.memview import (
    Region,
    dram_usage,
    map_in,
    memory_map,
    read_view,
    region_at,
    region_in,
    write_view,
)
from hwsim.sev.device import SevDevice
from hwsim.sev.guest import run_guest
from hwsim.sev.kvm import SevVm
from hwsim.sgx.arch import XFRM_LEGACY, AttributeFlag, PageType, SecinfoFlag, Secs, secinfo_flags
from hwsim.sgx.device import SgxEnclaveDevice
from hwsim.sme.boot import HOST_RANGES, HostRange, configure
from memcrypt.errors import InvalidInput
from tests.hwsim.sev.guests import POWER_OFF, flat_image, running, store
from tests.hwsim.sev.test_guest import PRIVATE, SHARED, share_page

PLAIN = 0x10_0000  # host pages the tests write (System RAM)
ENCRYPTED = 0x20_0000
SECRET = b"the same 16 byte"
VALUE = 0x1122334455667788
DECRYPTED = [r for r in HOST_RANGES if r.decrypted]


@pytest.fixture
def sme(machine: Machine) -> Machine:
    """The machine booted with SME active (BIOS bit and mem_encrypt=on)."""
    configure(machine, enable=True)
    machine.power_cycle()
    return machine


def where(machine: Machine, address: int) -> Region:
    region = region_at(memory_map(machine), address)
    assert region is not None
    return region


@pytest.fixture
def guest(machine: Machine) -> tuple[int, int, int]:
    return run_sharing_guest(machine)


def run_sharing_guest(machine: Machine) -> tuple[int, int, int]:
    """A guest that shared SHARED, stored VALUE at SHARED and PRIVATE, and powered off:
    (ASID, system address of SHARED, system address of PRIVATE)."""
    image = flat_image(
        share_page(machine.profile.cbit) + store(SHARED, VALUE) + store(PRIVATE, VALUE) + POWER_OFF
    )
    with SevDevice.open(machine) as dev:
        vm = running(dev, image)
        assert run_guest(vm, 10_000).stop == "shutdown"
        spa = vm.record.spa
        return vm.status().asid, spa + SHARED, spa + PRIVATE


def views(machine: Machine, address: int, n: int, asid: int | None = None) -> Iterator[bytes]:
    yield read_view(machine, "physical", address, n)
    yield read_view(machine, "device", address, n)
    yield read_view(machine, "host", address, n)
    if asid is not None:
        yield read_view(machine, "guest", address, n, asid)


def dimm(machine: Machine, address: int, n: int) -> bytes:
    with machine.transaction(write=False) as txn:
        return txn.physical_read(address, n)


def test_a_plain_host_page_is_the_same_bytes_to_everyone(machine: Machine) -> None:
    write_view(machine, "host", PLAIN, SECRET)
    assert list(views(machine, PLAIN, 16)) == [SECRET, SECRET, SECRET]
    region = where(machine, PLAIN)
    assert (region.kind, region.keyid) == ("host", None) and "SME not active" in region.why


def test_an_sme_page_is_ciphertext_on_the_dimm_and_to_devices_plaintext_to_the_host(
    sme: Machine,
) -> None:
    write_view(sme, "host", ENCRYPTED, SECRET)
    physical, device, host = views(sme, ENCRYPTED, 16)
    assert host == SECRET
    assert physical == device == dimm(sme, ENCRYPTED, 16) != SECRET
    region = where(sme, ENCRYPTED)
    assert (region.kind, region.keyid) == ("host-encrypted", HOST_KEYID)
    sme.power_cycle()  # a new SME key: the page decrypts to noise, even for its owner
    physical_after, _device, host_after = views(sme, ENCRYPTED, 16)
    assert physical_after == physical and host_after not in (SECRET, physical)


@pytest.mark.parametrize("kept", DECRYPTED, ids=[r.name for r in DECRYPTED])
def test_a_page_sme_leaves_decrypted_is_plaintext_on_the_dimm(
    sme: Machine, kept: HostRange
) -> None:
    at = kept.start + 0x100
    write_view(sme, "host", at, SECRET)
    assert list(views(sme, at, 16)) == [SECRET, SECRET, SECRET]
    region = where(sme, at)
    assert (region.kind, region.keyid, region.why) == ("host-decrypted", None, kept.decrypted)


def test_tsme_encrypts_every_host_page_and_decrypts_for_devices(machine: Machine) -> None:
    machine.set_config("tsme", "true")
    machine.set_config("sme_enabled", "false")
    machine.power_cycle()
    pmem = 0x4000_1000  # decrypted under SME; TSME is the controller's and takes it too
    write_view(machine, "host", pmem, SECRET)
    physical, device, host = views(machine, pmem, 16)
    assert device == host == SECRET and physical == dimm(machine, pmem, 16) != SECRET
    assert where(machine, pmem).kind == "host-encrypted"


def test_an_epc_page_is_ciphertext_on_the_dimm_and_the_abort_page_to_the_host(
    machine: Machine,
) -> None:
    with SgxEnclaveDevice(machine) as dev:
        attrs = int(AttributeFlag.MODE64BIT)
        dev.create(Secs(size=2 * PAGE_SIZE, ssaframesize=1, attributes_flags=attrs,
                        attributes_xfrm=int(XFRM_LEGACY)))  # fmt: skip
        rw = secinfo_flags(PageType.REG, int(SecinfoFlag.R | SecinfoFlag.W))
        dev.add_pages(0, SECRET.ljust(PAGE_SIZE, b"\0"), rw)
        index = dev.enclave.page(0)
        paddr = dev.epc.paddr(index)
        physical, device, host = views(machine, paddr, 16)
        assert physical == dev.epc.read_ciphertext(index)[:16] != SECRET
        assert device == host == b"\xff" * 16
        write_view(machine, "host", paddr, b"overwrite")  # dropped by the abort page
        assert dev.epc.read(index)[:16] == SECRET
        epc = [r for r in memory_map(machine) if r.kind == "epc"]
        assert epc and epc[0].keyid == EPC_KEYID and epc[0].start <= paddr < epc[0].end
        assert any(u.keyid == EPC_KEYID and u.pages >= 2 for u in dram_usage(machine))


def test_a_guest_private_page_is_plaintext_only_to_its_guest(
    machine: Machine, guest: tuple[int, int, int]
) -> None:
    asid, _shared, private = guest
    physical, device, host, mine = views(machine, private, 8, asid)
    plain = VALUE.to_bytes(8, "little")
    assert mine == plain
    assert physical == device == host != plain  # the hypervisor's mapping has no C-bit
    with SevDevice.open(machine) as dev:
        (vm,) = SevVm.all(dev)
        assert host == vm.host_read(PRIVATE, 8)  # KVM's own view agrees


def test_a_guest_shared_page_is_plaintext_to_everyone(
    machine: Machine, guest: tuple[int, int, int]
) -> None:
    asid, shared, _private = guest
    plain = VALUE.to_bytes(8, "little")
    assert list(views(machine, shared, 8, asid)) == [plain, plain, plain, plain]


def test_with_sme_active_the_hypervisor_still_reads_guest_memory_as_stored(
    sme: Machine,
) -> None:
    """The boot map's C-bit is for host pages: guest memory is mapped without it."""
    asid, shared, private = run_sharing_guest(sme)
    plain = VALUE.to_bytes(8, "little")
    assert read_view(sme, "host", shared, 8) == plain
    assert read_view(sme, "host", private, 8) == dimm(sme, private, 8) != plain
    assert where(sme, private).keyid == asid
    with SevDevice.open(sme) as dev:
        (vm,) = SevVm.all(dev)
        kvm_page = vm.record.spa + vm.record.span  # KVM's debug bounce page for the guest
    write_view(sme, "host", kvm_page, SECRET)
    assert dimm(sme, kvm_page, 16) == SECRET  # KVM's own pages have no C-bit either
    assert (where(sme, kvm_page).kind, where(sme, kvm_page).keyid) == ("guest-kvm", None)
    with pytest.raises(InvalidInput, match="not mapped into guest"):
        read_view(sme, "guest", kvm_page, 8, asid)
    with sme.transaction(write=False) as txn:  # one address alone: the map's answer
        for r in map_in(txn):
            alone = region_in(txn, r.end - 1)
            assert alone is not None and r.start <= alone.start and alone.end <= r.end
            assert (alone.kind, alone.keyid, alone.owner, alone.why) == (
                r.kind, r.keyid, r.owner, r.why)  # fmt: skip


def test_the_guest_view_writes_through_the_guest_key(
    machine: Machine, guest: tuple[int, int, int]
) -> None:
    asid, _shared, private = guest
    write_view(machine, "guest", private, b"guest wrote", asid)
    assert read_view(machine, "guest", private, 11, asid) == b"guest wrote"
    assert read_view(machine, "physical", private, 11) != b"guest wrote"


def test_the_memory_map_lists_guest_pages_with_their_key_ids(
    machine: Machine, guest: tuple[int, int, int]
) -> None:
    asid, shared, private = guest
    write_view(machine, "host", PLAIN, SECRET)
    regions = memory_map(machine)
    ends = [r.end for r in regions]
    assert all(a.end <= b.start for a, b in itertools.pairwise(regions)), ends

    def at(address: int) -> tuple[str, int | None]:
        (found,) = [r for r in regions if r.start <= address < r.end]
        return found.kind, found.keyid

    assert at(private) == ("guest-private", asid)
    assert at(shared) == ("guest-shared", None)
    assert at(PLAIN) == ("host", None)
    usage = {u.keyid for u in dram_usage(machine)}
    assert {None, asid} <= usage


def test_bad_requests_are_refused_in_words(machine: Machine, guest: tuple[int, int, int]) -> None:
    asid, _shared, _private = guest
    with pytest.raises(InvalidInput, match="not mapped into guest"):
        read_view(machine, "guest", PLAIN, 8, asid)
    with pytest.raises(InvalidInput, match="no running SEV guest has ASID"):
        read_view(machine, "guest", PLAIN, 8, asid + 1)
    with pytest.raises(InvalidInput, match="needs an ASID"):
        read_view(machine, "guest", PLAIN, 8)
    with pytest.raises(InvalidInput, match="unknown view"):
        read_view(machine, "dimm", PLAIN, 8)  # type: ignore[arg-type]
