"""MRENCLAVE, computed the way the hardware does, streaming, on one core.

MRENCLAVE is SHA-256 over 64-byte records: one ECREATE, one EADD per page, and per measured
256-byte chunk an EEXTEND followed by the chunk (SDM vol. 3D 38.x, "Operation" of
ECREATE/EADD/EEXTEND; ``shared/reference/sgx.md`` 2.7). The same byte stream is an SGXS
file, so :func:`stream_measurement` serves both measuring and SGXS export.

Speed: the records come from :class:`hwsim.sgx.measurement.PageRecords` templates (built
once, only the offset bytes that change patched per window), and a file's measured
bytes go straight into the template's data slots with one scatter read (``preadv``) per
1024 chunks. One thread does everything: a second thread only pays off on an idle second
core, and under load it was slower. Memory stays a few tens of MiB whatever the size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from hwsim.arch import PAGE_SIZE
from hwsim.sgx.arch import EEXTEND_CHUNK, ecreate_block
from hwsim.sgx.measurement import ALL_CHUNKS, PageRecords, window_pages, windows
from sgxtool.errors import SgxToolError
from sgxtool.layout import EnclaveLayout, Region

if TYPE_CHECKING:
    from memcrypt.work import Work

__all__ = ["Progress", "Sink", "mrenclave", "stream_measurement"]

Progress = Callable[[int], None]
_IOV_MAX = 1024  # preadv scatter entries per call (Linux UIO_MAXIOV)


class Sink(Protocol):
    """Where the measurement stream goes: a hash object, or a file writer that also hashes."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...


def mrenclave(layout: EnclaveLayout, progress: Progress | None = None) -> bytes:
    """The MRENCLAVE of ``layout``."""
    h = hashlib.sha256()
    stream_measurement(layout, h, progress)
    return h.digest()


def stream_measurement(layout: EnclaveLayout, sink: Sink, progress: Progress | None = None) -> None:
    """Feed the whole ECREATE/EADD/EEXTEND stream of ``layout`` to ``sink``."""
    sink.update(ecreate_block(layout.ssaframesize, layout.size))
    with layout.open_source() as fd:
        stream = _Stream(fd)
        for region in layout.regions:
            for data, pages in stream.region(region):
                sink.update(data)
                if progress:
                    progress(pages)


class _Stream:
    """The records of each region, from templates kept per (chunk mask, zero data)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.templates: dict[tuple[int, bool], PageRecords] = {}

    def region(self, r: Region) -> Iterator[tuple[memoryview, int]]:
        if r.mrmask == 0:
            yield from self._zero(r, range(r.pages))
            return
        zero_from = min(r.pages, -(-r.content.end // PAGE_SIZE))
        fast = r.file_pages() if self.fd is not None and r.mrmask == ALL_CHUNKS else range(0)
        if fast:
            yield from self._copied(r, range(0, fast.start))
            yield from self._from_file(r, fast)
            yield from self._copied(r, range(fast.stop, zero_from))
        else:
            yield from self._copied(r, range(0, zero_from))
        yield from self._zero(r, range(zero_from, r.pages))

    def _pieces(
        self, r: Region, pages: range, zero: bool
    ) -> Iterator[tuple[PageRecords, int, int]]:
        """(template, first page index, pages) per window piece of ``pages``."""
        if not pages:
            return
        start = r.offset + pages.start * PAGE_SIZE
        size = window_pages(r.mrmask)
        for offset, n in windows(start, len(pages), r.mrmask):
            first = (offset - r.offset) // PAGE_SIZE
            yield self._template(r.mrmask, zero, (offset // PAGE_SIZE) % size, n), first, n

    def _template(self, mrmask: int, zero: bool, first: int, pages: int) -> PageRecords:
        """A template for ``mrmask`` holding pages ``first`` to ``first + pages`` of its
        window: built to size when the last one does not hold them, so a small region
        builds a small template and a large one builds whole windows once."""
        t = self.templates.get((mrmask, zero))
        if t is None or not t.covers(first, pages):
            t = self.templates[mrmask, zero] = PageRecords(mrmask, pages, first)
        return t

    def _zero(self, r: Region, pages: range) -> Iterator[tuple[memoryview, int]]:
        for t, first, n in self._pieces(r, pages, zero=True):
            yield t.batch(r.offset + first * PAGE_SIZE, n, r.flags), n

    def _copied(self, r: Region, pages: range) -> Iterator[tuple[memoryview, int]]:
        """Pages whose bytes are not whole file pages: read them, then fill the slots."""
        for t, first, n in self._pieces(r, pages, zero=False):
            offset = r.offset + first * PAGE_SIZE
            records = t.batch(offset, n, r.flags)
            data = r.read_pages(self.fd, first, n)
            chunks = [p * PAGE_SIZE + c * EEXTEND_CHUNK for p in range(n) for c in t.chunks]
            for slot, at in zip(t.slots(offset, n), chunks, strict=True):
                slot[:] = data[at : at + EEXTEND_CHUNK]
            yield records, n

    def _from_file(self, r: Region, pages: range) -> Iterator[tuple[memoryview, int]]:
        assert self.fd is not None
        for t, first, n in self._pieces(r, pages, zero=False):
            offset = r.offset + first * PAGE_SIZE
            records = t.batch(offset, n, r.flags)
            position = r.content.file_offset + first * PAGE_SIZE - r.content.start
            slots = t.slots(offset, n)
            for i in range(0, len(slots), _IOV_MAX):
                group = slots[i : i + _IOV_MAX]
                size = len(group) * EEXTEND_CHUNK
                if os.preadv(self.fd, group, position) != size:
                    raise SgxToolError("enclave file shrank while it was being measured")
                position += size
            yield records, n


def layout_work(what: str, layout: EnclaveLayout) -> Work:
    """Pages to add and bytes to hash to measure ``layout``, for the large-work policy."""
    from memcrypt.work import Work

    # SDM 38.7: a 64-byte ECREATE block, a 64-byte EADD block per page, and per measured
    # 256-byte chunk a 64-byte EEXTEND block followed by the chunk.
    stream = 64 + 64 * layout.page_count + layout.measured_bytes * 320 // 256
    return Work(what, layout.page_count, stream)
