"""The measurement stream of runs of pages, built once from a template.

MRENCLAVE covers, per page, one EADD record and, per measured 256-byte chunk, an EEXTEND
record followed by the chunk (``arch``'s records). Building those records page by page in
Python costs more than hashing them, so :class:`PageRecords` builds the records of a whole
16 MiB window of pages once, with ``arch``'s packers, and reuses them: the offsets of two
pages at the same place in different windows differ only in bits 24 and up, so moving the
template to another window patches those bytes and nothing else (usually one byte per
record), and a new SECINFO.FLAGS is patched once per run of pages. The measured bytes go
into the template's data slots, which callers fill in place (a scatter read, for files).
"""

from __future__ import annotations

import array
from collections.abc import Iterator

from hwsim.arch import PAGE_SIZE
from hwsim.sgx.arch import EEXTEND_CHUNK, MEASURE_BLOCK, eadd_block, eextend_header

__all__ = ["ALL_CHUNKS", "WINDOW_PAGES", "PageRecords", "windows"]

ALL_CHUNKS = 0xFFFF  # every 256-byte chunk of a page is EEXTENDed
_CHUNKS = PAGE_SIZE // EEXTEND_CHUNK
_WINDOW_SHIFT = 24  # a window spans 16 MiB: offsets inside it share bytes 3 to 7
WINDOW_PAGES = (1 << _WINDOW_SHIFT) // PAGE_SIZE
_EXTEND_STEP = MEASURE_BLOCK + EEXTEND_CHUNK  # an EEXTEND record and its chunk


def windows(offset: int, pages: int) -> Iterator[tuple[int, int]]:
    """(offset, pages) pieces of a run of pages, none crossing a 16 MiB window."""
    while pages:
        n = min(pages, WINDOW_PAGES - (offset >> 12) % WINDOW_PAGES)
        yield offset, n
        offset, pages = offset + n * PAGE_SIZE, pages - n


class PageRecords:
    """The records of up to ``capacity`` consecutive pages of a window, measured with
    chunk mask ``mrmask``; data slots start zeroed."""

    def __init__(self, mrmask: int, capacity: int = WINDOW_PAGES) -> None:
        if not 0 < capacity <= WINDOW_PAGES:
            raise ValueError(f"a template holds 1 to {WINDOW_PAGES} pages, not {capacity}")
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
        for at, chunk in self.columns:
            span = range(chunk, chunk + capacity * PAGE_SIZE, PAGE_SIZE)
            words[at // 8 :: stride] = array.array("Q", span)
        self.window = 0  # offset bits 24 and up currently in the template
        self.flags = 0
        self._slots: list[memoryview] | None = None

    def batch(self, offset: int, pages: int, flags: int) -> memoryview:
        """The records of ``pages`` pages from ``offset`` (inside one window) with
        SECINFO.FLAGS ``flags``; valid until the next call."""
        first = (offset >> 12) % WINDOW_PAGES
        if first + pages > self.capacity:
            raise ValueError(f"pages {first}..{first + pages} are beyond the template")
        if flags != self.flags:
            self.view.cast("Q")[2 :: self.record_size // 8] = array.array("Q", [flags]) * (
                self.capacity
            )
            self.flags = flags
        self._move(offset >> _WINDOW_SHIFT)
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
        first = (offset >> 12) % WINDOW_PAGES * len(self.chunks)
        return self._slots[first : first + pages * len(self.chunks)]

    def _move(self, window: int) -> None:
        """Patch the offset bytes that differ between the current window and ``window``."""
        changed, self.window = window ^ self.window, window
        byte = _WINDOW_SHIFT // 8
        while changed:
            if changed & 0xFF:
                value = bytes([window & 0xFF]) * self.capacity
                for at, _ in self.columns:
                    self.buf[at + byte :: self.record_size] = value
            changed, window, byte = changed >> 8, window >> 8, byte + 1
