"""SGX structures: sizes, spec offsets and pack/unpack round trips."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim._layout import Packed
from hwsim.sgx.arch import (
    EaddRecord,
    EcreateRecord,
    EextendRecord,
    Einittoken,
    Keyrequest,
    Pageinfo,
    Report,
    Secinfo,
    Secs,
    Sigstruct,
    Targetinfo,
    Tcs,
    eadd_block,
    ecreate_block,
    eextend_header,
    mrsigner,
    parse_record,
)
from memcrypt.errors import FormatError

STRUCTS: list[type[Packed]] = [
    Sigstruct,
    Einittoken,
    Secs,
    Secinfo,
    Pageinfo,
    Tcs,
    Report,
    Targetinfo,
    Keyrequest,
]
SIZES: dict[type[Packed], int] = {
    Sigstruct: 1808,
    Einittoken: 304,
    Secs: 4096,
    Secinfo: 64,
    Pageinfo: 32,
    Tcs: 4096,
    Report: 432,
    Targetinfo: 512,
    Keyrequest: 512,
}

# Offsets from shared/reference/sgx.md section 2 (linux-sgx arch.h, rust-sgx sgx-isa).
OFFSETS = [
    (Sigstruct, "vendor", 16),
    (Sigstruct, "date", 20),
    (Sigstruct, "modulus", 128),
    (Sigstruct, "exponent", 512),
    (Sigstruct, "signature", 516),
    (Sigstruct, "miscselect", 900),
    (Sigstruct, "attributes_flags", 928),
    (Sigstruct, "attributemask_flags", 944),
    (Sigstruct, "enclavehash", 960),
    (Sigstruct, "isvprodid", 1024),
    (Sigstruct, "q1", 1040),
    (Sigstruct, "q2", 1424),
    (Einittoken, "mrenclave", 64),
    (Einittoken, "mrsigner", 128),
    (Einittoken, "cpusvnle", 192),
    (Einittoken, "keyid", 256),
    (Einittoken, "mac", 288),
    (Secs, "ssaframesize", 16),
    (Secs, "attributes_flags", 48),
    (Secs, "mrsigner", 128),
    (Secs, "isvprodid", 256),
    (Tcs, "ossa", 16),
    (Tcs, "nssa", 28),
    (Tcs, "oentry", 32),
    (Tcs, "ofsbase", 48),
    (Tcs, "gslimit", 68),
    (Report, "reportdata", 320),
    (Report, "keyid", 384),
    (Report, "mac", 416),
    (Targetinfo, "miscselect", 52),
    (Keyrequest, "keyid", 40),
    (Keyrequest, "miscmask", 72),
]


@pytest.mark.parametrize("cls", STRUCTS)
def test_size(cls: type[Packed]) -> None:
    assert cls.LAYOUT.size == SIZES[cls]
    assert len(cls().pack()) == SIZES[cls]


@pytest.mark.parametrize(("cls", "field", "offset"), OFFSETS)
def test_offsets(cls: type[Packed], field: str, offset: int) -> None:
    assert cls.LAYOUT.offset(field) == offset


def _value(draw: st.DrawFn, fmt: str) -> object:
    if fmt.endswith("s"):
        return draw(st.binary(min_size=int(fmt[:-1]), max_size=int(fmt[:-1])))
    bits = {"B": 8, "H": 16, "I": 32, "Q": 64}[fmt]
    return draw(st.integers(0, (1 << bits) - 1))


@st.composite
def filled(draw: st.DrawFn, cls: type[Packed]) -> Packed:
    # Every field of these dataclasses is a layout row, so the layout names them all.
    fmts = {name: st_.format[1:] for _, name, st_ in cls.LAYOUT.fields}
    return cls(**{name: _value(draw, fmt) for name, fmt in fmts.items()})


@pytest.mark.parametrize("cls", STRUCTS)
@given(data=st.data())
def test_round_trip(cls: type[Packed], data: st.DataObject) -> None:
    obj = data.draw(filled(cls))
    raw = obj.pack()
    assert cls.unpack(raw) == obj
    assert cls.unpack(raw).pack() == raw


@pytest.mark.parametrize("cls", STRUCTS)
def test_wrong_size_refused(cls: type[Packed]) -> None:
    with pytest.raises(FormatError, match=f"must be {SIZES[cls]} bytes"):
        cls.unpack(bytes(SIZES[cls] - 1))


def test_measurement_blocks() -> None:
    assert ecreate_block(1, 0x4000)[:16] == b"ECREATE\0\x01\0\0\0\0\x40\0\0"
    assert eadd_block(0x1000, 0x205)[:24] == b"EADD\0\0\0\0" + (0x1000).to_bytes(8, "little") + (
        0x205
    ).to_bytes(8, "little")
    assert eextend_header(0x100) == b"EEXTEND\0" + (0x100).to_bytes(8, "little") + bytes(48)
    assert all(len(b) == 64 for b in (ecreate_block(1, 2), eadd_block(0, 0), eextend_header(0)))


@settings(database=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_measurement_records_round_trip(small: int, offset: int, flags: int) -> None:
    assert parse_record(ecreate_block(small, offset)) == EcreateRecord(small, offset)
    assert parse_record(eadd_block(offset, flags)) == EaddRecord(offset, flags)
    assert parse_record(eextend_header(offset)) == EextendRecord(offset)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"EADD\0\0\0\0" + bytes(55) + b"\1", "EADD record has non-zero reserved bytes"),
        (eextend_header(0)[:16] + b"\1" + bytes(47), "EEXTEND record has non-zero reserved"),
        (ecreate_block(1, 0x4000)[:20] + b"\1" + bytes(43), "ECREATE record has non-zero"),
        (b"EWB\0\0\0\0\0" + bytes(56), "unknown record"),
        (eadd_block(0, 0)[:63], "64 bytes, got 63"),
    ],
)
def test_bad_measurement_records(block: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_record(block)


def test_mrsigner_is_the_hash_of_the_stored_modulus() -> None:
    n = (1 << 3071) | 12345
    stored = n.to_bytes(384, "little")
    assert Sigstruct(modulus=stored).mrsigner == mrsigner(n)
    assert mrsigner(n) == hashlib.sha256(stored).digest()


def test_eadd_record_decodes_its_secinfo() -> None:
    record = parse_record(eadd_block(0x1000, 0x205))
    assert isinstance(record, EaddRecord)
    assert record.secinfo == Secinfo(0x205)
