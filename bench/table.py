"""Run every benchmark and print one table of their figures (``make bench``).

Each ``bench_*.py`` runs in its own interpreter, its output shown as it comes; the lines
it prints through ``_timing.figure`` become the table's rows: the figure, its baseline,
the ratio, the goal and whether it was met. The load average at the end says how busy
the machine was (the scripts' ratios compare runs made under the same load).

    python bench/table.py [bench_ecall bench_sev ...]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("figure", "value", "baseline", "ratio", "goal", "goal met")


def run(script: Path) -> list[list[str]]:
    print(f"== {script.name}", flush=True)
    rows = []
    env = os.environ | {"PYTHONPATH": str(HERE.parent)}
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                          env=env) as child:  # fmt: skip
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("FIGURE\t"):
                rows.append(line.rstrip("\n").split("\t")[1:])
            else:
                print(line, end="", flush=True)
    if child.returncode:
        raise SystemExit(f"{script.name} failed ({child.returncode})")
    return rows


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [list(COLUMNS), *rows]]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("bench_*.py"))
    rows = [row for name in names for row in run(HERE / f"{name}.py")]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{table(rows)}\n\nload average {load} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
