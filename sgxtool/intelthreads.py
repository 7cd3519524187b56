"""Several enclave threads on one simulated CPU: how Intel's uRTS runs concurrent ECALLs.

An application built with Intel's SDK calls ECALLs from several host threads; the uRTS
gives each its own TCS, and the tRTS's mutexes and condition variables (sgx_thread_*)
park a thread with the OCALL ``sgx_thread_wait_untrusted_event_ocall`` and wake it with
``sgx_thread_set_untrusted_event_ocall`` (``_setwait_``, ``_set_multiple_``): one event
per TCS, a counter that keeps a wake-up sent before the wait (linux-sgx
``psw/urts/enclave_mutex.cpp``, ``common/src/se_event.c``; ``shared/reference/intel-sdk.md``
4, built-in OCALLs).

The simulated machine has one CPU and its device is not thread-safe, so the host threads
take turns (:class:`Scheduler`): exactly one is on the CPU, in ``enter`` or serving an
OCALL, and it gives the CPU up only when its enclave thread waits for an event nobody has
set yet, at the EEXIT of that OCALL. Everything the waiting thread needs to go on is in its
TCS, SSA and stack, inside the enclave, as on hardware. The next thread is the first
ready one in arrival order, so a run is reproducible. When every thread waits, none can
be woken: that deadlock fails every waiting ECALL with one message, and the enclave
counts as crashed (its threads are stopped inside it, holding its locks).

    with IntelEnclave.load("enclave.signed.so", edl="Enclave.edl") as enclave:
        results = enclave.run_threads([ThreadCall("ecall_consumer"),
                                       ThreadCall("ecall_producer")])
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sgxtool.errors import SgxToolError
from sgxtool.runtime import Allowance, EnclaveCrashed

if TYPE_CHECKING:
    from sgxtool.intelrt import IntelCallResult, IntelEnclave
    from sgxtool.marshal import OcallCall, Value

__all__ = ["Deadlock", "Scheduler", "Task", "ThreadCall", "ThreadResult", "run_threads"]

_HINT = "start ECALLs that wait for one another together: sgxtool run --thread, or " \
    "IntelEnclave.run_threads"  # fmt: skip


class Deadlock(EnclaveCrashed):
    """Every enclave thread in progress waits for an event only another could set."""


@dataclass(frozen=True)
class ThreadCall:
    """One ECALL for :func:`run_threads`: its EDL name and parameter values by name."""

    entry: str
    args: Mapping[str, Value] = field(default_factory=dict)


@dataclass(frozen=True)
class ThreadResult:
    """How one thread's ECALL ended: its result, or the error that stopped it."""

    call: ThreadCall
    result: IntelCallResult | None
    error: SgxToolError | None
    tcs: int | None = None  # enclave offset of the TCS it ran on
    ended: int | None = None  # its place among the threads in ending: 0 first, 1 next...

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"entry": self.call.entry, "ok": self.error is None}
        out["tcs"] = None if self.tcs is None else f"{self.tcs:#x}"
        out["ended"] = self.ended
        if self.result is not None:
            shown = self.result.as_json()
            out |= {"retval": shown["retval"], "outputs": shown["outputs"]}
        if self.error is not None:
            out["error"] = str(self.error)
        return out


@dataclass(eq=False)
class Task:
    """One host thread's ECALL in progress, with the nested ECALLs its OCALL handlers make
    on the same host thread."""

    name: str
    depth: int = 0  # ECALLs of this host thread in progress (nested ones included)
    allowance: Allowance | None = None  # budget and deadline of the outermost ECALL
    tcs: int | None = None  # the TCS its ECALLs run on
    in_ocall: list[tuple[int, int]] = field(default_factory=list)  # (TCS, host stack)
    in_exception: bool = False  # inside ECMD_EXCEPT (a second fault there is fatal)
    failure: str | None = None  # why the scheduler gave up its wait (a deadlock)
    queued: bool = False  # started by run_threads, together with the others
    ended: int | None = None  # its place among the tasks that have ended


