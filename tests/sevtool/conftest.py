"""Fixtures for sevtool's tests: the expected results of the SEV vectors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def sev_expected(vector: Callable[[str], Path]) -> dict[str, Any]:
    """``shared/vectors/sev/expected.json``."""
    data: dict[str, Any] = json.loads(vector("sev/expected.json").read_text())
    return data
