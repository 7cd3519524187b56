"""sgxtool's ELF64 reader: the same view as pyelftools of every ELF the tests have, and a
refusal (ElfError, nothing else) for every malformed file."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgxtool.elffile import PT_DYNAMIC, SHT_DYNAMIC, ElfFile
from sgxtool.errors import ElfError
from tests.elforacle import compare
from tests.test_imports import imports_of, repository_sources

Vector = Callable[[str], Path]
INTEL = ("DongpingZ+SgxRandTest", "ShuntaIshihara+test_hash_SGX", "njuyuanrui+testEnclaveSO")
PROPERTIES = settings(
    derandomize=True,
    database=None,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def intel(vector: Vector, name: str) -> Path:
    return vector(f"sgx/intel-sdk-enclaves/{name}/enclave.signed.so")


@pytest.mark.parametrize("name", INTEL)
def test_intel_enclaves_read_as_pyelftools_reads_them(vector: Vector, name: str) -> None:
    assert compare(intel(vector, name)) > 100


def test_the_test_enclave_reads_as_pyelftools_reads_it(enclave_elf: Path) -> None:
    assert compare(enclave_elf) > 10


def read_everything(data: bytes) -> None:
    """Every accessor sgxtool uses, over the whole file."""
    elf = ElfFile.from_bytes(data)
    for section in elf.sections:
        elf.data(section)
        assert elf.section(section.name) is not None
        if section.is_symbol_table:
            elf.symbols(section)
        if section.sh_type == SHT_DYNAMIC:
            elf.relocation_tables(elf.dynamic(section))
    for segment in elf.segments:
        if segment.p_type == PT_DYNAMIC:
            elf.relocation_tables(elf.dynamic(segment))
    elf.symbol(".dynsym", "g_global_data")


def refused(data: bytes, match: str) -> None:
    with pytest.raises(ElfError, match=match):
        read_everything(data)


def _golden(enclave_elf: Path) -> bytearray:
    return bytearray(enclave_elf.read_bytes())


def _header(data: bytearray, field: str, value: int) -> bytes:
    """``data`` with one Elf64_Ehdr field set."""
    at, fmt = {"e_phoff": (32, "<Q"), "e_shoff": (40, "<Q"), "e_phentsize": (54, "<H"),
               "e_phnum": (56, "<H"), "e_shentsize": (58, "<H"), "e_shnum": (60, "<H"),
               "e_shstrndx": (62, "<H")}[field]  # fmt: skip
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def _section_field(data: bytearray, name: str, offset: int, fmt: str, value: int) -> bytes:
    """``data`` with one field of section ``name``'s header set."""
    elf = ElfFile.from_bytes(bytes(data))
    index = next(i for i, s in enumerate(elf.sections) if s.name == name)
    out = bytearray(data)
    struct.pack_into(fmt, out, elf.header.e_shoff + index * 64 + offset, value)
    return bytes(out)


def test_identification_is_checked(enclave_elf: Path) -> None:
    data = _golden(enclave_elf)
    refused(b"hello", "truncated")
    refused(b"\x7fELX" + bytes(60), "not an ELF file")
    refused(bytes(data[:4]) + b"\x01" + bytes(data[5:]), "not ELFCLASS64")
    refused(bytes(data[:5]) + b"\x02" + bytes(data[6:]), "not little-endian")
    refused(bytes(data[:40]), "truncated: ELF header")


def test_header_tables_are_bounded_by_the_file(enclave_elf: Path) -> None:
    data = _golden(enclave_elf)
    refused(_header(data, "e_phnum", 0xFFFE), "program header table needs bytes up to")
    refused(_header(data, "e_phoff", 1 << 63), "program header table needs bytes up to")
    refused(_header(data, "e_shnum", 0xFF00), "section header table needs bytes up to")
    refused(_header(data, "e_shoff", len(data) - 10), "section header table")
    refused(_header(data, "e_phentsize", 64), "program header table entries are 64 bytes")
    refused(_header(data, "e_shentsize", 40), "section header table entries are 40 bytes")
    refused(_header(data, "e_phnum", 0xFFFF), "PN_XNUM")
    refused(_header(data, "e_shnum", 0), "extended section numbering")
    refused(_header(data, "e_shstrndx", 0x7000), "section names .*not a string table")


