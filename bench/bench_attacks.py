"""The attack lab's matrix (``hwsim attack --matrix``), against a baseline in this process.

Baseline: the matrix's fixed cost, making the seven scratch machines (one per column,
vendor key injected) and power-cycling each. Measured: ``run_matrix`` with the same key
(every attack under every protection, scratch machines made and deleted), and the whole
command ``hwsim attack --matrix`` in a fresh interpreter (the vendor key is made there,
about 1.5 s). Recorded, no goal: it is something people run in a classroom.

Run: PYTHONPATH=. python bench/bench_attacks.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import best_of
from cryptography.hazmat.primitives.asymmetric import rsa

from hwsim.attacks.matrix import COLUMNS, column_profile, run_matrix
from hwsim.machine import Machine

REPO = Path(__file__).resolve().parents[1]


def _machines(key: rsa.RSAPrivateKey) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for i, column in enumerate(COLUMNS):
            with Machine.init(Path(tmp) / f"m{i}", column_profile(column, "sim"),
                              vendor_key=key) as machine:  # fmt: skip
                machine.power_cycle()


def _command() -> float:
    start = time.perf_counter()
    code = "from hwsim._cli import main; main(['attack', '--matrix'])"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    base = best_of(3, lambda: _machines(key))
    matrix = best_of(3, lambda: run_matrix("sim", vendor_key=key))
    command = min(_command() for _ in range(2))
    print(f"scratch machines (baseline): {base:.2f} s")
    print(f"run_matrix:                  {matrix:.2f} s ({matrix / base:.1f}x the baseline)")
    print(f"hwsim attack --matrix:       {command:.2f} s (fresh interpreter, new vendor key)")


if __name__ == "__main__":
    main()
