"""SEV architectural formats: sizes, offsets and round trips, on real AMD files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwsim.sev.arch import (
    SEV_CERT_SIGNED_LEN,
    SEV_CERT_SIZE,
    AmdCert,
    EcPubKey,
    GuestPolicy,
    PlatformState,
    PlatformStatus,
    SevAlgo,
    SevCert,
    SevUsage,
)
from memcrypt.errors import FormatError
from tests.hwsim.sev.conftest import CHAINS, GENERATIONS

CHAIN_FILES = [f"{g}/{n}.cert" for g in CHAINS for n in ("cek", "pek", "oca", "pdh")]
AMD_FILES = [f"builtin-sev/{g}/{n}.cert" for g in GENERATIONS for n in ("ark", "ask")]


def test_sev_cert_layout_matches_expected(sev_expected: dict[str, Any]) -> None:
    fmt = sev_expected["sev_cert_format"]
    assert SevCert.LAYOUT.size == SEV_CERT_SIZE == fmt["size"]
    assert fmt["body_signed_len"] == SEV_CERT_SIGNED_LEN
    assert SevCert.LAYOUT.offset("sig1_usage") == fmt["sig1_off"]
    assert SevCert.LAYOUT.offset("sig2_usage") == fmt["sig2_off"]


@pytest.mark.parametrize("name", CHAIN_FILES)
def test_real_sev_cert_round_trips(sev_vector: Callable[[str], bytes], name: str) -> None:
    data = sev_vector(name)
    cert = SevCert.unpack(data)
    assert cert.pack() == data
    assert cert.version == 1
    assert EcPubKey.unpack(cert.pub_key).pack() == cert.pub_key
    assert cert.signed_bytes() == data[:SEV_CERT_SIGNED_LEN]


@pytest.mark.parametrize("name", AMD_FILES)
def test_real_amd_cert_round_trips(sev_vector: Callable[[str], bytes], name: str) -> None:
    data = sev_vector(name)
    cert = AmdCert.unpack(data)
    assert cert.pack() == data
    assert len(data) == (832 if cert.header.modulus_size == 2048 else 1600)
    assert cert.signature is not None


def test_unsigned_naples_ark_parses_without_signature(sev_vector: Callable[[str], bytes]) -> None:
    cert = AmdCert.unpack(sev_vector("naples/ark.cert.bad"))
    assert cert.signature is None
    assert cert.pack() == sev_vector("builtin-sev/naples/ark.cert")[:576]


@pytest.mark.parametrize("size", [0, 63, 64, 575, 577, 831, 833, 1599])
def test_amd_cert_wrong_sizes_refused(sev_vector: Callable[[str], bytes], size: int) -> None:
    data = (sev_vector("builtin-sev/naples/ark.cert") * 2)[:size]
    with pytest.raises(FormatError):
        AmdCert.unpack(data)


def test_amd_cert_bad_key_size_refused(sev_vector: Callable[[str], bytes]) -> None:
    data = bytearray(sev_vector("builtin-sev/rome/ark.cert"))
    data[0x3C:0x40] = (3072).to_bytes(4, "little")
    with pytest.raises(FormatError, match="modulus_size is 3072"):
        AmdCert.unpack(bytes(data))


@given(st.binary(max_size=2000))
def test_amd_cert_parser_only_raises_format_error(data: bytes) -> None:
    try:
        cert = AmdCert.unpack(data)
    except FormatError:
        return
    assert cert.pack() == data


def test_platform_status_byte_positions() -> None:
    status = PlatformStatus(
        api_major=0,
        api_minor=24,
        state=PlatformState.INIT,
        owner=1,
        config=1,
        build=15,
        guest_count=3,
    )
    raw = status.pack()
    assert raw == bytes([0, 24, 1, 1, 1, 0, 0, 15, 3, 0, 0, 0])
    assert PlatformStatus.unpack(raw) == status


def test_algorithm_codes() -> None:
    assert SevAlgo.RSA_SHA256.hash_name == "sha256"
    assert SevAlgo.ECDSA_SHA384.hash_name == "sha384"
    assert SevAlgo.ECDH_SHA256.kind == "ecdh"
    assert SevAlgo.RSA_SHA384.kind == "rsa"
    assert int(SevUsage.CEK) == 0x1004


def test_unsigned_copy_clears_both_slots(sev_vector: Callable[[str], bytes]) -> None:
    cert = SevCert.unpack(sev_vector("naples/pek.cert")).unsigned()
    assert [u for u, _, _ in cert.slots()] == [SevUsage.INVALID, SevUsage.INVALID]
    assert all(not any(sig) for _, _, sig in cert.slots())


def test_guest_policy_api_minimum() -> None:
    policy = GuestPolicy.NODBG | GuestPolicy.NOKS | (1 << 16) | (17 << 24)
    assert GuestPolicy.api_minimum(int(policy)) == (1, 17)
