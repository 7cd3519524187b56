"""The policy for large work (issue 10 item 10): the cost is known before starting, work
above the limit is refused unless --force or --max-size, progress shows off a terminal."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from memcrypt.work import (
    ANNOUNCE_BYTES,
    DEFAULT_MAX_BYTES,
    Work,
    WorkTooLarge,
    check_limit,
    large_work,
    parse_size,
)
from tests.cli.conftest import Runner

TIB = 1 << 40


def _with_huge_segment(elf: Path, out: Path) -> Path:
    """``elf`` with its last PT_LOAD's p_memsz set to 1 TiB (a 15 KB file)."""
    data = bytearray(elf.read_bytes())
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    loads = [phoff + i * phentsize for i in range(phnum)]
    last = [at for at in loads if struct.unpack_from("<I", data, at)[0] == 1][-1]
    struct.pack_into("<Q", data, last + 40, TIB)  # Elf64_Phdr.p_memsz
    out.write_bytes(bytes(data))
    return out


@pytest.fixture
def huge(enclave_elf: Path, tmp_path: Path) -> Path:
    return _with_huge_segment(enclave_elf, tmp_path / "huge.elf")


def test_a_terabyte_segment_is_refused_at_once(
    sgxtool: Runner, huge: Path, sample_key: Path, tmp_path: Path
) -> None:
    commands = [
        ("measure", str(huge)),
        ("sign", str(huge), "-k", str(sample_key), "-o", str(tmp_path / "s.elf")),
        ("gendata", str(huge), "-o", str(tmp_path / "data")),
        ("sgxs", str(huge), "-o", str(tmp_path / "x.sgxs")),
        ("verify", str(sample_key.parent / "sig1.sigstruct.bin"), "--enclave", str(huge)),
    ]
    for command in commands:
        r = sgxtool(*command)
        assert r.code == 1, (command, r.err)
        first = r.err.splitlines()[0]
        assert "268,435," in first and "1.3 TiB to hash" in first, first
        assert "above the limit of 4.0 GiB" in first and "--force" in r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.elf"]


def test_a_64t_heap_is_refused(sgxtool: Runner, enclave_copy: Path) -> None:
    (enclave_copy.parent / "enclave.toml").write_text('[memory]\nheap_size = "64T"\n')
    r = sgxtool("measure", str(enclave_copy))
    assert r.code == 1 and "(64.0 TiB), 1.0 TiB to hash" in r.err, r.err


def test_max_size_and_force(sgxtool: Runner, enclave_copy: Path) -> None:
    (enclave_copy.parent / "enclave.toml").write_text('[memory]\nheap_size = "64M"\n')
    refused = sgxtool("measure", str(enclave_copy), "--max-size", "64K")
    assert refused.code == 1 and "above the limit of 64.0 KiB" in refused.err
    expected = sgxtool("measure", str(enclave_copy)).out
    assert sgxtool("measure", str(enclave_copy), "--max-size", "2M").out == expected
    assert sgxtool("measure", str(enclave_copy), "--max-size", "64K", "--force").out == expected
    assert sgxtool("measure", str(enclave_copy), "--force", "--max-size", "64K").out == expected
    bad = sgxtool("measure", str(enclave_copy), "--max-size", "lots")
    assert bad.code == 2 and "not a size" in bad.err


def test_the_estimate_and_the_work_share_one_layout(
    sgxtool: Runner, enclave_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cost estimate lays the enclave out and the measurement reuses that layout; the
    next command lays the file out afresh."""
    from sgxtool.config import EnclaveConfig
    from sgxtool.elf import EnclaveElf
    from sgxtool.layout import EnclaveLayout, plan_layout

    made = []

    def counting(elf: EnclaveElf, cfg: EnclaveConfig) -> EnclaveLayout:
        made.append(elf)
        return plan_layout(elf, cfg)

    monkeypatch.setattr("sgxtool.image.plan_layout", counting)
    first = sgxtool("measure", str(enclave_copy))
    assert first.code == 0 and len(made) == 1
    assert sgxtool("measure", str(enclave_copy)).out == first.out
    assert len(made) == 2


def test_the_cost_is_announced_and_progress_printed_off_a_terminal() -> None:
    out = io.StringIO()
    work = Work("measure big.elf", 300_000, ANNOUNCE_BYTES)
    with large_work(work, prog="sgxtool", stream=out, interval=0.0) as progress:
        for _ in range(3):
            progress(100_000)
    lines = out.getvalue().splitlines()
    assert lines[0] == "sgxtool: measure big.elf: 300,000 pages (1.1 GiB), 256.0 MiB to hash"
    assert lines[1:] == [
        f"sgxtool: measure big.elf: {done:,} of 300,000 pages ({done // 3000}%)"
        for done in (100_000, 200_000, 300_000)
    ]


def test_small_work_is_silent() -> None:
    out = io.StringIO()
    with large_work(Work("measure e.elf", 300, 300 * 5184), prog="sgxtool", stream=out) as p:
        p(300)
    assert out.getvalue() == ""


def test_the_limit() -> None:
    check_limit(Work("x", 0, DEFAULT_MAX_BYTES), DEFAULT_MAX_BYTES)
    check_limit(Work("x", 0, 100 * TIB), None)
    with pytest.raises(WorkTooLarge, match="above the limit"):
        check_limit(Work("x", 0, DEFAULT_MAX_BYTES + 1), DEFAULT_MAX_BYTES)
    assert [parse_size(s) for s in ("4096", "64K", "1g", "2TiB")] == [4096, 65536, 1 << 30, 2 * TIB]