class Scheduler:
    """The one CPU of an enclave's machine, shared by the host threads that call it, and
    the untrusted events its threads wait on (keyed by TCS address)."""

    def __init__(self, describe: Callable[[int], str]) -> None:
        self._describe = describe  # how a message names a TCS
        self._cond = threading.Condition()
        self._local = threading.local()
        self._owner: Task | None = None
        self._ready: deque[Task] = deque()
        self._waiting: dict[int, Task] = {}  # TCS -> the task asleep on its event
        self.events: dict[int, int] = {}  # TCS -> wake-ups sent before any wait
        self.sleeps = 0  # times a thread gave the CPU up to wait for its event
        self._ended = 0  # tasks ended so far

    # -- turns ------------------------------------------------------------------------
    @contextmanager
    def turn(self, name: str) -> Iterator[Task]:
        """Hold the CPU for an ECALL ``name`` of this host thread; a nested ECALL (from an
        OCALL handler) keeps the turn its host thread already has."""
        current: Task | None = getattr(self._local, "task", None)
        if current is not None and current.depth:
            current.depth += 1
            try:
                yield current
            finally:
                current.depth -= 1
            return
        task = getattr(self._local, "expected", None) or Task(name)
        self._acquire(task)
        self._local.task, task.depth = task, 1
        try:
            yield task
        finally:
            self._local.task, task.depth = None, 0
            with self._cond:
                task.ended, self._ended = self._ended, self._ended + 1
                self._release_locked()

    @contextmanager
    def expecting(self, task: Task) -> Iterator[None]:
        """Run this host thread's next ECALL as ``task``, queued beforehand (:meth:`queue`);
        if it never starts (a bad name), it leaves the queue."""
        self._local.expected = task
        try:
            yield
        finally:
            self._local.expected = None
            with self._cond:
                if task in self._ready:
                    self._ready.remove(task)
                elif self._owner is task and not task.depth:
                    self._release_locked()

    def queue(self, name: str) -> Task:
        """A task ready to run before its host thread starts, so that the first to run
        cannot mistake the others for absent (:func:`run_threads`)."""
        task = Task(name, queued=True)
        with self._cond:
            self._ready.append(task)
        return task

    def _acquire(self, task: Task) -> None:
        with self._cond:
            if self._owner is not task and task not in self._ready:
                self._ready.append(task)
            self._dispatch()
            self._cond.wait_for(lambda: self._owner is task)

    def _release_locked(self) -> None:
        self._owner = None
        self._dispatch()

    def _dispatch(self) -> None:
        """Give an idle CPU to the first ready task; with none ready and tasks asleep,
        nothing can wake them: fail their waits (a deadlock)."""
        if self._owner is None and not self._ready and self._waiting:
            why = _deadlock_text([(t.name, self._describe(k)) for k, t in self._waiting.items()])
            for sleeper in self._waiting.values():
                sleeper.failure = why
                self._ready.append(sleeper)
            self._waiting.clear()
        if self._owner is None and self._ready:
            self._owner = self._ready.popleft()
        self._cond.notify_all()

    # -- untrusted events (se_event) ----------------------------------------------------
    def wait(self, tcs: int) -> None:
        """``se_event_wait`` by the thread on the CPU: take a wake-up already sent, or give
        the CPU up until one comes; :class:`Deadlock` if none can."""
        with self._cond:
            task = self._owner
            assert task is not None and task is self._local.task, "wait off the CPU"
            if self.events.get(tcs, 0) > 0:
                self.events[tcs] -= 1
                return
            if tcs in self._waiting:  # one TCS, one thread: the enclave broke the contract
                raise SgxToolError(f"two threads wait on the event of TCS {self._describe(tcs)}")
            self._waiting[tcs] = task
            self.sleeps += 1
            self._release_locked()
            self._cond.wait_for(lambda: self._owner is task)
            if task.failure is not None:
                raise Deadlock(task.failure, hint=None if task.queued else _HINT)

    def wake(self, tcs: int) -> None:
        """``se_event_wake``: the thread asleep on ``tcs`` becomes ready (it runs when the
        CPU is given up), else the wake-up is kept for its next wait."""
        with self._cond:
            sleeper = self._waiting.pop(tcs, None)
            if sleeper is None:
                self.events[tcs] = self.events.get(tcs, 0) + 1
            else:
                self._ready.append(sleeper)


