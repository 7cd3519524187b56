"""Inspecting enclaves: typed results, and verification that streams what it measures."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

from hwsim.sgx.arch import PageType, secinfo_flags
from sgxtool.build import Target, sign_enclave
from sgxtool.config import EnclaveConfig
from sgxtool.info import describe, measure, verify
from sgxtool.keys import load_private_key
from sgxtool.layout import LayoutBuilder, Region
from sgxtool.sgxs import write_sgxs
from sgxtool.sign import KeySigner

RW = secinfo_flags(PageType.REG, 3)


def test_verify_sgxs_memory_stays_bounded(tmp_path: Path, sample_key: Path) -> None:
    """Issue: verify --enclave X.sgxs held 4 KiB per EADD record (80 MiB for these 20,000
    records, 941 MB for a 12.8 MB SGXS); the stream is hashed as it is read instead."""
    b = LayoutBuilder()
    b.add(Region(0, 20_000, RW, "heap", "heap", mrmask=0))
    sgxs = tmp_path / "big.sgxs"
    digest = write_sgxs(b.build(), sgxs)
    assert sgxs.stat().st_size == 64 * 20_001
    sig = tmp_path / "big.sig"
    signer = KeySigner(load_private_key(sample_key))
    sign_enclave(Target(EnclaveConfig(), sgxs), signer, 0x20240101, sig_out=sig)
    tracemalloc.start()
    try:
        report = verify(sig, enclave=sgxs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.measured and report.checks[-1] == "MRENCLAVE"
    assert report.mrenclave == digest
    assert peak < 8 << 20, f"verify peaked at {peak >> 20} MiB"


def test_typed_results_render_the_json_schema(tmp_path: Path, sample_key: Path) -> None:
    b = LayoutBuilder()
    b.add(Region(0, 3, RW, "heap", "heap", mrmask=0))
    sgxs = tmp_path / "e.sgxs"
    digest = write_sgxs(b.build(), sgxs)
    measured = measure(sgxs, None)
    assert measured.as_json() == {
        "file": str(sgxs),
        "kind": "SGXS stream",
        "mrenclave": digest.hex(),
    }
    sig = tmp_path / "e.sig"
    signer = KeySigner(load_private_key(sample_key))
    made = sign_enclave(Target(EnclaveConfig(), sgxs), signer, 0x20240101, sig_out=sig)
    dumped = describe(sig)
    assert dumped.sigstruct == made and dumped.mrenclave == digest
    assert dumped.as_json()["mrsigner"] == made.mrsigner.hex()
    unmeasured = verify(sig)
    assert not unmeasured.measured
    assert unmeasured.as_json()["checks"] == ["format", "exponent", "signature", "Q1/Q2"]


def test_measure_loads_no_cryptography(tmp_path: Path, enclave_elf: Path) -> None:
    """Measuring needs no key: the command must not pay for importing cryptography."""
    code = (
        "import sys\n"
        "from sgxtool._cli import main\n"
        "try:\n"
        "    main(['measure', sys.argv[1], '-c', sys.argv[2]])\n"
        "finally:\n"
        "    print(sorted(m for m in sys.modules if m.startswith('cryptography')))\n"
    )
    toml = tmp_path / "enclave.toml"
    toml.write_text("[memory]\nthreads = 1\n")
    done = subprocess.run([sys.executable, "-c", code, str(enclave_elf), str(toml)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    lines = done.stdout.splitlines()
    assert len(lines[0]) == 64 and lines[-1] == "[]", done.stdout + done.stderr
