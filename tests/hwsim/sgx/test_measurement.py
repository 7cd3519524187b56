"""The template-built measurement stream against arch's packers, record by record."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.sgx.arch import eadd_block, eextend_header
from hwsim.sgx.measurement import PageRecords, window_pages, windows


def plain(offset: int, pages: int, flags: int, mrmask: int) -> bytes:
    """The records one page at a time from the packers, zero chunks."""
    out = b""
    for p in range(offset, offset + pages * 4096, 4096):
        out += eadd_block(p, flags)
        for c in range(16):
            if mrmask >> c & 1:
                out += eextend_header(p + c * 256) + bytes(256)
    return out


@settings(database=None, max_examples=60, deadline=None)
@given(
    mrmask=st.sampled_from([0, 0xFFFF, 0x8001, 0x0F0]),
    runs=st.lists(
        st.tuples(
            st.integers(0, (1 << 24) - 1),
            st.integers(0, 95),
            st.integers(1, 70),
            st.integers(0, 0xFFFF),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_template_matches_packers(mrmask: int, runs: list[tuple[int, int, int, int]]) -> None:
    """Moving one template between windows and flags patches exactly what changes."""
    size = window_pages(mrmask)
    t = PageRecords(mrmask, 96, size - 96)
    for window, index, pages, flags in runs:
        start = (window * size + t.first + index) * 4096
        for offset, n in windows(start, min(pages, 96 - index), mrmask):
            assert t.covers((offset >> 12) % size, n)
            assert bytes(t.batch(offset, n, flags)) == plain(offset, n, flags, mrmask)
            assert len(t.slots(offset, n)) == n * bin(mrmask).count("1")


def test_slots_are_the_chunks_in_stream_order() -> None:
    t = PageRecords(0x0003, 4)
    for i, slot in enumerate(t.slots(0x1000, 2)):
        slot[:] = bytes([i + 1]) * 256
    expected = b"".join(
        eadd_block(p, 7) + eextend_header(p) + bytes([2 * k + 1]) * 256
        + eextend_header(p + 256) + bytes([2 * k + 2]) * 256
        for k, p in enumerate((0x1000, 0x2000))
    )  # fmt: skip
    assert bytes(t.batch(0x1000, 2, 7)) == expected


def test_windows_split_at_16_mib_or_1_mib() -> None:
    assert list(windows(0xFFF000, 3, 0)) == [(0xFFF000, 1), (0x1000000, 2)]
    assert list(windows(0xFF000, 3, 1)) == [(0xFF000, 1), (0x100000, 2)]
    assert sum(n for _, n in windows(0x3000, 3 * 4096, 0)) == 3 * 4096


def test_full_windows_far_apart() -> None:
    """Whole templates moved across every offset byte, including the mixed one."""
    for mrmask in (0, 0xFFFF):
        t = PageRecords(mrmask)
        for anywhere in (0, 0x7_1230_0000, 0x5_0000_0000_0000, 0x100000, 0x1F_FFF0_0000):
            n = t.capacity
            offset = anywhere - anywhere % (n * 4096)
            assert bytes(t.batch(offset, n, 0x203)) == plain(offset, n, 0x203, mrmask)


def test_template_bounds() -> None:
    with pytest.raises(ValueError, match="beyond the template"):
        PageRecords(0, 4).batch(0x3000, 2, 0)
    with pytest.raises(ValueError, match="pages 0 to 4096 of a window, not 0 to 4097"):
        PageRecords(0, 4097)
    with pytest.raises(ValueError, match="pages 0 to 256 of a window, not 200 to 257"):
        PageRecords(1, 57, 200)
    with pytest.raises(ValueError, match="beyond the template"):
        PageRecords(0, 4, 8).batch(0x7000, 2, 0)
