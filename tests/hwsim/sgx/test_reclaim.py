"""EPC oversubscription: the reclaimer evicts pages not accessed lately with EWB when the
EPC is full and the fault path loads them back with ELDU, so an enclave four (or ten) times
the EPC runs, with as many VA pages as its evicted pages need."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.machine import Machine
from hwsim.sgx._encls import ELd, encls
from hwsim.sgx.arch import SgxStatus
from hwsim.sgx.errors import SgxStatusError
from sgxtool.runtime import Enclave
from tests.examples.build import compile_enclave, sign_image

EPC_PAGES = 64
SOURCE = r"""
#include <enclave.h>
#ifndef PAGES
#define PAGES 240
#endif
/* Writes a pattern over PAGES pages of heap, then reads them all back: the working set
   is about four times a 64-page EPC. */
SGX_ECALL(sweep) {
    uint64_t *p = sgx_alloc(PAGES * 4096);
    if (!p || out_cap < 8) return -1;
    for (uint64_t i = 0; i < PAGES; i++) p[i * 512] = i * 7919 + 1;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < PAGES; i++) sum += p[i * 512];
    memcpy(out, &sum, 8);
    return 8;
}
/* One page read all the time among cold pages written once each: the reclaimer must see
   it is in use (its accessed bit) though it is never written. */
static volatile uint64_t hot[512] __attribute__((aligned(4096))) = {3, 5, 7};
SGX_ECALL(hot_and_cold) {
    uint64_t *p = sgx_alloc(PAGES * 4096);
    if (!p || out_cap < 8) return -1;
    uint64_t sum = 0;
    for (uint64_t round = 0; round < 2; round++)
        for (uint64_t i = 0; i < PAGES; i++) {
            p[i * 512] = i;
            sum += hot[i % 3] + p[i * 512];
        }
    memcpy(out, &sum, 8);
    return 8;
}
static uint64_t kept[64 * 512];
SGX_ECALL(keep) {
    for (uint64_t i = 0; i < 64; i++) kept[i * 512] = 0x5345435245543a00ULL | i;
    return 0;
}
SGX_ECALL(check) {
    uint64_t bad = 0;
    for (uint64_t i = 0; i < 64; i++) bad += kept[i * 512] != (0x5345435245543a00ULL | i);
    memcpy(out, &bad, 8);
    return 8;
}
"""
CONFIG = '[enclave]\ndebug = false\n[memory]\nheap_size = "1M"\nstack_size = "32K"\nthreads = 1\n'
HUGE_PAGES = 640  # ten times a 64-page EPC: more evicted pages than one VA page has slots


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, vector: Callable[[str], Path]) -> Path:
    out = tmp_path_factory.mktemp("reclaim")
    elf = compile_enclave(SOURCE, out / "big.elf")
    return sign_image(elf, CONFIG, vector("sgx/fortanix-rust-sgx/sig1.key.pem"), out / "big.img")


@pytest.fixture
def small_epc(machine: Machine) -> Machine:
    machine.set_config("epc_size", f"{EPC_PAGES * 4}K")
    machine.power_cycle()
    return machine


@pytest.fixture(scope="module")
def huge(tmp_path_factory: pytest.TempPathFactory, vector: Callable[[str], Path]) -> Path:
    out = tmp_path_factory.mktemp("reclaim")
    elf = compile_enclave(f"#define PAGES {HUGE_PAGES}\n" + SOURCE, out / "huge.elf")
    config = CONFIG.replace('"1M"', '"3M"')
    return sign_image(elf, config, vector("sgx/fortanix-rust-sgx/sig1.key.pem"), out / "huge.img")


def expected_sum(pages: int = 240) -> int:
    return sum(i * 7919 + 1 for i in range(pages))


def test_an_enclave_four_times_the_epc_runs_with_correct_results(
    big: Path, small_epc: Machine
) -> None:
    with Enclave.load(big, machine=small_epc) as enclave:
        device = enclave.device
        assert device.epc.npages == EPC_PAGES
        assert device.stats.added > 4 * EPC_PAGES  # the image alone does not fit
        assert struct.unpack("<Q", enclave.call("sweep", out_size=8))[0] == expected_sum()
        assert enclave.call("keep") == b""
        assert enclave.call("check", out_size=8) == bytes(8)
        stats = device.stats
        assert stats.evicted > 3 * EPC_PAGES and stats.reloaded > 2 * EPC_PAGES
        assert device.epc.used_pages() <= EPC_PAGES


def test_evicted_pages_are_ciphertext_in_the_backing_store(big: Path, small_epc: Machine) -> None:
    with Enclave.load(big, machine=small_epc) as enclave:
        enclave.call("keep")
        enclave.call("sweep", out_size=8)  # pushes the kept pages out of the EPC
        store = enclave.device.backing_store()
        assert len(store) > EPC_PAGES
        needle = struct.pack("<Q", 0x5345435245543A00)[1:]  # "\0:TERCES" without the index
        assert not any(needle in page.contents for page in store.values())
        assert enclave.call("check", out_size=8) == bytes(8)  # and they load back intact


def test_a_replayed_evicted_page_is_refused_by_eldu(big: Path, small_epc: Machine) -> None:
    with Enclave.load(big, machine=small_epc) as enclave:
        device = enclave.device
        enclave.call("sweep", out_size=8)
        offset, old = next(iter(device.backing_store().items()))
        va, slot = device.version_slot(offset)
        device.reload(offset)
        device.evict(offset)  # a newer version of the page now holds the VA slot
        assert device.version_slot(offset) == (va, slot)
        epc = device.epc
        page = epc.alloc()
        with pytest.raises(SgxStatusError) as refused:
            encls(epc, ELd(page, device.enclave.secs_page, old, va, slot))
        assert refused.value.status == SgxStatus.MAC_COMPARE_FAIL
        epc.release(page)
        assert struct.unpack("<Q", enclave.call("sweep", out_size=8))[0] == expected_sum()


def test_the_full_epc_without_evictable_pages_is_still_a_fault(small_epc: Machine) -> None:
    """Only pages of loaded enclaves are reclaimed: a free-page count of 0 is #PF."""
    from hwsim.sgx.errors import SgxFault
    from hwsim.sgx.platform import epc_of

    epc = epc_of(small_epc)
    taken = [epc.alloc() for _ in range(epc.free_pages())]
    try:
        with pytest.raises(SgxFault, match="EPC is full"):
            epc.alloc()
    finally:
        for index in taken:
            epc.release(index)


