"""Enclaves signed by Intel's ``sgx_sign``: the metadata inside a signed ``.so``.

``sgx_sign`` writes its metadata into the ``.note.sgxmeta`` section the tRTS reserves: a
chain of ``metadata_t`` copies (one per runtime version it stays compatible with), each
holding the SIGSTRUCT, ECREATE's parameters and the layout the uRTS replays: heap, per
thread guard/stack/TCS/SSA/thread-data, and patches applied to the file before its
segments are added. From them this module rebuilds the page list as an
:class:`~sgxtool.layout.EnclaveLayout`, so measuring, dumping, SGXS export and loading walk
the same list as for memcrypt's own images. Facts and offsets: linux-sgx
``common/inc/internal/metadata.h``, ``psw/urts/loader.cpp`` and ``psw/urts/parser/
elfparser.cpp`` (``shared/reference/intel-sdk.md`` sections 1.1-1.6).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from hwsim.sgx.arch import PAGE_SIZE, PageType, SecinfoFlag, Sigstruct, Tcs, secinfo_flags
from memcrypt.files import read_file
from sgxtool.elffile import DT_TEXTREL, EM_X86_64, PT_LOAD, SHT_DYNAMIC, ElfFile
from sgxtool.errors import ElfError, ImageError
from sgxtool.layout import ALL_CHUNKS, Content, EnclaveLayout, LayoutBuilder, Region, Thread

__all__ = [
    "IntelMetadata",
    "LayoutEntry",
    "has_metadata",
    "image_layout",
    "intel_layout",
    "note_block",
    "parse_chain",
    "read_metadata",
]

METADATA_MAGIC = 0x86A80294635D0E4C
# The largest signed .so read whole (patches are applied to a copy in memory).
MAX_SO_SIZE = 256 << 20
_NOTE_NAME = b"sgx_metadata\0"
_NOTE_HEADER = 12  # namesz, descsz, type
_HEADER = struct.Struct("<QQIIIIIIQQQ")  # metadata_t up to enclave_css
_CSS_AT = 64
_DIRS_AT = _CSS_AT + Sigstruct.LAYOUT.size  # 1872
_DIR = struct.Struct("<II")  # data_directory_t: offset, size (copy-relative)
_ENTRY = struct.Struct("<HHIQIIQ")  # layout_entry_t, 32 bytes
_GROUP = struct.Struct("<HHIQ16x")  # layout_group_t, 32 bytes
_PATCH = struct.Struct("<QII16x")  # patch_entry_t, 32 bytes
_DIR_PATCH, _DIR_LAYOUT = 0, 1
_GROUP_FLAG = 0x1000
# layout_entry_t.ops (common/inc/internal/se_page_attr.h)
OP_EADD, OP_EEXTEND, OP_EREMOVE = 0x1, 0x2, 0x4
_TCS_TEMPLATE = 72  # the part of a TCS sgx_sign stores (tcs_t up to the reserved bytes)
# ELF p_flags -> SECINFO R/W/X
_PF_TO_SECINFO = ((4, SecinfoFlag.R), (2, SecinfoFlag.W), (1, SecinfoFlag.X))


@dataclass(frozen=True)
class LayoutEntry:
    """One page range of the layout table, with groups already expanded."""

    id: int
    ops: int
    pages: int
    rva: int
    content_size: int
    content_offset: int
    si_flags: int

    @property
    def added(self) -> bool:
        return bool(self.ops & OP_EADD) and self.si_flags != 0

    @property
    def measured(self) -> bool:
        return bool(self.ops & OP_EEXTEND)


@dataclass(frozen=True)
class IntelMetadata:
    """One ``metadata_t`` copy: where it sits and what it holds."""

    file_offset: int
    version: tuple[int, int]
    tcs_policy: int
    ssa_frame_size: int
    max_save_buffer_size: int
    desired_misc_select: int
    tcs_min_pool: int
    enclave_size: int
    attributes: tuple[int, int]
    sigstruct_raw: bytes
    entries: tuple[LayoutEntry, ...]
    patches: tuple[tuple[int, bytes], ...]  # (file offset, bytes written there)
    data: bytes  # the whole copy, for content referenced by offset

    @property
    def sigstruct(self) -> Sigstruct:
        return Sigstruct.unpack(self.sigstruct_raw)

    @property
    def version_text(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


def note_block(elf: ElfFile, path: Path) -> tuple[int, int]:
    """File offset and size of the metadata block inside ``.note.sgxmeta``."""
    section = elf.section(".note.sgxmeta")
    if section is None:
        raise ImageError(f"{path}: no .note.sgxmeta section (not an Intel SGX SDK enclave)")
    offset, size = section.sh_offset, section.sh_size
    try:
        raw = elf.read(offset, _NOTE_HEADER + len(_NOTE_NAME), ".note.sgxmeta")
    except ElfError as exc:
        raise ImageError(f"{path}: .note.sgxmeta is truncated") from exc
    namesz, descsz, _type = struct.unpack_from("<III", raw)
    if namesz != len(_NOTE_NAME) or raw[_NOTE_HEADER:] != _NOTE_NAME:
        raise ImageError(f"{path}: .note.sgxmeta does not name sgx_metadata")
    # elfparser.cpp get_meta_property: the section is exactly the 4-aligned note.
    if size != -(-(_NOTE_HEADER + namesz + descsz) // 4) * 4:
        raise ImageError(f"{path}: .note.sgxmeta size {size} does not match its note")
    return offset + _NOTE_HEADER + namesz, descsz


def is_intel_so(path: Path) -> bool:
    """True for an ELF with sgx_sign's ``.note.sgxmeta``, signed or not."""
    try:
        with path.open("rb") as f:
            return ElfFile(f).section(".note.sgxmeta") is not None
    except (OSError, ElfError):
        return False


