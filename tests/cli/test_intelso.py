"""sgxtool dump, verify and measure on enclaves signed by Intel's sgx_sign."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sgxtool.errors import ImageError
from sgxtool.intelso import read_metadata
from tests.cli.conftest import Runner
from tests.sgxtool.test_intelso import ENCLAVES, MRSIGNER_INTEL_SAMPLE, Vector
from tests.sgxtool.test_intelso import so_path as _so


@pytest.mark.parametrize(("folder", "expected", "versions"), ENCLAVES)
def test_cli_dump_verify_measure(
    sgxtool: Runner, vector: Vector, folder: str, expected: str, versions: list[str]
) -> None:
    so = str(_so(vector, folder))
    verified = sgxtool("verify", so, "--json")
    assert verified.code == 0, verified.err
    assert "MRENCLAVE" in json.loads(verified.out)["checks"]
    dumped = json.loads(sgxtool("dump", so, "--json").out)
    assert dumped["kind"] == "Intel SGX SDK signed enclave"
    assert (dumped["mrenclave"], dumped["mrsigner"]) == (expected, MRSIGNER_INTEL_SAMPLE)
    assert [c["version"] for c in dumped["intel_metadata"]] == versions
    measured = json.loads(sgxtool("measure", so, "--json").out)
    assert measured["mrenclave"] == expected


def test_tampered_code_fails_verification(sgxtool: Runner, vector: Vector, tmp_path: Path) -> None:
    so = tmp_path / "enclave.signed.so"
    shutil.copy(_so(vector, "ShuntaIshihara+test_hash_SGX"), so)
    so.chmod(0o644)
    data = bytearray(so.read_bytes())
    data[0x1100] ^= 0x01  # inside the first PT_LOAD segment's measured bytes
    so.write_bytes(data)
    result = sgxtool("verify", str(so))
    assert result.code == 1
    assert "MRENCLAVE mismatch" in result.one_error_line()


def test_truncated_metadata_is_one_clear_error(
    sgxtool: Runner, vector: Vector, tmp_path: Path
) -> None:
    original = _so(vector, "ShuntaIshihara+test_hash_SGX")
    copy = read_metadata(original)[0]
    so = tmp_path / "enclave.signed.so"
    data = bytearray(original.read_bytes())
    data[copy.file_offset + 16 : copy.file_offset + 20] = (0xFFFFFF).to_bytes(4, "little")
    so.write_bytes(data)
    with pytest.raises(ImageError, match="bad size"):
        read_metadata(so)
    result = sgxtool("dump", str(so))
    assert result.code == 2
    assert "bad size" in result.one_error_line()
