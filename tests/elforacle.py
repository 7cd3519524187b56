"""sgxtool's ELF reader checked against pyelftools, an independent reader (a test dependency):
headers, program headers, sections, symbols, dynamic tags and relocation types."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from elftools.elf import enums
from elftools.elf.dynamic import DynamicSection, DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from sgxtool.elffile import ElfFile

_SH_TYPE = {**enums.ENUM_SH_TYPE_BASE, **enums.ENUM_SH_TYPE_AMD64}
_SHNDX = {**enums.ENUM_ST_SHNDX}
_HEADER = ("e_entry", "e_phoff", "e_shoff", "e_flags", "e_ehsize", "e_phentsize", "e_phnum",
           "e_shentsize", "e_shnum", "e_shstrndx")  # fmt: skip
_PHDR = ("p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_flags", "p_align")
_SHDR = ("sh_name", "sh_flags", "sh_addr", "sh_offset", "sh_size", "sh_link", "sh_info",
         "sh_addralign", "sh_entsize")  # fmt: skip


def _num(value: Any, table: Mapping[str, int]) -> int:
    """pyelftools names the values it knows; the number behind the name."""
    return value if isinstance(value, int) else table[value]


def compare(path: Path, size: int | None = None) -> int:
    """Assert both readers see the same ELF at ``path``; the number of items compared."""
    with path.open("rb") as f:
        ref, mine = ELFFile(f), ElfFile(f, size)
        h = mine.header
        assert [ref[k] for k in _HEADER] == [getattr(h, k) for k in _HEADER]
        assert _num(ref["e_type"], enums.ENUM_E_TYPE) == h.e_type
        assert _num(ref["e_machine"], enums.ENUM_E_MACHINE) == h.e_machine
        return 1 + _segments(ref, mine) + _sections(ref, mine)


def _segments(ref: ELFFile, mine: ElfFile) -> int:
    assert ref.num_segments() == len(mine.segments)
    for theirs, ours in zip(ref.iter_segments(), mine.segments, strict=True):
        assert [theirs[k] for k in _PHDR] == [getattr(ours, k) for k in _PHDR]
        assert _num(theirs["p_type"], enums.ENUM_P_TYPE_BASE) == ours.p_type
        if isinstance(theirs, DynamicSegment):
            assert _tags(theirs) == mine.dynamic(ours)
    return len(mine.segments)


def _sections(ref: ELFFile, mine: ElfFile) -> int:
    assert ref.num_sections() == len(mine.sections)
    count = 0
    for theirs, ours in zip(ref.iter_sections(), mine.sections, strict=True):
        assert theirs.name == ours.name
        assert [theirs[k] for k in _SHDR] == [getattr(ours, k) for k in _SHDR]
        assert _num(theirs["sh_type"], _SH_TYPE) == ours.sh_type
        assert (mine.section(ours.name) is None) == (ref.get_section_by_name(ours.name) is None)
        if isinstance(theirs, SymbolTableSection):
            count += _symbols(theirs, mine, ours)
        if isinstance(theirs, DynamicSection):
            tags = mine.dynamic(ours)
            assert _tags(theirs) == tags
            count += len(tags) + _relocations(theirs, mine, tags)
    return count + len(mine.sections)


def _symbols(theirs: SymbolTableSection, mine: ElfFile, ours: Any) -> int:
    symbols = mine.symbols(ours)
    assert [
        (s.name, s["st_value"], s["st_size"], _num(s["st_shndx"], _SHNDX),
         _num(s["st_info"]["bind"], enums.ENUM_ST_INFO_BIND),
         _num(s["st_info"]["type"], enums.ENUM_ST_INFO_TYPE),
         _num(s["st_other"]["visibility"], enums.ENUM_ST_VISIBILITY))
        for s in theirs.iter_symbols()
    ] == [
        (s.name, s.st_value, s.st_size, s.st_shndx, s.bind, s.st_info & 0xF, s.st_other & 3)
        for s in symbols
    ]  # fmt: skip
    for name in {s.name for s in symbols if s.name}:
        theirs_first, ours_first = theirs.get_symbol_by_name(name), mine.symbol(ours.name, name)
        assert theirs_first is not None and ours_first is not None
        assert (theirs_first[0]["st_value"], theirs_first[0]["st_size"]) == (
            ours_first.st_value,
            ours_first.st_size,
        )
    return len(symbols)


def _tags(dynamic: DynamicSection | DynamicSegment) -> list[tuple[int, int]]:
    return [
        (_num(t.entry.d_tag, enums.ENUM_D_TAG), t.entry.d_val)
        for t in dynamic.iter_tags()
        if t.entry.d_tag != "DT_NULL"
    ]


def _relocations(theirs: DynamicSection, mine: ElfFile, tags: list[tuple[int, int]]) -> int:
    ours = mine.relocation_tables(tags)
    tables = theirs.get_relocation_tables()
    found = (("REL", tables.get("REL")), ("RELA", tables.get("RELA")),
             ("JMPREL", tables.get("JMPREL")))  # fmt: skip
    expected = {
        enums.ENUM_D_TAG[f"DT_{kind}"]: [
            (r["r_offset"], r["r_info_type"]) for r in t.iter_relocations()
        ]
        for kind, t in found
        if t is not None
    }
    assert ours == expected
    return sum(len(t) for t in ours.values())
