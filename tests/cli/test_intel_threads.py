"""sgxtool run --thread: concurrent ECALLs of an Intel SDK enclave from the command line,
and an in-enclave exception reported as one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from hwsim.machine import Machine
from tests.cli.conftest import Runner

Vector = Callable[[str], Path]
SAMPLE = "sgx/intel-sdk-enclaves/DongpingZ+SgxRandTest"
TYPES = ["--typedef", "buffer_t=void *", "--typedef", "array_t=int[10]"]


def sample_args(vector: Vector, machine: Machine) -> list[str]:
    so = vector(f"{SAMPLE}/enclave.signed.so")
    return [str(so), "--edl", str(so.parent / "Enclave.edl"), *TYPES,
            "--machine", str(machine.path)]  # fmt: skip


def threads(*specs: str) -> list[str]:
    return [x for spec in specs for x in ("--thread", spec)]


def test_producer_and_consumers_from_the_cli(
    sgxtool: Runner, vector: Vector, machine: Machine
) -> None:
    specs = ["ecall_consumer", "ecall_producer", "ecall_consumer", "ecall_consumer",
             "ecall_consumer", "ecall_pointer_count arr=1,2,3,4 cnt=4"]  # fmt: skip
    result = sgxtool("run", *sample_args(vector, machine), *threads(*specs))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[:2] == ["thread 1 ecall_consumer (TCS 0x28c000): ok",
                         "thread 2 ecall_producer (TCS 0x300000): ok"]  # fmt: skip
    assert len(lines) == 6 and lines[-1].endswith("): arr 3,2,1,0")
    assert all(line == line.rstrip() for line in lines)


def test_threads_json(sgxtool: Runner, vector: Vector, machine: Machine) -> None:
    specs = ["ecall_increase_counter"] * 4
    result = sgxtool("run", *sample_args(vector, machine), *threads(*specs), "--json")
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    assert [t["retval"] for t in shown["threads"]] == [0, 0, 0, 2000]
    assert shown["threads"][0] == {
        "entry": "ecall_increase_counter", "ok": True, "tcs": "0x28c000", "ended": 0,
        "retval": 0, "outputs": {},
    }  # fmt: skip
    assert shown["mrenclave"].startswith("ebc97cee")


def test_a_deadlock_is_one_line(sgxtool: Runner, vector: Vector, machine: Machine) -> None:
    result = sgxtool(
        "run", *sample_args(vector, machine), *threads("ecall_consumer", "ecall_consumer")
    )
    assert result.code == 1
    assert result.out.splitlines() == [
        "thread 1 ecall_consumer (TCS 0x28c000): failed",
        "thread 2 ecall_consumer (TCS 0x300000): failed",
    ]
    assert result.one_error_line() == (
        "sgxtool: error: thread 1 ecall_consumer: deadlock: every enclave thread waits for an "
        "untrusted event (ecall_consumer on TCS 0x28c000, ecall_consumer on TCS 0x300000)"
    )
    shown = sgxtool("run", *sample_args(vector, machine), *threads("ecall_consumer"), "--json")
    assert shown.code == 1 and json.loads(shown.out)["threads"][0]["ok"] is False


def test_thread_usage_errors(sgxtool: Runner, vector: Vector, machine: Machine) -> None:
    args = sample_args(vector, machine)
    cases = {
        ("ecall_consumer", "--thread", "ecall_producer"): "either ENTRY",
        ("--thread", "nope"): "no ECALL named 'nope'",
        ("--thread", "ecall_type_int val"): "--thread ecall_type_int: 'val': expected NAME=VALUE",
        ("--thread", "ecall_type_int 'val=1"): "No closing quotation",
        ("--thread", ""): "expected an ECALL name",
        (): "missing argument ENTRY",
    }
    for extra, message in cases.items():
        result = sgxtool("run", *args, *extra)
        assert result.code == 2, (extra, result.err)
        assert message in result.one_error_line(), (extra, result.err)


def test_thread_is_for_intel_enclaves(sgxtool: Runner, enclave_copy: Path) -> None:
    result = sgxtool("run", str(enclave_copy), "--thread", "hello")
    assert result.code == 2
    assert "are for enclaves signed by Intel's sgx_sign" in result.one_error_line()


def test_run_reports_an_enclave_exception_in_one_line(
    sgxtool: Runner, vector: Vector, machine: Machine
) -> None:
    """assert(val == 1234) in ecall_type_int: abort(), #UD, the tRTS says crashed."""
    result = sgxtool("run", *sample_args(vector, machine), "ecall_type_int", "--arg", "val=1")
    assert result.code == 1
    line = result.one_error_line()
    assert "ECALL ecall_type_int took an exception the enclave did not handle: #UD" in line
    assert line.endswith("(ECMD_EXCEPT answered 0x1006, SGX_ERROR_ENCLAVE_CRASHED)")


def test_the_error_line_is_the_first_failure(
    sgxtool: Runner, vector: Vector, machine: Machine
) -> None:
    """The producer runs out of budget while two consumers wait; they then find the
    enclave crashed: the error line is the cause, not the first thread listed."""
    specs = ["ecall_consumer", "ecall_producer"] + ["ecall_consumer"] * 3
    args = [*sample_args(vector, machine), *threads(*specs), "--budget", "1000000"]
    result = sgxtool("run", *args)
    assert result.code == 1
    assert result.out.count(": failed\n") == 3
    assert result.one_error_line().startswith(
        "sgxtool: error: thread 2 ecall_producer: the enclave ran 1000000 instructions"
    )
    shown = json.loads(sgxtool("run", *args, "--json").out)["threads"]
    failed = [t for t in shown if not t["ok"]]
    assert min(failed, key=lambda t: t["ended"]) is shown[1]
    assert all(t["error"].startswith("the enclave crashed earlier (ran 1000000") for t in failed
               if t is not shown[1])  # fmt: skip
