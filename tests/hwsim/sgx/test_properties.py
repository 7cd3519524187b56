"""Property tests: the allow-list format, EPC isolation, and EGETKEY on arbitrary input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwsim.machine import Machine
from hwsim.sgx._enclu import egetkey_leaf
from hwsim.sgx.arch import PAGE_SIZE
from hwsim.sgx.epc import Enclave
from hwsim.sgx.errors import SgxError
from hwsim.sgx.launch import AllowList
from hwsim.sgx.platform import epc_of
from tests.hwsim.sgx.conftest import ImageMaker, build_device

_fixtures = settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])


@given(st.integers(0, 2**32 - 1), st.lists(st.binary(min_size=32, max_size=32), max_size=20))
def test_allow_list_round_trip(version: int, signers: list[bytes]) -> None:
    allow = AllowList(version, tuple(signers))
    assert AllowList.unpack(allow.pack()) == allow


@given(st.binary(max_size=200))
def test_allow_list_parser_refuses_garbage_cleanly(raw: bytes) -> None:
    with contextlib.suppress(SgxError):
        AllowList.unpack(raw)


@_fixtures
@given(pattern=st.binary(min_size=1, max_size=64), offset=st.integers(0, 4095))
def test_epc_pages_are_ciphertext_outside_and_plaintext_inside(
    machine: Machine, pattern: bytes, offset: int
) -> None:
    data = (pattern * PAGE_SIZE)[:PAGE_SIZE]
    epc = epc_of(machine)
    page = epc.alloc()
    try:
        epc.write(page, data)
        assert epc.read(page) == data
        assert epc.read_ciphertext(page) != data
        length = PAGE_SIZE - offset
        assert epc.host_read(epc.paddr(page) + offset, length) == b"\xff" * length
        epc.host_write(epc.paddr(page) + offset, bytes(length))
        assert epc.read(page) == data
    finally:
        epc.release(page)


@pytest.fixture
def enclave(machine: Machine, image: ImageMaker) -> Enclave:
    img = image()
    return build_device(machine, img).init(img.sigstruct)


@_fixtures
@given(raw=st.binary(min_size=512, max_size=512))
def test_egetkey_on_any_request_gives_a_key_or_an_architectural_error(
    enclave: Enclave, raw: bytes
) -> None:
    # A key, or SgxStatusError (a code) or SgxFault (#GP): never any other exception.
    with contextlib.suppress(SgxError):
        assert len(egetkey_leaf(enclave, raw)) == 16
