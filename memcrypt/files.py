"""File helpers every layer uses: atomic writes, groups of files that change together,
and bounded, checked reads.

The rules for every output file live here:

- A file is written to a temporary file beside it and renamed over the target, so a
  reader sees the old file or the whole new one. Temporary files are named
  ``.NAME.PID.XXXXXXXX.tmp``: the process removes its own on every exit path it controls,
  and a later write of NAME removes those left by a process that no longer runs (killed).
- The new file's mode is the stricter of what the caller asks, the umask, and the mode
  of the file it replaces: replacing a 0600 file never makes it world-readable.
- A symlink is followed; a device, FIFO or socket is refused (a write "into" /dev/sda is
  never what was meant); ``-`` is standard output.
- Files that belong together (a private key and its public key, a key and its
  certificate) are written with :func:`write_files`: after a kill at any point, the old
  set or the new set is what a reader finds, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from memcrypt.errors import InvalidInput, MemcryptError

__all__ = [
    "STDOUT",
    "Output",
    "atomic_open",
    "check_distinct",
    "check_replaceable",
    "read_file",
    "write_atomic",
    "write_files",
]

STDOUT = "-"
_COMMIT_SUFFIX = ".commit"


# -- one file ---------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` only when the ``with`` block completes.

    The bytes go to a temporary file in the same directory, are flushed to disk and renamed
    over the target, so readers see the old file or the whole new one, and an error or a
    kill part-way leaves the previous file untouched. The temporary file has its final
    mode from the start, so a private key is never readable by others, not even for a
    moment. ``-`` writes to standard output.
    """
    if os.fspath(path) == STDOUT:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = _writable_target(path)
    fd, tmp = _temp_beside(target, _final_mode(target, mode))
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        _unlink(tmp)
        raise MemcryptError(f"cannot write {target}: {exc.strerror}") from exc
    except BaseException:
        _unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, mode=mode) as f:
        f.write(data)


def check_replaceable(path: str | os.PathLike[str]) -> None:
    """Raise :class:`MemcryptError` now if a write of ``path`` would be refused later
    (read-only or immutable file or directory), for callers that must commit elsewhere
    first and cannot take the commit back."""
    target = _writable_target(path)
    for checked in (target.parent, target):
        if checked.exists() and not os.access(checked, os.W_OK):
            raise MemcryptError(f"cannot write {path}: {checked} is not writable")


def _writable_target(path: str | os.PathLike[str]) -> Path:
    """The real path to write (symlinks followed), refusing what is not a regular file."""
    given = Path(path)
    target = Path(os.path.realpath(given))
    if not target.parent.is_dir():
        raise InvalidInput(f"cannot write {given}: directory {target.parent} does not exist")
    try:
        mode_now = target.stat().st_mode
    except OSError:
        mode_now = stat.S_IFREG
    if stat.S_ISDIR(mode_now):
        raise InvalidInput(f"cannot write {given}: it is a directory")
    if not stat.S_ISREG(mode_now):
        raise InvalidInput(
            f"cannot write {given}: {target} is a {_kind(mode_now)}, not a regular file",
            hint="give a file name, or - for standard output",
        )
    _settle(target)
    _remove_stale_temps(target)
    _remove_stale_temps(_record_path(target))
    return target


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"


def _final_mode(target: Path, requested: int) -> int:
    """``requested`` less the umask and less what the replaced file did not allow."""
    mode = requested & ~_umask() & 0o777
    with contextlib.suppress(OSError):
        mode &= target.stat().st_mode & 0o777
    return mode


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    current = os.umask(0o077)
    os.umask(current)
    return current


def _temp_beside(target: Path, mode: int) -> tuple[int, str]:
    fd, tmp = _create_temp(target)
    try:
        os.fchmod(fd, mode)
    except OSError as exc:
        os.close(fd)
        _unlink(tmp)
        raise MemcryptError(f"cannot write {target}: {exc.strerror}") from exc
    return fd, tmp


# Exclusive creation under a random name, as tempfile.mkstemp does; tempfile itself (with
# shutil, random and the compression modules it pulls in) is not imported, as it would
# cost every command that loads this module a start-up it never uses.
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
_ATTEMPTS = 100


def _create_temp(target: Path) -> tuple[int, str]:
    """A new file ``.NAME.PID.XXXXXXXX.tmp`` beside ``target``, mode 0600, opened for writing."""
    for _ in range(_ATTEMPTS):
        tmp = os.path.join(target.parent, f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, _CREATE, 0o600), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise MemcryptError(f"cannot write {target}: {exc.strerror}") from exc
    raise MemcryptError(f"cannot write {target}: no free temporary name in {target.parent}")


