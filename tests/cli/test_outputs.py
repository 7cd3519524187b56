"""Output files through the command line (issue 10 items 7 and 8): one path given for
two outputs, public keys not overwritten silently, devices refused, `-o -` as stdout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import Result, Runner

SIG1_HASH = "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"
KEEP = b"an existing file a refused command must leave alone\n"


def _refused_same_file(result: Result) -> None:
    code, err = result.code, result.err
    assert code == 2, err
    assert "name the same file" in err and "Traceback" not in err


def test_one_path_for_two_outputs_is_refused(
    sgxtool: Runner, sevtool: Runner, sample_key: Path, tmp_path: Path
) -> None:
    same = tmp_path / "same"
    _refused_same_file(sgxtool("keygen", str(same), "--public", str(same)))
    _refused_same_file(sevtool("generate", str(same), str(same)))
    _refused_same_file(
        sgxtool("sign", "--enclave-hash", SIG1_HASH, "-k", str(sample_key), "-s", str(same),
                "-o", str(same))
    )  # fmt: skip
    assert not same.exists()
    link = tmp_path / "link"
    link.symlink_to(same.name)
    _refused_same_file(sgxtool("keygen", str(same), "--public", str(link)))


def test_keygen_keeps_an_existing_public_key(sgxtool: Runner, tmp_path: Path) -> None:
    pub = tmp_path / "k.pub"
    pub.write_bytes(KEEP)
    r = sgxtool("keygen", str(tmp_path / "k.pem"), "--public", str(pub))
    assert r.code == 2 and "k.pub exists; use --force" in r.err
    assert pub.read_bytes() == KEEP and not (tmp_path / "k.pem").exists()


def test_gendata_to_a_device_is_refused_and_dash_is_stdout(sgxtool: Runner, tmp_path: Path) -> None:
    r = sgxtool("gendata", "--enclave-hash", SIG1_HASH, "-o", "/dev/null")
    assert r.code == 2 and "/dev/null is a device" in r.err
    path = tmp_path / "data"
    assert sgxtool("gendata", "--enclave-hash", SIG1_HASH, "-o", str(path)).code == 0
    main = "from sgxtool._cli import main; main()"
    args = ["gendata", "--enclave-hash", SIG1_HASH, "-o", "-"]
    proc = subprocess.run([sys.executable, "-c", main, *args], capture_output=True, check=True)
    assert proc.stdout == path.read_bytes()


def test_sign_to_stdout_keeps_stdout_for_the_sigstruct(sample_key: Path) -> None:
    main = "from sgxtool._cli import main; main()"
    args = ["sign", "--enclave-hash", SIG1_HASH, "-k", str(sample_key), "-s", "-"]
    proc = subprocess.run([sys.executable, "-c", main, *args], capture_output=True, check=True)
    assert len(proc.stdout) == 1808 and b"MRENCLAVE" in proc.stderr
