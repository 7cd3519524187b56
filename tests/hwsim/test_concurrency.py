"""Many processes on one machine, and processes killed in the middle of a transaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hwsim.machine import Machine
from hwsim.memory import HOST_KEYID, PAGE_SIZE

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 40
COUNTER_MSR = 0x8C  # IA32_SGXLEPUBKEYHASH0: writable on the sim part (FLC, SGX_LC set)

_WORKER = textwrap.dedent(
    """
    import sys
    from hwsim.machine import Machine
    from hwsim.status import machine_status

    path, worker, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    machine = Machine.open(path)
    for i in range(rounds):
        if worker % 4 == 3:  # status readers
            machine_status(machine)
            continue
        with machine.transaction() as txn:
            txn.wrmsr(0x8C, txn.rdmsr(0x8C) + 1)
            count = int(txn.get("test", "count") or b"0") + 1
            txn.put("test", "count", str(count).encode())
            page = bytes([i]) * 4096 * 2
            txn.dram_write(0x100000 + worker * 0x2000, page, 0)
    """
)


def _spawn(script: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_eight_processes_lose_no_update(machine: Machine) -> None:
    with machine.transaction() as txn:
        txn.wrmsr(COUNTER_MSR, 0)
    procs = [_spawn(_WORKER, str(machine.path), str(w), str(ROUNDS)) for w in range(8)]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else b"") for p in procs]
    assert results == [(0, b"")] * 8
    writers = [w for w in range(8) if w % 4 != 3]
    with machine.transaction(write=False) as txn:
        assert txn.rdmsr(COUNTER_MSR) == len(writers) * ROUNDS
        assert txn.get("test", "count") == str(len(writers) * ROUNDS).encode()
        for w in writers:
            page = txn.dram_read(0x100000 + w * 0x2000, 2 * PAGE_SIZE, HOST_KEYID)
            assert page == bytes([ROUNDS - 1]) * 2 * PAGE_SIZE


_KILLED_WRITER = textwrap.dedent(
    """
    import pathlib, sys, time
    from hwsim.machine import Machine

    path, marker, mode = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
    machine = Machine.open(path)
    generation = 1
    while True:
        with machine.transaction() as txn:
            for page in range(16):  # one page per call: the transaction spans them all
                txn.dram_write(0x200000 + page * 4096, bytes([generation]) * 4096, 0)
                if mode == "pause" and page == 8:
                    marker.write_text("half")
                    time.sleep(600)
        if mode == "commit":
            marker.write_text("done")
            time.sleep(600)
        generation = generation % 255 + 1
        marker.write_text(str(generation))
    """
)


def _wait_for(marker: Path) -> None:
    while not marker.exists():  # the writer makes it; the test timeout bounds this
        time.sleep(0.02)


def _generations(machine: Machine) -> set[int]:
    with Machine.open(machine.path) as again, again.transaction(write=False) as txn:
        pages = [txn.dram_read(0x200000 + p * 4096, 4096, HOST_KEYID) for p in range(16)]
    assert all(page == page[:1] * 4096 for page in pages)
    return {page[0] for page in pages}


def _fill(machine: Machine, generation: int) -> None:
    with machine.transaction() as txn:
        txn.dram_write(0x200000, bytes([generation]) * 16 * 4096, HOST_KEYID)


def _kill_writer(machine: Machine, tmp_path: Path, mode: str, delay: float = 0.0) -> None:
    marker = tmp_path / f"marker-{mode}"
    proc = _spawn(_KILLED_WRITER, str(machine.path), str(marker), mode)
    _wait_for(marker)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_transaction_leaves_state_before(machine: Machine, tmp_path: Path) -> None:
    _fill(machine, 0)
    _kill_writer(machine, tmp_path, "pause")
    assert _generations(machine) == {0}


def test_sigkill_after_commit_leaves_state_after(machine: Machine, tmp_path: Path) -> None:
    _fill(machine, 0)
    _kill_writer(machine, tmp_path, "commit")
    assert _generations(machine) == {1}


def test_sigkill_at_arbitrary_moments_never_mixes(machine: Machine, tmp_path: Path) -> None:
    _fill(machine, 0)
    for attempt, delay in enumerate((0.05, 0.13, 0.29)):
        workdir = tmp_path / str(attempt)
        workdir.mkdir()
        _kill_writer(machine, workdir, "loop", delay)
        assert len(_generations(machine)) == 1


_DEFAULT_USER = textwrap.dedent(
    """
    from hwsim.machine import Machine

    print(Machine.default().fused_secret("race").hex())
    """
)


def test_processes_racing_to_create_default_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "ci-machine"
    target.mkdir()  # as `export HWSIM_MACHINE=$(mktemp -d)` leaves it
    monkeypatch.setenv("HWSIM_MACHINE", str(target))
    procs = [_spawn(_DEFAULT_USER) for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert len({out for out, _err in outputs}) == 1
    notices = b"".join(err for _out, err in outputs)
    assert notices.count(b"hwsim: created machine") == 1, notices
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
