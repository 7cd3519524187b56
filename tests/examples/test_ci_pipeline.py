"""examples/ci/pipeline.sh, run as a CI job runs it: the key from a secret variable, the
policy checked, the smoke ECALL answered; a violation fails the job naming it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.examples.build import EXAMPLES

SAMPLE_MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"


def _pipeline(script: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["sh", str(script)], capture_output=True, text=True, check=False, cwd=out,
        env={**os.environ, "PATH": path, "OUT": str(out / "ci-out"), **env},
    )  # fmt: skip


def test_pipeline_passes_with_the_release_key(
    vector: Callable[[str], Path], tmp_path: Path
) -> None:
    key = vector("sgx/fortanix-rust-sgx/sig1.key.pem").read_text()
    script = EXAMPLES / "ci" / "pipeline.sh"
    expected = SAMPLE_MRSIGNER.upper()  # case does not matter
    done = _pipeline(script, tmp_path, SGX_SIGNING_KEY_PEM=key, EXPECTED_MRSIGNER=expected)
    assert done.returncode == 0, done.stderr
    assert "pong: release check" in done.stdout and "== pipeline passed" in done.stdout
    out = tmp_path / "ci-out"
    assert (out / "smoke.signed.elf").is_file() and (out / "sigstruct.json").is_file()
    assert not (out / "signing-key.pem").exists()  # the secret is not left behind


def test_pipeline_fails_on_each_violation(vector: Callable[[str], Path], tmp_path: Path) -> None:
    """A copy whose enclave.toml is DEBUG with ISVSVN 2, signed by another key: three
    violations, each named, and the job fails before the smoke test."""
    copy = tmp_path / "ci"
    shutil.copytree(EXAMPLES / "ci", copy)
    toml = copy / "enclave.toml"
    toml.write_text(toml.read_text().replace("isvsvn = 3", "isvsvn = 2").replace(
        "debug = false", "debug = true"))  # fmt: skip
    key = vector("sgx/intel-linux-sgx/ref_le_enclave_private_test_key.pem")
    done = _pipeline(copy / "pipeline.sh", tmp_path,
                     SGX_SIGNING_KEY_FILE=str(key), EXPECTED_MRSIGNER=SAMPLE_MRSIGNER)  # fmt: skip
    assert done.returncode == 1
    violations = [line for line in done.stderr.splitlines() if "policy violation" in line]
    assert len(violations) == 3, done.stderr
    assert "DEBUG" in violations[1] and "ISVSVN is 2" in violations[2]
    assert "smoke ECALL" not in done.stdout


def test_pipeline_needs_a_key_and_a_policy(tmp_path: Path) -> None:
    done = _pipeline(EXAMPLES / "ci" / "pipeline.sh", tmp_path)
    assert done.returncode != 0 and "EXPECTED_MRSIGNER" in done.stderr
