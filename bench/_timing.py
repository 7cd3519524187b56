"""What every benchmark script shares: the best-of-N timer.

The best of several runs is the one least disturbed by other load on the machine, which is
what a ratio against a baseline in the same process needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Fastest of ``repeats`` runs of ``fn``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_rounds(pairs: int, *fns: Callable[[], object]) -> list[list[float]]:
    """Interleaved timings (thread CPU time): ``pairs`` rounds, each running every ``fn``
    once, so that load on the machine falls on all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(pairs):
        for i, fn in enumerate(fns):
            start = time.thread_time()
            fn()
            times[i].append(time.thread_time() - start)
    return times


def figure(name: str, value: str, baseline: str, ratio: float | None, goal: str = "") -> None:
    """One row of the table ``make bench`` prints (bench/table.py collects these lines):
    the figure, its baseline, the ratio and the goal (``<= 1.2x`` or ``>= 0.6x``)."""
    ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
    met = "-" if ratio is None or not goal else "met" if meets(ratio, goal) else "missed"
    print("\t".join(("FIGURE", name, value, baseline, ratio_text, goal or "-", met)))


def meets(ratio: float, goal: str) -> bool:
    op, bound = goal.split()
    limit = float(bound.rstrip("x"))
    return ratio <= limit if op == "<=" else ratio >= limit
