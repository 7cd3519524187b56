"""The measurement stream of runs of pages, built once from a template.

MRENCLAVE covers, per page, one EADD record and, per measured 256-byte chunk, an EEXTEND
record followed by the chunk (``arch``'s records). Building those records page by page in
Python costs more than hashing them, so :class:`PageRecords` builds the records of a whole
window of pages once, with ``arch``'s packers, and reuses them: the offsets of two pages at
the same place in different windows differ only in the bits above the window, so moving
the template to another window patches those bytes and nothing else (usually one byte per
record), and a new SECINFO.FLAGS is patched once per run of pages. A window is 16 MiB
(4096 pages, 256 KiB of EADD records) without measured chunks, and 1 MiB (256 pages,
1.3 MiB of records) with them, so that a template stays cheap to build. The measured bytes go
into the template's data slots, which callers fill in place (a scatter read, for files).
"""

from __future__ import annotations

import array
import functools
from collections.abc import Iterator

from hwsim.arch import PAGE_SIZE
from hwsim.sgx.arch import EEXTEND_CHUNK, MEASURE_BLOCK, eadd_block, eextend_header

__all__ = ["ALL_CHUNKS", "PageRecords", "window_pages", "windows"]

ALL_CHUNKS = 0xFFFF  # every 256-byte chunk of a page is EEXTENDed
_CHUNKS = PAGE_SIZE // EEXTEND_CHUNK
_EXTEND_STEP = MEASURE_BLOCK + EEXTEND_CHUNK  # an EEXTEND record and its chunk


@functools.cache
def _or_table(bits: int) -> bytes:
    """A ``bytes.translate`` table that ORs ``bits`` into every byte."""
    return bytes(x | bits for x in range(256))


def _window_shift(mrmask: int) -> int:
    return 20 if mrmask else 24


def window_pages(mrmask: int) -> int:
    """Pages per window of a template for chunk mask ``mrmask``."""
    return (1 << _window_shift(mrmask)) // PAGE_SIZE


def windows(offset: int, pages: int, mrmask: int) -> Iterator[tuple[int, int]]:
    """(offset, pages) pieces of a run of pages, none crossing a window."""
    size = window_pages(mrmask)
    while pages:
        n = min(pages, size - (offset // PAGE_SIZE) % size)
        yield offset, n
        offset, pages = offset + n * PAGE_SIZE, pages - n


class PageRecords:
    """The records of pages ``first`` to ``first + capacity`` of a window (all of it by
    default), measured with chunk mask ``mrmask``; data slots start zeroed."""

    def __init__(self, mrmask: int, capacity: int | None = None, first: int = 0) -> None:
        self.shift = _window_shift(mrmask)
        self.window_pages = window_pages(mrmask)
        capacity = capacity or self.window_pages - first
        if not (capacity > 0 and first >= 0 and first + capacity <= self.window_pages):
            raise ValueError(
                f"a template holds pages 0 to {self.window_pages} of a window, "
                f"not {first} to {first + capacity}"
            )
        self.first = first
        self.chunks = [c for c in range(_CHUNKS) if mrmask >> c & 1]
        self.capacity = capacity
        page = eadd_block(0, 0) + b"".join(
            eextend_header(c * EEXTEND_CHUNK) + bytes(EEXTEND_CHUNK) for c in self.chunks
        )
        self.record_size = len(page)
        self.buf = bytearray(page * capacity)
        self.view = memoryview(self.buf)
        # Byte position of each offset field in a page's records, and its chunk's offset.
        self.columns = [(8, 0)] + [
            (MEASURE_BLOCK + i * _EXTEND_STEP + 8, c * EEXTEND_CHUNK)
            for i, c in enumerate(self.chunks)
        ]
        words = self.view.cast("Q")
        stride = self.record_size // 8
        start = first * PAGE_SIZE
        for at, chunk in self.columns:
            span = range(start + chunk, start + chunk + capacity * PAGE_SIZE, PAGE_SIZE)
            words[at // 8 :: stride] = array.array("Q", span)
        self.window = 0  # offset bits above the window currently in the template
        self.flags = 0
        self._slots: list[memoryview] | None = None
        # The byte that holds both page-index bits and window bits (1 MiB windows): its
        # page-index part per record (the same in every column: chunks only reach bit 11),
        # to OR the window's part into.
        byte = self.shift // 8
        self._mixed = (
            bytes(p * PAGE_SIZE >> 8 * byte & 0xFF for p in range(first, first + capacity))
            if self.shift % 8
            else b""
        )

    def covers(self, first: int, pages: int) -> bool:
        """Whether pages ``first`` to ``first + pages`` of a window are in the template."""
        return self.first <= first and first + pages <= self.first + self.capacity

    def batch(self, offset: int, pages: int, flags: int) -> memoryview:
        """The records of ``pages`` pages from ``offset`` (inside one window) with
        SECINFO.FLAGS ``flags``; valid until the next call."""
        first = (offset // PAGE_SIZE) % self.window_pages
        if not self.covers(first, pages):
            raise ValueError(f"pages {first}..{first + pages} are beyond the template")
        first -= self.first
        if flags != self.flags:
            self.view.cast("Q")[2 :: self.record_size // 8] = array.array("Q", [flags]) * (
                self.capacity
            )
            self.flags = flags
        self._move(offset >> self.shift)
        return self.view[first * self.record_size : (first + pages) * self.record_size]

    def slots(self, offset: int, pages: int) -> list[memoryview]:
        """The data slots of the measured chunks of ``pages`` pages from ``offset``, in
        stream order: what a scatter read fills."""
        if self._slots is None:
            self._slots = [
                self.view[p * self.record_size + at + 56 : p * self.record_size + at + 312]
                for p in range(self.capacity)
                for at, _ in self.columns[1:]
            ]
        first = ((offset // PAGE_SIZE) % self.window_pages - self.first) * len(self.chunks)
        return self._slots[first : first + pages * len(self.chunks)]

    def _move(self, window: int) -> None:
        """Patch the offset bytes that differ between the current window and ``window``."""
        base, old = window << self.shift, self.window << self.shift
        self.window = window
        byte = self.shift // 8
        if self._mixed and (base ^ old) >> 8 * byte & 0xFF:
            table = _or_table(base >> 8 * byte & 0xFF)
            mixed = self._mixed.translate(table)
            for at, _ in self.columns:
                self.buf[at + byte :: self.record_size] = mixed
        byte += 1 if self._mixed else 0
        changed, base = (base ^ old) >> 8 * byte, base >> 8 * byte
        while changed:
            if changed & 0xFF:
                value = bytes([base & 0xFF]) * self.capacity
                for at, _ in self.columns:
                    self.buf[at + byte :: self.record_size] = value
            changed, base, byte = changed >> 8, base >> 8, byte + 1
