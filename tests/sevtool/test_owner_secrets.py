"""The guest owner's commands never print the TEK, the TIK or a secret, in any form, in
text, JSON or error output (including the errors a wrong key produces)."""

from __future__ import annotations

import base64
from pathlib import Path

from hwsim.machine import Machine
from tests.sevtool.test_cli import sevtool

SECRET = b"correct horse battery staple 0123456789"


def _forms(data: bytes) -> list[str]:
    return [
        data.hex(),
        data.hex().upper(),
        base64.b64encode(data).decode(),
        data.decode("latin-1"),
    ]


def test_no_key_or_secret_bytes_in_any_output(machine: Machine, tmp_path: Path) -> None:
    chain = tmp_path / "chain"
    assert sevtool("--machine", machine.path, "export", "--full", "--dir", chain).code == 0
    outputs = []

    def run(*args: str | Path) -> int:
        result = sevtool(*args)
        outputs.append(result.out + result.err)
        return result.code

    assert run("session", chain, "--policy", "1", "-o", tmp_path, "--tk") == 0
    assert run("session", chain, "--policy", "1", "-o", tmp_path, "--name", "j", "--json") == 0
    tik, tek = tmp_path / "vm_tik.bin", tmp_path / "vm_tek.bin"
    tk = tmp_path / "vm_tk.bin"
    platform = ["--api-major", "0", "--api-minor", "24", "--build-id", "15", "--policy", "1"]
    digest = ["--launch-digest", base64.b64encode(bytes(range(32))).decode()]
    nonce = ["--nonce", base64.b64encode(bytes(16)).decode()]
    blob_out = tmp_path / "blob"
    assert (
        run("measurement", "build", *platform, "--tik", tik, *digest, *nonce, "--outfile", blob_out)
        == 0
    )
    assert run("measurement", "build", *platform, "--tk", tk, *digest, *nonce, "--json") == 0
    blob = ["--launch-measure-blob", str(blob_out)]
    assert run("measurement", "verify", *platform, "--tik", tik, *digest, *blob, "--json") == 0
    assert run("measurement", "verify", *platform, "--tik", tek, "--tek", tik, *digest, *blob) == 1
    assert run("measurement", "verify", *platform, "--tik", tk, *digest, *blob) == 2
    inline = base64.b64encode(tik.read_bytes() + b"x").decode()
    assert run("measurement", "verify", *platform, "--tik", inline, *digest, *blob) == 2
    secret = tmp_path / "disk.key"
    secret.write_bytes(SECRET)
    packet = [tmp_path / "h", tmp_path / "p"]
    keys = ["--tik", str(tik), "--tek", str(tek), *blob]
    assert run("secret", "build", *keys, "--secret", f"luks-key:{secret}", *packet, "--json") == 0
    assert run("secret", "verify", *keys, *packet) == 0
    assert run("secret", "verify", *keys, *packet, "--json") == 0
    wrong = ["--tik", str(tek), "--tek", str(tik), *blob]
    assert run("secret", "verify", *wrong, *packet) == 1
    text = "\n".join(outputs)
    for name, value in (
        ("TIK", tik.read_bytes()),
        ("TEK", tek.read_bytes()),
        ("secret", SECRET),
        ("JSON session TIK", (tmp_path / "j_tik.bin").read_bytes()),
    ):
        for form in _forms(value):
            assert form not in text, f"the {name} appears in output"
