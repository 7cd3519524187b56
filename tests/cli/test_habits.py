"""Shell habits: `-` for stdin and stdout, exit 2 for bad input, warnings where output would
mislead, messages that name the fix, notices that say which program made them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import Runner

Vector = Callable[[str], Path]
SIG1_HASH = "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"


def _tool(*args: str | Path, stdin: bytes = b"", cwd: Path | None = None,
          **env: str) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    return subprocess.run(
        [Path(sys.executable).parent / "sgxtool", *map(str, args)],
        input=stdin, capture_output=True, check=False, cwd=cwd, env={**os.environ, **env},
    )  # fmt: skip


ECHO_C = """#include <enclave.h>
SGX_ECALL(echo) {
    if (in_len > out_cap) return SGX_ERR_OUTPUT_TOO_LARGE;
    memcpy(out, in, in_len);
    return (long)in_len;
}
"""


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, sample_key: Path) -> Path:
    """An SDK enclave whose one ECALL, echo, returns its input."""
    from tests.examples.build import compile_enclave, sign_image

    out = tmp_path_factory.mktemp("echo")
    elf = compile_enclave(ECHO_C, out / "echo.elf")
    config = '[enclave]\ndebug = true\n[memory]\nheap_size = "256K"\n'
    return sign_image(elf, config, sample_key, out / "echo.signed")


def test_dash_is_stdin_and_stdout(signed: Path, tmp_path: Path) -> None:
    done = _tool("run", signed, "echo", "--in", "-", "--out", "-", stdin=b"\x00\xffbytes",
                 cwd=tmp_path, HWSIM_MACHINE=str(tmp_path / "m"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"\x00\xffbytes"
    assert not (tmp_path / "-").exists()


def test_bad_date_is_bad_input(sgxtool: Runner, sample_key: Path, tmp_path: Path) -> None:
    r = sgxtool("sign", "--enclave-hash", SIG1_HASH, "-k", str(sample_key), "--date",
                "2024-13-01", "-s", str(tmp_path / "s"))  # fmt: skip
    assert r.code == 2 and "not a date" in r.one_error_line()


def test_dump_of_random_bytes_warns(sgxtool: Runner, tmp_path: Path) -> None:
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes((i * 151 + 7) % 256 for i in range(1808)))
    r = sgxtool("dump", str(noise))
    assert r.code == 1 and "MRSIGNER: " in r.out  # decoded, then refused
    error = r.one_error_line()
    assert "not a plausible SIGSTRUCT: HEADER is" in error and "VENDOR is" in error


def test_dump_of_a_real_sigstruct_is_quiet(sgxtool: Runner, vector: Vector) -> None:
    r = sgxtool("dump", str(vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin")))
    assert r.code == 0 and r.err == ""


def test_top_level_key_names_its_table(sgxtool: Runner, tmp_path: Path) -> None:
    cfg = tmp_path / "enclave.toml"
    cfg.write_text("isvsvn = 2\n\n[enclave]\nisvprodid = 1\n")
    r = sgxtool("sign", "--enclave-hash", SIG1_HASH, "-c", str(cfg), "-k", "x", "-s", "y")
    assert r.code == 2
    assert "isvsvn = 2 is outside any table; it belongs in [enclave]" in r.one_error_line()


def test_import_config_writes_masks_in_hex(sgxtool: Runner, vector: Vector, tmp_path: Path) -> None:
    out = tmp_path / "enclave.toml"
    xml = vector("sgx/intel-linux-sgx/SampleEnclave_Enclave.config.xml")
    assert sgxtool("import-config", str(xml), "-o", str(out)).code == 0
    text = out.read_text()
    assert "miscmask = 0xffffffff" in text
    assert "xfrm_mask = 0x" in text and "attributes_mask = 0x" in text


def test_sign_command_failure_has_no_gendata_hint(
    sgxtool: Runner, sample_key: Path, tmp_path: Path
) -> None:
    bad = f"{sys.executable} -c \"import sys; sys.stdout.write('x' * 384)\""
    r = sgxtool("sign", "--enclave-hash", SIG1_HASH, "--sign-command", bad, "--public-key",
                str(sample_key), "-s", str(tmp_path / "s"))  # fmt: skip
    assert r.code == 1 and "does not verify" in r.one_error_line()
    assert "gendata" not in r.err


def test_created_machine_notice(signed: Path, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    done = _tool("run", signed, "echo", "--in-text", "x", cwd=tmp_path / "work",
                 HWSIM_MACHINE="../sev/sky")  # fmt: skip
    assert done.returncode == 0, done.stderr
    notice = done.stderr.decode().splitlines()[0]
    assert notice == f"sgxtool: created machine {tmp_path / 'sev' / 'sky'} (profile sim)"
