"""Running the command-line programs in-process, as a user would, capturing everything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.sgxtool.conftest import enclave_copy, enclave_elf, sample_key

__all__ = ["enclave_copy", "enclave_elf", "sample_key"]  # fixtures shared with sgxtool tests


@dataclass
class Result:
    code: int
    out: str
    err: str

    def one_error_line(self) -> str:
        """The error message, asserting it is one line (plus an optional hint line)."""
        lines = self.err.strip().splitlines()
        assert "Traceback" not in self.err
        assert 1 <= len(lines) <= 2, self.err
        assert lines[0].split(":")[1].strip() == "error" or "Error" in lines[0], self.err
        return lines[0]


Runner = Callable[..., Result]


def make_runner(main: Callable[[list[str]], None], capsys: pytest.CaptureFixture[str]) -> Runner:
    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def sgxtool(capsys: pytest.CaptureFixture[str]) -> Runner:
    from sgxtool._cli import main

    return make_runner(main, capsys)


@pytest.fixture
def hwsim(capsys: pytest.CaptureFixture[str]) -> Runner:
    from hwsim._cli import main

    return make_runner(main, capsys)


@pytest.fixture
def sevtool(capsys: pytest.CaptureFixture[str]) -> Runner:
    from sevtool._cli import main

    return make_runner(main, capsys)
