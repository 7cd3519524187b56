"""MRENCLAVE, computed the way the hardware does, streaming.

MRENCLAVE is SHA-256 over 64-byte blocks: one ECREATE block, one EADD block per page, and
per measured 256-byte chunk an EEXTEND block followed by the chunk (SDM vol. 3D 38.x,
"Operation" of ECREATE/EADD/EEXTEND; ``shared/reference/sgx.md`` 2.7). The same byte stream
is an SGXS file, so :func:`stream_measurement` serves both measuring and SGXS export.

Speed: building 17 blocks per page in Python would cost more than hashing them. Instead,
pages are measured in batches through preformatted buffers whose headers are patched with
strided array writes and whose data slots are filled by one scatter read (``preadv``) per
1024 chunks; a worker thread fills the next batch while the caller's thread hashes the
current one (hashlib and preadv both release the GIL). Memory stays a few MiB whatever
the enclave size.
"""

from __future__ import annotations

import array
import hashlib
import os
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from hwsim.sgx.arch import (
    EEXTEND_CHUNK,
    MEASURE_BLOCK,
    PAGE_SIZE,
    eadd_block,
    ecreate_block,
    eextend_header,
)
from sgxtool.layout import ALL_CHUNKS, EnclaveLayout, Region

__all__ = ["Sink", "mrenclave", "stream_measurement"]

Progress = Callable[[int], None]
_CHUNKS = PAGE_SIZE // EEXTEND_CHUNK
_PAGE_RECORD = MEASURE_BLOCK + _CHUNKS * (MEASURE_BLOCK + EEXTEND_CHUNK)  # 5184 bytes
_Q = _PAGE_RECORD // 8  # the record in 8-byte words
_BATCH = 512  # measured pages per batch
_EADD_BATCH = 4096  # unmeasured pages per batch
_IOV_MAX = 1024  # preadv scatter entries per call (Linux UIO_MAXIOV)
_TAG_EADD = struct.unpack("<Q", b"EADD\0\0\0\0")[0]
_TAG_EEXTEND = struct.unpack("<Q", b"EEXTEND\0")[0]


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
    with layout.open_source() as fd, ThreadPoolExecutor(1) as worker:
        items = _Batches(fd).stream(layout)
        pending = worker.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = worker.submit(next, items, None)
            data, pages = item
            sink.update(data)
            if progress:
                progress(pages)


class _RecordBuffer:
    """A batch of fully measured page records with the constant tags already in place."""

    def __init__(self) -> None:
        self.buf = bytearray(_BATCH * _PAGE_RECORD)
        self.view = memoryview(self.buf)
        self.words = self.view.cast("Q")
        self.words[0::_Q] = array.array("Q", [_TAG_EADD]) * _BATCH
        for c in range(_CHUNKS):
            self.words[8 + 40 * c :: _Q] = array.array("Q", [_TAG_EEXTEND]) * _BATCH
        slots = [
            self.view[p * _PAGE_RECORD + 64 + c * 320 + 64 :][:EEXTEND_CHUNK]
            for p in range(_BATCH)
            for c in range(_CHUNKS)
        ]
        self.slots = [slots[i : i + _IOV_MAX] for i in range(0, len(slots), _IOV_MAX)]

    def headers(self, offset: int, flags: int, pages: int) -> None:
        """Write the page and chunk offsets of ``pages`` pages starting at ``offset``."""
        end = offset + pages * PAGE_SIZE
        self.words[1 : pages * _Q : _Q] = array.array("Q", range(offset, end, PAGE_SIZE))
        self.words[2 : pages * _Q : _Q] = array.array("Q", [flags]) * pages
        for c in range(_CHUNKS):
            first = offset + c * EEXTEND_CHUNK
            self.words[9 + 40 * c : pages * _Q : _Q] = array.array(
                "Q", range(first, end, PAGE_SIZE)
            )

    def read(self, fd: int, file_offset: int, pages: int) -> None:
        """Scatter ``pages`` pages of the file into the data slots."""
        want = pages * _CHUNKS
        for i, group in enumerate(self.slots):
            if i * _IOV_MAX >= want:
                break
            slots = group[: want - i * _IOV_MAX]
            size = len(slots) * EEXTEND_CHUNK
            if os.preadv(fd, slots, file_offset) != size:
                raise OSError("short read of enclave file")
            file_offset += size