def _unlink(path: str | Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _remove_stale_temps(target: Path) -> None:
    """Delete temporary files of ``target`` left by processes that no longer run."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.\w+\.tmp")
    with contextlib.suppress(OSError), os.scandir(target.parent) as entries:
        for entry in entries:
            found = pattern.fullmatch(entry.name)
            if found and not _alive(int(found.group(1))):
                _unlink(entry.path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


# -- files that change together ---------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """One file of a set written by :func:`write_files`."""

    path: Path
    data: bytes
    mode: int = 0o644


def check_distinct(outputs: Sequence[tuple[str, str | os.PathLike[str] | None]]) -> None:
    """Refuse two outputs naming one file (``--out X --sig X`` would lose one of them).

    ``outputs`` are (option name, path or None) pairs; the check follows symlinks and
    hard links, and is meant to run before any work is done.
    """
    seen: dict[tuple[int, int] | str, str] = {}
    for label, path in outputs:
        if path is None or os.fspath(path) == STDOUT:
            continue
        real = os.path.realpath(path)
        ident: tuple[int, int] | str = real
        with contextlib.suppress(OSError):
            st = os.stat(real)
            ident = (st.st_dev, st.st_ino)
        if ident in seen:
            raise InvalidInput(
                f"{label} and {seen[ident]} name the same file {path}; give two different files"
            )
        seen[ident] = label


def write_files(outputs: Sequence[Output]) -> None:
    """Write several files so that a reader finds all old or all new contents.

    Each file is first written whole to its temporary file. A commit record listing the
    renames is then written beside every target; the renames happen only once all
    records exist, and the records are removed after. If the process is killed part-way,
    the next read or write of any of the files completes the renames (all records there)
    or drops the new files (a record missing: no rename had started).
    """
    check_distinct([(str(o.path), o.path) for o in outputs])
    on_disk = [o for o in outputs if os.fspath(o.path) != STDOUT]
    targets = [_writable_target(o.path) for o in on_disk]
    temps: list[str] = []
    try:
        for out, target in zip(on_disk, targets, strict=True):
            temps.append(_write_temp(target, out.data, out.mode))
        _commit(list(zip(temps, targets, strict=True)))
    except BaseException:
        for tmp in temps:
            _unlink(tmp)
        raise
    for out in outputs:
        if os.fspath(out.path) == STDOUT:
            sys.stdout.buffer.write(out.data)
            sys.stdout.buffer.flush()


def _write_temp(target: Path, data: bytes, mode: int) -> str:
    fd, tmp = _temp_beside(target, _final_mode(target, mode))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        _unlink(tmp)
        raise MemcryptError(f"cannot write {target}: {exc.strerror}") from exc
    return tmp


def _record_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{_COMMIT_SUFFIX}")


def _commit(renames: list[tuple[str, Path]]) -> None:
    # json only here and where a record is read: most commands never meet a commit record,
    # and would pay its import at start-up.
    import json

    record = json.dumps(
        {"pid": os.getpid(), "renames": [[tmp, str(t)] for tmp, t in renames]}
    ).encode()
    records = [_record_path(t) for _, t in renames]
    try:
        for path in records:
            _write_record(path, record)
        for tmp, target in renames:
            os.replace(tmp, target)
    except OSError as exc:
        for path in records:
            _unlink(path)
        raise MemcryptError(f"cannot write {renames[0][1]}: {exc.strerror}") from exc
    for path in records:
        _unlink(path)


def _write_record(path: Path, record: bytes) -> None:
    fd, tmp = _temp_beside(path, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(record)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _settle(target: Path) -> None:
    """Finish or drop a set of writes to ``target`` whose process was killed."""
    record_path = _record_path(target)
    try:
        raw = record_path.read_bytes()
    except FileNotFoundError:
        return
    except OSError:
        raw = b""  # unreadable: dropped below, as a record cut short is
    import json

    try:
        record = json.loads(raw)
        pid = int(record["pid"])
        renames = [(str(tmp), Path(t)) for tmp, t in record["renames"]]
    except (ValueError, KeyError, TypeError):
        _unlink(record_path)  # a record cut short: written before any rename started
        return
    if _alive(pid):
        return
    records = [_record_path(t) for _, t in renames]
    complete = all(_same_record(p, record) for p in records)
    for tmp, t in renames:
        with contextlib.suppress(OSError):
            if complete:
                os.replace(tmp, t)
            else:
                os.unlink(tmp)
    for path in records:
        _unlink(path)


def _same_record(path: Path, record: object) -> bool:
    import json

    try:
        return bool(json.loads(path.read_bytes()) == record)
    except (OSError, ValueError):
        return False


# -- reading ------------------------------------------------------------------------------------


def read_file(path: str | os.PathLike[str], what: str, *, max_size: int | None = None) -> bytes:
    """Read a whole input file, raising :class:`InvalidInput` naming ``what`` on failure."""
    p = Path(path)
    with contextlib.suppress(OSError):
        _settle(Path(os.path.realpath(p)))
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
