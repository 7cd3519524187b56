"""What CI relies on: a skipped test fails there, and hypothesis keeps no local database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]


def _pytest(test_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "MEMCRYPT_NO_SKIP")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "-q", "--rootdir", str(test_file.parent), str(test_file)],
        cwd=ROOT, capture_output=True, text=True, check=False, env={**clean, **env},
    )  # fmt: skip


def test_a_skip_fails_in_ci(tmp_path: Path) -> None:
    test_file = tmp_path / "test_skips.py"
    test_file.write_text(
        "import pytest\n\n"
        "def test_needs_a_tool():\n    pytest.skip('frobnicator not installed')\n\n"
        "@pytest.mark.xfail(reason='known')\ndef test_known():\n    assert False\n"
    )
    local = _pytest(test_file)
    assert local.returncode == 0 and "1 skipped, 1 xfailed" in local.stdout
    for env in ({"CI": "true"}, {"MEMCRYPT_NO_SKIP": "1"}):
        ci = _pytest(test_file, **env)
        assert ci.returncode == 1, ci.stdout
        assert "skipped in CI, where nothing may skip: Skipped: frobnicator" in ci.stdout
        assert "1 failed, 1 xfailed" in ci.stdout
    assert _pytest(test_file, CI="false").returncode == 0


def test_no_example_database() -> None:
    assert settings().database is None
