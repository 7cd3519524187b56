"""examples/hello: built by its Makefile, signed, and run through the API and the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from hwsim.machine import Machine
from sgxtool.image import read_image
from sgxtool.runtime import Enclave
from tests.cli.conftest import make_runner
from tests.examples.conftest import Built


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from sgxtool._cli import main

    result = make_runner(main, capsys)(*args)
    return result.code, result.out, result.err


def test_hello_greets_from_inside(signed_example: Built, machine: Machine) -> None:
    image = signed_example("hello", "hello")
    with Enclave.load(image, machine=machine) as enclave:
        assert enclave.ecalls == ("hello", "shout")
        assert enclave.call("hello", b"enclave") == b"Hello, enclave!"
        assert enclave.call("hello") == b"Hello, world!"
        assert enclave.mrenclave == read_image(image).sigstruct.enclavehash


def test_hello_prints_through_an_ocall(signed_example: Built, machine: Machine) -> None:
    console = io.StringIO()
    image = signed_example("hello", "hello")
    with Enclave.load(image, machine=machine, console=console) as enclave:
        assert enclave.call("shout", b"from the inside") == b""
    assert console.getvalue() == "from the inside\n"


def test_sgxtool_run(
    signed_example: Built, machine: Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(signed_example("hello", "hello"))
    m = ["--machine", str(machine.path)]
    assert run_cli(capsys, "run", image, "hello", "--in-text", "CLI", *m)[:2] == (
        0,
        "Hello, CLI!\n",
    )
    code, out, _ = run_cli(capsys, "run", image, "hello", "--in-hex", "00ff", *m)
    assert (code, out) == (0, "48656c6c6f2c2000ff21\n")  # not printable: shown as hex
    (tmp_path / "name").write_bytes(b"file")
    result = tmp_path / "greeting"
    code, out, _ = run_cli(
        capsys, "run", image, "hello", "--in", str(tmp_path / "name"), "--out", str(result), *m
    )
    assert (code, out, result.read_bytes()) == (0, "", b"Hello, file!")
    code, out, _ = run_cli(capsys, "run", image, "hello", "--json", *m)
    doc = json.loads(out)
    assert doc["output_text"] == "Hello, world!"
    assert doc["mrenclave"] == read_image(image).sigstruct.enclavehash.hex()
    code, out, err = run_cli(capsys, "run", image, "shout", "--in-text", "to stderr", *m)
    assert (code, out, err) == (0, "", "to stderr\n")


def test_sgxtool_run_refusals(
    signed_example: Built, machine: Machine, capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(signed_example("hello", "hello"))
    m = ["--machine", str(machine.path)]
    code, _, err = run_cli(capsys, "run", image, "nope", *m)
    assert code == 1
    assert err.strip() == (
        "sgxtool: error: the enclave has no ECALL named 'nope' (it has: hello, shout)"
    )
    code, _, err = run_cli(capsys, "run", image, "hello", "--in-text", "a", "--in-hex", "00", *m)
    assert code == 2
    assert "at most one of --in, --in-hex and --in-text" in err
    code, _, err = run_cli(capsys, "run", image, "hello", "--in-hex", "zz", *m)
    assert code == 2
    unsigned = str(Path(image).with_name("hello.elf"))
    code, _, err = run_cli(capsys, "run", unsigned, "hello", *m)
    assert code == 2
    assert "not a signed image" in err
    assert "Traceback" not in err
