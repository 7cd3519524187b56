"""``sevtool guest`` end to end: the owner's session, launch, measurement, secret, run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.machine import Machine
from tests.conftest import MachineFactory
from tests.hwsim.sev.guests import POWER_OFF, flat_image, serial
from tests.sevtool.test_cli import Result, one_error_line, sevtool

OVMF = "sev/sevctl/data/OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9"
KERNEL = "sev/sevctl/data/measurement/vmlinuz-fake"
INITRD = "sev/sevctl/data/measurement/initrd-fake"


def ok(result: Result) -> Result:
    assert result.code == 0, result.err
    return result


def owner_session(m: Path, out: Path, policy: str = "0x1") -> Path:
    """The owner's files for machine ``m``: chain verified, session made."""
    ok(sevtool("--machine", m, "export", "--full", out / "chain"))
    ok(sevtool("session", out / "chain", "--policy", policy, "-o", out, "--force"))
    return out


def launch(m: Path, owner: Path, image: Path, *extra: str | Path, policy: str = "0x1") -> Result:
    files = ("--session", owner / "vm_session.b64", "--dh-cert", owner / "vm_godh.b64")
    return sevtool("--machine", m, "guest", "launch", image, "--policy", policy, *files, *extra)


def measure(m: Path) -> dict[str, object]:
    result = ok(sevtool("--machine", m, "guest", "measure", "--json"))
    data: dict[str, object] = json.loads(result.out)
    return data


def expected(owner: Path, info: dict[str, object], *inputs: str | Path) -> Result:
    """`sevtool measurement verify` of the host's blob against the owner's inputs."""
    return sevtool("measurement", "verify", "--api-major", str(info["api_major"]),
                   "--api-minor", str(info["api_minor"]), "--build-id", str(info["build_id"]),
                   "--policy", str(info["policy"]), "--tik", owner / "vm_tik.bin",
                   "--launch-measure-blob", str(info["measurement"]), *inputs)  # fmt: skip


def test_owner_verified_launch_run_and_inspect(machine: Machine, tmp_path: Path) -> None:
    m = machine.path
    owner = owner_session(m, tmp_path)
    image = tmp_path / "guest.bin"
    image.write_bytes(flat_image(serial(b"hello from the guest\n") + POWER_OFF))
    launched = json.loads(ok(launch(m, owner, image, "--name", "web", "--json")).out)
    assert launched["state"] == "LUPDATE" and launched["name"] == "web"
    info = measure(m)
    ok(expected(owner, info, "--firmware", image))
    secret = tmp_path / "key"
    secret.write_bytes(b"k" * 32)
    ok(sevtool("secret", "build", "--tik", owner / "vm_tik.bin", "--tek", owner / "vm_tek.bin",
               "--launch-measure-blob", str(info["measurement"]), "--secret",
               f"luks-key:{secret}", tmp_path / "hdr", tmp_path / "payload"))  # fmt: skip
    injected = ok(sevtool("--machine", m, "guest", "inject-secret", "--gpa", "0x800000",
                          tmp_path / "hdr", tmp_path / "payload", "--json"))  # fmt: skip
    assert json.loads(injected.out) == {"gpa": "0x800000"}
    no_run = sevtool("--machine", m, "guest", "run")
    assert no_run.code == 1 and "LSECRET, not RUNNING" in one_error_line(no_run)
    ok(sevtool("--machine", m, "guest", "finish"))
    run = json.loads(ok(sevtool("--machine", m, "guest", "run", "--json")).out)
    assert run["serial"] == "hello from the guest\n" and run["stop"] == "shutdown"
    listed = ok(sevtool("--machine", m, "guest", "list"))
    assert listed.out.splitlines()[1].split() == ["1", "web", "RUNNING", "16", "0x1", "shutdown"]
    assert all(line == line.rstrip() for line in listed.out.splitlines())
    status = json.loads(ok(sevtool("--machine", m, "guest", "status", "--json")).out)
    assert status["asid"] == 16 and status["policy"] == "0x1"
    dump = json.loads(ok(sevtool("--machine", m, "guest", "dump", "--gpa", "0x800000",
                                 "--length", "32", "--json")).out)  # fmt: skip
    assert len(dump["hex"]) == 64 and "6b6b6b6b" not in dump["hex"]
    text = ok(sevtool("--machine", m, "guest", "dump", "--gpa", "0x800000", "--length", "32"))
    assert text.out.startswith("000000800000  ")
    refused = sevtool("--machine", m, "guest", "debug-decrypt", "--gpa", "0x800000")
    assert refused.code == 1 and "POLICY_FAILURE" in one_error_line(refused)
    ok(sevtool("--machine", m, "guest", "decommission", "--guest", "web"))
    assert json.loads(ok(sevtool("--machine", m, "guest", "list", "--json")).out) == []


