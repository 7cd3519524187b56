"""EINIT: every failure code, reached by the input that causes it, in the SDM's order."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

import pytest

from hwsim.cpu import IA32_SGXLEPUBKEYHASH0
from hwsim.machine import Machine
from hwsim.sgx._encls import EInit, encls
from hwsim.sgx.arch import AttributeFlag, Attributes, Einittoken, SgxStatus, Sigstruct
from hwsim.sgx.device import launch_token
from hwsim.sgx.errors import LaunchRefused, SgxStatusError
from hwsim.sgx.launch import msrs_writable
from tests.hwsim.sgx.conftest import Image, ImageMaker, build_device

MachineFactory = Callable[..., Machine]


def einit_raw(
    machine: Machine, image: Image, sigstruct: bytes, token: bytes | None = None, *,
    write_msrs: bool = True,
) -> None:  # fmt: skip
    """Build ``image`` through the device, then EINIT with exactly these operands.

    Where the LE hash MSRs are writable (FLC) they first get the image's signer, as the
    kernel does, unless ``write_msrs`` is false.
    """
    dev = build_device(machine, image)
    op = EInit(dev.enclave.secs_page, sigstruct, token or bytes(Einittoken.LAYOUT.size))
    with machine.transaction() as txn:
        if write_msrs and msrs_writable(txn):
            for i, word in enumerate(struct.unpack("<4Q", image.mrsigner)):
                txn.wrmsr(IA32_SGXLEPUBKEYHASH0 + i, word)
        encls(dev.epc, op)


def status_of(fn: Callable[[], object]) -> SgxStatus:
    with pytest.raises(SgxStatusError) as caught:
        fn()
    return caught.value.status


def patched(sig: Sigstruct, offset: int, value: bytes) -> bytes:
    raw = bytearray(sig.pack())
    raw[offset : offset + len(value)] = value
    return bytes(raw)


def test_signer_in_the_msrs_initialises_without_token(machine: Machine, image: ImageMaker) -> None:
    img = image()
    einit_raw(machine, img, img.sigstruct.pack())
    with machine.transaction() as txn:
        assert txn.le_pubkey_hash() == img.mrsigner


def test_flc_without_the_kernels_msr_write_is_invalid_einittoken(
    machine: Machine, image: ImageMaker
) -> None:
    img = image()
    fn = lambda: einit_raw(machine, img, img.sigstruct.pack(), write_msrs=False)  # noqa: E731
    assert status_of(fn) == SgxStatus.INVALID_EINITTOKEN


def test_bad_header2_is_invalid_sig_struct(machine: Machine, image: ImageMaker) -> None:
    img = image()
    raw = patched(img.sigstruct, 24, b"\x02")
    assert status_of(lambda: einit_raw(machine, img, raw)) == SgxStatus.INVALID_SIG_STRUCT


def test_vendor_outside_0_and_8086_is_invalid_sig_struct(
    machine: Machine, image: ImageMaker
) -> None:
    img = image()
    raw = patched(img.sigstruct, 16, b"\x34\x12")
    assert status_of(lambda: einit_raw(machine, img, raw)) == SgxStatus.INVALID_SIG_STRUCT


def test_changed_signed_field_is_invalid_signature(machine: Machine, image: ImageMaker) -> None:
    img = image()
    raw = patched(img.sigstruct, 1026, b"\x09")  # ISVSVN, covered by the signature
    assert status_of(lambda: einit_raw(machine, img, raw)) == SgxStatus.INVALID_SIGNATURE


def test_signature_is_checked_before_measurement(machine: Machine, image: ImageMaker) -> None:
    img, other = image(), image(payload=b"other")
    raw = patched(other.sigstruct, 1026, b"\x09")
    assert status_of(lambda: einit_raw(machine, img, raw)) == SgxStatus.INVALID_SIGNATURE


def test_wrong_q1_is_invalid_signature(machine: Machine, image: ImageMaker) -> None:
    img = image()
    q1 = int.from_bytes(img.sigstruct.q1, "little") + 1
    raw = patched(img.sigstruct, 1040, q1.to_bytes(384, "little"))
    assert status_of(lambda: einit_raw(machine, img, raw)) == SgxStatus.INVALID_SIGNATURE


def test_other_pages_are_invalid_measurement(machine: Machine, image: ImageMaker) -> None:
    signed, loaded = image(payload=b"signed"), image(payload=b"loaded")
    raw = signed.sigstruct.pack()
    assert status_of(lambda: einit_raw(machine, loaded, raw)) == SgxStatus.INVALID_MEASUREMENT


def test_attributes_outside_the_mask_are_invalid_attribute(
    machine: Machine, image: ImageMaker
) -> None:
    prod = image()
    debug_secs = dataclasses.replace(prod, secs=dataclasses.replace(
        prod.secs, attributes_flags=prod.secs.attributes_flags | AttributeFlag.DEBUG))  # fmt: skip
    raw = prod.sigstruct.pack()
    assert status_of(lambda: einit_raw(machine, debug_secs, raw)) == SgxStatus.INVALID_ATTRIBUTE


def test_miscselect_outside_the_mask_is_invalid_attribute(
    machine: Machine, image: ImageMaker
) -> None:
    img = image(miscselect=1)
    assert status_of(lambda: einit_raw(machine, img, img.sigstruct.pack())) == (
        SgxStatus.INVALID_ATTRIBUTE
    )


def test_einittoken_key_for_a_foreign_signer_is_invalid_attribute(
    machine: Machine, image: ImageMaker
) -> None:
    img = image(flags=int(AttributeFlag.EINITTOKEN_KEY))
    raw = img.sigstruct.pack()
    fn = lambda: einit_raw(machine, img, raw, write_msrs=False)  # noqa: E731
    assert status_of(fn) == SgxStatus.INVALID_ATTRIBUTE


def test_family_id_without_kss_is_invalid_sig_struct(machine: Machine, image: ImageMaker) -> None:
    img = image(isvfamilyid=b"\x01" * 16)
    assert status_of(lambda: einit_raw(machine, img, img.sigstruct.pack())) == (
        SgxStatus.INVALID_SIG_STRUCT
    )


@pytest.fixture
def legacy(machine_factory: MachineFactory) -> Machine:
    """A Skylake part: legacy launch control, LE hash MSRs fixed to the vendor's key."""
    return machine_factory("skylake", "legacy")


