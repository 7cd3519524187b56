"""The enclave layout: the one place that decides which page goes where.

From an ELF and an :class:`EnclaveConfig` the planner produces an :class:`EnclaveLayout`,
an ordered list of page regions. Measuring, signing, SGXS export and loading all walk the
same list, so a signer and a loader can never disagree about placement (the cause of
"SGX_INVALID_MEASUREMENT" in graphene PR #2139).

Placement, bottom-up from offset 0 (the ELF is linked at 0 and the base is only known at
load time, so everything measured is base-independent):

    ELF PT_LOAD segments at their link addresses
    [guard] heap
    per thread: [guard] stack, TCS, SSA frames, thread-data page
    [guard], then free space up to SIZE, the next power of two

Guard pages are never added: an access there faults, as on hardware.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from hwsim.arch import PAGE_SIZE
from hwsim.sgx.arch import PageType, Secinfo, SecinfoFlag, Tcs, secinfo_flags
from hwsim.sgx.measurement import ALL_CHUNKS
from sgxtool.config import MAX_ENCLAVE_SIZE, EnclaveConfig
from sgxtool.elf import EnclaveElf, Segment
from sgxtool.errors import ConfigError, SgxToolError

__all__ = [
    "ALL_CHUNKS",
    "THREAD_DATA",
    "Content",
    "EnclaveLayout",
    "LayoutBuilder",
    "Region",
    "Thread",
    "plan_layout",
]

RW = int(SecinfoFlag.R | SecinfoFlag.W)

# The thread-data page (TCS.OFSBASE/OGSBASE point at it) tells the SDK's entry stub where
# its stack is. Values are offsets from the enclave base, so the page measures the same
# wherever the enclave is loaded. Bytes from 0x40 on are scratch for the runtime.
THREAD_DATA = struct.Struct("<8Q")
THREAD_DATA_FIELDS = (
    "stack_top",
    "stack_base",
    "ssa",
    "index",
    "heap",
    "heap_size",
    "enclave_size",
    "tcs",
)


@dataclass(frozen=True)
class Content:
    """Initial bytes of a region: ``data`` inline, or ``length`` bytes of the source file
    starting at ``file_offset``; either is placed at byte ``start`` and the rest is zero."""

    data: bytes = b""
    file_offset: int = 0
    length: int = 0
    start: int = 0

    @property
    def end(self) -> int:
        return self.start + (len(self.data) if self.data else self.length)

    def read(self, fd: int | None, begin: int, size: int) -> bytes:
        """Bytes [begin, begin+size) of the region's contents."""
        out = bytearray(size)
        lo, hi = max(begin, self.start), min(begin + size, self.end)
        if lo < hi:
            if self.data:
                out[lo - begin : hi - begin] = self.data[lo - self.start : hi - self.start]
            else:
                if fd is None:
                    raise SgxToolError("layout needs its source file, which is not open")
                chunk = os.pread(fd, hi - lo, self.file_offset + lo - self.start)
                if len(chunk) != hi - lo:
                    raise SgxToolError("enclave file shrank while it was being read")
                out[lo - begin : hi - begin] = chunk
        return bytes(out)


