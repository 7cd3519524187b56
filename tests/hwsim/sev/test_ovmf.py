"""OVMF's GUIDed tables: footer table, kernel hashes, secret table; sevctl's and virtee's
vectors byte for byte."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.sev.ovmf import (
    SECRET_TABLE_HEADER,
    SEV_ES_RESET_BLOCK,
    SEV_HASH_TABLE_RV,
    SEV_SECRET_BLOCK,
    cmdline_hash,
    footer_table,
    footer_u32,
    kernel_hashes_table,
    parse_secret_table,
    secret_table,
)
from hwsim.sev.session import TransportKeys, seal_secret
from memcrypt.errors import FormatError

OVMF_EL9 = "sev/sevctl/data/OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9"
EMPTY = hashlib.sha256(b"").digest()


def test_footer_table_of_real_images(vector: Callable[[str], Path]) -> None:
    amdsev = footer_table(vector("sev/virtee-sev/measurement/ovmf_AmdSev_suffix.bin").read_bytes())
    assert int.from_bytes(amdsev[SEV_SECRET_BLOCK][:4], "little") == 0x810000
    assert int.from_bytes(amdsev[SEV_SECRET_BLOCK][4:8], "little") == 0xC00
    assert int.from_bytes(amdsev[SEV_HASH_TABLE_RV][:4], "little") != 0
    el9 = footer_table(vector(OVMF_EL9).read_bytes()[-4096:])
    assert int.from_bytes(el9[SEV_SECRET_BLOCK][:4], "little") == 0x80C000
    assert int.from_bytes(el9[SEV_ES_RESET_BLOCK][:4], "little") == 0x0080B004
    assert footer_u32(el9, SEV_SECRET_BLOCK, 1) == 0xC00
    x64 = footer_table(vector("sev/virtee-sev/measurement/ovmf_OvmfX64_suffix.bin").read_bytes())
    assert footer_u32(x64, SEV_HASH_TABLE_RV) is None
    assert footer_u32(amdsev, SEV_HASH_TABLE_RV) is not None


def test_footer_table_absent_or_corrupt() -> None:
    assert footer_table(bytes(4096)) == {}
    assert footer_table(b"") == {}
    footer = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
    oversized = bytes(100) + (5000).to_bytes(2, "little") + footer + bytes(32)
    with pytest.raises(FormatError):
        footer_table(oversized)


def _digest(ovmf: bytes, kernel: bytes | None, initrd: bytes | None, cmdline: str | None) -> str:
    data = ovmf
    if kernel is not None:
        kernel_hash = hashlib.sha256(kernel).digest()
        initrd_hash = hashlib.sha256(initrd or b"").digest()
        data += kernel_hashes_table(kernel_hash, initrd_hash, cmdline_hash(cmdline))
    return hashlib.sha256(data).hexdigest()


def test_sev_launch_digest_vectors(
    sev_expected: dict[str, Any], vectors: Path, vector: Callable[[str], Path]
) -> None:
    checked = 0
    for v in sev_expected["sev_launch_digest"]:
        if "expected" not in v:
            continue
        ovmf = vector(f"sev/{v['ovmf']}").read_bytes()
        kernel = b"" if v.get("kernel") == "<empty>" else None
        initrd = b"" if v.get("initrd") == "<empty>" else None
        assert _digest(ovmf, kernel, initrd, v.get("cmdline")) == v["expected"], v
        checked += 1
    assert checked == 3


def test_kernel_hashes_table_layout() -> None:
    table = kernel_hashes_table(bytes(32), EMPTY, cmdline_hash(""))
    assert len(table) == 176
    assert int.from_bytes(table[16:18], "little") == 168
    assert int.from_bytes(table[18 + 16 : 18 + 18], "little") == 50
    assert table[168:] == bytes(8)
    assert cmdline_hash(None) == cmdline_hash("") == hashlib.sha256(b"\0").digest()
    with pytest.raises(FormatError):
        kernel_hashes_table(bytes(31), EMPTY, EMPTY)


@pytest.mark.parametrize("case", ["one_secret", "two_secrets"])
def test_sevctl_secret_vectors(
    case: str, sev_expected: dict[str, Any], vector: Callable[[str], Path]
) -> None:
    v = sev_expected["launch_secret"]
    keys = TransportKeys(
        vector(f"sev/{v['tek_file']}").read_bytes(), vector(f"sev/{v['tik_file']}").read_bytes()
    )
    entries = [
        (uuid.UUID(guid), vector(f"sev/{path}").read_bytes()) for guid, path in v[case]["secrets"]
    ]
    table = secret_table(entries)
    measure = base64.b64decode(v["launch_measure_blob_b64"])[:32]
    header, payload = seal_secret(keys, table, measure, iv=base64.b64decode(v["iv_b64"]))
    assert base64.b64encode(header.pack()).decode() == v[case]["header_b64"]
    assert base64.b64encode(payload).decode() == v[case]["payload_b64"]
    assert parse_secret_table(table) == entries


def test_sevctl_max_secret_sizes_pad_to_16k(vector: Callable[[str], Path]) -> None:
    guid = uuid.UUID("23058844-597b-42fb-8259-a0f5d9d495af")
    sizes = {
        len(secret_table([(guid, vector(f"sev/sevctl/data/secret/{name}").read_bytes())]))
        for name in ("secret3.txt", "secret4.txt")
    }
    assert sizes == {16384}


def _libvirt_padded(entries: list[tuple[uuid.UUID, bytes]], counted: bool) -> bytes:
    """A table padded libvirt's way: 1-16 zero bytes, whether or not the length counts them."""
    unpadded = secret_table(entries)
    total = int.from_bytes(unpadded[16:20], "little")
    pad = 16 - total % 16
    length = total + pad if counted else total
    return unpadded[:16] + length.to_bytes(4, "little") + unpadded[20:total] + bytes(pad)


@settings(database=None, derandomize=True, max_examples=60)
@given(st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=4), st.booleans())
def test_secret_table_parses_both_paddings(secrets: list[bytes], counted: bool) -> None:
    entries = [(uuid.UUID(int=i + 1), data) for i, data in enumerate(secrets)]
    assert parse_secret_table(secret_table(entries)) == entries
    assert parse_secret_table(_libvirt_padded(entries, counted)) == entries


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: bytes(16) + t[16:],  # header GUID gone
        lambda t: t[:16] + (9999).to_bytes(4, "little") + t[20:],  # length past the end
        lambda t: t + b"\x01",  # data after the table
        lambda t: t[:36] + (9999).to_bytes(4, "little") + t[40:],  # entry overruns
    ],
)
def test_secret_table_refuses_corruption(mutate: Callable[[bytes], bytes]) -> None:
    table = secret_table([(SECRET_TABLE_HEADER, b"0123456789")])
    with pytest.raises(FormatError):
        parse_secret_table(mutate(table))