def has_metadata(path: str | Path) -> bool:
    """True when ``path`` is an ELF carrying sgx_sign's metadata with at least one copy."""
    try:
        with Path(path).open("rb") as f:
            elf = ElfFile(f)
            at, size = note_block(elf, Path(path))
            head = elf.read(at, 8, "metadata") if size >= 8 else bytes(8)
    except (OSError, ElfError, ImageError):
        return False
    return int.from_bytes(head, "little") == METADATA_MAGIC


def read_metadata(path: str | Path) -> list[IntelMetadata]:
    """Every metadata copy of a signed ``.so``, in file order (newest format first)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            at, size = note_block(ElfFile(f), p)
    except ElfError as exc:
        raise ImageError(f"{p}: not a usable ELF ({exc})") from exc
    except OSError as exc:
        raise ImageError(f"cannot read {p}: {exc.strerror}") from exc
    blob = read_file(p, "signed enclave", max_size=MAX_SO_SIZE)[at : at + size]
    copies = parse_chain(blob, at, p)
    if not copies:
        raise ImageError(f"{p}: .note.sgxmeta holds no metadata (is the enclave signed?)",
                         hint="sign it with sgx_sign or `sgxtool sign`")  # fmt: skip
    return copies


def parse_chain(blob: bytes, base: int, p: Path) -> list[IntelMetadata]:
    """The copies in a metadata block found at file offset ``base``; none if it is blank."""
    copies, pos = [], 0
    # urts_com.h get_metadata: the copies follow each other; the first bad magic ends them.
    while pos + _DIRS_AT <= len(blob) and struct.unpack_from("<Q", blob, pos)[0] == METADATA_MAGIC:
        copies.append(_parse_copy(blob, pos, base, p))
        pos += struct.unpack_from("<I", blob, pos + 16)[0]
    return copies


def _parse_copy(blob: bytes, pos: int, base: int, p: Path) -> IntelMetadata:
    (_magic, version, size, tcs_policy, ssa, max_save, misc, min_pool, enclave_size,
     flags, xfrm) = _HEADER.unpack_from(blob, pos)  # fmt: skip
    if size < _DIRS_AT + 2 * _DIR.size or pos + size > len(blob):
        raise ImageError(f"{p}: metadata copy at {base + pos:#x} has a bad size ({size})")
    data = blob[pos : pos + size]
    major, minor = version >> 32, version & 0xFFFFFFFF
    # loader.cpp validate_metadata: the rules the uRTS applies before trusting a copy.
    if tcs_policy > 1 or not 1 <= ssa <= 4 or enclave_size & (enclave_size - 1):
        raise ImageError(f"{p}: metadata {major}.{minor} is invalid (tcs_policy {tcs_policy}, "
                         f"ssa_frame_size {ssa}, enclave_size {enclave_size:#x})")  # fmt: skip
    if (major, minor) == (1, 3):
        raise ImageError(f"{p}: metadata 1.3 (Intel SGX SDK 1.8 or older) is not supported")
    patch_dir = _DIR.unpack_from(data, _DIRS_AT + _DIR_PATCH * _DIR.size)
    layout_dir = _DIR.unpack_from(data, _DIRS_AT + _DIR_LAYOUT * _DIR.size)
    return IntelMetadata(
        file_offset=base + pos,
        version=(major, minor),
        tcs_policy=tcs_policy,
        ssa_frame_size=ssa,
        max_save_buffer_size=max_save,
        desired_misc_select=misc,
        tcs_min_pool=min_pool,
        enclave_size=enclave_size,
        attributes=(flags, xfrm),
        sigstruct_raw=data[_CSS_AT:_DIRS_AT],
        entries=_entries(_table(data, layout_dir, "layout", p)),
        patches=_patches(data, _table(data, patch_dir, "patch", p), p),
        data=data,
    )


def _table(data: bytes, directory: tuple[int, int], what: str, p: Path) -> bytes:
    offset, size = directory
    if offset + size > len(data) or size % 32:
        raise ImageError(f"{p}: the {what} table ({size} bytes at {offset:#x}) is out of bounds")
    return data[offset : offset + size]


def _entries(table: bytes) -> tuple[LayoutEntry, ...]:
    """The layout records, each group replaced by its copies (loader.cpp build_contexts)."""
    out: list[LayoutEntry] = []
    for at in range(0, len(table), 32):
        if struct.unpack_from("<H", table, at)[0] & _GROUP_FLAG:
            _id, count, times, step = _GROUP.unpack_from(table, at)
            if count > len(out):
                raise ImageError(f"layout group at record {at // 32} repeats {count} records "
                                 f"but only {len(out)} precede it")  # fmt: skip
            template = out[len(out) - count :]
            for j in range(1, times + 1):
                out += [_shifted(e, j * step) for e in template]
        else:
            out.append(LayoutEntry(*_ENTRY.unpack_from(table, at)))
    return tuple(out)


def _shifted(e: LayoutEntry, by: int) -> LayoutEntry:
    return LayoutEntry(e.id, e.ops, e.pages, e.rva + by, e.content_size, e.content_offset,
                       e.si_flags)  # fmt: skip


def _patches(data: bytes, table: bytes, p: Path) -> tuple[tuple[int, bytes], ...]:
    out = []
    for at in range(0, len(table), 32):
        dst, src, size = _PATCH.unpack_from(table, at)
        if src + size > len(data):
            raise ImageError(f"{p}: patch {at // 32} reads past its metadata copy")
        out.append((dst, data[src : src + size]))
    return tuple(out)


def runnable_copy(copies: list[IntelMetadata]) -> IntelMetadata:
    """The copy a loader without EDMM runs: the 1.x one (urts_com.h get_metadata)."""
    for c in copies:
        if c.version[0] % 10 == 1:
            return c
    return copies[0]


def intel_layout(path: str | Path, meta: IntelMetadata | None = None) -> EnclaveLayout:
    """The pages of a signed ``.so`` in the order sgx_sign measured them (section 1.6)."""
    p = Path(path)
    meta = meta or runnable_copy(read_metadata(p))
    return image_layout(read_file(p, "signed enclave", max_size=MAX_SO_SIZE), meta, p)


def image_layout(data: bytes, meta: IntelMetadata, p: Path) -> EnclaveLayout:
    """The pages of the ``.so`` whose bytes are ``data``, laid out by ``meta``."""
    image = bytearray(data)
    for dst, patch in meta.patches:
        if dst + len(patch) > len(image):
            raise ImageError(f"{p}: a patch writes past the end of the file ({dst:#x})")
        image[dst : dst + len(patch)] = patch
    b = LayoutBuilder(meta.ssa_frame_size)
    for region in _segments(bytes(image), p):
        b.add(region)
    entry = 0
    for e in meta.entries:
        if not e.added:
            continue
        if e.si_flags & 0xFF00 == secinfo_flags(PageType.TCS):
            tcs = _tcs(meta, e, p)
            entry = entry or tcs.oentry
            b.add(Region(e.rva, e.pages, e.si_flags, "tcs", f"TCS {e.rva:#x}",
                         Content(data=tcs.pack()), _mask(e)))  # fmt: skip
            b.threads.append(Thread(e.rva, tcs.ossa, 0, 0, tcs.ofsbase))
            continue
        fill = b""
        if e.content_size and not e.content_offset:
            fill = struct.pack("<I", e.content_size) * (e.pages * PAGE_SIZE // 4)
        kind = _KINDS.get(e.id, "page")
        b.add(Region(e.rva, e.pages, e.si_flags, kind, f"{kind} {e.rva:#x}", Content(data=fill),
                     _mask(e)))  # fmt: skip
    return b.build(entry=entry, size=meta.enclave_size)


# Layout ids since SDK 2.0 (metadata.h); the 1.x copy uses the same ones.
_KINDS = {1: "heap", 2: "heap", 3: "heap", 5: "thread-data", 6: "ssa", 7: "stack", 8: "stack"}


def _mask(e: LayoutEntry) -> int:
    return ALL_CHUNKS if e.measured else 0


def _tcs(meta: IntelMetadata, e: LayoutEntry, p: Path) -> Tcs:
    """The TCS template rebased to this TCS (loader.cpp build_context)."""
    raw = meta.data[e.content_offset : e.content_offset + e.content_size]
    if len(raw) != e.content_size or e.content_size > _TCS_TEMPLATE or e.pages != 1:
        raise ImageError(f"{p}: TCS record at {e.rva:#x} has a bad template")
    t = Tcs.unpack(raw.ljust(Tcs.LAYOUT.size, b"\0"))
    return Tcs(ossa=t.ossa + e.rva, nssa=t.nssa, oentry=t.oentry, flags=t.flags,
               ofsbase=t.ofsbase + e.rva, ogsbase=t.ogsbase + e.rva,
               fslimit=t.fslimit, gslimit=t.gslimit)  # fmt: skip


def _segments(image: bytes, p: Path) -> list[Region]:
    """PT_LOAD segments page by page, in program-header order (elfparser.cpp)."""
    try:
        elf = ElfFile.from_bytes(image)
        textrel = _has_textrel(elf)
    except ElfError as exc:
        raise ImageError(f"{p}: not a usable ELF ({exc})") from exc
    if elf.header.e_machine != EM_X86_64:
        raise ImageError(f"{p}: not an x86-64 ELF64 enclave")
    if textrel:
        raise ImageError(f"{p}: text relocations (DT_TEXTREL) are not supported")
    regions = []
    for i, seg in enumerate(s for s in elf.segments if s.p_type == PT_LOAD):
        vaddr, memsz, filesz = seg.p_vaddr, seg.p_memsz, seg.p_filesz
        start = vaddr - vaddr % PAGE_SIZE
        end = -(-(vaddr + memsz) // PAGE_SIZE) * PAGE_SIZE
        perms = 0
        for bit, flag in _PF_TO_SECINFO:
            if seg.p_flags & bit:
                perms |= flag
        data = image[seg.p_offset : seg.p_offset + filesz]
        if len(data) != filesz or not memsz:
            raise ImageError(f"{p}: segment {i} lies outside the file or is empty")
        kind = "code" if perms & SecinfoFlag.X else "data"
        flags = secinfo_flags(PageType.REG, perms)
        content = Content(data=data, start=vaddr - start)
        regions.append(
            Region(start, (end - start) // PAGE_SIZE, flags, kind, f"segment {i}", content)
        )
    return regions


def _has_textrel(elf: ElfFile) -> bool:
    dynamic = elf.section(".dynamic")
    if dynamic is None or dynamic.sh_type != SHT_DYNAMIC:
        return False
    return any(tag == DT_TEXTREL for tag, _ in elf.dynamic(dynamic))
