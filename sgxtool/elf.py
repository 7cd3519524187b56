"""Reading the enclave ELF: a static position-independent x86-64 executable.

Only what decides page contents is taken from the file: the PT_LOAD segments (bytes,
permissions, addresses), the entry point, and the dynamic relocations, which must be
base-relative only because enclave pages are measured before their base is known.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

from elftools.common.exceptions import ELFError as _PyElfError
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile

from hwsim.sgx.arch import SecinfoFlag
from sgxtool.config import MAX_ENCLAVE_SIZE
from sgxtool.errors import ElfError

__all__ = ["EnclaveElf", "Segment", "read_elf"]

_PF_X, _PF_W, _PF_R = 1, 2, 4
_R_X86_64_NONE, _R_X86_64_RELATIVE = 0, 8
_DT_RELA, _DT_RELASZ, _DT_TEXTREL, _DT_FLAGS, _DF_TEXTREL = 7, 8, 22, 30, 0x4


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD segment: where it goes and where its initialised bytes come from."""

    index: int
    vaddr: int
    memsz: int
    file_offset: int
    filesz: int
    perms: int  # SECINFO R/W/X bits

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz


@dataclass(frozen=True)
class EnclaveElf:
    """The parts of an enclave ELF that the layout needs."""

    path: Path
    entry: int
    segments: tuple[Segment, ...]

    @property
    def image_end(self) -> int:
        return max(s.end for s in self.segments)


def read_elf(path: str | Path, *, limit: int | None = None) -> EnclaveElf:
    """Parse and check an enclave ELF; every refusal says what is wrong and what to do.

    ``limit`` is the length of the ELF when more follows it (a signed image's metadata)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            return _parse(p, f, limit)
    except OSError as exc:
        raise ElfError(f"cannot read enclave ELF {p}: {exc.strerror}") from exc
    except (_PyElfError, struct.error, ValueError, KeyError, io.UnsupportedOperation) as exc:
        raise ElfError(f"{p}: corrupt ELF: {exc}") from exc
    except AssertionError as exc:  # pyelftools asserts on some links (.dynamic's sh_link)
        raise ElfError(f"{p}: corrupt ELF: inconsistent section links") from exc


def _parse(p: Path, f: BinaryIO, limit: int | None) -> EnclaveElf:
    magic = f.read(5)
    if len(magic) < 4 or magic[:4] != b"\x7fELF":
        raise ElfError(f"{p}: not an ELF file")
    if len(magic) < 5 or magic[4] != 2:
        raise ElfError(f"{p}: 32-bit ELF; enclaves must be x86-64 (ELFCLASS64)")
    file_size = f.seek(0, io.SEEK_END) if limit is None else limit
    f.seek(0)
    elf = ELFFile(f)
    if elf["e_machine"] != "EM_X86_64":
        raise ElfError(f"{p}: machine {elf['e_machine']}; enclaves must be x86-64")
    if elf["e_type"] != "ET_DYN":
        raise ElfError(
            f"{p}: not position-independent ({elf['e_type']}); link the enclave with -static-pie"
        )
    segments = _segments(p, elf, file_size)
    _check_dynamic(p, elf, f)
    entry = int(elf["e_entry"])
    if not any(s.vaddr <= entry < s.end and s.perms & SecinfoFlag.X for s in segments):
        raise ElfError(f"{p}: entry point {entry:#x} is not inside an executable segment")
    return EnclaveElf(p, entry, segments)


def _segments(p: Path, elf: ELFFile, file_size: int) -> tuple[Segment, ...]:
    segments: list[Segment] = []
    for i, ph in enumerate(elf.iter_segments()):
        ptype = ph["p_type"]
        if ptype == "PT_INTERP":
            raise ElfError(f"{p}: dynamically linked (PT_INTERP); link with -static-pie -nostdlib")
        if ptype == "PT_TLS":
            raise ElfError(f"{p}: thread-local storage (PT_TLS) is not supported in enclaves")
        if ptype != "PT_LOAD" or ph["p_memsz"] == 0:
            continue
        seg = Segment(
            i, ph["p_vaddr"], ph["p_memsz"], ph["p_offset"], ph["p_filesz"], _perms(ph["p_flags"])
        )
        if seg.filesz > seg.memsz:
            raise ElfError(f"{p}: segment {i} has more file bytes than memory bytes")
        if seg.end > MAX_ENCLAVE_SIZE:
            raise ElfError(
                f"{p}: segment {i} ends at {seg.end:#x}, beyond the largest enclave "
                f"({MAX_ENCLAVE_SIZE:#x} bytes)"
            )
        if seg.file_offset + seg.filesz > file_size:
            raise ElfError(
                f"{p}: truncated: segment {i} needs bytes up to "
                f"{seg.file_offset + seg.filesz:#x}, file has {file_size:#x}"
            )
        segments.append(seg)
    if not segments:
        raise ElfError(f"{p}: no loadable segments")
    segments.sort(key=lambda s: s.vaddr)
    for a, b in pairwise(segments):
        if b.vaddr < a.end:
            raise ElfError(f"{p}: segments {a.index} and {b.index} overlap at {b.vaddr:#x}")
    return tuple(segments)


def _perms(p_flags: int) -> int:
    perms = 0
    if p_flags & _PF_R:
        perms |= SecinfoFlag.R
    if p_flags & _PF_W:
        perms |= SecinfoFlag.W | SecinfoFlag.R  # SGX requires R with W (SDM 38.x EADD)
    if p_flags & _PF_X:
        perms |= SecinfoFlag.X
    return int(perms)


def _check_dynamic(p: Path, elf: ELFFile, f: BinaryIO) -> None:
    dyn = next((s for s in elf.iter_segments() if isinstance(s, DynamicSegment)), None)
    if dyn is None:
        return
    tags = {t.entry.d_tag: t.entry.d_val for t in dyn.iter_tags()}
    if "DT_TEXTREL" in tags or int(tags.get("DT_FLAGS", 0)) & _DF_TEXTREL:
        raise ElfError(f"{p}: text relocations; compile with -fPIE")
    rela, relasz = tags.get("DT_RELA"), tags.get("DT_RELASZ", 0)
    if rela is None or not relasz:
        return
    offsets = list(elf.address_offsets(int(rela), int(relasz)))
    if not offsets:
        raise ElfError(f"{p}: DT_RELA {rela:#x} is not inside a loaded segment")
    f.seek(offsets[0])
    table = f.read(int(relasz))
    if len(table) != relasz:
        raise ElfError(f"{p}: truncated relocation table")
    for off, info, _ in struct.iter_unpack("<QQq", table[: len(table) // 24 * 24]):
        rtype = info & 0xFFFFFFFF
        if rtype not in (_R_X86_64_NONE, _R_X86_64_RELATIVE):
            raise ElfError(
                f"{p}: relocation type {rtype} at {off:#x} is not base-relative; "
                "enclaves can only apply R_X86_64_RELATIVE (link with -static-pie)"
            )
