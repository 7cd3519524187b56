"""Concurrent ECALLs of an Intel SDK enclave, each on its own TCS: SgxRandTest's
producer/consumer and mutex ECALLs (SampleEnclave TrustedLibrary/Thread.cpp), the
untrusted events that park and wake their threads, and deadlocks as one message."""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from sgxtool.errors import SgxToolError
from sgxtool.intelrt import IntelEnclave
from sgxtool.intelthreads import Deadlock, Scheduler, ThreadCall
from sgxtool.runtime import EnclaveCrashed
from tests.sgxtool.conftest import SAMPLE, Vector

BUFFER_SIZE, LOOPS_PER_THREAD = 50, 500  # Thread.cpp


def symbol(path: Path, name: str) -> int:
    with open(path, "rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        return int(table.get_symbol_by_name(name)[0]["st_value"])  # type: ignore[union-attr]


def read_buffer(enclave: IntelEnclave, vector: Vector) -> tuple[tuple[int, ...], int, int, int]:
    """Thread.cpp's cond_buffer_t (buf, occupied, nextin, nextout), read with EDBGRD."""
    at = symbol(vector(f"{SAMPLE}/enclave.signed.so"), "_ZL6buffer")
    values = struct.unpack(f"<{BUFFER_SIZE + 3}i", enclave.device.debug_read(at, 4 * 53))
    return values[:BUFFER_SIZE], *values[BUFFER_SIZE:]


def test_one_producer_and_four_consumers_run_to_completion(
    sample: IntelEnclave, vector: Vector
) -> None:
    """The SampleEnclave App's order: consumer, producer, three consumers. The producer
    makes 4 x 500 items through a 50-slot buffer, each consumer takes 500: they must hand
    the CPU to each other through sgx_thread_cond_wait/signal many times."""
    names = ["ecall_consumer", "ecall_producer"] + ["ecall_consumer"] * 3
    results = sample.run_threads([ThreadCall(n) for n in names])
    assert [(r.call.entry, r.error, r.result and r.result.retval) for r in results] == [
        (n, None, None) for n in names
    ]
    assert len({r.tcs for r in results}) == 5  # one TCS each
    assert sample.scheduler.sleeps >= 2 * LOOPS_PER_THREAD * 4 // BUFFER_SIZE // 2
    # The buffer as the threads left it: all 2000 items taken (consumers zero each slot),
    # both cursors back at slot 0 after 40 laps.
    assert read_buffer(sample, vector) == ((0,) * BUFFER_SIZE, 0, 0, 0)
    assert sample.crashed is None
    assert sample.ecall("ecall_type_int", val=1234).retval is None  # still usable


def test_four_threads_share_a_mutex(sample: IntelEnclave) -> None:
    """ecall_increase_counter: 500 locked increments each; the one that reaches 2000 says so."""
    results = sample.run_threads([ThreadCall("ecall_increase_counter")] * 4)
    assert sorted(r.result.retval for r in results if r.result) == [0, 0, 0, 2000]  # type: ignore[type-var]


def test_threads_take_their_parameters_and_return_their_outputs(
    sample: IntelEnclave, vector: Vector
) -> None:
    results = sample.run_threads([
        ThreadCall("ecall_pointer_count", {"arr": [1, 2, 3, 4], "cnt": 4}),
        ThreadCall("ecall_consumer"),
        ThreadCall("ecall_array_out"),
        ThreadCall("ecall_producer"),
    ])  # fmt: skip
    outputs = [r.result.outputs if r.result else r.error for r in results]
    assert outputs[0] == {"arr": [3, 2, 1, 0]}
    assert outputs[2] == {"arr": [3, 2, 1, 0]}
    # One consumer takes 500 of the producer's 2000: the producer fills the buffer once
    # more (550 made, buf[i] = i) and waits with nobody left to empty it.
    assert results[1].error is None
    assert isinstance(results[3].error, Deadlock)
    assert f"deadlock: ecall_producer on TCS {results[3].tcs:#x} waits" in str(results[3].error)
    assert read_buffer(sample, vector) == (tuple(range(BUFFER_SIZE)), BUFFER_SIZE, 0, 0)


def test_a_deadlock_of_every_thread_is_one_message(sample: IntelEnclave) -> None:
    results = sample.run_threads([ThreadCall("ecall_consumer")] * 2)
    errors = {str(r.error) for r in results}
    assert len(errors) == 1
    (text,) = errors
    assert text.startswith("deadlock: every enclave thread waits for an untrusted event (")
    assert "ecall_consumer on TCS 0x28c000, ecall_consumer on TCS 0x300000" in text
    assert all(isinstance(r.error, Deadlock) and r.error.hint is None for r in results)
    with pytest.raises(EnclaveCrashed, match="crashed earlier"):  # stopped inside, locked
        sample.ecall("ecall_increase_counter")


def test_more_threads_than_tcss_and_unknown_names(sample: IntelEnclave) -> None:
    with pytest.raises(SgxToolError, match="11 threads need 11 TCSs; the enclave has 10"):
        sample.run_threads([ThreadCall("ecall_increase_counter")] * 11)
    with pytest.raises(SgxToolError, match="no ECALL named 'nope'"):
        sample.run_threads([ThreadCall("ecall_consumer"), ThreadCall("nope")])
    # Nothing started, nothing queued: the enclave runs on.
    assert sample.ecall("ecall_increase_counter").retval == 0


def test_no_free_tcs_is_out_of_tcs(sample: IntelEnclave) -> None:
    sample._busy.update(sample.tcs[1:])  # nine ECALLs in progress elsewhere
    results = sample.run_threads([ThreadCall("ecall_consumer"), ThreadCall("ecall_producer")])
    assert "all 10 TCSs of the enclave are held" in str(results[1].error)
    assert "TCSNum" in str(results[1].error.hint)  # type: ignore[union-attr]


def test_a_bad_parameter_fails_that_thread_only(sample: IntelEnclave) -> None:
    results = sample.run_threads([
        ThreadCall("ecall_type_int", {"x": 1}),
        ThreadCall("ecall_increase_counter"),
    ])  # fmt: skip
    assert "no parameter 'x'" in str(results[0].error)
    assert results[1].result is not None and results[1].error is None


def test_host_threads_of_their_own_take_turns(sample: IntelEnclave) -> None:
    """ECALLs from the caller's own host threads share the one CPU too."""
    got: list[object] = []
    workers = [
        threading.Thread(target=lambda: got.append(sample.ecall("ecall_increase_counter").retval))
        for _ in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(got) == [0, 0, 0, 2000]  # type: ignore[type-var]


# -- the scheduler alone ----------------------------------------------------------------


def _run(scheduler: Scheduler, bodies: list[Callable[[], None]]) -> list[BaseException | None]:
    """Run ``bodies`` as queued tasks, one host thread each; each one's exception."""
    tasks = [scheduler.queue(f"t{i}") for i in range(len(bodies))]
    errors: list[BaseException | None] = [None] * len(bodies)

    def work(i: int) -> None:
        try:
            with scheduler.expecting(tasks[i]), scheduler.turn(f"t{i}"):
                bodies[i]()
        except BaseException as exc:
            errors[i] = exc

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(bodies))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=10)
        assert not w.is_alive(), "the scheduler hung"
    return errors


