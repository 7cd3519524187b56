"""A reader of little-endian ELF64 files: exactly the structures sgxtool looks at.

Headers, program headers, named sections, symbol tables, dynamic tags and relocation
types, each unpacked with ``struct`` from the layouts of the System V gABI (``Elf64_Ehdr``,
``Elf64_Phdr``, ``Elf64_Shdr``, ``Elf64_Sym``, ``Elf64_Dyn``, ``Elf64_Rel[a]``). Every
offset, size and count is checked against the file before it is read, so a crafted
header can neither read past the end nor make a large allocation; anything malformed
raises :class:`~sgxtool.errors.ElfError` with a message naming the problem (callers add
the path and say what they were doing).
"""

from __future__ import annotations

import io
import struct
from typing import Any, BinaryIO

from sgxtool.errors import ElfError

__all__ = [
    "DF_TEXTREL",
    "DT_FLAGS",
    "DT_JMPREL",
    "DT_NULL",
    "DT_REL",
    "DT_RELA",
    "DT_RELASZ",
    "DT_TEXTREL",
    "EM_X86_64",
    "ET_DYN",
    "ET_NAMES",
    "PT_DYNAMIC",
    "PT_INTERP",
    "PT_LOAD",
    "PT_TLS",
    "SHN_UNDEF",
    "SHT_DYNAMIC",
    "STB_WEAK",
    "ElfFile",
    "Header",
    "ProgramHeader",
    "Section",
    "Symbol",
]

# gABI constants sgxtool uses (System V ABI, chapter 4 and 5).
ELFCLASS64, ELFDATA2LSB = 2, 1
ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
ET_DYN, EM_X86_64 = 3, 62
PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_TLS = 1, 2, 3, 7
SHT_SYMTAB, SHT_STRTAB, SHT_DYNAMIC, SHT_NOBITS, SHT_DYNSYM = 2, 3, 6, 8, 11
SHN_UNDEF, SHN_XINDEX, PN_XNUM = 0, 0xFFFF, 0xFFFF
STB_WEAK = 2
DT_NULL, DT_PLTRELSZ, DT_RELA, DT_RELASZ, DT_RELAENT = 0, 2, 7, 8, 9
DT_REL, DT_RELSZ, DT_RELENT, DT_PLTREL, DT_TEXTREL, DT_JMPREL, DT_FLAGS = 17, 18, 19, 20, 22, 23, 30
DF_TEXTREL = 0x4
_DT_NAMES = {DT_REL: "DT_REL", DT_RELSZ: "DT_RELSZ", DT_RELENT: "DT_RELENT", DT_RELA: "DT_RELA",
             DT_RELASZ: "DT_RELASZ", DT_RELAENT: "DT_RELAENT", DT_JMPREL: "DT_JMPREL",
             DT_PLTRELSZ: "DT_PLTRELSZ"}  # fmt: skip

_IDENT = 16
_EHDR = struct.Struct("<HHIQQQIHHHHHH")  # Elf64_Ehdr after e_ident
_PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr
_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym
_DYN = struct.Struct("<qQ")  # Elf64_Dyn: d_tag, d_val/d_ptr
_REL = struct.Struct("<QQ")  # Elf64_Rel: r_offset, r_info (Elf64_Rela adds r_addend)
_RELA_SIZE = 24
# Sections whose sh_link names their string table (gABI "sh_link and sh_info Interpretation").
_LINKS_STRTAB = (SHT_SYMTAB, SHT_DYNAMIC, SHT_DYNSYM)


class _Record:
    """A C structure by its spec's field names, in declaration order. Plain attributes, not
    a NamedTuple or dataclass: defining one of those costs every sgxtool process ~0.25 ms."""

    _fields: tuple[str, ...] = ()

    def __init_subclass__(cls) -> None:
        cls._fields = tuple(vars(cls).get("__annotations__", {}))

    def __init__(self, *values: Any) -> None:
        self.__dict__.update(zip(self._fields, values, strict=True))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._fields)
        return f"{type(self).__name__}({fields})"


class Header(_Record):
    """``Elf64_Ehdr`` after ``e_ident``."""

    e_type: int
    e_machine: int
    e_version: int
    e_entry: int
    e_phoff: int
    e_shoff: int
    e_flags: int
    e_ehsize: int
    e_phentsize: int
    e_phnum: int
    e_shentsize: int
    e_shnum: int
    e_shstrndx: int


class ProgramHeader(_Record):
    """``Elf64_Phdr``: one segment."""

    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int


class Section(_Record):
    """``Elf64_Shdr`` with its name resolved."""

    name: str
    sh_name: int
    sh_type: int
    sh_flags: int
    sh_addr: int
    sh_offset: int
    sh_size: int
    sh_link: int
    sh_info: int
    sh_addralign: int
    sh_entsize: int

    @property
    def is_symbol_table(self) -> bool:
        return self.sh_type in (SHT_SYMTAB, SHT_DYNSYM)


