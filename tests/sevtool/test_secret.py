"""``sevtool secret build|verify``: sevctl's HEADER and PAYLOAD byte for byte, the size
bound, both table paddings on the way back, and packets the firmware would refuse."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hwsim.sev.ovmf import secret_table
from hwsim.sev.session import TransportKeys, seal_secret
from tests.sevtool.test_cli import one_error_line, sevtool

DATA = "sev/sevctl/data/secret"
LUKS = "736869e5-84f0-4973-92ec-06879ce3da0b"


@pytest.fixture
def keys_args(vector: Callable[[str], Path], sev_expected: dict[str, Any]) -> list[str]:
    v = sev_expected["launch_secret"]
    return [
        "--tik", str(vector(f"sev/{v['tik_file']}")),
        "--tek", str(vector(f"sev/{v['tek_file']}")),
        "--launch-measure-blob", v["launch_measure_blob_b64"],
    ]  # fmt: skip


@pytest.mark.parametrize("case", ["one_secret", "two_secrets"])
def test_sevctl_vectors(
    case: str,
    keys_args: list[str],
    vector: Callable[[str], Path],
    sev_expected: dict[str, Any],
    tmp_path: Path,
) -> None:
    v = sev_expected["launch_secret"]
    secrets: list[str] = []
    for guid, path in v[case]["secrets"]:
        secrets += ["--secret", f"{guid}:{vector(f'sev/{path}')}"]
    header, payload = tmp_path / "header", tmp_path / "payload"
    result = sevtool("secret", "build", *keys_args, *secrets, "--iv", v["iv_b64"], header, payload)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [str(header), str(payload)]
    assert base64.b64encode(header.read_bytes()).decode() == v[case]["header_b64"]
    assert base64.b64encode(payload.read_bytes()).decode() == v[case]["payload_b64"]
    listed = sevtool("secret", "verify", *keys_args, header, payload, "--json")
    assert listed.code == 0, listed.err
    guids = [entry["guid"] for entry in json.loads(listed.out)["secrets"]]
    assert guids == [guid for guid, _ in v[case]["secrets"]]


def test_base64_output_random_iv_and_luks_alias(
    keys_args: list[str], vector: Callable[[str], Path], tmp_path: Path
) -> None:
    secret = f"luks-key:{vector(f'{DATA}/secret1.txt')}"
    first = [tmp_path / "h1", tmp_path / "p1"]
    second = [tmp_path / "h2", tmp_path / "p2"]
    for files in (first, second):
        result = sevtool("secret", "build", *keys_args, "--secret", secret, "--base64", *files)
        assert result.code == 0, result.err
    assert first[0].read_bytes() != second[0].read_bytes()  # a fresh IV each time
    assert len(base64.b64decode(first[0].read_bytes(), validate=True)) == 52
    listed = sevtool("secret", "verify", *keys_args, *first)
    assert listed.out == f"{LUKS} {vector(f'{DATA}/secret1.txt').stat().st_size}\n"


def test_size_bound(keys_args: list[str], vector: Callable[[str], Path], tmp_path: Path) -> None:
    largest = vector(f"{DATA}/secret4.txt")  # 16344 bytes: the table fills 16384
    out = [tmp_path / "h", tmp_path / "p"]
    ok = sevtool("secret", "build", *keys_args, "--secret", f"{LUKS}:{largest}", *out, "--json")
    assert ok.code == 0 and json.loads(ok.out)["payload_size"] == 16384
    bigger = tmp_path / "big"
    bigger.write_bytes(largest.read_bytes() + b"!")
    refused = sevtool("secret", "build", *keys_args, "--secret", f"{LUKS}:{bigger}", *out)
    assert refused.code == 2 and "at most 16384" in one_error_line(refused)


def test_libvirt_padding_is_read(
    vector: Callable[[str], Path], sev_expected: dict[str, Any], tmp_path: Path
) -> None:
    """libvirt pads 1-16 bytes (16 when aligned); a packet built that way verifies."""
    v = sev_expected["launch_secret"]
    keys = TransportKeys(
        vector(f"sev/{v['tek_file']}").read_bytes(), vector(f"sev/{v['tik_file']}").read_bytes()
    )
    aligned = secret_table([(uuid.UUID(LUKS), b"y" * 24)])  # 16+4+16+4+24 = 64: no padding
    assert len(aligned) == 64
    counted = aligned[:16] + (80).to_bytes(4, "little") + aligned[20:]
    for plaintext in (aligned + bytes(16), counted + bytes(16)):
        measure = base64.b64decode(v["launch_measure_blob_b64"])[:32]
        header, payload = seal_secret(keys, plaintext, measure)
        (tmp_path / "h").write_bytes(header.pack())
        (tmp_path / "p").write_text(base64.b64encode(payload).decode())
        result = sevtool(
            "secret", "verify", "--tk", _tk(tmp_path, keys),
            "--launch-measure-blob", v["launch_measure_blob_b64"], tmp_path / "h", tmp_path / "p",
        )  # fmt: skip
        assert result.code == 0, result.err
        assert result.out.startswith(LUKS)


def _tk(directory: Path, keys: TransportKeys) -> Path:
    path = directory / "tk.bin"
    path.write_bytes(keys.pack())
    return path


def test_packet_for_another_measurement_is_refused(
    keys_args: list[str], vector: Callable[[str], Path], tmp_path: Path
) -> None:
    out = [tmp_path / "h", tmp_path / "p"]
    secret = f"{LUKS}:{vector(f'{DATA}/secret1.txt')}"
    assert sevtool("secret", "build", *keys_args, "--secret", secret, *out).code == 0
    other = [*keys_args[:-1], base64.b64encode(bytes(48)).decode()]
    refused = sevtool("secret", "verify", *other, *out)
    assert refused.code == 1
    assert "BAD_MEASUREMENT" in one_error_line(refused)
    swapped = sevtool("secret", "verify", *keys_args, out[1], out[0])
    assert swapped.code == 2 and "secret header" in one_error_line(swapped)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: [*a, "--secret", "nocolon"], "expected GUID:FILE"),
        (lambda a: [*a, "--secret", "not-a-guid:/dev/null"], "is not a GUID"),
        (lambda a: a, "no secret given"),
        (lambda a: [*a[:2], "--tek", a[1], *a[4:], "--secret", f"{LUKS}:/dev/null"], "same key"),
        (lambda a: [*a, "--secret", f"{LUKS}:/dev/null", "--iv", "AAAA"], "--iv"),
    ],
)
def test_bad_input(
    keys_args: list[str],
    tmp_path: Path,
    mutate: Callable[[list[str]], list[str]],
    message: str,
) -> None:
    result = sevtool("secret", "build", *mutate(keys_args), tmp_path / "h", tmp_path / "p")
    assert result.code == 2
    assert message in one_error_line(result)
    assert not (tmp_path / "h").exists()
