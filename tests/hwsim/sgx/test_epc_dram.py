"""The EPC in the machine's one physical memory.

An enclave's pages are ciphertext at their physical addresses in the physical view, host
accesses there get the abort page, the EPC engine really has the integrity and freshness
its profile (and CPUID) claims, and EWB never reuses an AES-GCM nonce under a key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.machine import Machine
from hwsim.memory import HOST_KEYID
from hwsim.prm import MachineCheck
from hwsim.sgx._encls import EAdd, EBlock, ECreate, EPa, ETrack, EWb, encls
from hwsim.sgx.arch import PAGE_SIZE, XFRM_LEGACY, PageType, Secs, secinfo_flags
from hwsim.sgx.epc import Epc
from hwsim.sgx.platform import epc_of
from tests.hwsim.sgx.conftest import RW, ImageMaker, build_device

MachineFactory = Callable[..., Machine]
DATA = 3 * PAGE_SIZE  # offset of the payload page in the test images
ROOT = Path(__file__).resolve().parents[3]
ABORT_PAGE = b"\xff" * PAGE_SIZE


def _written(machine: Machine, data: bytes) -> tuple[Epc, int]:
    epc = epc_of(machine)
    page = epc.alloc()
    epc.write(page, data.ljust(PAGE_SIZE, b"\0"))
    return epc, page


def _flip_bit(machine: Machine, paddr: int) -> None:
    with machine.transaction() as txn:
        byte = txn.physical_read(paddr, 1)[0]
        txn.physical_write(paddr, bytes([byte ^ 1]))


# -- the physical view and the abort page (regressions: the EPC was not in DRAM) ----------


def test_enclave_pages_are_ciphertext_at_their_physical_addresses(
    machine: Machine, image: ImageMaker
) -> None:
    img = image(payload=b"secret" * 100)
    dev = build_device(machine, img)
    dev.init(img.sigstruct)
    epc, pages = dev.epc, dev.enclave.pages.values()
    with machine.transaction(write=False) as txn:
        for index in pages:
            dimm = txn.physical_read(epc.paddr(index), PAGE_SIZE)
            assert dimm == epc.read_ciphertext(index)
            assert dimm not in (epc.read(index), bytes(PAGE_SIZE))
        used = txn.physical_read(epc.base, (max(pages) + 1) * PAGE_SIZE)
    assert b"secret" not in used


def test_host_accesses_to_the_epc_get_the_abort_page(machine: Machine, image: ImageMaker) -> None:
    img = image(payload=b"secret")
    dev = build_device(machine, img)
    index = dev.enclave.page(DATA)
    paddr = dev.epc.paddr(index)
    with machine.transaction() as txn:
        dimm = txn.physical_read(paddr, PAGE_SIZE)
        for keyid in (None, HOST_KEYID):
            assert txn.dram_read(paddr, PAGE_SIZE, keyid) == ABORT_PAGE
            txn.dram_write(paddr, b"host was here", keyid)  # dropped
        assert txn.physical_read(paddr, PAGE_SIZE) == dimm
        # An access straddling the EPC's start: ordinary DRAM below, the abort page above.
        txn.dram_write(dev.epc.base - 4, b"12345678", None)
        assert txn.dram_read(dev.epc.base - 4, 8, None) == b"1234\xff\xff\xff\xff"
    assert dev.epc.read(index).startswith(b"secret")


def test_the_mee_metadata_is_in_the_prm_too(machine_factory: MachineFactory) -> None:
    skylake = machine_factory("skylake")
    epc, _page = _written(skylake, b"x")
    prm = epc.region.map
    assert prm.base == epc.base and prm.meta_base == epc.base + epc.npages * PAGE_SIZE
    with skylake.transaction() as txn:
        assert txn.dram_read(prm.meta_base, PAGE_SIZE, None) == ABORT_PAGE
        assert txn.dram_read(prm.end - 1, 2, None) == b"\xff\0"  # the PRM ends there
        assert txn.physical_read(prm.meta_base, PAGE_SIZE) != ABORT_PAGE


# -- integrity and freshness, as the profile says ----------------------------------------


def test_mee_detects_a_tampered_page_and_locks_until_power_cycle(
    machine_factory: MachineFactory,
) -> None:
    skylake = machine_factory("skylake")
    epc, page = _written(skylake, b"enclave data")
    _flip_bit(skylake, epc.paddr(page) + 100)
    with pytest.raises(MachineCheck, match=f"integrity check failed at {epc.paddr(page):#x}"):
        epc.read(page)
    with pytest.raises(MachineCheck, match="locked"):  # drop and lock: nothing else runs
        epc.write(epc.alloc(), bytes(PAGE_SIZE))
    skylake.power_cycle()
    fresh, page = _written(skylake, b"after reset")
    assert fresh is not epc and fresh.read(page).startswith(b"after reset")


def test_mee_detects_a_tampered_mac(machine_factory: MachineFactory) -> None:
    skylake = machine_factory("skylake")
    epc, page = _written(skylake, b"enclave data")
    _flip_bit(skylake, epc.region.map.meta_base + page * 16)  # one 16-byte MAC per page
    with pytest.raises(MachineCheck):
        epc.read(page)


def test_mee_detects_a_replayed_page(machine_factory: MachineFactory) -> None:
    skylake = machine_factory("skylake")
    epc, page = _written(skylake, b"balance: 100")
    at, mac_at = epc.paddr(page), epc.region.map.meta_base + page * 16
    with skylake.transaction() as txn:
        old = txn.physical_read(at, PAGE_SIZE), txn.physical_read(mac_at, 16)
    epc.write(page, b"balance: 0".ljust(PAGE_SIZE, b"\0"))
    with skylake.transaction() as txn:  # the old ciphertext and its MAC, both written back
        txn.physical_write(at, old[0])
        txn.physical_write(mac_at, old[1])
    with pytest.raises(MachineCheck):
        epc.read(page)


def test_xts_epc_has_neither_integrity_nor_freshness(machine_factory: MachineFactory) -> None:
    icelake = machine_factory("icelake-sp")
    epc, page = _written(icelake, b"balance: 100")
    at = epc.paddr(page)
    with icelake.transaction() as txn:
        old = txn.physical_read(at, PAGE_SIZE)
    epc.write(page, b"balance: 0".ljust(PAGE_SIZE, b"\0"))
    with icelake.transaction() as txn:
        txn.physical_write(at, old)
    assert epc.read(page).startswith(b"balance: 100")  # the replay goes unnoticed
    _flip_bit(icelake, at)
    garbled = epc.read(page)  # so does tampering: one 16-byte block decrypts to garbage
    assert garbled[:16] != b"balance: 100".ljust(16, b"\0") and garbled[16:] == bytes(4080)


# -- EWB: the AES-GCM nonce never repeats under a key (regression: the key-recovery XOR) --


def evict_known_page(machine: Machine, plain: bytes) -> bytes:
    """Build a one-page enclave holding ``plain`` and evict the page with EWB."""
    epc = epc_of(machine)
    secs = Secs(size=2 * PAGE_SIZE, ssaframesize=1, attributes_flags=0x6,
                attributes_xfrm=XFRM_LEGACY)  # fmt: skip
    secs_page, page, va = epc.alloc(), epc.alloc(), epc.alloc()
    encls(epc, ECreate(secs_page, secs.pack()))
    encls(epc, EAdd(page, secs_page, 0, plain, secinfo_flags(PageType.REG, RW)))
    encls(epc, EPa(va))
    encls(epc, EBlock(page))
    encls(epc, ETrack(secs_page))
    return encls(epc, EWb(page, va, 0)).contents


def _evict_in_a_new_process(machine: Machine, plain: bytes) -> bytes:
    code = (
        "import sys\n"
        "from tests.hwsim.sgx.test_epc_dram import evict_known_page\n"
        "from hwsim.machine import Machine\n"
        "with Machine.open(sys.argv[1]) as machine:\n"
        "    print(evict_known_page(machine, bytes.fromhex(sys.argv[2])).hex())\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(machine.path), plain.hex()],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return bytes.fromhex(run.stdout)


def _xor(*blocks: bytes) -> bytes:
    out = bytearray(blocks[0])
    for block in blocks[1:]:
        out = bytearray(a ^ b for a, b in zip(out, block, strict=True))
    return bytes(out)


def test_ewb_keystream_differs_across_processes(machine: Machine) -> None:
    seed = os.urandom(PAGE_SIZE)  # the victim's secret page, evicted by one process
    known = bytes(range(256)) * 16  # the attacker's own page, evicted by another
    victim = _evict_in_a_new_process(machine, seed)
    attacker = _evict_in_a_new_process(machine, known)
    # Under one (key, nonce) both would share a keystream: victim ^ attacker ^ known == seed.
    recovered = _xor(victim, attacker, known)
    assert sum(a == b for a, b in zip(recovered, seed, strict=True)) < 64  # chance: 16


def test_ewb_keystream_differs_across_device_opens(machine: Machine) -> None:
    seed, known = os.urandom(PAGE_SIZE), bytes(PAGE_SIZE)
    victim = evict_known_page(machine, seed)
    attacker = evict_known_page(machine, known)
    assert _xor(victim, attacker, known) != seed


def test_a_power_cycle_loses_every_key(machine: Machine) -> None:
    epc = epc_of(machine)
    with machine.transaction(write=False) as txn:
        slots = {k: txn.get("boot.keys", str(k)) for k in txn.engine.key_ids()}
    machine.power_cycle()
    again = epc_of(machine)
    assert again is not epc and again.region is not epc.region
    assert again.paging_key != epc.paging_key
    with machine.transaction(write=False) as txn:
        assert all(txn.get("boot.keys", str(k)) != key for k, key in slots.items())


# -- through the execution core: a running enclave meets the MEE ---------------------------

_KEEPER = r"""
#include <enclave.h>
static char store[4096] __attribute__((aligned(4096)));
SGX_ECALL(keep) { memcpy(store, in, in_len); return 0; }
SGX_ECALL(give) { memcpy(out, store, 16); return 16; }
"""
_DEBUG = '[enclave]\ndebug = true\n[memory]\nheap_size = "256K"\nstack_size = "32K"\n'


def test_a_running_enclave_trips_the_mee_on_tampered_memory(
    machine_factory: MachineFactory, vector: Callable[[str], Path], tmp_path: Path
) -> None:
    from sgxtool.runtime import Enclave
    from tests.examples.build import compile_enclave, sign_image

    elf = compile_enclave(_KEEPER, tmp_path / "keeper.elf")
    image = sign_image(elf, _DEBUG, vector("sgx/fortanix-rust-sgx/sig1.key.pem"), tmp_path / "k")
    skylake = machine_factory("skylake")
    secret = b"kept in the EPC!"
    with Enclave.load(image, machine=skylake) as enclave:
        enclave.call("keep", secret)
        epc = epc_of(skylake)
        (held,) = [i for i in epc.epcm if epc.read(i).startswith(secret)]
        _flip_bit(skylake, epc.paddr(held))
        with pytest.raises(MachineCheck):
            enclave.call("give")
