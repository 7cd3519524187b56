"""Fixtures shared by every test package.

- ``vectors``: the root of ``../shared/vectors`` (real test data, read in place);
  ``vector("sgx/...")`` gives one file. A missing vector FAILS the test, naming the path.
- ``machine``: a fresh simulated machine (profile ``sim``) in ``tmp_path``;
  ``machine_factory(profile=..., name=...)`` makes more. Both are fast: the SGX vendor's
  RSA-3072 key (about 1.5 s to generate) is made once per session and injected with
  ``Machine.init(..., vendor_key=...)``; every machine still gets its own fused secrets.
- Every test runs with ``HWSIM_MACHINE`` pointing into its own ``tmp_path``, so nothing
  ever touches the user's default machine.
- Hypothesis keeps no example database: a failure found on one machine must not be replayed
  from a local ``.hypothesis/`` folder on the next run (it is reported with its seed and
  belongs in an ``@example``). In CI (``CI`` or ``MEMCRYPT_NO_SKIP`` set) examples are
  derandomized, so a run is repeatable, and a skipped test fails: a skip in CI hides a
  feature that was not tested.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from hwsim.machine import Machine

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

# The SoftHSM2 token fixtures (``softhsm``, ``token``) that the PKCS#11 tests of every tool share.
pytest_plugins = ["tests.softhsm"]

VECTORS = Path(__file__).resolve().parents[1] / ".." / "shared" / "vectors"

MachineFactory = Callable[..., Machine]


def _in_ci() -> bool:
    """CI=true (as CI services set it) or MEMCRYPT_NO_SKIP set to anything but 0/false."""
    flags = (os.environ.get("CI", ""), os.environ.get("MEMCRYPT_NO_SKIP", ""))
    return any(f.strip().lower() not in ("", "0", "false", "no") for f in flags)


settings.register_profile("local", database=None)
settings.register_profile("ci", database=None, derandomize=True)
settings.load_profile("ci" if _in_ci() else "local")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """In CI a skip is a failure that names what was skipped and why."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if _in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may skip: {reason}"
    return None


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The shared vectors directory; fails (not skips) when it is missing."""
    if not VECTORS.is_dir():
        pytest.fail(f"test vectors directory {VECTORS.resolve()} is missing")
    return VECTORS.resolve()


@pytest.fixture(scope="session")
def vector(vectors: Path) -> Callable[[str], Path]:
    """``vector("sgx/fortanix-rust-sgx/report.sgxs")``: one vector file, or a failed test."""

    def find(relative: str) -> Path:
        path = vectors / relative
        if not path.is_file():
            pytest.fail(f"test vector {path} is missing")
        return path

    return find


@pytest.fixture(scope="session")
def sgx_vendor_key() -> RSAPrivateKey:
    """One RSA-3072 e=3 SGX vendor key for the whole session."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=3, key_size=3072)


@pytest.fixture
def machine_factory(tmp_path: Path, sgx_vendor_key: RSAPrivateKey) -> MachineFactory:
    """``machine_factory(profile="sim", name=None)``: a new machine under ``tmp_path``."""
    made: list[Machine] = []

    def make(profile: str = "sim", name: str | None = None) -> Machine:
        path = tmp_path / (name or f"machine-{len(made)}")
        machine = Machine.init(path, profile, vendor_key=sgx_vendor_key)
        made.append(machine)
        return machine

    return make


@pytest.fixture
def machine(machine_factory: MachineFactory) -> Machine:
    """A fresh ``sim`` machine (both vendors' features) in ``tmp_path``."""
    return machine_factory("sim", "machine")


@pytest.fixture(autouse=True)
def _isolated_default_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWSIM_MACHINE", str(tmp_path / "default-machine"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
