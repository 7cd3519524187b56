"""Malformed ELFs and SGXS streams: each refused with one message naming the problem."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from memcrypt.errors import FormatError
from sgxtool.elf import read_elf
from sgxtool.errors import ElfError
from sgxtool.sgxs import read_sgxs, sgxs_mrenclave

Vector = Callable[[str], Path]


def _patch(path: Path, offset: int, fmt: str, value: int) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


def _phdr(path: Path, index: int) -> int:
    data = path.read_bytes()
    (phoff,) = struct.unpack_from("<Q", data, 32)
    (phentsize,) = struct.unpack_from("<H", data, 54)
    return int(phoff + index * phentsize)


def _load_indices(path: Path) -> list[int]:
    data = path.read_bytes()
    (phnum,) = struct.unpack_from("<H", data, 56)
    return [i for i in range(phnum) if struct.unpack_from("<I", data, _phdr(path, i))[0] == 1]


def test_good_elf(enclave_elf: Path) -> None:
    elf = read_elf(enclave_elf)
    assert len(elf.segments) >= 2
    assert any(s.perms & 4 for s in elf.segments)


def test_not_an_elf(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("hello")
    with pytest.raises(ElfError, match="not an ELF file"):
        read_elf(tmp_path / "x")


def test_32_bit(enclave_copy: Path) -> None:
    _patch(enclave_copy, 4, "B", 1)
    with pytest.raises(ElfError, match="32-bit ELF"):
        read_elf(enclave_copy)


def test_not_pie(tmp_path: Path) -> None:
    src = tmp_path / "p.c"
    src.write_text("void _start(void) { for (;;); }\n")
    out = tmp_path / "p.elf"
    subprocess.run(
        [shutil.which("cc") or "cc", "-nostdlib", "-static", "-no-pie", "-o", str(out), str(src)],
        check=True,
    )
    with pytest.raises(ElfError, match=r"not position-independent.*-static-pie"):
        read_elf(out)


def test_truncated(enclave_copy: Path) -> None:
    data = enclave_copy.read_bytes()
    for size in (len(data) // 2, 40, 4):
        enclave_copy.write_bytes(data[:size])
        with pytest.raises(ElfError) as info:
            read_elf(enclave_copy)
        assert "truncated" in str(info.value) or "corrupt" in str(info.value)


def test_overlapping_segments(enclave_copy: Path) -> None:
    first, second = _load_indices(enclave_copy)[:2]
    (vaddr,) = struct.unpack_from("<Q", enclave_copy.read_bytes(), _phdr(enclave_copy, first) + 16)
    _patch(enclave_copy, _phdr(enclave_copy, second) + 16, "<Q", vaddr)
    with pytest.raises(ElfError, match="overlap"):
        read_elf(enclave_copy)


def test_entry_outside_code(enclave_copy: Path) -> None:
    _patch(enclave_copy, 24, "<Q", 0x7FFF0000)
    with pytest.raises(ElfError, match="entry point 0x7fff0000 is not inside"):
        read_elf(enclave_copy)


def _stream(vector: Vector) -> bytes:
    return vector("sgx/fortanix-rust-sgx/report.sgxs").read_bytes()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:-10], "truncated"),
        (lambda d: d[:64] + d, "second ECREATE"),
        (lambda d: d[64:], "EADD before ECREATE"),
        (lambda d: b"BOGUS\0\0\0" + d[8:], "unknown record"),
        (lambda d: d[:12] + struct.pack("<Q", 3) + d[20:], "not a power of two"),
        (lambda d: d[: 64 + 8] + struct.pack("<Q", 0x123) + d[64 + 16 :], "not a page inside"),
        (
            lambda d: d[: 64 + 64 + 8] + struct.pack("<Q", 0x1000) + d[64 + 64 + 16 :],
            "not a chunk of page",
        ),
        (lambda d: d[:128] + d[128:448] + d[128:], "measured twice"),
        (lambda d: b"", "empty SGXS"),
    ],
)
def test_bad_sgxs(
    vector: Vector, tmp_path: Path, mutate: Callable[[bytes], bytes], message: str
) -> None:
    bad = tmp_path / "bad.sgxs"
    bad.write_bytes(mutate(_stream(vector)))
    with pytest.raises(FormatError, match=message):
        sgxs_mrenclave(bad)
    with pytest.raises(FormatError, match=message):
        read_sgxs(bad)
