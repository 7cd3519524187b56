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
