"""SGXS, Fortanix's measured-stream format: the exact bytes MRENCLAVE hashes.

An SGXS file is the ECREATE/EADD/EEXTEND block stream (rust-sgx ``doc/SGXS.md``), so its
SHA-256 is the MRENCLAVE. A canonical stream starts with one ECREATE; EADD offsets are
page-aligned and strictly increasing; each EEXTEND is 256-aligned, inside the page of the
EADD before it, and unique. Reading checks all of that, so a stream that would hash to
something no hardware could produce is refused rather than trusted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hwsim.arch import PAGE_SIZE
from hwsim.sgx.arch import (
    EEXTEND_CHUNK,
    MEASURE_BLOCK,
    TAG_ECREATE,
    TAG_EEXTEND,
    EaddRecord,
    EcreateRecord,
    EextendRecord,
    MeasureRecord,
    PageType,
    Secinfo,
    Tcs,
    parse_record,
)
from memcrypt.errors import FormatError
from memcrypt.files import atomic_open
from sgxtool.errors import ImageError
from sgxtool.layout import Content, EnclaveLayout, LayoutBuilder, Region, Thread
from sgxtool.measure import Progress, stream_measurement

__all__ = ["is_sgxs", "read_sgxs", "sgxs_mrenclave", "write_sgxs"]

_READ_SIZE = 1 << 20


@dataclass
class _Page:
    offset: int
    flags: int
    data: bytearray
    mrmask: int = 0


def is_sgxs(head: bytes) -> bool:
    """Whether a file starting with ``head`` looks like an SGXS stream."""
    return head[:8] == TAG_ECREATE


def sgxs_mrenclave(path: str | Path) -> bytes:
    """MRENCLAVE of an SGXS file: validate the stream while hashing it."""
    h = hashlib.sha256()
    with _open(path) as f:
        for _ in _records(f, str(path), h):
            pass
    return h.digest()


def read_sgxs(path: str | Path) -> EnclaveLayout:
    """An SGXS stream as a layout of single pages with their measured contents, and a
    thread for each page its EADD record adds as PT_TCS.

    Unmeasured chunks have no bytes in the stream, so they load as zeros."""
    with _open(path) as f:
        records = _records(f, str(path), None)
        ecreate = next(records)[0]
        assert isinstance(ecreate, EcreateRecord)  # _Canonical refuses anything else first
        ssaframesize, size = ecreate
        builder = LayoutBuilder(ssaframesize)
        for page in _pages(records):
            kind = PageType(Secinfo(page.flags).page_type).name.lower()
            if kind == "tcs":  # TCS discovery: the EADD record's SECINFO says PT_TCS
                tcs = Tcs.unpack(bytes(page.data))
                builder.threads.append(Thread(page.offset, tcs.ossa, 0, 0, tcs.ofsbase))
            builder.add(
                Region(
                    page.offset,
                    1,
                    page.flags,
                    kind,
                    f"page {page.offset:#x}",
                    Content(data=bytes(page.data)),
                    page.mrmask,
                )
            )
    return builder.build(size=size)


def write_sgxs(layout: EnclaveLayout, path: str | Path, progress: Progress | None = None) -> bytes:
    """Write the measurement stream of ``layout`` as an SGXS file; return MRENCLAVE."""
    h = hashlib.sha256()
    with atomic_open(path) as f:

        class _Tee:
            def update(self, data: bytes | bytearray | memoryview, /) -> None:
                h.update(data)
                f.write(data)

        stream_measurement(layout, _Tee(), progress)
    return h.digest()


def _open(path: str | Path) -> BinaryIO:
    try:
        return Path(path).open("rb")
    except OSError as exc:
        raise ImageError(f"cannot read SGXS stream {path}: {exc.strerror}") from exc


def _pages(records: Iterator[tuple[MeasureRecord, bytes]]) -> Iterator[_Page]:
    page: _Page | None = None
    for record, data in records:
        if isinstance(record, EaddRecord):
            if page is not None:
                yield page
            page = _Page(record.offset, record.flags, bytearray(PAGE_SIZE))
        elif page is not None and isinstance(record, EextendRecord):
            at = record.offset - page.offset
            page.data[at : at + EEXTEND_CHUNK] = data
            page.mrmask |= 1 << (at // EEXTEND_CHUNK)
    if page is not None:
        yield page


def _records(
    f: BinaryIO, name: str, h: hashlib._Hash | None
) -> Iterator[tuple[MeasureRecord, bytes]]:
    """Yield each record (with its chunk, for EEXTEND), checking canonical order; feed
    every byte to ``h`` when given. Memory stays at one read buffer whatever the size."""
    state = _Canonical(name)
    for block, chunk in _blocks(f, name, h):
        try:
            record = parse_record(block)
        except FormatError as exc:
            raise state.fail(str(exc)) from exc
        state.check(record)
        yield record, chunk
        state.position += len(block) + len(chunk)
    state.finish()


def _blocks(f: BinaryIO, name: str, h: hashlib._Hash | None) -> Iterator[tuple[bytes, bytes]]:
    """(64-byte record, 256-byte chunk or b"") pairs, read and hashed 1 MiB at a time."""
    buf, at, position = b"", 0, 0
    while True:
        if len(buf) - at < MEASURE_BLOCK + EEXTEND_CHUNK:
            more = f.read(_READ_SIZE)
            if h is not None:
                h.update(more)
            buf, at = buf[at:] + more, 0
            if not buf:
                return
        block = buf[at : at + MEASURE_BLOCK]
        if len(block) != MEASURE_BLOCK:
            raise ImageError(f"{name}: truncated record at byte {position}")
        chunk = b""
        if block[:8] == TAG_EEXTEND:
            chunk = buf[at + MEASURE_BLOCK : at + MEASURE_BLOCK + EEXTEND_CHUNK]
            if len(chunk) != EEXTEND_CHUNK:
                raise ImageError(f"{name}: EEXTEND at byte {position} is truncated")
        at += len(block) + len(chunk)
        position += len(block) + len(chunk)
        yield block, chunk


class _Canonical:
    """The ordering rules of a canonical SGXS stream."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.position = 0
        self.size: int | None = None
        self.page: int | None = None
        self.extended: set[int] = set()

    def fail(self, message: str) -> ImageError:
        return ImageError(f"{self.name}: {message} (record at byte {self.position})")

    def check(self, record: MeasureRecord) -> None:
        if isinstance(record, EaddRecord):
            self.eadd(record)
        elif isinstance(record, EextendRecord):
            self.eextend(record.offset)
        else:
            self.ecreate(record)

    def ecreate(self, record: EcreateRecord) -> None:
        if self.size is not None:
            raise self.fail("second ECREATE")
        size = record.size
        if size < 2 * PAGE_SIZE or size & (size - 1):
            raise self.fail(f"ECREATE SIZE {size:#x} is not a power of two of 2 pages or more")
        self.size = size

    def eadd(self, record: EaddRecord) -> None:
        if self.size is None:
            raise self.fail("EADD before ECREATE")
        offset, page_type = record.offset, record.secinfo.page_type
        if page_type not in (PageType.REG, PageType.TCS):  # else EADD faults (SDM vol. 3D, EADD)
            raise self.fail(f"EADD page type {page_type} is neither REG nor TCS")
        if offset % PAGE_SIZE or offset >= self.size:
            raise self.fail(f"EADD offset {offset:#x} is not a page inside the enclave")
        if self.page is not None and offset <= self.page:
            raise self.fail(f"EADD offset {offset:#x} does not follow {self.page:#x}")
        self.page = offset
        self.extended.clear()

    def eextend(self, offset: int) -> None:
        if self.page is None:
            raise self.fail("EEXTEND before any EADD")
        if offset % EEXTEND_CHUNK or not self.page <= offset < self.page + PAGE_SIZE:
            raise self.fail(f"EEXTEND offset {offset:#x} is not a chunk of page {self.page:#x}")
        if offset in self.extended:
            raise self.fail(f"EEXTEND offset {offset:#x} measured twice")
        self.extended.add(offset)

    def finish(self) -> None:
        if self.size is None:
            raise ImageError(f"{self.name}: empty SGXS stream (no ECREATE)")
