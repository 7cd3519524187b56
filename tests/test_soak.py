"""The soak (bench/soak.py) runs a few seconds: the harness works and finds no loss."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

SOAK = Path(__file__).resolve().parents[1] / "bench" / "soak.py"


def test_a_short_soak_finds_no_loss(vector: Callable[[str], Path]) -> None:
    key = vector("sgx/fortanix-rust-sgx/sig1.key.pem")  # making one takes seconds
    args = ["--seconds", "3", "--workers", "3", "--kill-rate", "0.3", "--seed", "7"]
    args += ["--key", str(key)]
    done = subprocess.run(
        [sys.executable, str(SOAK), *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "losses 0" in done.stdout and "failed 0" in done.stdout
