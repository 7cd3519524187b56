"""The policy for large work: say what it costs, refuse it above a limit, show progress.

Measuring an enclave, writing an SGXS stream or loading an enclave costs time in
proportion to the bytes hashed (the ECREATE/EADD/EEXTEND stream) and the pages added. A
15 KB ELF can declare a terabyte segment and an enclave.toml a 64T heap; without a limit
such a command runs for tens of minutes in silence. So every such command:

1. works out the cost before it starts (:class:`Work`: pages and bytes to hash) and, when
   it is large (:data:`ANNOUNCE_BYTES`), says so on stderr;
2. refuses work above the limit (:data:`DEFAULT_MAX_BYTES` to hash, ``--max-size`` to
   change it, ``--force`` to lift it) with one line naming the cost and the options;
3. reports progress: a bar on a terminal, else a plain line on stderr every
   :data:`PROGRESS_INTERVAL_S` seconds (friendly to pipes and CI logs).

The tools declare the options with :func:`work_options` and wrap the work in
:func:`large_work`; the progress callback they pass down counts pages.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import click

from memcrypt.errors import InvalidInput, MemcryptError

__all__ = [
    "ANNOUNCE_BYTES",
    "DEFAULT_MAX_BYTES",
    "PROGRESS_INTERVAL_S",
    "Progress",
    "Work",
    "WorkTooLarge",
    "check_limit",
    "format_bytes",
    "large_work",
    "parse_size",
    "work_options",
]

DEFAULT_MAX_BYTES = 4 << 30  # 4 GiB to hash: a 4 GiB enclave, or 64 Mi unmeasured pages
ANNOUNCE_BYTES = 256 << 20  # from here on, a command says what it is about to do
PROGRESS_INTERVAL_S = 5.0
_BAR_MIN_PAGES = 16384  # on a terminal, a bar for work of 64 MiB of pages and more

Progress = Callable[[int], None]
_F = TypeVar("_F", bound=Callable[..., Any])
_LIMIT_KEY = "memcrypt.work_limit"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class WorkTooLarge(MemcryptError):
    """The work is above the limit; ``--force`` or ``--max-size`` allows it (exit 1)."""


@dataclass(frozen=True)
class Work:
    """What a command is about to do: ``pages`` to add and ``hash_bytes`` to hash."""

    action: str  # "measure enclave.elf"
    pages: int
    hash_bytes: int

    def summary(self) -> str:
        pages = f"{self.pages:,} pages ({format_bytes(self.pages * 4096)}), " if self.pages else ""
        return f"{pages}{format_bytes(self.hash_bytes)} to hash"


def format_bytes(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit]:
            return f"{n / _UNITS[unit]:.1f} {unit}iB"
    return f"{n} bytes"


def parse_size(text: str) -> int:
    """``64G``, ``512M``, ``1T`` or a number of bytes; :class:`InvalidInput` otherwise."""
    found = re.fullmatch(r"\s*([0-9]{1,20})\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if found is None:
        raise InvalidInput(f"{text!r} is not a size (such as 512M, 64G or 1T)")
    return int(found.group(1)) * _UNITS[found.group(2).upper()]


def check_limit(work: Work, max_bytes: int | None) -> None:
    """Refuse ``work`` above ``max_bytes`` to hash (``None``: no limit)."""
    if max_bytes is not None and work.hash_bytes > max_bytes:
        raise WorkTooLarge(
            f"{work.action} means {work.summary()}, above the limit of {format_bytes(max_bytes)}",
            hint="check the sizes (ELF segments, heap_size); to go ahead anyway give --force "
            "or a larger --max-size",
        )


# -- the command-line side ------------------------------------------------------------------


def work_options(f: _F) -> _F:
    """``--max-size SIZE`` and ``--force`` for a command that does large work."""

    def limit(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        meta = ctx.find_root().meta
        if value is True:  # --force
            meta[_LIMIT_KEY] = None
        elif isinstance(value, str) and meta.get(_LIMIT_KEY, 0) is not None:
            try:
                meta[_LIMIT_KEY] = parse_size(value)
            except InvalidInput as exc:
                raise click.BadParameter(str(exc), param_hint="--max-size") from None

    f = click.option(
        "--force",
        "force_work",
        is_flag=True,
        expose_value=False,
        callback=limit,
        help="Do the work however large it is (no --max-size limit).",
    )(f)
    return click.option(
        "--max-size",
        metavar="SIZE",
        expose_value=False,
        callback=limit,
        help=f"Refuse work above SIZE bytes to hash (default {format_bytes(DEFAULT_MAX_BYTES)}).",
    )(f)


def _limit_given() -> int | None:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return DEFAULT_MAX_BYTES
    value = ctx.find_root().meta.get(_LIMIT_KEY, DEFAULT_MAX_BYTES)
    return None if value is None else int(value)


@contextmanager
def large_work(
    work: Work, *, prog: str, stream: TextIO | None = None, interval: float = PROGRESS_INTERVAL_S
) -> Iterator[Progress]:
    """Check ``work`` against the command's limit, announce it if large, and yield a
    progress callback (pages done) that reports as this module says."""
    check_limit(work, _limit_given())
    out = stream or sys.stderr
    if work.hash_bytes >= ANNOUNCE_BYTES:
        print(f"{prog}: {work.action}: {work.summary()}", file=out, flush=True)
    if out.isatty() and work.pages >= _BAR_MIN_PAGES:
        with _bar(work) as advance:
            yield advance
        return
    yield _PlainProgress(work, prog, out, interval)


@contextmanager
def _bar(work: Work) -> Iterator[Progress]:
    from rich.progress import Progress as Bar

    from memcrypt.cli import console

    with Bar(console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(work.action, total=work.pages)
        yield lambda n: bar.advance(task, n)


class _PlainProgress:
    """One plain line every ``interval`` seconds: pages done, of how many, percent."""

    def __init__(self, work: Work, prog: str, out: TextIO, interval: float) -> None:
        self.work, self.prog, self.out, self.interval = work, prog, out, interval
        self.done = 0
        self.next_report = time.monotonic() + interval

    def __call__(self, pages: int) -> None:
        self.done += pages
        now = time.monotonic()
        if now < self.next_report:
            return
        self.next_report = now + self.interval
        total = max(self.work.pages, 1)
        print(
            f"{self.prog}: {self.work.action}: {self.done:,} of {self.work.pages:,} pages "
            f"({100 * self.done // total}%)",
            file=self.out,
            flush=True,
        )
