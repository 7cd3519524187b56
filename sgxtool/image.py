"""The signed enclave image: the ELF, unchanged, with its metadata appended.

Layout (all integers little-endian), in the manner of Linux's appended module signatures:

    the enclave ELF, byte for byte as built
    metadata:  magic "MEMCRYPT SGXMETA" (16) | version u32 = 1 | SIGSTRUCT length u32
               | SIGSTRUCT (1808) | config length u32 | enclave.toml, normalized (UTF-8)
    footer:    ELF length u64 | metadata length u64 | magic "memcrypt-sgx-img" (16)

The ELF bytes, and so the measured pages, are never touched: the image measures exactly as
the ELF it came from, ELF tools still read it, and re-signing replaces only the tail. One
file is enough to load: the normalized config rebuilds the same layout the signer measured.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import tomli_w

from hwsim.sgx.arch import Sigstruct
from memcrypt.files import atomic_open, write_atomic
from sgxtool.config import EnclaveConfig, parse_config
from sgxtool.elf import read_elf
from sgxtool.errors import ImageError
from sgxtool.intelso import has_metadata
from sgxtool.layout import EnclaveLayout, plan_layout
from sgxtool.sgxs import is_sgxs

__all__ = [
    "ImageKind",
    "SignedImage",
    "detect",
    "elf_length",
    "read_image",
    "write_image",
    "write_sig",
]

_META = struct.Struct("<16sII")
_META_MAGIC = b"MEMCRYPT SGXMETA"
_FOOTER = struct.Struct("<QQ16s")
_FOOTER_MAGIC = b"memcrypt-sgx-img"
_VERSION = 1
_SIGSTRUCT_SIZE = Sigstruct.LAYOUT.size


class ImageKind(enum.Enum):
    SIGNED_ELF = "signed image"
    ELF = "ELF"
    SIGSTRUCT = "SIGSTRUCT"
    SGXS = "SGXS stream"
    INTEL_SO = "Intel SGX SDK signed enclave"


@dataclass(frozen=True)
class SignedImage:
    """A signed image as read back: where the ELF ends, its SIGSTRUCT and config."""

    path: Path
    elf_size: int
    sigstruct_raw: bytes
    config: EnclaveConfig

    @property
    def sigstruct(self) -> Sigstruct:
        return Sigstruct.unpack(self.sigstruct_raw)

    def layout(self) -> EnclaveLayout:
        """The page layout, rebuilt exactly as the signer measured it."""
        return plan_layout(read_elf(self.path, limit=self.elf_size), self.config)


def detect(path: str | Path) -> ImageKind:
    """What kind of file ``path`` is, judged from its bytes, not its name."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(16)
            size = f.seek(0, os.SEEK_END)
            tail = b""
            if size >= _FOOTER.size:
                f.seek(size - _FOOTER.size)
                tail = f.read(_FOOTER.size)
    except OSError as exc:
        raise ImageError(f"cannot read {p}: {exc.strerror}") from exc
    if head[:4] == b"\x7fELF":
        if tail[-16:] == _FOOTER_MAGIC:
            return ImageKind.SIGNED_ELF
        return ImageKind.INTEL_SO if has_metadata(p) else ImageKind.ELF
    if is_sgxs(head):
        return ImageKind.SGXS
    if size == _SIGSTRUCT_SIZE:
        return ImageKind.SIGSTRUCT
    raise ImageError(f"{p}: not an ELF, signed image, SIGSTRUCT or SGXS stream ({size} bytes)")


