"""examples/sev-guest: built by its Makefile with cc, launched by the owner-verified flow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.examples.build import EXAMPLES, make_example, tool

FLOW = EXAMPLES / "sev-guest" / "flow.sh"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sev-guest")
    make_example("sev-guest", out, "guest.bin")
    return out


@pytest.fixture(scope="module")
def built_es(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sev-guest-es")  # its own disk key (make -B remakes it)
    make_example("sev-guest", out, "guest-es.bin")
    return out


def flow(
    out: Path, image: Path, machine_dir: Path, es: bool = False
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HWSIM_MACHINE=str(machine_dir), SEV_ES="1" if es else "0", NUM_CPUS="3",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # fmt: skip
    return subprocess.run([tool("sh"), str(FLOW), str(out), str(image)], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip


def test_owner_verified_flow_unlocks_the_disk(built: Path, tmp_path: Path) -> None:
    result = flow(built, built / "guest.bin", tmp_path / "machine")
    assert result.returncode == 0, result.stderr
    message = (EXAMPLES / "sev-guest" / "message.txt").read_text()
    assert f"sev-guest: disk unlocked: {message}" in result.stdout
    assert "measurement matches" in result.stdout + result.stderr
    assert message not in result.stdout.split("ciphertext")[-1]  # the host's dump


def test_tampered_image_stops_the_owner_before_the_secret(built: Path, tmp_path: Path) -> None:
    image = bytearray((built / "guest.bin").read_bytes())
    image[0x100] ^= 0x01
    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(bytes(image))
    result = flow(built, tampered, tmp_path / "machine")
    assert result.returncode == 1
    assert "the disk key is NOT released" in result.stderr
    assert "inject" not in result.stdout.split("recompute")[-1]
    assert "disk unlocked" not in result.stdout


def test_the_sev_es_guest_prints_through_its_vc_handler(built_es: Path, tmp_path: Path) -> None:
    """Ordinary IN/OUT/CPUID in the guest raise #VC; its handler goes through the GHCB.
    Three vCPUs: the APs start from their own VMSAs at the footer's reset address."""
    result = flow(built_es, built_es / "guest-es.bin", tmp_path / "machine", es=True)
    assert result.returncode == 0, result.stderr
    message = (EXAMPLES / "sev-guest" / "message.txt").read_text()
    assert "sev-guest: memory encryption SEV-ES" in result.stdout
    assert "sev-guest: GHCB protocol 1-2\n" in result.stdout
    for apic_id in (1, 2):
        assert f"sev-guest: AP up, APIC id 0x{apic_id:02x}\n" in result.stdout
    assert "sev-guest: vCPUs up: 0x03\n" in result.stdout
    assert f"sev-guest: disk unlocked: {message}" in result.stdout