class _Batches:
    """Produces the measurement stream region by region, reusing two buffers per kind so
    one can be hashed while the other is filled."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.turn = 0
        self.file = [_RecordBuffer(), _RecordBuffer()]
        self._zero: list[_RecordBuffer] = []
        self.eadd = [bytearray(_EADD_BATCH * MEASURE_BLOCK) for _ in range(2)]
        for buf in self.eadd:
            memoryview(buf).cast("Q")[0::8] = array.array("Q", [_TAG_EADD]) * _EADD_BATCH

    @property
    def zero(self) -> list[_RecordBuffer]:
        if not self._zero:
            self._zero = [_RecordBuffer(), _RecordBuffer()]
        return self._zero

    def stream(self, layout: EnclaveLayout) -> Iterator[tuple[memoryview | bytes, int]]:
        for region in layout.regions:
            if region.mrmask == 0:
                yield from self._unmeasured(region)
            elif region.mrmask == ALL_CHUNKS:
                yield from self._measured(region)
            else:
                yield from self._irregular(region, range(region.pages))

    def _flip(self) -> int:
        self.turn ^= 1
        return self.turn

    def _unmeasured(self, r: Region) -> Iterator[tuple[memoryview, int]]:
        for first in range(0, r.pages, _EADD_BATCH):
            n = min(_EADD_BATCH, r.pages - first)
            buf = self.eadd[self._flip()]
            words = memoryview(buf).cast("Q")
            start = r.offset + first * PAGE_SIZE
            words[1 : n * 8 : 8] = array.array("Q", range(start, start + n * PAGE_SIZE, PAGE_SIZE))
            words[2 : n * 8 : 8] = array.array("Q", [r.flags]) * n
            yield memoryview(buf)[: n * MEASURE_BLOCK], n

    def _measured(self, r: Region) -> Iterator[tuple[memoryview | bytes, int]]:
        fast = r.file_pages() if self.fd is not None else range(0)
        zero_from = min(r.pages, -(-r.content.end // PAGE_SIZE))
        if fast:
            yield from self._irregular(r, range(0, fast.start))
            yield from self._records(r, fast, from_file=True)
            yield from self._irregular(r, range(fast.stop, zero_from))
        else:
            yield from self._irregular(r, range(0, zero_from))
        yield from self._records(r, range(zero_from, r.pages), from_file=False)

    def _records(
        self, r: Region, pages: range, from_file: bool
    ) -> Iterator[tuple[memoryview, int]]:
        for first in range(pages.start, pages.stop, _BATCH):
            n = min(_BATCH, pages.stop - first)
            rec = (self.file if from_file else self.zero)[self._flip()]
            rec.headers(r.offset + first * PAGE_SIZE, r.flags, n)
            if from_file:
                assert self.fd is not None
                rec.read(self.fd, r.content.file_offset + first * PAGE_SIZE - r.content.start, n)
            yield rec.view[: n * _PAGE_RECORD], n

    def _irregular(self, r: Region, pages: range) -> Iterator[tuple[bytes, int]]:
        for i in pages:
            offset = r.offset + i * PAGE_SIZE
            data = r.read_pages(self.fd, i, 1)
            parts = [eadd_block(offset, r.flags)]
            for c in range(_CHUNKS):
                if r.mrmask >> c & 1:
                    at = c * EEXTEND_CHUNK
                    parts += (eextend_header(offset + at), data[at : at + EEXTEND_CHUNK])
            yield b"".join(parts), 1