def test_section_links_and_names_are_checked(enclave_elf: Path) -> None:
    data = _golden(enclave_elf)
    refused(_section_field(data, ".dynamic", 0x28, "<I", 0), "string table \\(sh_link\\)")
    refused(_section_field(data, ".symtab", 0x28, "<I", 999), "string table \\(sh_link\\)")
    refused(_section_field(data, ".text", 0, "<I", 1 << 20), "section name at string table")
    refused(_section_field(data, ".symtab", 0x20, "<Q", 1 << 40), "\\.symtab needs bytes up to")
    refused(_section_field(data, ".symtab", 0x38, "<Q", 16), "entries are 16 bytes, not 24")


def test_dynamic_tables_are_checked(enclave_elf: Path) -> None:
    data = bytes(_golden(enclave_elf))
    elf = ElfFile.from_bytes(data)
    dynamic = next(s for s in elf.sections if s.sh_type == SHT_DYNAMIC)
    tags = elf.dynamic(dynamic)
    assert dict(tags).get(7), "the test enclave has a RELA table"
    without_size = [(t, v) for t, v in tags if t != 8]
    with pytest.raises(ElfError, match="DT_RELA without DT_RELASZ"):
        elf.relocation_tables(without_size)
    with pytest.raises(ElfError, match="DT_RELA without DT_RELAENT"):
        elf.relocation_tables([(t, v) for t, v in tags if t != 9])
    with pytest.raises(ElfError, match="DT_RELAENT is 16, not 24"):
        elf.relocation_tables([(t, 16 if t == 9 else v) for t, v in tags])
    with pytest.raises(ElfError, match="not inside a loaded segment"):
        elf.relocation_tables([(t, 1 << 50 if t == 7 else v) for t, v in tags])
    with pytest.raises(ElfError, match="DT_PLTREL is 5, neither DT_REL nor DT_RELA"):
        elf.relocation_tables([(23, dict(tags)[7]), (2, 24), (20, 5)])  # DT_JMPREL, PLTRELSZ


def test_no_section_headers_is_an_elf_without_sections(enclave_elf: Path) -> None:
    elf = ElfFile.from_bytes(_header(_golden(enclave_elf), "e_shoff", 0))
    assert elf.sections == () and elf.section(".dynsym") is None and elf.segments


@PROPERTIES
@given(data=st.data())
def test_damaged_headers_are_read_or_refused(
    enclave_elf: Path, vector: Vector, data: st.DataObject
) -> None:
    """Bytes of the ELF header, program headers, section headers or string tables changed:
    the reader gives an answer or an ElfError, never another exception."""
    source = data.draw(st.sampled_from([enclave_elf, intel(vector, INTEL[0])]))
    golden = bytearray(source.read_bytes())
    elf = ElfFile.from_bytes(bytes(golden))
    regions = [(0, 64), (elf.header.e_phoff, len(elf.segments) * 56),
               (elf.header.e_shoff, len(elf.sections) * 64)]  # fmt: skip
    tables = (2, 3, 6, 11)  # SHT_SYMTAB, SHT_STRTAB, SHT_DYNAMIC, SHT_DYNSYM
    regions += [(s.sh_offset, s.sh_size) for s in elf.sections if s.sh_type in tables]
    for _ in range(data.draw(st.integers(1, 4))):
        start, size = data.draw(st.sampled_from([r for r in regions if r[1]]))
        at = data.draw(st.integers(start, start + size - 1))
        width = data.draw(st.sampled_from([1, 2, 4, 8]))
        value = data.draw(st.sampled_from([0, 1, 0xFF, 0xFFFF, 1 << 31, (1 << 64) - 1]))
        golden[at : at + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, "little")
    with contextlib.suppress(ElfError):
        read_everything(bytes(golden))


@PROPERTIES
@given(cut=st.integers(0, 1 << 20))
def test_truncated_files_are_read_or_refused(enclave_elf: Path, cut: int) -> None:
    """A file cut anywhere: every read stays inside it."""
    golden = enclave_elf.read_bytes()
    with contextlib.suppress(ElfError):
        read_everything(golden[: cut % (len(golden) + 1)])


def test_no_product_module_imports_pyelftools() -> None:
    """pyelftools is a test dependency only (pyproject.toml's test extra)."""
    found = [
        f"{name} imports {imported}"
        for name, (source, is_package) in repository_sources().items()
        for imported in imports_of(name, source, is_package)
        if imported.split(".")[0] == "elftools"
    ]
    assert found == []
