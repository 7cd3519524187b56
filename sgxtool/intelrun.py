"""Intel SDK enclaves from the command line: ECALL parameters given as ``NAME=VALUE`` text,
for one ECALL (``sgxtool run IMAGE ENTRY --arg ...``) or for several concurrent ones, each
on its own enclave thread (``sgxtool run IMAGE --thread 'ENTRY NAME=VALUE' --thread ...``).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sgxtool.edl import CType, Edl, Function, load_edl
from sgxtool.errors import UsageError
from sgxtool.intelrt import IntelCallResult, IntelEnclave
from sgxtool.intelthreads import ThreadCall, ThreadResult
from sgxtool.runtime import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from hwsim.machine import Machine
    from sgxtool.marshal import Value

__all__ = ["ThreadsRun", "parse_cli_args", "parse_thread", "run_intel_ecall", "run_intel_threads"]


def parse_cli_args(f: Function, pairs: list[str], option: str = "--arg") -> dict[str, Value]:
    """``NAME=VALUE`` strings as ECALL values: numbers stay text for the marshaller,
    ``hex:...`` is bytes, and comma lists fill arrays of numbers."""
    values: dict[str, Value] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise UsageError(f"{option} {pair!r}: expected NAME=VALUE")
        try:
            p = f.param(name)
        except KeyError:
            names = ", ".join(q.name for q in f.params) or "none"
            raise UsageError(f"{f.name} has no parameter {name!r} (it has: {names})") from None
        elem = p.ctype.elem if p.ctype.dims else p.ctype.pointee
        what = f"{option} {name}"
        values[name] = _cli_value(None if p.is_string else elem, text, what)
    return values


def _cli_value(elem: CType | None, text: str, what: str) -> Value:
    if text.startswith("hex:"):
        try:
            return bytes.fromhex(text[4:])
        except ValueError:
            raise UsageError(f"{what}: {text[4:]!r} is not hex") from None
    if elem is None or elem.kind != "int" or elem.size < 2:
        return text  # a scalar (parsed by the marshaller), char data; floats as hex:
    try:
        return [int(v, 0) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a comma list of numbers") from None


def run_intel_ecall(
    image: str | Path,
    entry: str,
    args: list[str],
    *,
    edl: str | Path,
    typedefs: Mapping[str, str] | None = None,
    edl_path: tuple[Path, ...] = (),
    machine: Machine | None = None,
    token: bytes | None = None,
    console: TextIO | None = None,
    budget: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> IntelCallResult:
    """Load an Intel SDK enclave, call ECALL ``entry`` with ``NAME=VALUE`` arguments once."""
    parsed = load_edl(edl, typedefs=dict(typedefs or {}), search=edl_path)
    _, f = parsed.ecall(entry)  # before loading: a wrong name or argument costs nothing
    values = parse_cli_args(f, args)
    with IntelEnclave.load(image, edl=parsed, machine=machine, token=token, console=console,
                           budget=budget, timeout=timeout) as enclave:  # fmt: skip
        return enclave.ecall(entry, **values)


def parse_thread(edl: Edl, spec: str) -> ThreadCall:
    """One ``--thread`` value, ``ENTRY [NAME=VALUE]...`` split like a shell command line."""
    try:
        words = shlex.split(spec)
    except ValueError as exc:
        raise UsageError(f"--thread {spec!r}: {exc}") from None
    if not words:
        raise UsageError("--thread '': expected an ECALL name, then NAME=VALUE parameters")
    _, f = edl.ecall(words[0])
    return ThreadCall(words[0], parse_cli_args(f, words[1:], f"--thread {words[0]}:"))


@dataclass(frozen=True)
class ThreadsRun:
    """What ``sgxtool run --thread`` reports: each thread's result, in the order given."""

    threads: list[ThreadResult]
    sleeps: int  # times a thread gave the CPU up to wait for its event
    mrenclave: bytes
    mrsigner: bytes

    def as_json(self) -> dict[str, object]:
        return {
            "threads": [t.as_json() for t in self.threads],
            "sleeps": self.sleeps,
            "mrenclave": self.mrenclave.hex(),
            "mrsigner": self.mrsigner.hex(),
        }

    def first_failure(self) -> tuple[int, ThreadResult] | None:
        """The thread (numbered from 1) that failed first in time, if one did: the cause,
        where the others only report the crash it left behind."""
        failed = [(t.ended if t.ended is not None else len(self.threads), n, t)
                  for n, t in enumerate(self.threads, 1) if t.error is not None]  # fmt: skip
        return min(failed, key=lambda f: f[:2])[1:] if failed else None


def run_intel_threads(
    image: str | Path,
    specs: list[str],
    *,
    edl: str | Path,
    typedefs: Mapping[str, str] | None = None,
    edl_path: tuple[Path, ...] = (),
    machine: Machine | None = None,
    token: bytes | None = None,
    console: TextIO | None = None,
    budget: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> ThreadsRun:
    """Load an Intel SDK enclave and run each ``--thread`` spec as a concurrent ECALL."""
    parsed = load_edl(edl, typedefs=dict(typedefs or {}), search=edl_path)
    calls = [parse_thread(parsed, spec) for spec in specs]  # before loading, as above
    with IntelEnclave.load(image, edl=parsed, machine=machine, token=token, console=console,
                           budget=budget, timeout=timeout) as enclave:  # fmt: skip
        results = enclave.run_threads(calls)
        return ThreadsRun(results, enclave.scheduler.sleeps, enclave.mrenclave, enclave.mrsigner)
