"""Reading the enclave ELF: a static position-independent x86-64 executable.

Only what decides page contents is taken from the file: the PT_LOAD segments (bytes,
permissions, addresses), the entry point, and the dynamic relocations, which must be
base-relative only because enclave pages are measured before their base is known.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO, NamedTuple

from hwsim.sgx.arch import SecinfoFlag
from sgxtool.config import MAX_ENCLAVE_SIZE
from sgxtool.elffile import (
    DF_TEXTREL,
    DT_FLAGS,
    DT_RELA,
    DT_RELASZ,
    DT_TEXTREL,
    EM_X86_64,
    ET_DYN,
    ET_NAMES,
    PT_DYNAMIC,
    PT_INTERP,
    PT_LOAD,
    PT_TLS,
    ElfFile,
)
from sgxtool.errors import ElfError

__all__ = ["EnclaveElf", "Segment", "read_elf"]

_PF_X, _PF_W, _PF_R = 1, 2, 4
_R_X86_64_NONE, _R_X86_64_RELATIVE = 0, 8


# NamedTuples, not frozen dataclasses: every sign and measure defines them at start-up,
# and a NamedTuple costs a fifth as much to define.
class Segment(NamedTuple):
    """One PT_LOAD segment: where it goes and where its initialised bytes come from."""

    number: int  # its index in the program header table
    vaddr: int
    memsz: int
    file_offset: int
    filesz: int
    perms: int  # SECINFO R/W/X bits

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz


class EnclaveElf(NamedTuple):
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
    except OSError as exc:  # io.UnsupportedOperation too: a pipe has nothing to seek in
        raise ElfError(f"cannot read enclave ELF {p}: {exc.strerror or exc}") from exc


def _parse(p: Path, f: BinaryIO, limit: int | None) -> EnclaveElf:
    magic = f.read(5)
    if len(magic) < 4 or magic[:4] != b"\x7fELF":
        raise ElfError(f"{p}: not an ELF file")
    if len(magic) < 5 or magic[4] != 2:
        raise ElfError(f"{p}: 32-bit ELF; enclaves must be x86-64 (ELFCLASS64)")
    with _corrupt(p):
        elf = ElfFile(f, limit)
    h = elf.header
    if h.e_machine != EM_X86_64:
        raise ElfError(f"{p}: machine {h.e_machine}, not EM_X86_64; enclaves must be x86-64")
    if h.e_type != ET_DYN:
        kind = ET_NAMES.get(h.e_type, f"e_type {h.e_type}")
        raise ElfError(f"{p}: not position-independent ({kind}); link the enclave with -static-pie")
    segments = _segments(p, elf)
    _check_dynamic(p, elf)
    entry = h.e_entry
    if not any(s.vaddr <= entry < s.end and s.perms & SecinfoFlag.X for s in segments):
        raise ElfError(f"{p}: entry point {entry:#x} is not inside an executable segment")
    return EnclaveElf(p, entry, segments)


def _segments(p: Path, elf: ElfFile) -> tuple[Segment, ...]:
    segments: list[Segment] = []
    for i, ph in enumerate(elf.segments):
        if ph.p_type == PT_INTERP:
            raise ElfError(f"{p}: dynamically linked (PT_INTERP); link with -static-pie -nostdlib")
        if ph.p_type == PT_TLS:
            raise ElfError(f"{p}: thread-local storage (PT_TLS) is not supported in enclaves")
        if ph.p_type != PT_LOAD or ph.p_memsz == 0:
            continue
        seg = Segment(i, ph.p_vaddr, ph.p_memsz, ph.p_offset, ph.p_filesz, _perms(ph.p_flags))
        if seg.filesz > seg.memsz:
            raise ElfError(f"{p}: segment {i} has more file bytes than memory bytes")
        if seg.end > MAX_ENCLAVE_SIZE:
            raise ElfError(
                f"{p}: segment {i} ends at {seg.end:#x}, beyond the largest enclave "
                f"({MAX_ENCLAVE_SIZE:#x} bytes)"
            )
        if seg.file_offset + seg.filesz > elf.size:
            raise ElfError(
                f"{p}: truncated: segment {i} needs bytes up to "
                f"{seg.file_offset + seg.filesz:#x}, file has {elf.size:#x}"
            )
        segments.append(seg)
    if not segments:
        raise ElfError(f"{p}: no loadable segments")
    segments.sort(key=lambda s: s.vaddr)
    for a, b in pairwise(segments):
        if b.vaddr < a.end:
            raise ElfError(f"{p}: segments {a.number} and {b.number} overlap at {b.vaddr:#x}")
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


def _check_dynamic(p: Path, elf: ElfFile) -> None:
    dyn = next((s for s in elf.segments if s.p_type == PT_DYNAMIC), None)
    if dyn is None:
        return
    with _corrupt(p):
        tags = dict(elf.dynamic(dyn))
    if DT_TEXTREL in tags or tags.get(DT_FLAGS, 0) & DF_TEXTREL:
        raise ElfError(f"{p}: text relocations; compile with -fPIE")
    rela, relasz = tags.get(DT_RELA), tags.get(DT_RELASZ, 0)
    if rela is None or not relasz:
        return
    if elf.file_offset(rela, relasz) is None:
        raise ElfError(f"{p}: DT_RELA {rela:#x} is not inside a loaded segment")
    with _corrupt(p):
        relocations = elf.relocation_types(rela, relasz, rela=True)
    for off, rtype in relocations:
        if rtype not in (_R_X86_64_NONE, _R_X86_64_RELATIVE):
            raise ElfError(
                f"{p}: relocation type {rtype} at {off:#x} is not base-relative; "
                "enclaves can only apply R_X86_64_RELATIVE (link with -static-pie)"
            )


@contextmanager
def _corrupt(p: Path) -> Iterator[None]:
    """The reader's refusals, said of this enclave."""
    try:
        yield
    except ElfError as exc:
        raise ElfError(f"{p}: corrupt ELF: {exc}") from exc