def _deadlock_text(waiting: list[tuple[str, str]]) -> str:
    who = ", ".join(f"{name} on TCS {tcs}" for name, tcs in waiting)
    if len(waiting) == 1:
        return (
            f"deadlock: {who} waits for an untrusted event that no other enclave thread "
            "in progress can set"
        )
    return f"deadlock: every enclave thread waits for an untrusted event ({who})"


# -- running several ECALLs at once ----------------------------------------------------


def run_threads(enclave: IntelEnclave, calls: Sequence[ThreadCall]) -> list[ThreadResult]:
    """Run ``calls`` as concurrent ECALLs, one host thread and one TCS each, as an
    application's threads do; each one's result or error, in the order given."""
    if len(calls) > len(enclave.tcs):
        raise SgxToolError(
            f"{len(calls)} threads need {len(calls)} TCSs; the enclave has {len(enclave.tcs)}",
            hint="TCSNum in Enclave.config.xml sets how many",
        )
    for call in calls:  # before any starts: a wrong name costs nothing
        enclave.edl.ecall(call.entry)
    tasks = [enclave.scheduler.queue(call.entry) for call in calls]
    outcomes: list[IntelCallResult | BaseException | None] = [None] * len(calls)

    def work(i: int) -> None:
        try:
            with enclave.scheduler.expecting(tasks[i]):
                outcomes[i] = enclave.ecall(calls[i].entry, **calls[i].args)
        except BaseException as exc:  # sorted below: a thread's error, or a bug
            outcomes[i] = exc

    workers = [threading.Thread(target=work, args=(i,), daemon=True,
                                name=f"enclave thread {i} ({call.entry})")
               for i, call in enumerate(calls)]  # fmt: skip
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join()
    except BaseException:  # an interrupt: no thread may run on into the enclave's teardown
        enclave.crashed = enclave.crashed or "interrupted while its threads ran"
        for worker in workers:
            worker.join()  # each stops at its next entry, or at its deadline
        raise
    rank = {id(t): i for i, t in enumerate(sorted(tasks, key=lambda t: (t.ended is None, t.ended)))}
    results = []
    for call, task, outcome in zip(calls, tasks, outcomes, strict=True):
        tcs = None if task.tcs is None else task.tcs - enclave.base
        if isinstance(outcome, SgxToolError):
            results.append(ThreadResult(call, None, outcome, tcs, rank[id(task)]))
        elif isinstance(outcome, BaseException) or outcome is None:
            raise outcome or SgxToolError(f"thread {call.entry} ended without a result")
        else:
            results.append(ThreadResult(call, outcome, None, tcs, rank[id(task)]))
    return results


# -- the SDK's event OCALLs (sgx_tstdc.edl), served by the scheduler -------------------


def _pointer(value: object) -> int:
    return value if isinstance(value, int) else 0


def wait_event(enclave: IntelEnclave, call: OcallCall) -> int:
    enclave.scheduler.wait(_pointer(call.values["self"]))
    return 0


def set_event(enclave: IntelEnclave, call: OcallCall) -> int:
    enclave.scheduler.wake(_pointer(call.values["waiter"]))
    return 0


def setwait_events(enclave: IntelEnclave, call: OcallCall) -> int:
    enclave.scheduler.wake(_pointer(call.values["waiter"]))
    enclave.scheduler.wait(_pointer(call.values["self"]))
    return 0


def set_multiple_events(enclave: IntelEnclave, call: OcallCall) -> int:
    raw = call.values["waiters"]
    data = bytes(raw) if isinstance(raw, (bytes, bytearray)) else b""
    for (waiter,) in struct.iter_unpack("<Q", data[: len(data) // 8 * 8]):
        enclave.scheduler.wake(waiter)
    return 0


EVENT_OCALLS = {
    "sgx_thread_wait_untrusted_event_ocall": wait_event,
    "sgx_thread_set_untrusted_event_ocall": set_event,
    "sgx_thread_setwait_untrusted_events_ocall": setwait_events,
    "sgx_thread_set_multiple_untrusted_events_ocall": set_multiple_events,
}
