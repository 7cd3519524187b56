"""Start-up cost of the command-line programs against `python -c "import click"`.

``--help`` and ``--version`` must not import cryptography, unicorn or rich, so a program
should start about as fast as Python importing click. Each command runs N times in a
fresh interpreter; the best time is compared.

Usage: python bench/bench_startup.py [N]
"""

from __future__ import annotations

import subprocess
import sys
import time

from _timing import figure

PROGRAMS = ["sgxtool", "sevtool", "hwsim"]


def best(argv: list[str], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    base = best([sys.executable, "-c", "import click"], n)
    print(f"python -c 'import click': {base * 1000:.1f} ms (best of {n})")
    for prog in PROGRAMS:
        for flag in ("--version", "--help"):
            code = f"import sys; from {prog}._cli import main; main([{flag!r}])"
            t = best([sys.executable, "-c", code], n)
            print(f"{prog} {flag:9}: {t * 1000:6.1f} ms  ratio {t / base:.2f}x (goal <= 2x)")
            figure(f"{prog} {flag}", f"{t * 1000:.1f} ms", f"import click {base * 1000:.1f} ms",
                   t / base, "<= 2x")  # fmt: skip


if __name__ == "__main__":
    main()
