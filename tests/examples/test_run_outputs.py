"""`sgxtool run --out` (issue 10 item 8): what an enclave returns (unsealed secrets) keeps
the stricter of the umask and the replaced file's mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hwsim.machine import Machine
from tests.cli.conftest import make_runner
from tests.examples.conftest import Built


def test_run_out_never_loosens_a_private_file(
    signed_example: Built, machine: Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sgxtool._cli import main

    run = make_runner(main, capsys)
    image = str(signed_example("hello", "hello"))
    out = tmp_path / "unsealed"
    out.write_bytes(b"old secret")
    out.chmod(0o600)
    args = ["run", image, "hello", "--out", str(out), "--machine", str(machine.path)]
    assert run(*args).code == 0
    assert (out.read_bytes(), stat.S_IMODE(out.stat().st_mode)) == (b"Hello, world!", 0o600)
    fresh = tmp_path / "fresh"
    old = os.umask(0o077)
    try:
        assert run(*args[:3], "--out", str(fresh), *args[5:]).code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_run_keeps_to_the_work_limit(
    signed_example: Built, machine: Machine, capsys: pytest.CaptureFixture[str]
) -> None:
    from sgxtool._cli import main

    run = make_runner(main, capsys)
    image = str(signed_example("hello", "hello"))
    r = run("run", image, "hello", "--max-size", "4K", "--machine", str(machine.path))
    assert r.code == 1 and "load " in r.err and "above the limit of 4.0 KiB" in r.err