def test_kernel_hashes_launch_digest_is_what_measurement_build_computes(
    machine: Machine, tmp_path: Path, vector: Callable[[str], Path]
) -> None:
    m = machine.path
    owner = owner_session(m, tmp_path)
    files = ("--kernel", vector(KERNEL), "--initrd", vector(INITRD), "--cmdline", "console=ttyS0")
    launched = json.loads(ok(launch(m, owner, vector(OVMF), *files, "--json")).out)
    assert launched["kernel_hashes_gpa"] is not None
    info = measure(m)
    ok(expected(owner, info, "--firmware", vector(OVMF), *files))
    assert expected(owner, info, "--firmware", vector(OVMF)).code == 1  # hashes left out
    assert expected(owner, info, "--firmware", vector(OVMF), *files[:4]).code == 1  # no cmdline


def test_a_tampered_image_changes_the_measurement(machine: Machine, tmp_path: Path) -> None:
    m = machine.path
    owner = owner_session(m, tmp_path)
    good = flat_image(serial(b"ok") + POWER_OFF)
    (tmp_path / "good.bin").write_bytes(good)
    (tmp_path / "bad.bin").write_bytes(good[:8] + bytes([good[8] ^ 1]) + good[9:])
    ok(launch(m, owner, tmp_path / "bad.bin"))
    result = expected(owner, measure(m), "--firmware", tmp_path / "good.bin")
    assert result.code == 1


def test_a_session_for_another_machine_fails(
    machine_factory: MachineFactory, tmp_path: Path
) -> None:
    one, two = machine_factory(name="one"), machine_factory(name="two")
    owner = owner_session(one.path, tmp_path)
    image = tmp_path / "g.bin"
    image.write_bytes(flat_image(POWER_OFF))
    result = launch(two.path, owner, image)
    assert result.code == 1
    assert "BAD_MEASUREMENT" in one_error_line(result)
    assert "another platform's PDH" in result.err and "vm_session.b64" in result.err


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("--policy", "0x4"), 1, "SEV-ES"),
        (("--policy", "nope"), 2, "not an integer"),
        (("--policy", "0x1", "--session", "{image}"), 2, "--dh-cert come together"),
        (("--policy", "0x1", "--session", "{image}", "--dh-cert", "{image}"), 2, "expected 2084"),
        (("--policy", "0x1", "--initrd", "{image}"), 2, "need --kernel"),
        (("--policy", "0x1", "--kernel", "{image}"), 2, "does not support kernel"),
        (("--policy", "0x1", "--memory", "3"), 1, "guest memory"),
    ],
)
def test_launch_refusals(
    machine: Machine, tmp_path: Path, args: tuple[str, ...], code: int, words: str
) -> None:
    image = tmp_path / "g.bin"
    image.write_bytes(flat_image(POWER_OFF))
    argv = [a.format(image=image) for a in args]
    result = sevtool("--machine", machine.path, "guest", "launch", image, *argv)
    assert result.code == code, result.err
    assert words in result.err
    assert "Traceback" not in result.err


def test_commands_without_a_guest(machine: Machine) -> None:
    for command in ("measure", "finish", "run", "status", "decommission"):
        result = sevtool("--machine", machine.path, "guest", command)
        assert result.code == 1 and "no SEV guest" in one_error_line(result), command
    bad = sevtool("--machine", machine.path, "guest", "dump", "--gpa", "0", "--length", "0")
    assert bad.code == 2
