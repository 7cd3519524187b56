"""``sevtool measurement build|verify``: sevctl's test data byte for byte (stdout and
--outfile), the launch digest libvirt's virt-qemu-sev-validate computes, and a verify that
exits 1 naming what to recheck."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hwsim.sev.ovmf import cmdline_hash, kernel_hashes_table
from sevtool.measurement import GuestImage, launch_digest
from tests.sevtool.test_cli import one_error_line, sevtool

DATA = "sev/sevctl/data"
OVMF = f"{DATA}/OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9"
CMDLINE = "foo bar baz fake kernel=cmdline"
NONCE = "wxP6tRHCFrFQWxsuqZA8QA=="


@pytest.fixture
def platform(vector: Callable[[str], Path]) -> list[str]:
    """sevctl's test arguments (tests/measurementbuild.rs), in its own spelling."""
    tik = vector(f"{DATA}/measurement/tik1.bin")
    return [
        "--api-major", "0x01", "--api-minor", "40", "--build-id", "40", "--policy", "0x03",
        "--tik", str(tik),
    ]  # fmt: skip


def _outputs(sev_expected: dict[str, Any]) -> list[str]:
    return [entry["output_b64"] for entry in sev_expected["launch_measurement"][1:4]]


def _kernel_args(vector: Callable[[str], Path]) -> list[str]:
    return [
        "--firmware", str(vector(OVMF)),
        "--kernel", str(vector(f"{DATA}/measurement/vmlinuz-fake")),
        "--initrd", str(vector(f"{DATA}/measurement/initrd-fake")),
        "--cmdline", CMDLINE,
    ]  # fmt: skip


def test_sevctl_vectors_on_stdout(
    platform: list[str], vector: Callable[[str], Path], sev_expected: dict[str, Any]
) -> None:
    digest_out, firmware_out, kernel_out = _outputs(sev_expected)
    digest = sev_expected["launch_measurement"][1]["digest_b64"]
    cases = [
        (["--launch-digest", digest], digest_out),
        (["--firmware", str(vector(OVMF))], firmware_out),
        (_kernel_args(vector), kernel_out),
    ]
    for args, expected in cases:
        result = sevtool("measurement", "build", *platform, "--nonce", NONCE, *args)
        assert result.code == 0, result.err
        assert result.out == expected + "\n"


def test_outfile_json_and_nonce_from_blob(
    platform: list[str], tmp_path: Path, sev_expected: dict[str, Any]
) -> None:
    digest_out = _outputs(sev_expected)[0]
    digest = sev_expected["launch_measurement"][1]["digest_b64"]
    out = tmp_path / "m.bin"
    written = sevtool(
        "measurement", "build", *platform, "--launch-digest", digest,
        "--launch-measure-blob", digest_out, "--outfile", out,
    )  # fmt: skip
    assert written.code == 0 and written.out == ""
    assert base64.b64encode(out.read_bytes()).decode() == digest_out
    blob_file = tmp_path / "blob.b64"
    blob_file.write_text(digest_out + "\n")
    as_json = sevtool(
        "measurement", "build", *platform, "--launch-digest", digest,
        "--launch-measure-blob", blob_file, "--json",
    )  # fmt: skip
    doc = json.loads(as_json.out)
    assert doc["measurement"] == digest_out
    assert doc["launch_digest"] == base64.b64decode(digest).hex()


def test_kernel_measurement_is_libvirts_algorithm(vector: Callable[[str], Path]) -> None:
    """virt-qemu-sev-validate: SHA-256(OVMF || table); the table's entries are the SHA-256
    of the cmdline plus NUL, the initrd and the kernel, in that order (GUIDs as libvirt
    lists them), 168 bytes padded to 176. libvirt accepts sevctl's kernel vector, which
    the test above reproduces; here the digest is rebuilt from that description."""
    files = {
        n: vector(f"{DATA}/measurement/{n}").read_bytes() for n in ("vmlinuz-fake", "initrd-fake")
    }
    table = kernel_hashes_table(
        hashlib.sha256(files["vmlinuz-fake"]).digest(),
        hashlib.sha256(files["initrd-fake"]).digest(),
        hashlib.sha256(CMDLINE.encode() + b"\0").digest(),
    )
    expected = hashlib.sha256(vector(OVMF).read_bytes() + table).digest()
    image = GuestImage(
        vector(OVMF),
        vector(f"{DATA}/measurement/vmlinuz-fake"),
        vector(f"{DATA}/measurement/initrd-fake"),
        CMDLINE,
    )
    assert launch_digest(image, 0x3) == expected
    without_initrd = GuestImage(vector(OVMF), vector(f"{DATA}/measurement/vmlinuz-fake"))
    empty = hashlib.sha256(b"").digest()
    table = kernel_hashes_table(
        hashlib.sha256(files["vmlinuz-fake"]).digest(), empty, cmdline_hash("")
    )
    assert (
        launch_digest(without_initrd, 0)
        == hashlib.sha256(vector(OVMF).read_bytes() + table).digest()
    )


