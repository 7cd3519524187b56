"""Fixtures for the SEV tests: the real AMD certificates in ``../shared/vectors/sev``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

GENERATIONS = ("naples", "rome", "milan", "genoa", "turin")
CHAINS = ("naples", "rome")


@pytest.fixture(scope="session")
def sev_vector(vector: Callable[[str], Path]) -> Callable[[str], bytes]:
    """``sev_vector("naples/pek.cert")``: bytes of a file under ``sev/virtee-sev``."""
    return lambda relative: vector(f"sev/virtee-sev/{relative}").read_bytes()


@pytest.fixture(scope="session")
def sev_expected(vector: Callable[[str], Path]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(vector("sev/expected.json").read_text())
    return data
