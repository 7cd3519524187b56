"""File helpers every layer uses: atomic writes and bounded, checked reads."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from memcrypt.errors import InvalidInput, MemcryptError

__all__ = ["atomic_open", "read_file", "write_atomic"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` only when the ``with`` block completes.

    The bytes go to a temporary file in the same directory, are flushed to disk and renamed
    over the target, so readers see the old file or the whole new one, and an error or a
    kill part-way leaves the previous file untouched. The temporary file has ``mode`` from
    the start, so a private key is never readable by others, not even for a moment.
    """
    target = Path(path)
    directory = target.parent
    if not directory.is_dir():
        raise InvalidInput(f"cannot write {target}: directory {directory} does not exist")
    try:
        mode_now = target.stat().st_mode
    except OSError:
        mode_now = stat.S_IFREG
    if stat.S_ISDIR(mode_now):
        raise InvalidInput(f"cannot write {target}: it is a directory")
    if not stat.S_ISREG(mode_now):
        # A device or FIFO (/dev/stdout, /dev/null): renaming over it would swap the node
        # for a regular file, so write straight into it; no file on disk is at stake.
        with _open_special(target) as f:
            yield f
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise MemcryptError(f"cannot write {target}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise MemcryptError(f"cannot write {target}: {exc.strerror}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _open_special(target: Path) -> Iterator[BinaryIO]:
    try:
        with target.open("wb") as f:
            yield f
    except OSError as exc:
        raise MemcryptError(f"cannot write {target}: {exc.strerror}") from exc


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, mode=mode) as f:
        f.write(data)


def read_file(path: str | os.PathLike[str], what: str, *, max_size: int | None = None) -> bytes:
    """Read a whole input file, raising :class:`InvalidInput` naming ``what`` on failure."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            # Read one byte past the limit rather than trust st_size, which is 0 for
            # devices and FIFOs: `-c /dev/zero` must not read until memory runs out.
            data = f.read() if max_size is None else f.read(max_size + 1)
    except IsADirectoryError as exc:
        raise InvalidInput(f"cannot read {what} {p}: it is a directory") from exc
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {p}: {exc.strerror}") from exc
    if max_size is not None and len(data) > max_size:
        raise InvalidInput(f"{what} {p} is larger than {max_size} bytes")
    return data
