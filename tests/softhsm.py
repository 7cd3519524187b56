"""A SoftHSM2 token for the PKCS#11 tests of every tool (a pytest plugin, loaded by
tests/conftest.py), with keys whose private halves the tests also hold, so that what the
token signs can be compared with what the same key in a file signs.

- ``softhsm``: the token, holding Fortanix's sig1 RSA key (label ``sgx``, id 01), a P-384
  key (``owner``, id 02) and a P-256 key (``p256``, id 03); ``softhsm.uri(label)`` names
  one, ``softhsm.export(label, path)`` writes its PEM.
- ``token``: the PKCS#11 module's path, for tests that only need the token to exist.

One token for the session, in a temporary directory: the PKCS#11 library, once loaded in
the process, keeps the token directory it was first given.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from memcrypt.signer import PrivateKey

# Long enough for tests/test_secrets.py to search outputs for it in every encoding.
PIN = "memcrypt-pin-5a1f0c"
SO_PIN = "87654321"
LABEL = "memcrypt-test"
_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")


def _pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class SoftHsm:
    """One initialised token; ``keys`` are the private keys imported into it, by label."""

    module: str
    workdir: Path
    keys: dict[str, PrivateKey] = field(default_factory=dict)

    def add(self, label: str, key: PrivateKey, key_id: str) -> None:
        pem = self.workdir / f"{label}.import.pem"
        pem.write_bytes(_pem(key))
        subprocess.run(
            ["softhsm2-util", "--import", str(pem), "--token", LABEL, "--label", label,
             "--id", key_id, "--pin", PIN],
            check=True, capture_output=True,
        )  # fmt: skip
        pem.unlink()
        self.keys[label] = key

    def uri(self, label: str, query: str = "") -> str:
        """``pkcs11:token=...;object=LABEL?module-path=...`` plus ``&query`` if given."""
        extra = f"&{query}" if query else ""
        return f"pkcs11:token={LABEL};object={label}?module-path={self.module}{extra}"

    def export(self, label: str, path: Path) -> Path:
        """The key ``label`` as an unencrypted PKCS#8 PEM file."""
        path.write_bytes(_pem(self.keys[label]))
        return path


@pytest.fixture(scope="session")
def softhsm(
    tmp_path_factory: pytest.TempPathFactory, vector: Callable[[str], Path]
) -> Iterator[SoftHsm]:
    module = next((m for m in _MODULES if Path(m).is_file()), None)
    if module is None or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)")
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed (memcrypt[hsm])")
    workdir = tmp_path_factory.mktemp("softhsm")
    (workdir / "tokens").mkdir()
    conf = workdir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {workdir / 'tokens'}\nobjectstore.backend = file\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--pin", PIN,
             "--so-pin", SO_PIN],
            check=True, capture_output=True,
        )  # fmt: skip
        token = SoftHsm(module, workdir)
        sgx_key = serialization.load_pem_private_key(
            vector("sgx/fortanix-rust-sgx/sig1.key.pem").read_bytes(), None
        )
        assert isinstance(sgx_key, rsa.RSAPrivateKey)
        token.add("sgx", sgx_key, "01")
        token.add("owner", ec.generate_private_key(ec.SECP384R1()), "02")
        token.add("p256", ec.generate_private_key(ec.SECP256R1()), "03")
        yield token


@pytest.fixture(scope="session")
def token(softhsm: SoftHsm) -> str:
    return softhsm.module
