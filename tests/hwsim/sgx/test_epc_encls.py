"""EPC encryption and abort-page semantics; ECREATE/EADD/EREMOVE/EDBG*; paging; SGX2."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from hwsim.machine import Machine
from hwsim.sgx._encls import (
    EAdd,
    EBlock,
    ECreate,
    EDbgRd,
    EDbgWr,
    ELd,
    ERemove,
    ETrack,
    EWb,
    encls,
)
from hwsim.sgx._enclu import eaccept, emodpe
from hwsim.sgx.arch import PAGE_SIZE, PageType, SecinfoFlag, SgxStatus, secinfo_flags
from hwsim.sgx.device import SgxEnclaveDevice
from hwsim.sgx.errors import GP, PF, SgxError, SgxFault, SgxStatusError
from hwsim.sgx.platform import epc_of
from memcrypt.errors import InvalidInput
from tests.hwsim.sgx.conftest import RW, ImageMaker, build_device

MachineFactory = Callable[..., Machine]
DATA = 3 * PAGE_SIZE  # offset of the payload page in the test images


def fault(fn: Callable[[], object]) -> int:
    with pytest.raises(SgxFault) as caught:
        fn()
    return caught.value.vector


def status(fn: Callable[[], object]) -> SgxStatus:
    with pytest.raises(SgxStatusError) as caught:
        fn()
    return caught.value.status


# -- the EPC --------------------------------------------------------------------------------


def test_host_read_of_an_epc_page_is_all_ones(machine: Machine, image: ImageMaker) -> None:
    dev = build_device(machine, image(payload=b"secret"))
    page = dev.enclave.page(DATA)
    paddr = dev.epc.paddr(page)
    assert dev.epc.host_read(paddr, PAGE_SIZE) == b"\xff" * PAGE_SIZE
    dev.epc.host_write(paddr, b"\0" * 16)  # dropped
    assert dev.epc.read(page).startswith(b"secret")


def test_dram_holds_ciphertext_under_a_per_boot_key(machine: Machine, image: ImageMaker) -> None:
    img = image(payload=b"secret" * 100)
    dev = build_device(machine, img)
    page = dev.enclave.page(DATA)
    ciphertext = dev.epc.read_ciphertext(page)
    assert b"secret" not in ciphertext and len(ciphertext) == PAGE_SIZE
    machine.power_cycle()
    again = build_device(machine, img)
    assert again.epc.read_ciphertext(again.enclave.page(DATA)) != ciphertext


def test_no_epc_on_a_part_without_sgx(machine_factory: MachineFactory) -> None:
    with pytest.raises(SgxError, match="has no SGX"):
        epc_of(machine_factory("naples"))


def test_no_epc_when_the_bios_disabled_sgx(machine: Machine) -> None:
    machine.set_config("sgx_enabled", "false")
    machine.power_cycle()
    with pytest.raises(SgxError, match="SGX disabled by BIOS") as caught:
        SgxEnclaveDevice(machine)
    assert caught.value.hint and "sgx_enabled" in caught.value.hint


# -- building ----------------------------------------------------------------------------------


def test_ecreate_checks(machine: Machine, image: ImageMaker) -> None:
    epc = epc_of(machine)
    good = image().secs
    for bad in (
        dataclasses.replace(good, size=3 * PAGE_SIZE),
        dataclasses.replace(good, baseaddr=PAGE_SIZE),
        dataclasses.replace(good, attributes_flags=good.attributes_flags | 1),  # INIT
        dataclasses.replace(good, attributes_xfrm=0x1),
        dataclasses.replace(good, ssaframesize=0),
    ):
        with pytest.raises(SgxFault, match="ECREATE") as caught:
            encls(epc, ECreate(epc.alloc(), bad.pack()))
        assert caught.value.vector == GP
    used = build_device(machine, image()).enclave.secs_page
    assert fault(lambda: encls(epc, ECreate(used, good.pack()))) == PF


def test_eadd_checks(machine: Machine, image: ImageMaker) -> None:
    img = image()
    dev = SgxEnclaveDevice(machine)
    dev.create(img.secs)
    epc, secs = dev.epc, dev.enclave.secs_page
    w_only = secinfo_flags(PageType.REG, int(SecinfoFlag.W))
    page = bytes(PAGE_SIZE)
    assert fault(lambda: encls(epc, EAdd(epc.alloc(), secs, 0, page, w_only))) == GP
    outside = img.secs.size
    assert fault(lambda: encls(epc, EAdd(epc.alloc(), secs, outside, page, RW | 0x200))) == GP
    with pytest.raises(InvalidInput, match="write permission needs read"):
        dev.add_pages(0, page, w_only)
    built = build_device(machine, img)
    built.init(img.sigstruct)
    with pytest.raises(InvalidInput, match="initialized"):
        built.add_pages(DATA, page, RW | 0x200)


def test_eremove_of_a_secs_with_pages_is_child_present(machine: Machine, image: ImageMaker) -> None:
    dev = build_device(machine, image())
    epc = dev.epc
    assert status(lambda: encls(epc, ERemove(dev.enclave.secs_page))) == SgxStatus.CHILD_PRESENT
    dev.enclave.enter()
    assert status(lambda: encls(epc, ERemove(dev.enclave.page(0)))) == SgxStatus.ENCLAVE_ACT
    dev.enclave.leave()
    used = epc.used_pages()
    dev.close()
    assert epc.used_pages() == used - 5


def test_edbgrd_is_refused_on_a_production_enclave(machine: Machine, image: ImageMaker) -> None:
    dev = build_device(machine, image(payload=b"production"))
    page = dev.enclave.page(DATA)
    assert fault(lambda: encls(dev.epc, EDbgRd(page, 0))) == GP
    assert fault(lambda: encls(dev.epc, EDbgWr(page, 0, bytes(8)))) == GP


def test_edbgrd_and_edbgwr_on_a_debug_enclave(machine: Machine, image: ImageMaker) -> None:
    dev = build_device(machine, image(debug=True, payload=b"debugged"))
    page = dev.enclave.page(DATA)
    assert encls(dev.epc, EDbgRd(page, 0)) == b"debugged"
    encls(dev.epc, EDbgWr(page, 8, b"patched!"))
    assert encls(dev.epc, EDbgRd(page, 8)) == b"patched!"
    assert fault(lambda: encls(dev.epc, EDbgRd(page, 4))) == GP  # not 8-byte aligned
    tcs = dev.enclave.page(PAGE_SIZE)
    assert fault(lambda: encls(dev.epc, EDbgWr(tcs, 16, bytes(8)))) == GP  # only TCS.FLAGS


# -- paging ---------------------------------------------------------------------------------


def test_ewb_eldu_round_trip(machine: Machine, image: ImageMaker) -> None:
    img = image(payload=b"swap me")
    dev = build_device(machine, img)
    dev.init(img.sigstruct)
    before = dev.epc.read(dev.enclave.page(DATA))
    dev.evict(DATA)
    assert fault(lambda: dev.enclave.page(DATA)) == PF
    dev.reload(DATA)
    assert dev.epc.read(dev.enclave.page(DATA)) == before


def test_replayed_evicted_page_is_refused(machine: Machine, image: ImageMaker) -> None:
    img = image(payload=b"version 1")
    dev = build_device(machine, img)
    dev.init(img.sigstruct)
    dev.evict(0)  # keeps the VA page in use: an empty one is removed
    dev.evict(DATA)
    old = dev.backing_store()[DATA]
    va, slot = dev.version_slot(DATA)
    dev.reload(DATA)
    dev.evict(DATA)  # a newer version now holds the slot
    assert dev.version_slot(DATA) == (va, slot)
    replay = ELd(dev.epc.alloc(), dev.enclave.secs_page, old, va, slot)
    assert status(lambda: encls(dev.epc, replay)) == SgxStatus.MAC_COMPARE_FAIL
    dev.reload(DATA)  # the current copy still loads
    stale = ELd(dev.epc.alloc(), dev.enclave.secs_page, old, va, slot)  # slot now cleared
    assert status(lambda: encls(dev.epc, stale)) == SgxStatus.MAC_COMPARE_FAIL


def test_tampered_evicted_page_is_refused(machine: Machine, image: ImageMaker) -> None:
    dev = build_device(machine, image())
    dev.evict(DATA)
    evicted, va, slot = dev._backing[DATA]
    flipped = bytes([evicted.contents[0] ^ 1]) + evicted.contents[1:]
    dev._backing[DATA] = (dataclasses.replace(evicted, contents=flipped), va, slot)
    with pytest.raises(SgxStatusError, match="MAC_COMPARE_FAIL"):
        dev.reload(DATA)


def test_ewb_needs_eblock_and_etrack(machine: Machine, image: ImageMaker) -> None:
    dev = build_device(machine, image())
    epc, page = dev.epc, dev.enclave.page(DATA)
    dev.evict(0)  # makes the VA page
    (va,) = dev.va_pages
    assert status(lambda: encls(epc, EWb(page, va, 5))) == SgxStatus.PAGE_NOT_BLOCKED
    encls(epc, EBlock(page))
    assert status(lambda: encls(epc, EBlock(page))) == SgxStatus.BLKSTATE
    assert status(lambda: encls(epc, EWb(page, va, 5))) == SgxStatus.NOT_TRACKED
    dev.enclave.enter()
    encls(epc, ETrack(dev.enclave.secs_page))
    assert status(lambda: encls(epc, EWb(page, va, 5))) == SgxStatus.NOT_TRACKED
    assert status(lambda: encls(epc, ETrack(dev.enclave.secs_page))) == SgxStatus.PREV_TRK_INCMPL
    dev.enclave.leave()
    encls(epc, EWb(page, va, 5))
    assert status(lambda: encls(epc, EBlock(dev.enclave.secs_page))) == SgxStatus.NOTBLOCKABLE


# -- SGX2 ---------------------------------------------------------------------------------


def test_sgx2_leaves_fault_on_an_sgx1_part(
    machine_factory: MachineFactory, image: ImageMaker
) -> None:
    legacy = machine_factory("skylake")
    img = image(debug=True)
    dev = build_device(legacy, img)
    dev.init(img.sigstruct)
    with pytest.raises(SgxFault, match="SGX2 leaf; this part has SGX1 only"):
        dev.augment(DATA)


@pytest.fixture
def sgx2(machine: Machine, image: ImageMaker) -> SgxEnclaveDevice:
    """An initialized 8-page enclave on an SGX2 part, pages 4-7 free for EAUG."""
    img = image(size=8 * PAGE_SIZE)
    dev = build_device(machine, img)
    dev.init(img.sigstruct)
    return dev


FREE = 4 * PAGE_SIZE


def test_eaug_then_eaccept(sgx2: SgxEnclaveDevice) -> None:
    sgx2.augment(FREE)
    entry = sgx2.epc.entry(sgx2.enclave.page(FREE))
    assert entry.pending and entry.perms == RW
    plain = secinfo_flags(PageType.REG, RW)
    fn = lambda: eaccept(sgx2.enclave, FREE, plain)  # noqa: E731
    assert status(fn) == SgxStatus.PAGE_ATTRIBUTES_MISMATCH
    eaccept(sgx2.enclave, FREE, plain | int(SecinfoFlag.PENDING))
    assert not entry.pending
    assert fault(lambda: sgx2.augment(FREE)) == GP  # already backed


def test_emodpr_needs_etrack_then_eaccept(sgx2: SgxEnclaveDevice) -> None:
    r = int(SecinfoFlag.R)
    sgx2.restrict_permissions(DATA, PAGE_SIZE, r)  # EMODPR + ETRACK
    entry = sgx2.epc.entry(sgx2.enclave.page(DATA))
    assert entry.perms == r and entry.pr
    eaccept(sgx2.enclave, DATA, secinfo_flags(PageType.REG, r) | int(SecinfoFlag.PR))
    assert not entry.pr
    emodpe(sgx2.enclave, DATA, RW)
    assert entry.perms == RW


def test_eaccept_before_tracking_is_not_tracked(sgx2: SgxEnclaveDevice) -> None:
    from hwsim.sgx._encls import EModPr

    r = int(SecinfoFlag.R)
    encls(sgx2.epc, EModPr(sgx2.enclave.page(DATA), r))
    fn = lambda: eaccept(sgx2.enclave, DATA, secinfo_flags(PageType.REG, r) | 0x20)  # noqa: E731
    assert status(fn) == SgxStatus.NOT_TRACKED


def test_trim_accept_and_remove(sgx2: SgxEnclaveDevice) -> None:
    sgx2.modify_types(DATA, PAGE_SIZE, PageType.TRIM)
    with pytest.raises(InvalidInput, match="accepted"):
        sgx2.remove_pages(DATA, PAGE_SIZE)
    eaccept(sgx2.enclave, DATA, secinfo_flags(PageType.TRIM) | int(SecinfoFlag.MODIFIED))
    sgx2.remove_pages(DATA, PAGE_SIZE)
    assert fault(lambda: sgx2.enclave.page(DATA)) == PF


def test_emodpr_on_a_pending_page_is_not_modifiable(sgx2: SgxEnclaveDevice) -> None:
    sgx2.augment(FREE)
    fn = lambda: sgx2.restrict_permissions(FREE, PAGE_SIZE, int(SecinfoFlag.R))  # noqa: E731
    assert status(fn) == SgxStatus.PAGE_NOT_MODIFIABLE