def test_ovmf_without_kernel_hashes_refuses_a_kernel(
    platform: list[str], vector: Callable[[str], Path], tmp_path: Path
) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"")
    result = sevtool(
        "measurement", "build", *platform, "--nonce", NONCE,
        "--firmware", vector("sev/virtee-sev/measurement/ovmf_OvmfX64_suffix.bin"),
        "--kernel", kernel,
    )  # fmt: skip
    assert result.code == 2
    assert "Kernel specified but OVMF doesn't support" in one_error_line(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nonce", NONCE], "one of --launch-digest or --firmware"),
        (["--launch-digest", "AAAA"], "one of --nonce or --launch-measure-blob"),
        (["--nonce", NONCE, "--launch-digest", "AAAA"], "base64 of 3 bytes"),
        (["--nonce", NONCE, "--kernel", "/dev/null"], "need --firmware"),
    ],
)
def test_usage_errors(platform: list[str], args: list[str], message: str) -> None:
    result = sevtool("measurement", "build", *platform, *args)
    assert result.code == 2
    assert message in one_error_line(result)


def test_es_policy_needs_a_given_digest(platform: list[str], vector: Callable[[str], Path]) -> None:
    args = [a if a != "0x03" else "0x05" for a in platform]
    result = sevtool("measurement", "build", *args, "--nonce", NONCE, "--firmware", vector(OVMF))
    assert result.code == 2
    assert "ES bit" in one_error_line(result)


def _verify(platform: list[str], blob: str, *args: str | Path) -> tuple[int, str, str]:
    result = sevtool("measurement", "verify", *platform, "--launch-measure-blob", blob, *args)
    return result.code, result.out, result.err


def test_verify_matches_and_mismatches(
    platform: list[str], vector: Callable[[str], Path], sev_expected: dict[str, Any]
) -> None:
    _, firmware_out, kernel_out = _outputs(sev_expected)
    code, out, _ = _verify(platform, kernel_out, *_kernel_args(vector))
    assert (code, out) == (0, "measurement matches\n")
    code, out, err = _verify(platform, firmware_out, *_kernel_args(vector), "--json")
    assert code == 1
    assert "measurement does not match" in err
    assert "kernel-hashes table was not measured" in err
    doc = json.loads(out)
    assert doc["match"] is False and doc["reported"] == firmware_out
    other = base64.b64encode(bytes(48)).decode()
    code, _, err = _verify(platform, other, "--firmware", vector(OVMF))
    assert code == 1 and "recheck: the TIK" in err


def test_verify_names_a_swapped_tik_and_tek(
    platform: list[str], vector: Callable[[str], Path], tmp_path: Path
) -> None:
    digest = base64.b64encode(bytes(32)).decode()
    tik = vector(f"{DATA}/measurement/tik1.bin")
    tek = tmp_path / "tek.bin"
    tek.write_bytes(bytes(range(16)))
    swapped = [a if a != str(tik) else str(tek) for a in platform]
    blob = sevtool("measurement", "build", *swapped, "--nonce", NONCE, "--launch-digest", digest)
    code, _, err = _verify(platform, blob.out.strip(), "--launch-digest", digest, "--tek", tek)
    assert code == 1 and "swapped" in err


def test_verify_names_cmdline_whitespace(
    platform: list[str], vector: Callable[[str], Path], sev_expected: dict[str, Any]
) -> None:
    kernel_out = _outputs(sev_expected)[2]
    args = [a if a != CMDLINE else CMDLINE + " \n" for a in _kernel_args(vector)]
    code, _, err = _verify(platform, kernel_out, *args)
    assert code == 1 and "without its trailing whitespace" in err
