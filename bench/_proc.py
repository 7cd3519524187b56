"""Whole-process timing: commands run in interleaved rounds, min and median per command.

Each round runs every command once, in turn, so a burst of load from other processes on
the machine hits all of them alike; the ratios compare commands of the same rounds. Peak
memory is each child's own maximum resident set, from ``wait4``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The floor for MRENCLAVE: a fresh interpreter hashing an SGXS file 1 MiB at a time.
HASH_FILE = (
    "import hashlib,sys\n"
    "h=hashlib.sha256()\n"
    "with open(sys.argv[1],'rb',buffering=0) as f:\n"
    "    while b:=f.read(1<<20): h.update(b)\n"
    "print(h.hexdigest())\n"
)
# The floor of any sgxtool command doing that work: the same after importing click, which
# every click command pays before its own work.
CLICK_HASH_FILE = "import click\n" + HASH_FILE


def sgxtool(*args: str, tree: Path | None = None) -> list[str]:
    """sgxtool in a fresh interpreter, from this checkout or from ``tree``."""
    code = "import sys; sys.path.insert(0, sys.argv.pop(1)); from sgxtool._cli import main; main()"
    return [sys.executable, "-c", code, str(tree or REPO), *args]


@dataclass
class Timings:
    seconds: list[float] = field(default_factory=list)
    peak_mib: float = 0.0

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


# Children write their bytecode caches (the first, uncounted round fills them), as an
# installed program's would be.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_once(argv: Sequence[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one run of ``argv``; fails if it fails."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_ENV)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    err = child.stderr.read() if child.stderr else b""
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({child.returncode}): {err.decode(errors='replace')}")
    return elapsed, usage.ru_maxrss / 1024


def interleaved(commands: Mapping[str, Sequence[str]], rounds: int) -> dict[str, Timings]:
    """Run every command once per round, ``rounds`` times, after one uncounted round."""
    for argv in commands.values():
        run_once(argv)
    results = {name: Timings() for name in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            seconds, peak = run_once(argv)
            results[name].seconds.append(seconds)
            results[name].peak_mib = max(results[name].peak_mib, peak)
    return results


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def ratio_line(name: str, t: Timings, base: Timings) -> str:
    return (
        f"  {name:34} min {t.min:8.3f} s  median {t.median:8.3f} s  "
        f"ratio {t.min / base.min:5.2f}x / {t.median / base.median:5.2f}x  "
        f"peak {t.peak_mib:6.1f} MiB"
    )


def min_median(t: Timings) -> str:
    return f"{t.min:.3f} / {t.median:.3f} s"