def test_scheduler_keeps_a_wake_sent_before_the_wait() -> None:
    """se_event: a wake-up with nobody asleep is counted, and the next wait takes it."""
    s = Scheduler(hex)
    log: list[str] = []

    def waker() -> None:
        s.wake(0x1000)
        s.wake(0x1000)
        log.append("woke twice")

    def waiter() -> None:
        s.wait(0x1000)
        s.wait(0x1000)
        log.append("waited")

    assert _run(s, [waker, waiter]) == [None, None]
    assert (log, s.sleeps, s.events) == (["woke twice", "waited"], 0, {0x1000: 0})


def test_scheduler_runs_tasks_in_order_and_switches_only_at_waits() -> None:
    s = Scheduler(hex)
    log: list[str] = []

    def first() -> None:
        log.append("a1")
        s.wait(0xA)  # gives the CPU to the second
        log.append("a2")

    def second() -> None:
        log.append("b1")
        s.wake(0xA)  # the first becomes ready, but runs only when this one is done
        log.append("b2")

    assert _run(s, [first, second]) == [None, None]
    assert (log, s.sleeps) == (["a1", "b1", "b2", "a2"], 1)


def test_scheduler_fails_every_sleeper_when_none_can_be_woken() -> None:
    s = Scheduler(lambda tcs: f"{tcs:#x}")
    errors = _run(s, [lambda: s.wait(0x1000), lambda: s.wait(0x2000), lambda: None])
    assert [type(e) for e in errors] == [Deadlock, Deadlock, type(None)]
    assert (
        str(errors[0])
        == str(errors[1])
        == (
            "deadlock: every enclave thread waits for an untrusted event "
            "(t0 on TCS 0x1000, t1 on TCS 0x2000)"
        )
    )