def test_run_epc_stats_show_the_paging(
    big: Path, small_epc: Machine, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from sgxtool._cli import main
    from tests.cli.conftest import make_runner

    run = make_runner(main, capsys)
    m = ("--machine", str(small_epc.path))
    doc = json.loads(run("run", str(big), "sweep", "--epc-stats", "--json", *m).out)
    assert struct.unpack("<Q", bytes.fromhex(doc["output_hex"]))[0] == expected_sum()
    stats = doc["epc_stats"]
    assert stats["added"] > 4 * EPC_PAGES and stats["evicted"] > 3 * EPC_PAGES
    assert stats["reloaded"] > 0


def test_more_evicted_pages_than_one_va_page_holds(huge: Path, small_epc: Machine) -> None:
    """Linux's driver makes a VA page whenever every slot is taken; the VA pages are EPC
    pages (PT_VA in the EPCM, counted against it) and an empty one is removed."""
    from hwsim.sgx.arch import PageType

    with Enclave.load(huge, machine=small_epc) as enclave:
        device, epc = enclave.device, enclave.device.epc
        out = enclave.call("sweep", out_size=8)
        assert struct.unpack("<Q", out)[0] == expected_sum(HUGE_PAGES)
        assert len(device.backing_store()) > 512
        vas, store = device.va_pages, device.backing_store()
        assert len(vas) >= 2
        assert len({device.version_slot(offset) for offset in store}) == len(store)
        assert all(epc.epcm[va].page_type == PageType.VA for va in vas)
        assert epc.used_pages() <= EPC_PAGES
        offset, old = next(iter(device.backing_store().items()))
        va, slot = device.version_slot(offset)
        device.reload(offset)
        device.evict(offset)  # a newer version in a (maybe other) slot: the old one is stale
        va2, slot2 = device.version_slot(offset)
        page = epc.alloc()
        for v, s in {(va, slot), (va2, slot2)}:
            if v in epc.epcm:
                with pytest.raises(SgxStatusError) as refused:
                    encls(epc, ELd(page, device.enclave.secs_page, old, v, s))
                assert refused.value.status == SgxStatus.MAC_COMPARE_FAIL
        epc.release(page)


def test_an_empty_va_page_leaves_the_epc(big: Path, machine: Machine) -> None:
    from hwsim.sgx.arch import PageType

    with Enclave.load(big, machine=machine) as enclave:
        device, epc = enclave.device, enclave.device.epc
        used = epc.used_pages()
        device.evict(0)
        (va,) = device.va_pages
        assert epc.epcm[va].page_type == PageType.VA and epc.used_pages() == used
        device.reload(0)
        assert device.va_pages == [] and va not in epc.epcm and epc.used_pages() == used


def test_a_page_read_all_the_time_is_never_evicted(big: Path, small_epc: Machine) -> None:
    """Second chance by accessed bit: the hot page is only read, never written, so a
    choice by last write or load (the old one) evicts it over and over."""
    from tests.sgxtool.test_runtime_door import symbol

    with Enclave.load(big, machine=small_epc) as enclave:
        device = enclave.device
        hot = symbol(big, "hot")
        evicted: list[int] = []
        evict = device.evict

        def spy(offset: int) -> None:
            evicted.append(offset)
            evict(offset)

        device.evict = spy  # type: ignore[method-assign]
        out = enclave.call("hot_and_cold", out_size=8)
        pages = 240
        want = 2 * (sum(range(pages)) + sum((3, 5, 7)[i % 3] for i in range(pages)))
        assert struct.unpack("<Q", out)[0] == want
        assert len(evicted) > pages  # cold pages went, over and over
        assert hot not in evicted
        assert device.elrange[0] + hot in device.enclave.pages  # resident in the EPCM
