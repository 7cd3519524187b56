"""Concurrent ECALLs of an Intel SDK enclave: what the threads and their switches cost.

Baseline: SgxRandTest's ``ecall_increase_counter`` (500 sgx_thread_mutex lock/unlock
pairs, no OCALL) called four times in a row from one host thread, in the same process.
Measured: the same four as ``run_threads`` (four host threads taking turns on the one
CPU, four TCSs, no waits: the scheduler's own cost), and SampleEnclave's producer with
four consumers (2000 items through a 50-slot buffer: every thread parks and is woken
through the untrusted-event OCALLs many times). Best of several rounds, each on a fresh
enclave after one warm-up ECALL (the constructors run at the first); the load is not
timed.

    PYTHONPATH=. python bench/bench_intel_threads.py
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hwsim.machine import Machine  # noqa: E402
from sgxtool.intelrt import IntelEnclave  # noqa: E402
from sgxtool.intelthreads import ThreadCall  # noqa: E402

SAMPLE = REPO.parent / "shared" / "vectors" / "sgx" / "intel-sdk-enclaves" / "DongpingZ+SgxRandTest"
TYPES = {"buffer_t": "void *", "array_t": "int[10]"}
ROUNDS = 10
PRODUCER_CONSUMERS = ["ecall_consumer", "ecall_producer"] + ["ecall_consumer"] * 3


def timed(machine: Machine, run: Callable[[IntelEnclave], None]) -> tuple[float, int]:
    """Best time of ``run(enclave)`` over fresh enclaves, and the sleeps of the last."""
    best, sleeps = float("inf"), 0
    so, edl = SAMPLE / "enclave.signed.so", SAMPLE / "Enclave.edl"
    for _ in range(ROUNDS):
        with IntelEnclave.load(so, edl=edl, typedefs=TYPES, machine=machine,
                               console=io.StringIO()) as e:  # fmt: skip
            e.ecall("ecall_type_int", val=1234)  # the first ECALL runs the constructors
            start = time.perf_counter()
            run(e)
            best = min(best, time.perf_counter() - start)
            sleeps = e.scheduler.sleeps
    return best, sleeps


def in_a_row(e: IntelEnclave) -> None:
    for _ in range(4):
        e.ecall("ecall_increase_counter")


def as_threads(names: list[str]) -> Callable[[IntelEnclave], None]:
    def run(e: IntelEnclave) -> None:
        results = e.run_threads([ThreadCall(n) for n in names])
        assert all(r.error is None for r in results), results

    return run


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        machine = Machine.init(Path(tmp) / "m", "sim")
        base, _ = timed(machine, in_a_row)
        four, _ = timed(machine, as_threads(["ecall_increase_counter"] * 4))
        pc, sleeps = timed(machine, as_threads(PRODUCER_CONSUMERS))
    print(f"4 x increase_counter in a row   {base * 1e3:8.1f} ms  1.00x")
    print(f"4 x increase_counter, 4 threads {four * 1e3:8.1f} ms  {four / base:.2f}x")
    print(f"producer + 4 consumers          {pc * 1e3:8.1f} ms  {pc / base:.2f}x"
          f"  ({sleeps} sleeps)")  # fmt: skip


if __name__ == "__main__":
    main()