def read_image(path: str | Path) -> SignedImage:
    """Read a signed image's metadata; refuse anything malformed, naming the problem."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < _FOOTER.size:
                raise ImageError(f"{p}: not a signed image (too short)")
            f.seek(size - _FOOTER.size)
            elf_size, meta_size, magic = _FOOTER.unpack(f.read(_FOOTER.size))
            if magic != _FOOTER_MAGIC:
                raise ImageError(
                    f"{p}: not a signed image (no metadata footer)",
                    hint="sign it with `sgxtool sign`",
                )
            if elf_size + meta_size + _FOOTER.size != size:
                raise ImageError(f"{p}: signed image is truncated or has trailing bytes")
            f.seek(elf_size)
            meta = f.read(meta_size)
    except OSError as exc:
        raise ImageError(f"cannot read {p}: {exc.strerror}") from exc
    sig, cfg_text = _parse_meta(meta, p)
    return SignedImage(p, elf_size, sig, parse_config(cfg_text, f"{p} (embedded config)"))


def _parse_meta(meta: bytes, p: Path) -> tuple[bytes, str]:
    if len(meta) < _META.size + _SIGSTRUCT_SIZE + 4:
        raise ImageError(f"{p}: image metadata is truncated")
    magic, version, sig_len = _META.unpack_from(meta)
    if magic != _META_MAGIC:
        raise ImageError(f"{p}: image metadata is damaged (bad magic {magic!r})")
    if version != _VERSION:
        raise ImageError(
            f"{p}: image metadata version {version} is not known to this sgxtool "
            f"(it reads version {_VERSION})"
        )
    if sig_len != _SIGSTRUCT_SIZE:
        raise ImageError(
            f"{p}: image metadata is damaged: its SIGSTRUCT size field is {sig_len}, "
            f"not {_SIGSTRUCT_SIZE}"
        )
    sig = meta[_META.size : _META.size + sig_len]
    at = _META.size + sig_len
    (cfg_len,) = struct.unpack_from("<I", meta, at)
    if at + 4 + cfg_len != len(meta):
        raise ImageError(f"{p}: image metadata has a bad config length")
    try:
        return sig, meta[at + 4 :].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImageError(f"{p}: embedded config is not UTF-8") from exc


def layout_of(path: str | Path, cfg: EnclaveConfig) -> EnclaveLayout:
    """The layout of an ELF (or signed image) built with ``cfg``; inside
    :func:`one_layout_per_file`, made once per file and config."""
    layouts = _LAYOUTS.get()
    if layouts is None:
        return plan_layout(read_elf(path, limit=elf_length(path)), cfg)
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, cfg)
    layout = layouts.get(key)
    if layout is None:
        layout = layouts[key] = plan_layout(read_elf(path, limit=elf_length(path)), cfg)
    return layout


@contextmanager
def one_layout_per_file() -> Iterator[None]:
    """For one command: its cost estimate (memcrypt.work) and its work lay the enclave out
    once. Not longer: a file rewritten in place within the file system's timestamp
    granularity would keep its key."""
    token = _LAYOUTS.set(_LAYOUTS.get() or {})
    try:
        yield
    finally:
        _LAYOUTS.reset(token)


_LAYOUTS: ContextVar[dict[tuple[object, ...], EnclaveLayout] | None] = ContextVar(
    "sgxtool_layouts", default=None
)


def elf_length(path: str | Path) -> int:
    """Bytes of ``path`` that are the ELF: all of it, or the part before the metadata."""
    if detect(path) is ImageKind.SIGNED_ELF:
        return read_image(path).elf_size
    return Path(path).stat().st_size


def write_image(elf: str | Path, out: str | Path, sigstruct: Sigstruct, cfg: EnclaveConfig) -> None:
    """Write ``elf`` with ``sigstruct`` and ``cfg`` appended, atomically; ``elf`` may itself
    be a signed image, whose old metadata is dropped."""
    elf_size = elf_length(elf)
    cfg_text = tomli_w.dumps(cfg.to_toml_dict()).encode()
    meta = (
        _META.pack(_META_MAGIC, _VERSION, _SIGSTRUCT_SIZE)
        + sigstruct.pack()
        + struct.pack("<I", len(cfg_text))
        + cfg_text
    )
    try:
        src = open(elf, "rb")  # noqa: SIM115 - closed by the with below, after open errors
    except OSError as exc:
        raise ImageError(f"cannot read {elf}: {exc.strerror}") from exc
    with src, atomic_open(out, mode=0o755) as dst:
        _copy(src, dst, elf_size)
        dst.write(meta)
        dst.write(_FOOTER.pack(elf_size, len(meta), _FOOTER_MAGIC))


def _copy(src: BinaryIO, dst: BinaryIO, n: int) -> None:
    remaining = n
    while remaining:
        chunk = src.read(min(remaining, 1 << 20))
        if not chunk:
            raise ImageError("input shrank while it was being copied")
        dst.write(chunk)
        remaining -= len(chunk)


def write_sig(out: str | Path, sigstruct: Sigstruct) -> None:
    """Write a detached SIGSTRUCT (the raw 1808 bytes), atomically."""
    write_atomic(out, sigstruct.pack())
