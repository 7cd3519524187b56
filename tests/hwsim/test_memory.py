"""The memory encryption engine: CPU view, physical view, key slots, tweak."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwsim.errors import HwsimError
from hwsim.machine import Machine
from hwsim.memory import EPC_KEYID, HOST_KEYID, PAGE_SIZE, xts_key
from memcrypt.errors import InvalidInput

MachineFactory = Callable[..., Machine]
KEY = bytes(range(32))


def _reference_encrypt(key: bytes, paddr: int, page: bytes) -> bytes:
    """AES-128-XTS with the page's physical address as the tweak, straight from cryptography."""
    enc = Cipher(algorithms.AES(key), modes.XTS(paddr.to_bytes(16, "little"))).encryptor()
    return enc.update(page) + enc.finalize()


def test_physical_view_is_xts_ciphertext_with_address_tweak(machine: Machine) -> None:
    page = os.urandom(PAGE_SIZE)
    with machine.transaction() as txn:
        txn.set_key(5, KEY)
        txn.dram_write(0x7000, page, 5)
        assert txn.physical_read(0x7000, PAGE_SIZE) == _reference_encrypt(KEY, 0x7000, page)
        assert txn.dram_read(0x7000, PAGE_SIZE, 5) == page


def test_sixteen_byte_key_gets_derived_tweak_key(machine: Machine) -> None:
    vek = bytes(16)
    page = b"A" * PAGE_SIZE
    with machine.transaction() as txn:
        txn.set_key(3, vek)
        txn.dram_write(0, page, 3)
        assert txn.physical_read(0, PAGE_SIZE) == _reference_encrypt(xts_key(vek), 0, page)
    assert xts_key(vek)[:16] == vek and xts_key(vek)[16:] != vek


def test_key_size_checked(machine: Machine) -> None:
    with machine.transaction() as txn, pytest.raises(InvalidInput, match="16 or 32 bytes"):
        txn.set_key(1, bytes(24))


def test_same_plaintext_differs_across_addresses_not_in_place(machine: Machine) -> None:
    block = b"secret!!" * 2
    with machine.transaction() as txn:
        txn.dram_write(0x1000, block, HOST_KEYID)
        txn.dram_write(0x2000, block, HOST_KEYID)
        txn.dram_write(0x1010, block, HOST_KEYID)
        first = txn.physical_read(0x1000, 16)
        assert first != txn.physical_read(0x2000, 16)
        assert first != txn.physical_read(0x1010, 16)
        txn.dram_write(0x1000, block, HOST_KEYID)  # same data, same place: same ciphertext
        assert txn.physical_read(0x1000, 16) == first
        assert block not in txn.physical_read(0x1000, PAGE_SIZE)


def test_moved_ciphertext_decrypts_to_garbage(machine: Machine) -> None:
    with machine.transaction() as txn:
        txn.dram_write(0x1000, b"x" * 64, HOST_KEYID)
        txn.physical_write(0x5000, txn.physical_read(0x1000, PAGE_SIZE))
        assert txn.dram_read(0x5000, 64, HOST_KEYID) != b"x" * 64


def test_keys_separate_guests_and_epc(machine: Machine) -> None:
    with machine.transaction() as txn:
        txn.set_key(1, os.urandom(16))
        txn.set_key(2, os.urandom(16))
        txn.dram_write(0x3000, b"guest one", 1)
        assert txn.dram_read(0x3000, 9, 1) == b"guest one"
        assert txn.dram_read(0x3000, 9, 2) != b"guest one"
        assert txn.dram_read(0x3000, 9, None) != b"guest one"
        assert txn.engine.key_ids() == [HOST_KEYID, 1, 2, EPC_KEYID]


def test_missing_and_cleared_key_slots(machine: Machine) -> None:
    with machine.transaction() as txn:
        with pytest.raises(HwsimError, match="no key is loaded in memory encryption key slot 9"):
            txn.dram_read(0, 16, 9)
        txn.set_key(9, KEY)
        txn.dram_read(0, 16, 9)
        txn.clear_key(9)
        with pytest.raises(HwsimError, match="slot 9"):
            txn.dram_write(0, b"x", 9)
        with pytest.raises(InvalidInput, match="key id"):
            txn.set_key(-1, KEY)


def test_power_cycle_changes_boot_keys_keeps_dimm(machine: Machine) -> None:
    with machine.transaction() as txn:
        txn.dram_write(0x8000, b"host data", HOST_KEYID)
        txn.set_key(4, KEY)
        txn.dram_write(0x9000, b"guest data", 4)
        dimm = txn.physical_read(0x8000, 0x2000)
        epc_key = txn.engine.epc_region()  # keep this boot's PRM alive in the process
    machine.power_cycle()
    with machine.transaction() as txn:
        assert txn.physical_read(0x8000, 0x2000) == dimm  # cold-boot view: ciphertext stays
        assert txn.dram_read(0x8000, 9, HOST_KEYID) != b"host data"
        assert 4 not in txn.engine.key_ids()
        assert txn.engine.epc_region() is not epc_key  # a new EPC key, a new PRM


def test_sme_disabled_has_no_host_key(machine: Machine) -> None:
    machine.set_config("sme_enabled", "false")
    machine.power_cycle()
    with machine.transaction() as txn:
        assert HOST_KEYID not in txn.engine.key_ids()
        with pytest.raises(HwsimError, match="slot 0"):
            txn.dram_write(0, b"x", HOST_KEYID)


def test_unwritten_memory_reads_zero_and_zero_length_is_empty(machine: Machine) -> None:
    with machine.transaction() as txn:
        assert txn.physical_read(0x123456, 100) == bytes(100)
        assert txn.dram_read(0x1000, 0, HOST_KEYID) == b""
        txn.dram_write(0x1000, b"", HOST_KEYID)
        assert txn.engine.page_count() == 0


def test_physical_address_space_limit(machine_factory: MachineFactory) -> None:
    naples = machine_factory("naples")  # 48 address bits, 5 lost to the C-bit reduction
    with naples.transaction() as txn:
        txn.physical_write((1 << 43) - 4, b"edge")
        with pytest.raises(InvalidInput, match="43-bit physical address space"):
            txn.physical_write((1 << 43) - 3, b"edge")
        with pytest.raises(InvalidInput):
            txn.physical_read(-1, 1)


_op = st.tuples(st.integers(0, 3 * PAGE_SIZE - 1), st.integers(0, PAGE_SIZE + 100), st.binary())


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(_op, min_size=1, max_size=12), keyid=st.sampled_from([None, HOST_KEYID]))
def test_engine_matches_flat_memory_model(
    machine: Machine, ops: list[tuple[int, int, bytes]], keyid: int | None
) -> None:
    """Arbitrary overlapping writes and reads across page boundaries act like a bytearray."""
    base = 0x40000
    model = bytearray(4 * PAGE_SIZE)
    with machine.transaction() as txn:
        txn.dram_write(base, bytes(model), keyid)
        for offset, length, seed in ops:
            data = (seed * (length // max(len(seed), 1) + 1))[:length] if seed else bytes(length)
            model[offset : offset + len(data)] = data
            txn.dram_write(base + offset, data, keyid)
            start = (offset * 7) % len(model)
            n = min(length + 33, len(model) - start)
            assert txn.dram_read(base + start, n, keyid) == model[start : start + n]
        assert txn.dram_read(base, len(model), keyid) == model