class Symbol(_Record):
    """``Elf64_Sym`` with its name resolved."""

    name: str
    st_name: int
    st_info: int
    st_other: int
    st_shndx: int
    st_value: int
    st_size: int

    @property
    def bind(self) -> int:
        return self.st_info >> 4  # ELF64_ST_BIND


class ElfFile:
    """The headers of an ELF64 file, read and checked when it is opened; symbols, dynamic
    tags and relocations are read when asked for."""

    def __init__(self, stream: BinaryIO, size: int | None = None) -> None:
        """Read from ``stream``; ``size`` bounds the file (an ELF with more after it)."""
        self._stream = stream
        self._symbols: dict[Section, tuple[Symbol, ...]] = {}
        self.size = stream.seek(0, io.SEEK_END) if size is None else size
        ident = self.read(0, _IDENT, "ELF identification")
        if ident[:4] != b"\x7fELF":
            raise ElfError("not an ELF file")
        if ident[4] != ELFCLASS64:
            raise ElfError(f"ELF class {ident[4]}, not ELFCLASS64 (only 64-bit ELF is read)")
        if ident[5] != ELFDATA2LSB:
            raise ElfError(f"ELF data encoding {ident[5]}, not little-endian (ELFDATA2LSB)")
        self.header = Header(*_EHDR.unpack(self.read(_IDENT, _EHDR.size, "ELF header")))
        self.segments = self._program_headers()
        self.sections = self._section_headers()

    @classmethod
    def from_bytes(cls, data: bytes) -> ElfFile:
        return cls(io.BytesIO(data), len(data))

    def read(self, offset: int, size: int, what: str) -> bytes:
        """``size`` bytes at ``offset``, all inside the file."""
        if offset + size > self.size:
            raise ElfError(
                f"truncated: {what} needs bytes up to {offset + size:#x}, file has {self.size:#x}"
            )
        self._stream.seek(offset)
        data = self._stream.read(size)
        if len(data) != size:
            raise ElfError(f"truncated: {what} at {offset:#x} is past the end of the file")
        return data

    def _table(
        self, offset: int, count: int, entsize: int, layout: struct.Struct, what: str
    ) -> bytes:
        if count and entsize != layout.size:
            raise ElfError(f"{what} entries are {entsize} bytes, not {layout.size}")
        return self.read(offset, count * layout.size, what)

    def _program_headers(self) -> tuple[ProgramHeader, ...]:
        h = self.header
        if h.e_phnum == PN_XNUM:
            raise ElfError("extended program header numbering (PN_XNUM) is not supported")
        raw = self._table(h.e_phoff, h.e_phnum, h.e_phentsize, _PHDR, "program header table")
        return tuple(ProgramHeader(*t) for t in _PHDR.iter_unpack(raw))

    def _section_headers(self) -> tuple[Section, ...]:
        h = self.header
        if h.e_shoff == 0:
            return ()
        if h.e_shnum == 0 or h.e_shstrndx == SHN_XINDEX:
            raise ElfError("extended section numbering (e_shnum 0) is not supported")
        raw = self._table(h.e_shoff, h.e_shnum, h.e_shentsize, _SHDR, "section header table")
        headers = list(_SHDR.iter_unpack(raw))
        if h.e_shstrndx == SHN_UNDEF:  # no section name string table: every name is empty
            sections = tuple(Section("", *t) for t in headers)
        else:
            what = "section names (e_shstrndx)"
            names = self.read(*_strtab(headers, h.e_shstrndx, what), what)
            sections = tuple(Section(_string(names, t[0], "section name"), *t) for t in headers)
        for s in sections:
            if s.sh_type in _LINKS_STRTAB:  # checked here, read when symbols are asked for
                what = f"section {s.name}'s string table (sh_link)"
                offset, size = _strtab(headers, s.sh_link, what)
                if offset + size > self.size:
                    raise ElfError(f"truncated: {what} is past the end of the file")
        return sections

    def section(self, name: str) -> Section | None:
        """The first section called ``name`` (as the SDK's elfparser looks sections up)."""
        return next((s for s in self.sections if s.name == name), None)

    def data(self, section: Section) -> bytes:
        """A section's bytes (none for SHT_NOBITS, which occupies no file space)."""
        if section.sh_type == SHT_NOBITS:
            return b""
        return self.read(section.sh_offset, section.sh_size, f"section {section.name}")

    def symbols(self, section: Section) -> tuple[Symbol, ...]:
        """The entries of a symbol table section (.symtab or .dynsym), index 0 included."""
        if not section.is_symbol_table:
            raise ElfError(f"section {section.name} is not a symbol table")
        if section in self._symbols:
            return self._symbols[section]
        what = f"symbol table {section.name}"
        raw = self._table(section.sh_offset, section.sh_size // _SYM.size, section.sh_entsize,
                          _SYM, what)  # fmt: skip
        names = self.data(self.sections[section.sh_link])
        found = tuple(
            Symbol(_string(names, t[0], f"{what} name"), *t) for t in _SYM.iter_unpack(raw)
        )
        self._symbols[section] = found
        return found

    def symbol(self, table: str, name: str) -> Symbol | None:
        """The first symbol called ``name`` in the symbol table section ``table``."""
        section = self.section(table)
        if section is None or not section.is_symbol_table:
            return None
        return next((s for s in self.symbols(section) if s.name == name), None)

    def dynamic(self, where: ProgramHeader | Section) -> list[tuple[int, int]]:
        """(d_tag, d_val) of a PT_DYNAMIC segment or SHT_DYNAMIC section, up to DT_NULL."""
        if isinstance(where, ProgramHeader):
            raw = self.read(where.p_offset, where.p_filesz, "dynamic segment")
        else:
            raw = self.data(where)
        tags = []
        for tag, value in _DYN.iter_unpack(raw[: len(raw) // _DYN.size * _DYN.size]):
            if tag == DT_NULL:
                break
            tags.append((tag, value))
        return tags

    def file_offset(self, vaddr: int, size: int) -> int | None:
        """Where the ``size`` bytes at ``vaddr`` are in the file: inside one PT_LOAD's file
        bytes, or None."""
        for s in self.segments:
            if (
                s.p_type == PT_LOAD
                and s.p_vaddr <= vaddr
                and vaddr + size <= s.p_vaddr + s.p_filesz
            ):
                return vaddr - s.p_vaddr + s.p_offset
        return None

    def relocation_types(self, vaddr: int, size: int, *, rela: bool) -> list[tuple[int, int]]:
        """(r_offset, type) of each entry of the REL or RELA table at ``vaddr``."""
        offset = self.file_offset(vaddr, size)
        if offset is None:
            raise ElfError(f"relocation table {vaddr:#x} is not inside a loaded segment")
        entsize = _RELA_SIZE if rela else _REL.size
        raw = self.read(offset, size // entsize * entsize, "relocation table")
        entries = (_REL.unpack_from(raw, at) for at in range(0, len(raw), entsize))
        return [(r_offset, info & 0xFFFFFFFF) for r_offset, info in entries]  # ELF64_R_TYPE

    def relocation_tables(self, tags: list[tuple[int, int]]) -> dict[int, list[tuple[int, int]]]:
        """The REL, RELA and PLT (DT_JMPREL) tables that dynamic ``tags`` name, keyed by
        their address tag: (r_offset, type) of each entry."""
        first: dict[int, int] = {}
        for tag, value in tags:
            first.setdefault(tag, value)
        tables = {}
        for at, size_tag, ent_tag in ((DT_REL, DT_RELSZ, DT_RELENT),
                                      (DT_RELA, DT_RELASZ, DT_RELAENT),
                                      (DT_JMPREL, DT_PLTRELSZ, None)):  # fmt: skip
            if at not in first:
                continue
            if size_tag not in first:
                raise ElfError(f"{_DT_NAMES[at]} without {_DT_NAMES[size_tag]}")
            if at == DT_JMPREL and first.get(DT_PLTREL) not in (DT_REL, DT_RELA):
                raise ElfError(f"DT_PLTREL is {first.get(DT_PLTREL)}, neither DT_REL nor DT_RELA")
            rela = at == DT_RELA or (at == DT_JMPREL and first[DT_PLTREL] == DT_RELA)
            entsize = _RELA_SIZE if rela else _REL.size
            if ent_tag is not None and ent_tag not in first:
                raise ElfError(f"{_DT_NAMES[at]} without {_DT_NAMES[ent_tag]}")
            if ent_tag is not None and first[ent_tag] != entsize:
                raise ElfError(f"{_DT_NAMES[ent_tag]} is {first[ent_tag]}, not {entsize}")
            tables[at] = self.relocation_types(first[at], first[size_tag], rela=rela)
        return tables


def _strtab(headers: list[tuple[int, ...]], index: int, what: str) -> tuple[int, int]:
    """(sh_offset, sh_size) of section ``index``, which must be a string table."""
    if index >= len(headers) or headers[index][1] != SHT_STRTAB:
        raise ElfError(f"{what}: section {index} is not a string table")
    return headers[index][4], headers[index][5]


def _string(table: bytes, offset: int, what: str) -> str:
    """The NUL-terminated string at ``offset`` of a string table section."""
    if offset == 0:
        return ""
    end = table.find(b"\0", offset)
    if offset >= len(table) or end < 0:
        raise ElfError(f"{what} at string table offset {offset:#x} is outside its table")
    return table[offset:end].decode("utf-8", errors="replace")
