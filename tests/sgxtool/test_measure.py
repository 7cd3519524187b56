"""MRENCLAVE: the golden SGXS, our own layout code, and the fast path against a plain
reference implementation of the SDM's measurement."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.sgx.arch import PageType, Tcs, secinfo_flags
from sgxtool.config import parse_config
from sgxtool.elf import read_elf
from sgxtool.layout import Content, EnclaveLayout, LayoutBuilder, Region, plan_layout
from sgxtool.measure import mrenclave
from sgxtool.sgxs import read_sgxs, sgxs_mrenclave, write_sgxs

REPORT_MRENCLAVE = "a06a560b26f5e397b2d7872fac66fe4b43bf4f507296ee048f110be6fb1a2290"
Vector = Callable[[str], Path]


def reference_mrenclave(layout: EnclaveLayout) -> str:
    """The SDM's measurement written out page by page, chunk by chunk, with no batching."""
    h = hashlib.sha256(struct.pack("<8sIQ44x", b"ECREATE", layout.ssaframesize, layout.size))
    with layout.open_source() as fd:
        for r in layout.regions:
            for i in range(r.pages):
                offset = r.offset + i * 4096
                h.update(struct.pack("<8sQQ40x", b"EADD", offset, r.flags))
                page = r.read_pages(fd, i, 1)
                for c in range(16):
                    if r.mrmask >> c & 1:
                        h.update(struct.pack("<8sQ48x", b"EEXTEND", offset + c * 256))
                        h.update(page[c * 256 : c * 256 + 256])
    return h.hexdigest()


def test_report_sgxs_replayed(vector: Vector) -> None:
    path = vector("sgx/fortanix-rust-sgx/report.sgxs")
    assert sgxs_mrenclave(path).hex() == REPORT_MRENCLAVE
    assert hashlib.sha256(path.read_bytes()).hexdigest() == REPORT_MRENCLAVE
    assert mrenclave(read_sgxs(path)).hex() == REPORT_MRENCLAVE


def test_report_sgxs_authored_with_our_layout(vector: Vector) -> None:
    """The same three pages placed by our own layout code: 55 bytes of code at 0 (r-x),
    a TCS at 0x1000 (OSSA 0x2000, NSSA 1, OENTRY 0, limits 0xfff), one SSA page."""
    stream = vector("sgx/fortanix-rust-sgx/report.sgxs").read_bytes()
    first_chunk = stream[64 + 64 + 64 :][:256]  # ECREATE, EADD, EEXTEND header, then data
    code = first_chunk[:55]
    assert first_chunk[55:] == bytes(201)
    b = LayoutBuilder(ssaframesize=1)
    b.add(Region(0, 1, secinfo_flags(PageType.REG, 0b101), "code", "code", Content(code)))
    b.add_thread(Tcs(ossa=0x2000, nssa=1, oentry=0), ssa_pages=1, data=None, label="t0")
    layout = b.build()
    assert layout.size == 0x4000
    assert mrenclave(layout).hex() == REPORT_MRENCLAVE


def test_elf_measure_matches_reference_and_sgxs(enclave_elf: Path, tmp_path: Path) -> None:
    layout = plan_layout(read_elf(enclave_elf), parse_config("[memory]\nthreads = 2\n"))
    expected = reference_mrenclave(layout)
    assert mrenclave(layout).hex() == expected
    out = tmp_path / "e.sgxs"
    assert write_sgxs(layout, out).hex() == expected
    assert sgxs_mrenclave(out).hex() == expected
    assert mrenclave(read_sgxs(out)).hex() == expected


def test_measurement_depends_on_every_input(enclave_elf: Path) -> None:
    elf = read_elf(enclave_elf)
    base = mrenclave(plan_layout(elf, parse_config("")))
    for text in (
        '[memory]\nheap_size = "2M"',
        "[memory]\nthreads = 2",
        "[memory]\nheap_measured = true",
        "[memory]\nssa_frames = 3",
        '[memory]\nstack_size = "128K"',
        '[enclave]\nsize = "64M"',
    ):
        assert mrenclave(plan_layout(elf, parse_config(text))) != base, text
    # Identity fields are signed, not measured.
    assert mrenclave(plan_layout(elf, parse_config("[enclave]\nisvsvn = 3"))) == base


@st.composite
def file_layouts(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int, int, int, int]]]:
    """Random regions over a random file: (pages, start, length, mrmask, gap)."""
    data = draw(st.binary(min_size=0, max_size=3 * 4096 + 100))
    regions = []
    for _ in range(draw(st.integers(1, 5))):
        pages = draw(st.integers(1, 4))
        length = draw(st.integers(0, min(len(data), pages * 4096)))
        start = draw(st.integers(0, pages * 4096 - length))
        mask = draw(st.sampled_from([0, 0xFFFF, 0x00FF, 0x8001]))
        regions.append((pages, start, length, mask, draw(st.integers(0, 2))))
    return data, regions


@settings(max_examples=40, deadline=None)
@given(case=file_layouts())
def test_fast_path_equals_reference(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[bytes, list[tuple[int, int, int, int, int]]],
) -> None:
    data, specs = case
    src = tmp_path_factory.mktemp("m") / "blob"
    src.write_bytes(data)
    b = LayoutBuilder(ssaframesize=2, source=src)
    for n, (pages, start, length, mask, gap) in enumerate(specs):
        b.skip(gap)
        content = Content(file_offset=len(data) - length, length=length, start=start)
        b.add(
            Region(b.cursor, pages, secinfo_flags(PageType.REG, 3), "data", f"r{n}", content, mask)
        )
    layout = b.build()
    assert mrenclave(layout).hex() == reference_mrenclave(layout)


def test_large_file_region_uses_batches(tmp_path: Path) -> None:
    """More pages than one batch, starting mid-page: exercises the scatter-read path."""
    blob = tmp_path / "big"
    blob.write_bytes(os.urandom(700 * 4096 + 123))
    b = LayoutBuilder(source=blob)
    b.add(
        Region(
            0,
            702,
            secinfo_flags(PageType.REG, 1),
            "data",
            "big",
            Content(file_offset=0, length=700 * 4096 + 123, start=100),
        )
    )
    b.add(Region(b.cursor, 5000, secinfo_flags(PageType.REG, 3), "heap", "heap", mrmask=0))
    layout = b.build()
    assert mrenclave(layout).hex() == reference_mrenclave(layout)
