"""Signing enclaves built with Intel's SGX SDK, as that release's ``sgx_sign`` does.

The input is the ``.so`` the SDK's linker leaves: its ``.note.sgxmeta`` descriptor is all
zeros. The output is the same file with sgx_sign's metadata chain written into that
descriptor and nothing else changed: the layout of the enclave's SDK release
(:mod:`sgxtool.intellayout`), MRENCLAVE measured from it exactly as the uRTS loads it
(:mod:`sgxtool.intelso`), the SIGSTRUCT built from Enclave.config.xml and signed through
the one signer interface (key file, PKCS#11, command, or a signature made elsewhere).
Simulation-mode enclaves are signed the same way: the signer patches ``g_global_data`` only;
their ``g_global_data_sim`` is filled by the simulation uRTS when it loads them
(``psw/urts/enclave.cpp``).
Facts: linux-sgx ``sdk/sign_tool/SignTool`` at the release tag; ``shared/reference/
intel-sdk.md`` 1.1-1.8.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from hwsim.sgx.arch import SIGSTRUCT_HEADER, VENDOR_INTEL, AttributeFlag, Sigstruct
from memcrypt.files import check_distinct, read_file, write_atomic
from sgxtool.elffile import (
    DT_REL,
    DT_TEXTREL,
    EM_X86_64,
    ET_DYN,
    PT_LOAD,
    PT_TLS,
    SHN_UNDEF,
    SHT_DYNAMIC,
    STB_WEAK,
    ElfFile,
    ProgramHeader,
)
from sgxtool.errors import ElfError, UsageError, VerificationError
from sgxtool.intellayout import ElfFacts, build_metadata, compat_copies
from sgxtool.intelsdk import SdkProfile, profile_for
from sgxtool.intelso import MAX_SO_SIZE, image_layout, note_block, parse_chain
from sgxtool.intelxml import SignConfig, read_sign_config
from sgxtool.layout import EnclaveLayout
from sgxtool.measure import Progress, mrenclave
from sgxtool.sign import ExternalSignature, Signer, sign_sigstruct

__all__ = ["UnsignedSo", "catsig_so", "gendata_so", "read_unsigned", "sign_so"]

_U64 = (1 << 64) - 1
# Wraps measuring a layout (memcrypt.work's policy: cost said, limit, progress).
Measuring = Callable[[EnclaveLayout], AbstractContextManager[Progress]]
_SIGNED_DATA = 256


@dataclass(frozen=True)
class UnsignedSo:
    """An Intel SDK enclave ready to sign: its bytes, where the note's descriptor is, the
    facts its layout needs and the SDK release it was linked with."""

    path: Path
    data: bytes
    note_at: int
    note_size: int
    facts: ElfFacts
    profile: SdkProfile


def read_unsigned(path: Path) -> UnsignedSo:
    """The unsigned ``.so`` at ``path``; an already signed one is refused, as sgx_sign
    refuses it (its -resign option aside)."""
    data = read_file(path, "enclave", max_size=MAX_SO_SIZE)
    try:
        elf = ElfFile.from_bytes(data)
        at, size = note_block(elf, path)
        facts = _facts(elf, path)
    except ElfError as exc:
        raise UsageError(f"{path}: not a usable ELF ({exc})") from exc
    if parse_chain(data[at : at + size], at, path):
        raise UsageError(
            f"{path}: already signed (its .note.sgxmeta holds metadata); sgx_sign refuses "
            "to sign it again too",
            hint="sign the unsigned enclave the SDK's linker wrote",
        )
    if any(data[at : at + size]):
        raise UsageError(f"{path}: .note.sgxmeta is neither blank nor sgx_sign metadata")
    first_word = struct.unpack_from("<Q", data, facts.global_data_offset)[0]
    profile, version = profile_for(data, str(path), first_word)
    _check_release(path, elf, data, facts, profile, version, size)
    return UnsignedSo(path, data, at, size, facts, profile)


def _facts(elf: ElfFile, path: Path) -> ElfFacts:
    if elf.header.e_machine != EM_X86_64 or elf.header.e_type != ET_DYN:
        raise UsageError(f"{path}: not an x86-64 ELF64 shared object")
    loads = [s for s in elf.segments if s.p_type == PT_LOAD]
    if not loads:
        raise UsageError(f"{path}: no PT_LOAD segment")
    _check_as_urts(elf, loads, path)
    top = max(loads, key=lambda s: s.p_vaddr)
    tls = [s.p_memsz for s in elf.segments if s.p_type == PT_TLS]
    gd_rva, _ = _symbol(elf, "g_global_data", path)
    # check_symbol_table: without a named enclave_entry, the ELF entry point
    entry = _symbol(elf, "enclave_entry", path, elf.header.e_entry)[0]
    # get_rawdata_by_rva: the patch is written at the file offset of the symbol's bytes
    seg = next((s for s in loads if s.p_vaddr <= gd_rva < s.p_vaddr + s.p_filesz), None)
    if seg is None:
        raise UsageError(f"{path}: g_global_data is not in the file's loaded bytes")
    return ElfFacts(
        end=-(-(top.p_vaddr + top.p_memsz) // 0x1000) * 0x1000,
        tls_size=tls[0] if tls else 0,
        entry=entry,
        global_data_offset=gd_rva - seg.p_vaddr + seg.p_offset,
    )


# Relocation types the uRTS applies (elfparser.cpp do_validate_reltab): NONE, 64, GLOB_DAT,
# JUMP_SLOT, RELATIVE, DTPMOD64, DTPOFF64, TPOFF64.
_RELOCATIONS = {0, 1, 6, 7, 8, 16, 17, 18}


def _check_as_urts(elf: ElfFile, loads: list[ProgramHeader], path: Path) -> None:
    """What the SDK's ELF parser refuses (elfparser.cpp run_parser), so sgx_sign does too."""
    spans = sorted((s.p_vaddr, -(-(s.p_vaddr + s.p_memsz) // s.p_align) * s.p_align)
                   for s in loads if s.p_align and not s.p_align % 0x1000)  # fmt: skip
    if len(spans) != len(loads) or any(a[1] > b[0] for a, b in pairwise(spans)):
        raise UsageError(f"{path}: PT_LOAD segments are not page aligned or overlap")
    if elf.section(".ctors") is not None:
        raise UsageError(f"{path}: has a .ctors section; its global initializers would not run")
    table = elf.section(".dynsym")
    for sym in elf.symbols(table) if table is not None and table.is_symbol_table else ():
        if sym.name and sym.st_shndx == SHN_UNDEF and sym.bind != STB_WEAK:
            raise UsageError(f"{path}: symbol {sym.name!r} is undefined")
    dynamic = elf.section(".dynamic")
    if dynamic is None or dynamic.sh_type != SHT_DYNAMIC:
        return
    tags = elf.dynamic(dynamic)
    if any(tag == DT_TEXTREL for tag, _ in tags):
        raise UsageError(f"{path}: the enclave image has text relocations (DT_TEXTREL)")
    tables = elf.relocation_tables(tags)
    if DT_REL in tables:
        raise UsageError(f"{path}: REL relocations; the SDK loader applies RELA only on x86-64")
    for relocs in tables.values():
        types = {rtype for _, rtype in relocs}
        if types - _RELOCATIONS:
            raise UsageError(f"{path}: relocation types the SDK loader does not apply: "
                             f"{sorted(types - _RELOCATIONS)}")  # fmt: skip


def _symbol(elf: ElfFile, name: str, path: Path, default: int = 0) -> tuple[int, int]:
    """(value, size) of a dynamic symbol; sgx_sign looks names up in .dynsym only."""
    found = elf.symbol(".dynsym", name)
    if (found is None or not found.st_value) and default:
        return default, 0
    if found is None or not found.st_value:
        raise UsageError(f"{path}: no {name} in .dynsym: not an Intel SGX SDK enclave",
                         hint="link the enclave with the SDK's tRTS (libsgx_trts)")  # fmt: skip
    return found.st_value, found.st_size


def _check_release(
    path: Path,
    elf: ElfFile,
    data: bytes,
    facts: ElfFacts,
    p: SdkProfile,
    version: tuple[int, int, int],
    note_size: int,
) -> None:
    """The tRTS must be the one the profile describes: the note's size and
    global_data_t's, and (2.13 on) the sdk_version it carries."""
    _, gd_size = _symbol(elf, "g_global_data", path)
    problems = []
    if note_size != p.metadata_size:
        problems.append(f".note.sgxmeta holds {note_size:#x} bytes, not {p.metadata_size:#x}")
    if gd_size != p.global_data_size:
        problems.append(f"g_global_data is {gd_size} bytes, not {p.global_data_size}")
    if p.sdk_version_field:
        carried = struct.unpack_from("<Q", data, facts.global_data_offset)[0]
        want = version[0] << 32 | version[1] << 16 | version[2]
        if carried != want:
            problems.append(f"its sdk_version is {carried:#x}, not {want:#x}")
    if problems:
        raise UsageError(f"{path}: not an SDK {p.release} tRTS as expected: {'; '.join(problems)}")


def unsigned_css(p: SdkProfile, cfg: SignConfig, date: int) -> Sigstruct:
    """fill_enclave_css: SIGSTRUCT from the XML, not yet measured or signed."""
    flags = int(AttributeFlag.MODE64BIT)
    for on, bit in ((cfg.provision_key, AttributeFlag.PROVISIONKEY),
                    (cfg.launch_key, AttributeFlag.EINITTOKEN_KEY),
                    (cfg.enable_kss, AttributeFlag.KSS)):  # fmt: skip
        flags |= int(bit) if on else 0
    mask = _U64 & ~int(AttributeFlag.DEBUG) | (int(AttributeFlag.DEBUG) if cfg.disable_debug else 0)
    kind = (1 << 31 if cfg.release_type else 0).to_bytes(4, "little")
    return Sigstruct(
        header=SIGSTRUCT_HEADER[:12] + kind,
        vendor=VENDOR_INTEL if cfg.intel_signed else 0,
        date=date,
        swdefined=cfg.hw,
        miscselect=cfg.misc_select,
        miscmask=cfg.misc_mask,
        isvfamilyid=cfg.isvfamilyid,
        attributes_flags=flags,
        attributes_xfrm=0x3,  # SGX_XFRM_LEGACY
        attributemask_flags=mask,
        attributemask_xfrm=_U64 & ~p.xfrm_features | 0x3,
        isvextprodid=cfg.isvextprodid,
        isvprodid=cfg.prodid,
        isvsvn=cfg.isvsvn,
    )


def _measured(so: UnsignedSo, cfg: SignConfig, date: int, measuring: Measuring | None) -> Sigstruct:
    """The SIGSTRUCT with ENCLAVEHASH: the layout measured as the uRTS loads it."""
    css = unsigned_css(so.profile, cfg, date)
    primary = build_metadata(so.profile, cfg, so.facts, css)
    (meta,) = parse_chain(primary, so.note_at, so.path)
    layout = image_layout(so.data, meta, so.path)
    with measuring(layout) if measuring else nullcontext() as progress:
        return replace(css, enclavehash=mrenclave(layout, progress))


def _signed_file(so: UnsignedSo, cfg: SignConfig, css: Sigstruct) -> bytes:
    """The input with the metadata chain in its note's descriptor; nothing else changes."""
    primary = build_metadata(so.profile, cfg, so.facts, css)
    chain = primary + b"".join(compat_copies(so.profile, primary, cfg.tcs_num))
    if len(chain) > so.note_size:
        raise UsageError(f"{so.path}: the metadata ({len(chain)} bytes) does not fit the note")
    block = chain.ljust(so.note_size, b"\0")
    if len(parse_chain(block, so.note_at, so.path)) != 1 + len(so.profile.compat):
        raise VerificationError(f"{so.path}: the metadata written does not read back")
    return so.data[: so.note_at] + block + so.data[so.note_at + so.note_size :]


def _config(so: UnsignedSo, xml: Path | None) -> SignConfig:
    p = so.profile
    return read_sign_config(xml, stack_size_min=p.stack_size_min, size_max=p.size_max, kss=p.kss)


def sign_so(
    path: Path,
    xml: Path | None,
    signer: Signer,
    date: int,
    *,
    out: Path,
    sig_out: Path | None = None,
    measuring: Measuring | None = None,
) -> Sigstruct:
    """Sign the unsigned Intel SDK enclave ``path`` with its ``Enclave.config.xml``; write
    the signed ``.so`` to ``out`` (and the raw SIGSTRUCT to ``sig_out``), atomically."""
    check_distinct([("--out", out), ("--sig", sig_out), ("ENCLAVE", path)])
    so = read_unsigned(path)
    cfg = _config(so, xml)
    css = sign_sigstruct(_measured(so, cfg, date, measuring), signer)
    _write(so, cfg, css, out, sig_out)
    return css


def gendata_so(
    path: Path, xml: Path | None, date: int, out: Path, measuring: Measuring | None = None
) -> bytes:
    """Write the 256 bytes an external signer signs (SIGSTRUCT bytes 0-127, 900-1027)."""
    check_distinct([("--out", out), ("ENCLAVE", path)])
    so = read_unsigned(path)
    data = _measured(so, _config(so, xml), date, measuring).signed_bytes()
    write_atomic(out, data)
    return data


def catsig_so(
    path: Path,
    xml: Path | None,
    data_path: Path,
    signature: bytes,
    public_key: rsa.RSAPublicKey,
    *,
    out: Path,
    sig_out: Path | None = None,
    measuring: Measuring | None = None,
) -> Sigstruct:
    """Write the signed ``.so`` from a signature made elsewhere over ``gendata_so``'s bytes,
    which are derived again (their DATE taken from the file) and must match."""
    check_distinct([("--out", out), ("--sig", sig_out), ("ENCLAVE", path)])
    data = read_file(data_path, "signing data", max_size=4096)
    if len(data) != _SIGNED_DATA:
        raise UsageError(f"{data_path}: {len(data)} bytes; `sgxtool gendata` writes 256")
    so = read_unsigned(path)
    cfg = _config(so, xml)
    css = _measured(so, cfg, int.from_bytes(data[20:24], "little"), measuring)
    if css.signed_bytes() != data:
        raise VerificationError(
            f"{data_path} does not match this enclave and Enclave.config.xml",
            hint="run catsig with the same enclave and XML as gendata",
        )
    css = sign_sigstruct(css, ExternalSignature(public_key, signature))
    _write(so, cfg, css, out, sig_out)
    return css


def _write(
    so: UnsignedSo, cfg: SignConfig, css: Sigstruct, out: Path, sig_out: Path | None
) -> None:
    signed = _signed_file(so, cfg, css)
    write_atomic(out, signed, mode=0o755)
    if sig_out is not None:
        write_atomic(sig_out, css.pack())