def test_no_token_for_a_foreign_signer_is_invalid_einittoken(
    legacy: Machine, image: ImageMaker
) -> None:
    img = image(debug=True)
    assert status_of(lambda: einit_raw(legacy, img, img.sigstruct.pack())) == (
        SgxStatus.INVALID_EINITTOKEN
    )


def test_le_token_initialises(legacy: Machine, image: ImageMaker) -> None:
    img = image(debug=True)
    token = launch_token(legacy, img.sigstruct).pack()
    einit_raw(legacy, img, img.sigstruct.pack(), token)


def test_token_with_bad_mac_is_invalid_einittoken(legacy: Machine, image: ImageMaker) -> None:
    img = image(debug=True)
    token = dataclasses.replace(launch_token(legacy, img.sigstruct), mac=bytes(16)).pack()
    assert status_of(lambda: einit_raw(legacy, img, img.sigstruct.pack(), token)) == (
        SgxStatus.INVALID_EINITTOKEN
    )


def test_token_reserved_bytes_are_invalid_einittoken(legacy: Machine, image: ImageMaker) -> None:
    img = image(debug=True)
    raw = bytearray(launch_token(legacy, img.sigstruct).pack())
    raw[100] = 1
    assert status_of(lambda: einit_raw(legacy, img, img.sigstruct.pack(), bytes(raw))) == (
        SgxStatus.INVALID_EINITTOKEN
    )


def test_token_cpusvn_beyond_the_cpu_is_invalid_cpusvn(legacy: Machine, image: ImageMaker) -> None:
    img = image(debug=True)
    token = dataclasses.replace(launch_token(legacy, img.sigstruct), cpusvnle=b"\xff" * 16)
    assert status_of(lambda: einit_raw(legacy, img, img.sigstruct.pack(), token.pack())) == (
        SgxStatus.INVALID_CPUSVN
    )


def test_token_for_another_enclave_is_invalid_measurement(
    legacy: Machine, image: ImageMaker
) -> None:
    mine, other = image(debug=True), image(debug=True, payload=b"other")
    token = launch_token(legacy, other.sigstruct).pack()
    assert status_of(lambda: einit_raw(legacy, mine, mine.sigstruct.pack(), token)) == (
        SgxStatus.INVALID_MEASUREMENT
    )


def test_token_for_other_attributes_is_invalid_attribute(
    legacy: Machine, image: ImageMaker
) -> None:
    img = image(debug=True)
    asked = Attributes(img.sigstruct.attributes_flags, 0x7)  # AVX too: not what SECS has
    token = launch_token(legacy, img.sigstruct, asked).pack()
    assert status_of(lambda: einit_raw(legacy, img, img.sigstruct.pack(), token)) == (
        SgxStatus.INVALID_ATTRIBUTE
    )


def test_device_names_the_einit_code_and_a_remedy(legacy: Machine, image: ImageMaker) -> None:
    img = image(debug=True)
    dev = build_device(legacy, img)
    bad = dataclasses.replace(launch_token(legacy, img.sigstruct), mac=bytes(16))
    with pytest.raises(SgxStatusError, match="SGX_INVALID_EINITTOKEN") as caught:
        dev.init(img.sigstruct, bad)
    assert caught.value.hint and "sgxtool token" in caught.value.hint


def test_device_refuses_einittoken_key(machine: Machine, image: ImageMaker) -> None:
    img = image(flags=int(AttributeFlag.EINITTOKEN_KEY))
    with pytest.raises(LaunchRefused, match="the kernel"):
        build_device(machine, img).init(img.sigstruct)