@dataclass(frozen=True)
class Region:
    """``pages`` consecutive enclave pages sharing type, permissions and measurement."""

    offset: int
    pages: int
    flags: int  # SECINFO.FLAGS
    kind: str  # code, data, heap, stack, tcs, ssa, thread-data, page
    label: str
    content: Content = field(default_factory=Content)
    mrmask: int = ALL_CHUNKS  # which 256-byte chunks of each page are measured

    @property
    def end(self) -> int:
        return self.offset + self.pages * PAGE_SIZE

    @property
    def page_type(self) -> PageType:
        return PageType(Secinfo(self.flags).page_type)

    def read_pages(self, fd: int | None, first: int, count: int) -> bytes:
        return self.content.read(fd, first * PAGE_SIZE, count * PAGE_SIZE)

    def file_pages(self) -> range:
        """Indices of the pages filled entirely from the source file (the fast path)."""
        c = self.content
        if c.data or not c.length:
            return range(0)
        first = -(-c.start // PAGE_SIZE)
        return range(first, max(first, c.end // PAGE_SIZE))


@dataclass(frozen=True)
class Thread:
    """Where one thread's TCS, SSA frames, stack and thread data sit (offsets)."""

    tcs: int
    ssa: int
    stack_base: int
    stack_top: int
    data: int


@dataclass(frozen=True)
class EnclaveLayout:
    """Every page of an enclave in EADD order, plus what ECREATE needs."""

    size: int
    ssaframesize: int
    regions: tuple[Region, ...]
    entry: int = 0
    threads: tuple[Thread, ...] = ()
    heap: tuple[int, int] = (0, 0)
    source: Path | None = None

    @property
    def page_count(self) -> int:
        return sum(r.pages for r in self.regions)

    @property
    def measured_bytes(self) -> int:
        return sum(r.pages * 256 * bin(r.mrmask).count("1") for r in self.regions)

    @contextmanager
    def open_source(self) -> Iterator[int | None]:
        """A file descriptor on the file the regions' bytes come from, if any."""
        if self.source is None:
            yield None
            return
        try:
            fd = os.open(self.source, os.O_RDONLY)
        except OSError as exc:
            raise SgxToolError(f"cannot read {self.source}: {exc.strerror}") from exc
        try:
            yield fd
        finally:
            os.close(fd)


class LayoutBuilder:
    """Places regions one by one, refusing overlap or misalignment."""

    def __init__(self, ssaframesize: int = 1, source: Path | None = None) -> None:
        self.ssaframesize = ssaframesize
        self.source = source
        self.regions: list[Region] = []
        self.threads: list[Thread] = []
        self.cursor = 0

    def add(self, region: Region) -> Region:
        if region.offset % PAGE_SIZE or region.pages <= 0:
            raise SgxToolError(f"{region.label}: offset {region.offset:#x} is not page aligned")
        if region.offset < self.cursor:
            raise SgxToolError(
                f"{region.label} at {region.offset:#x} overlaps the region "
                f"before it (which ends at {self.cursor:#x})"
            )
        self.regions.append(region)
        self.cursor = region.end
        return region

    def skip(self, pages: int) -> None:
        """Leave ``pages`` pages unmapped (guard pages)."""
        self.cursor += pages * PAGE_SIZE

    def add_thread(
        self,
        tcs: Tcs,
        ssa_pages: int,
        data: bytes | None,
        label: str,
        stack: tuple[int, int] = (0, 0),
    ) -> Thread:
        """A TCS page at the cursor followed by its SSA frames (and a thread-data page)."""
        tcs_region = Region(
            self.cursor,
            1,
            secinfo_flags(PageType.TCS),
            "tcs",
            f"{label} TCS",
            Content(data=tcs.pack()),
        )
        self.add(tcs_region)
        ssa = self.add(
            Region(self.cursor, ssa_pages, secinfo_flags(PageType.REG, RW), "ssa", f"{label} SSA")
        )
        data_off = self.cursor
        if data is not None:
            self.add(
                Region(
                    data_off,
                    1,
                    secinfo_flags(PageType.REG, RW),
                    "thread-data",
                    f"{label} data",
                    Content(data=data),
                )
            )
        thread = Thread(tcs_region.offset, ssa.offset, stack[0], stack[1], data_off)
        self.threads.append(thread)
        return thread

    def build(
        self, *, entry: int = 0, size: int = 0, heap: tuple[int, int] = (0, 0)
    ) -> EnclaveLayout:
        needed = max(2 * PAGE_SIZE, self.cursor)
        power = 1 << (needed - 1).bit_length()
        if needed > MAX_ENCLAVE_SIZE:
            raise ConfigError(
                f"the layout needs {needed:#x} bytes, more than the largest enclave "
                f"({MAX_ENCLAVE_SIZE:#x})",
                hint="lower memory.heap_size, memory.stack_size or memory.threads",
            )
        if size and size < needed:
            raise SgxToolError(
                f"enclave.size {size:#x} is too small: the layout needs "
                f"{needed:#x} bytes (use {power:#x} or more)"
            )
        return EnclaveLayout(
            size or power,
            self.ssaframesize,
            tuple(self.regions),
            entry,
            tuple(self.threads),
            heap,
            self.source,
        )


def plan_layout(elf: EnclaveElf, cfg: EnclaveConfig) -> EnclaveLayout:
    """The layout of an enclave built from ``elf`` with configuration ``cfg``."""
    b = LayoutBuilder(cfg.ssa_frame_size, elf.path)
    for seg in elf.segments:
        b.add(_segment_region(seg))
    b.cursor = _page_up(b.cursor)
    heap = _add_heap(b, cfg)
    for i in range(cfg.threads):
        _add_thread(b, cfg, elf.entry, i, heap)
    b.skip(cfg.guard_pages)
    return _with_enclave_size(b.build(entry=elf.entry, size=cfg.size, heap=heap))


def _add_heap(b: LayoutBuilder, cfg: EnclaveConfig) -> tuple[int, int]:
    """[guard] heap; returns (offset, size), (0, 0) without a heap."""
    if not cfg.heap_size:
        return (0, 0)
    b.skip(cfg.guard_pages)
    mrmask = ALL_CHUNKS if cfg.heap_measured else 0
    region = b.add(Region(b.cursor, cfg.heap_size // PAGE_SIZE, secinfo_flags(PageType.REG, RW),
                          "heap", "heap", mrmask=mrmask))  # fmt: skip
    return (region.offset, cfg.heap_size)


def _add_thread(b: LayoutBuilder, cfg: EnclaveConfig, entry: int, index: int,
                heap: tuple[int, int]) -> None:  # fmt: skip
    """[guard] stack, TCS, SSA frames, thread-data page for thread ``index``."""
    b.skip(cfg.guard_pages)
    stack = b.add(Region(b.cursor, cfg.stack_size // PAGE_SIZE, secinfo_flags(PageType.REG, RW),
                         "stack", f"thread {index} stack"))  # fmt: skip
    ssa_pages = cfg.ssa_frames * cfg.ssa_frame_size
    tcs_off = stack.end
    ssa_off = tcs_off + PAGE_SIZE
    data_off = ssa_off + ssa_pages * PAGE_SIZE
    tcs = Tcs(ossa=ssa_off, nssa=cfg.ssa_frames, oentry=entry, ofsbase=data_off,
              ogsbase=data_off)  # fmt: skip
    # enclave_size (0 here) is filled in once SIZE is known: _with_enclave_size.
    data = THREAD_DATA.pack(stack.end, stack.offset, ssa_off, index, *heap, 0, tcs_off)
    b.add_thread(tcs, ssa_pages, data, f"thread {index}", (stack.offset, stack.end))


def _with_enclave_size(layout: EnclaveLayout) -> EnclaveLayout:
    """Fill the enclave size into each thread-data page once SIZE is known."""

    def fill(r: Region) -> Region:
        if r.kind != "thread-data":
            return r
        values = list(THREAD_DATA.unpack(r.content.data))
        values[THREAD_DATA_FIELDS.index("enclave_size")] = layout.size
        return replace(r, content=Content(data=THREAD_DATA.pack(*values)))

    return replace(layout, regions=tuple(fill(r) for r in layout.regions))


def _segment_region(seg: Segment) -> Region:
    start = seg.vaddr - seg.vaddr % PAGE_SIZE
    pages = (_page_up(seg.end) - start) // PAGE_SIZE
    kind = "code" if seg.perms & SecinfoFlag.X else "data"
    content = Content(file_offset=seg.file_offset, length=seg.filesz, start=seg.vaddr - start)
    return Region(
        start,
        pages,
        secinfo_flags(PageType.REG, seg.perms),
        kind,
        f"segment {seg.number} ({_perm_text(seg.perms)})",
        content,
    )


def _perm_text(perms: int) -> str:
    return "".join(c if perms & bit else "-" for c, bit in (("r", 1), ("w", 2), ("x", 4)))


def _page_up(n: int) -> int:
    return -(-n // PAGE_SIZE) * PAGE_SIZE
