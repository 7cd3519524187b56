"""Every reporting command through a real pipe, as release scripts run them: whole values,
one field per line, no trailing spaces, no colour codes; and tables again on request."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Vector = Callable[[str], Path]
SIG1_MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
SIG1_MRENCLAVE = "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"


def piped(program: str, *args: str | Path, env: dict[str, str] | None = None) -> str:
    """``program args | cat``: stdout is a pipe; checks the output is clean plain text."""
    done = subprocess.run(
        [Path(sys.executable).parent / program, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode in (0, 1), done.stderr
    for line in done.stdout.splitlines():
        assert line == line.rstrip(), f"trailing space: {line!r}"
        assert "\x1b[" not in line and "\u2026" not in line, f"styled or cut: {line!r}"
        assert not re.search(r"[\u2500-\u257f]", line), f"table border in a pipe: {line!r}"
    return done.stdout


def grep(text: str, pattern: str) -> list[str]:
    return [line for line in text.splitlines() if pattern in line]


@pytest.fixture
def work(tmp_path: Path, enclave_elf: Path, sample_key: Path) -> Path:
    (tmp_path / "enclave.elf").write_bytes(enclave_elf.read_bytes())
    (tmp_path / "enclave.toml").write_text("[enclave]\nisvprodid = 2\nisvsvn = 1\n")
    piped("sgxtool", "sign", tmp_path / "enclave.elf", "-k", sample_key, "-o",
          tmp_path / "enclave.signed")  # fmt: skip
    return tmp_path


def test_sgxtool_dump_whole_values(vector: Vector) -> None:
    sig1 = vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin")
    out = piped("sgxtool", "dump", sig1)
    assert grep(out, "MRSIGNER") == [f"MRSIGNER: {SIG1_MRSIGNER}"]
    assert grep(out, "MRENCLAVE") == [f"MRENCLAVE: {SIG1_MRENCLAVE}"]
    (signature,) = grep(out, "SIGNATURE:")
    assert len(signature.split()[1]) == 768  # 384 bytes, not cut
    attributes = [line for line in out.splitlines() if line.startswith("ATTRIBUTES:")]
    assert attributes[1] == "ATTRIBUTES: xfrm  0x0000000000000003 (X87 SSE)"


def test_sgxtool_reports(work: Path, sample_key: Path) -> None:
    image, elf = work / "enclave.signed", work / "enclave.elf"
    dumped = piped("sgxtool", "dump", image)
    (mrenclave,) = [line.split()[1] for line in grep(dumped, "MRENCLAVE:")]
    assert piped("sgxtool", "measure", image).strip() == mrenclave
    assert f"MRENCLAVE: {mrenclave}" in grep(piped("sgxtool", "verify", image), "MRENCLAVE")
    signed = piped("sgxtool", "sign", elf, "-k", sample_key, "-s", work / "again.sig")
    assert grep(signed, "MRSIGNER") == [f"MRSIGNER: {SIG1_MRSIGNER}"]
    layout = piped("sgxtool", "layout", elf)
    assert layout.splitlines()[1].split("\t") == [
        "offset", "pages", "type/perms", "measured", "region"
    ]  # fmt: skip
    assert grep(layout, "thread 0 TCS")[0].split("\t")[2] == "TCS ---"


def test_hwsim_reports() -> None:
    status = piped("hwsim", "status")
    (line,) = grep(status, "SGX vendor MRSIGNER")
    assert re.fullmatch(r"SGX vendor MRSIGNER: [0-9a-f]{64}", line)
    profiles = piped("hwsim", "profiles")
    from hwsim.profiles import PROFILES

    for profile in PROFILES.values():
        (row,) = grep(profiles, profile.description)
        assert row.split("\t")[0].startswith(profile.name)
    lc = piped("hwsim", "sgx", "launch-control", "show")
    assert re.search(r"^vendor key hash: [0-9a-f]{64}$", lc, re.M)
    vendor = piped("hwsim", "vendor", "show")
    assert re.search(r"^Launch Enclave MRENCLAVE: +[0-9a-f]{64}$", vendor, re.M)


def test_sevtool_reports(tmp_path: Path, vector: Vector) -> None:
    show = piped("sevtool", "show")
    assert grep(show, "owner") == ["owner: self-owned"]
    cek, ask = "sev/virtee-sev/naples/cek.cert", "sev/virtee-sev/builtin-sev/rome/ask.cert"
    bad = piped("sevtool", "verify", "--cek", vector(cek), "--ask", vector(ask), "--partial")
    (failed,) = grep(bad, "FAILED")
    assert failed.endswith("[check: generation]")
    piped("sevtool", "export", tmp_path / "chain")
    good = piped("sevtool", "verify", tmp_path / "chain", "--partial")
    assert "chain verified" in good.splitlines()  # AMD's roots are built in


def test_tables_on_request_and_no_color(vector: Vector, tmp_path: Path) -> None:
    """MEMCRYPT_FORMAT=table gives the terminal's table; paths stay text, not markup."""
    odd = tmp_path / "x[" / "]y[bold]"
    odd.mkdir(parents=True)
    sig = odd / "s.bin"
    sig.write_bytes(vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin").read_bytes())
    done = subprocess.run(
        [Path(sys.executable).parent / "sgxtool", "dump", str(sig)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "MEMCRYPT_FORMAT": "table", "NO_COLOR": "1", "COLUMNS": "200"},
    )  # fmt: skip
    assert "x[/]y[bold]" in done.stdout and "\u2502" in done.stdout
    assert "\x1b[" not in done.stdout


def test_no_color_follows_the_convention(monkeypatch: pytest.MonkeyPatch) -> None:
    from memcrypt.cli import no_color

    monkeypatch.delenv("TERM", raising=False)
    monkeypatch.setenv("NO_COLOR", "")
    assert not no_color()  # set but empty: no-color.org says colour stays
    monkeypatch.setenv("NO_COLOR", "0")
    assert no_color()
