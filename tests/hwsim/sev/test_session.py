"""SEV transport crypto: AMD's KDF, the LAUNCH_START session, measurement, secret packet.

Every vector in ``expected.json`` for these (except the SEV-ES measurement) byte for byte,
and the firmware side (``open_session``, ``open_secret``) against the owner side.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hwsim.sev.arch import (
    SESSION_SIZE,
    LaunchMeasure,
    LaunchSession,
    SecretHeader,
    SevAlgo,
    SevCert,
    SevCommand,
    SevStatus,
    SevUsage,
)
from hwsim.sev.certs import make_sev_cert
from hwsim.sev.kdf import LABEL_MASTER, aes128_ctr, kdf
from hwsim.sev.psp import PspError
from hwsim.sev.session import (
    TransportKeys,
    build_session,
    launch_measurement,
    open_secret,
    open_session,
    policy_mac,
    seal_secret,
    wrap_session,
)
from memcrypt.errors import FormatError

SECRET_DIR = "sev/sevctl/data/secret"


def test_kdf_vector(sev_expected: dict[str, Any]) -> None:
    v = sev_expected["kdf"]
    out = kdf(bytes.fromhex(v["key"]), v["label"].encode(), bytes.fromhex(v["context"]), 16)
    assert out.hex() == v["expected"]
    assert v["label"].encode() == LABEL_MASTER


def test_kdf_longer_than_one_block_is_a_prefix_free_counter_chain() -> None:
    key = bytes(range(16))
    long = kdf(key, b"sev-kek", b"", 48)
    assert len(long) == 48
    # L is part of every block, so a shorter output is not a prefix of a longer one.
    assert kdf(key, b"sev-kek", b"", 32) != long[:32]
    with pytest.raises(ValueError):
        kdf(key, b"sev-kek", b"", 0)


def test_all_zero_session_vector(sev_expected: dict[str, Any]) -> None:
    v = sev_expected["launch_session_all_zero"]
    keys = TransportKeys(bytes.fromhex(v["tek"]), bytes.fromhex(v["tik"]))
    blob = wrap_session(
        bytes.fromhex(v["z"]),
        keys,
        v["policy"],
        nonce=bytes.fromhex(v["nonce"]),
        iv=bytes.fromhex(v["wrap_iv"]),
    )
    assert blob.wrap_tk.hex() == v["wrap_tk"]
    assert blob.wrap_mac.hex() == v["wrap_mac"]
    assert blob.policy_mac.hex() == v["policy_mac"]
    packed = blob.pack()
    assert len(packed) == SESSION_SIZE
    assert packed[0x10:0x30].hex() == v["wrap_tk"] and packed[0x60:].hex() == v["policy_mac"]
    assert LaunchSession.unpack(packed) == blob


def _platform_pdh() -> tuple[ec.EllipticCurvePrivateKey, SevCert]:
    key = ec.generate_private_key(ec.SECP384R1())
    return key, make_sev_cert(key.public_key(), SevUsage.PDH, SevAlgo.ECDH_SHA256)


def test_session_opens_on_its_platform_with_its_policy() -> None:
    pdh_key, pdh = _platform_pdh()
    made = build_session(pdh, 0x33)
    assert made.godh.pub_key_usage == SevUsage.PDH
    assert made.godh.pub_key_algo == SevAlgo.ECDH_SHA256
    keys = open_session(pdh_key, made.godh.pack(), made.session.pack(), 0x33)
    assert keys == made.keys
    assert "tek" not in repr(made) and made.keys.tek.hex() not in repr(made.keys)


def test_session_for_another_pdh_is_bad_measurement_naming_both_causes() -> None:
    _, pdh = _platform_pdh()
    other_key, _ = _platform_pdh()
    made = build_session(pdh, 1)
    with pytest.raises(PspError) as info:
        open_session(other_key, made.godh.pack(), made.session.pack(), 1)
    assert info.value.status == SevStatus.BAD_MEASUREMENT
    assert info.value.command == SevCommand.LAUNCH_START
    assert "another platform's PDH" in str(info.value) and "same run" in str(info.value)


def test_godh_of_another_session_is_bad_measurement() -> None:
    pdh_key, pdh = _platform_pdh()
    first, second = build_session(pdh, 1), build_session(pdh, 1)
    with pytest.raises(PspError, match="wrap MAC") as info:
        open_session(pdh_key, second.godh.pack(), first.session.pack(), 1)
    assert info.value.status == SevStatus.BAD_MEASUREMENT


def test_policy_other_than_the_sessions_is_bad_measurement() -> None:
    pdh_key, pdh = _platform_pdh()
    made = build_session(pdh, 0x1)
    with pytest.raises(PspError, match="policy 0x3 is not") as info:
        open_session(pdh_key, made.godh.pack(), made.session.pack(), 0x3)
    assert info.value.status == SevStatus.BAD_MEASUREMENT


@pytest.mark.parametrize(
    ("godh_len", "session_len", "status"),
    [
        (2084, 127, SevStatus.INVALID_LENGTH),
        (2084, 0, SevStatus.INVALID_LENGTH),
        (2083, 128, SevStatus.INVALID_LENGTH),
    ],
)
def test_wrong_buffer_lengths(godh_len: int, session_len: int, status: SevStatus) -> None:
    pdh_key, pdh = _platform_pdh()
    made = build_session(pdh, 1)
    godh, session = made.godh.pack(), made.session.pack()
    godh = godh[:godh_len] if godh_len <= len(godh) else godh + bytes(godh_len - len(godh))
    with pytest.raises(PspError) as info:
        open_session(pdh_key, godh, session[:session_len], 1)
    assert info.value.status == status


def test_godh_that_is_not_an_ecdh_p384_key_is_invalid_certificate() -> None:
    pdh_key, pdh = _platform_pdh()
    made = build_session(pdh, 1)
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    for bad in (
        make_sev_cert(p256, SevUsage.PDH, SevAlgo.ECDH_SHA256),
        SevCert(pub_key_usage=SevUsage.PDH, pub_key_algo=SevAlgo.ECDH_SHA256),  # no point
    ):
        with pytest.raises(PspError) as info:
            open_session(pdh_key, bad.pack(), made.session.pack(), 1)
        assert info.value.status == SevStatus.INVALID_CERTIFICATE


def test_transport_keys_check_sizes() -> None:
    with pytest.raises(FormatError):
        TransportKeys(bytes(15), bytes(16))
    with pytest.raises(FormatError):
        TransportKeys.unpack(bytes(31))
    keys = TransportKeys.random()
    assert TransportKeys.unpack(keys.pack()) == keys
    assert keys.pack()[:16] == keys.tek  # libvirt's --tk order: TEK first


def test_policy_mac_vector(sev_expected: dict[str, Any]) -> None:
    assert policy_mac(bytes(16), 0).hex() == sev_expected["launch_session_all_zero"]["policy_mac"]


def _measure_entry(sev_expected: dict[str, Any], index: int) -> dict[str, Any]:
    entry: dict[str, Any] = sev_expected["launch_measurement"][index]
    return entry


def test_sev_tool_readme_measurement(sev_expected: dict[str, Any]) -> None:
    v = _measure_entry(sev_expected, 0)
    measure = launch_measurement(
        bytes.fromhex(v["tik"]),
        api_major=v["api_major"],
        api_minor=v["api_minor"],
        build=v["build"],
        policy=v["policy"],
        digest=bytes.fromhex(v["digest"]),
        mnonce=bytes.fromhex(v["mnonce"]),
    )
    assert measure.hex() == v["measure"]


def test_sevctl_launch_digest_measurement(
    sev_expected: dict[str, Any], vector: Callable[[str], Path]
) -> None:
    v = _measure_entry(sev_expected, 1)
    nonce = base64.b64decode(v["nonce_b64"])
    measure = launch_measurement(
        vector(f"sev/{v['tik_file']}").read_bytes(),
        api_major=v["api_major"],
        api_minor=v["api_minor"],
        build=v["build"],
        policy=v["policy"],
        digest=base64.b64decode(v["digest_b64"]),
        mnonce=nonce,
    )
    blob = LaunchMeasure(measure, nonce).pack()
    assert base64.b64encode(blob).decode() == v["output_b64"]
    assert LaunchMeasure.unpack(blob).mnonce == nonce


def _secret_keys(vector: Callable[[str], Path]) -> TransportKeys:
    return TransportKeys(
        vector(f"{SECRET_DIR}/tek1.bin").read_bytes(), vector(f"{SECRET_DIR}/tik1.bin").read_bytes()
    )


def test_secret_packet_round_trip_and_tampering(vector: Callable[[str], Path]) -> None:
    keys = _secret_keys(vector)
    measure = bytes(range(32))
    header, payload = seal_secret(keys, b"disk key 0123456789abcdef", measure)
    assert SecretHeader.unpack(header.pack()) == header
    assert open_secret(keys, header.pack(), payload, measure) == b"disk key 0123456789abcdef"
    wrong_tik = TransportKeys(keys.tek, bytes(16))
    cases = [
        (wrong_tik, header.pack(), payload, measure),
        (keys, header.pack(), payload, bytes(32)),
        (keys, header.pack(), payload[:-1] + bytes([payload[-1] ^ 1]), measure),
    ]
    for k, h, p, m in cases:
        with pytest.raises(PspError) as info:
            open_secret(k, h, p, m)
        assert info.value.status == SevStatus.BAD_MEASUREMENT
        assert info.value.command == SevCommand.LAUNCH_SECRET


def test_secret_packet_lengths_and_flags(vector: Callable[[str], Path]) -> None:
    keys = _secret_keys(vector)
    header, payload = seal_secret(keys, bytes(32), bytes(32))
    with pytest.raises(PspError) as info:
        open_secret(keys, header.pack()[:51], payload, bytes(32))
    assert info.value.status == SevStatus.INVALID_LENGTH
    header.flags = SecretHeader.COMPRESSED
    with pytest.raises(PspError) as info:
        open_secret(keys, header.pack(), payload, bytes(32))
    assert info.value.status == SevStatus.INVALID_PARAM


def test_aes_ctr_is_its_own_inverse() -> None:
    key, iv = bytes(range(16)), bytes(16)
    data = b"x" * 37
    assert aes128_ctr(key, iv, aes128_ctr(key, iv, data)) == data
    with pytest.raises(ValueError):
        aes128_ctr(bytes(15), iv, data)
