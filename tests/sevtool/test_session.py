"""``sevtool session``: chain verified first, sevctl's files, and a session that the
simulated firmware of that platform (and only that one) opens."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hwsim.machine import Machine
from hwsim.sev.arch import SESSION_SIZE, SEV_CERT_SIZE, SevAlgo, SevCert, SevStatus, SevUsage
from hwsim.sev.psp import NV_NS, PspError
from hwsim.sev.session import open_session
from sevtool.errors import SevInputError
from sevtool.session import (
    describe_blob,
    explain_launch_start,
    read_blob,
    read_session_files,
    read_value,
)
from tests.conftest import MachineFactory
from tests.sevtool.test_cli import AMD, one_error_line, sevtool


def _pdh_key(machine: Machine) -> ec.EllipticCurvePrivateKey:
    with machine.transaction(write=False) as txn:
        scalar = txn.get(NV_NS, "pdh.key")
    assert scalar is not None
    return ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP384R1())


def _export(machine: Machine, out: Path) -> Path:
    result = sevtool("--machine", machine.path, "export", "--full", "--dir", out)
    assert result.code == 0, result.err
    return out


def _files(directory: Path, name: str = "vm") -> tuple[bytes, bytes]:
    godh = base64.b64decode((directory / f"{name}_godh.b64").read_bytes(), validate=True)
    session = base64.b64decode((directory / f"{name}_session.b64").read_bytes(), validate=True)
    return godh, session


def test_session_opens_on_its_platform_only(
    machine_factory: MachineFactory, tmp_path: Path
) -> None:
    mine, other = machine_factory("sim", "mine"), machine_factory("sim", "other")
    chain = _export(mine, tmp_path / "chain")
    _export(other, tmp_path / "other")  # gives the other machine its keys
    result = sevtool("session", chain, "--policy", "0x1", "-o", tmp_path)
    assert result.code == 0, result.err
    assert "platform chain verified" in result.err
    names = sorted(Path(line).name for line in result.out.splitlines())
    assert names == ["vm_godh.b64", "vm_session.b64", "vm_tek.bin", "vm_tik.bin"]
    godh, session = _files(tmp_path)
    assert len(godh) == SEV_CERT_SIZE and len(session) == SESSION_SIZE
    cert = SevCert.unpack(godh)
    assert (cert.pub_key_usage, cert.pub_key_algo) == (SevUsage.PDH, SevAlgo.ECDH_SHA256)
    for key in ("tek", "tik"):
        path = tmp_path / f"vm_{key}.bin"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 16
    keys = open_session(_pdh_key(mine), godh, session, 0x1)
    assert keys.tik == (tmp_path / "vm_tik.bin").read_bytes()
    assert keys.tek == (tmp_path / "vm_tek.bin").read_bytes()
    with pytest.raises(PspError) as info:
        open_session(_pdh_key(other), godh, session, 0x1)
    assert info.value.status == SevStatus.BAD_MEASUREMENT
    with pytest.raises(PspError, match="policy 0x3"):
        open_session(_pdh_key(mine), godh, session, 0x3)


def test_session_from_a_lone_pdh_needs_the_chain_or_the_insecure_flag(
    machine: Machine, tmp_path: Path
) -> None:
    chain = _export(machine, tmp_path / "chain")
    lone = sevtool("session", chain / "pdh.cert", "--policy", "1", "-o", tmp_path)
    assert lone.code == 2
    assert "cannot verify the platform" in one_error_line(lone)
    assert "--insecure-skip-verify" in lone.err
    assert not list(tmp_path.glob("vm_*"))
    args: list[str | Path] = []
    for name in ("ark", "ask", "cek", "pek", "oca"):
        args += [f"--{name}", chain / f"{name}.cert"]
    named = sevtool("session", chain / "pdh.cert", "--policy", "1", "-o", tmp_path, *args)
    assert named.code == 0, named.err
    skipped = sevtool(
        "session", chain / "pdh.cert", "--policy", "1", "--name", "t", "-o", tmp_path,
        "--insecure-skip-verify", "--json",
    )  # fmt: skip
    assert skipped.code == 0
    assert "warning" in skipped.err and "NOT verified" in skipped.err
    assert json.loads(skipped.out)["chain_verified"] is False


def test_simulated_chain_under_amds_roots_is_refused(
    machine: Machine, tmp_path: Path, vector: Callable[[str], Path]
) -> None:
    chain = _export(machine, tmp_path / "chain")
    result = sevtool(
        "session", chain, "--policy", "1", "-o", tmp_path,
        "--ark", vector(f"{AMD}/rome/ark.cert"), "--ask", vector(f"{AMD}/rome/ask.cert"),
    )  # fmt: skip
    assert result.code == 1
    assert "chain does not verify" in one_error_line(result)
    assert not list(tmp_path.glob("vm_*"))


def test_session_for_a_real_naples_platform(vector: Callable[[str], Path], tmp_path: Path) -> None:
    naples = vector("sev/virtee-sev/naples/pdh.cert").parent
    result = sevtool(
        "session", naples, "--policy", "0x33", "--name", "naples", "-o", tmp_path, "--tk",
        "--ark", vector(f"{AMD}/naples/ark.cert"), "--ask", vector(f"{AMD}/naples/ask.cert"),
        "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    files = json.loads(result.out)["files"]
    assert set(files) == {"godh", "session", "tek", "tik", "tk"}
    tk = (tmp_path / "naples_tk.bin").read_bytes()
    assert (
        tk
        == (tmp_path / "naples_tek.bin").read_bytes() + (tmp_path / "naples_tik.bin").read_bytes()
    )


def test_existing_files_are_kept_unless_forced(machine: Machine, tmp_path: Path) -> None:
    chain = _export(machine, tmp_path / "chain")
    assert sevtool("session", chain, "--policy", "1", "-o", tmp_path).code == 0
    tik = (tmp_path / "vm_tik.bin").read_bytes()
    again = sevtool("session", chain, "--policy", "1", "-o", tmp_path)
    assert again.code == 1 and "not overwriting" in one_error_line(again)
    assert (tmp_path / "vm_tik.bin").read_bytes() == tik
    assert sevtool("session", chain, "--policy", "1", "-o", tmp_path, "--force").code == 0
    assert (tmp_path / "vm_tik.bin").read_bytes() != tik


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("0x40", "reserved bits"),
        ("0x100000000", "does not fit 32 bits"),
        ("banana", "not an integer"),
    ],
)
def test_bad_policies(machine: Machine, tmp_path: Path, policy: str, message: str) -> None:
    chain = _export(machine, tmp_path / "chain")
    result = sevtool("session", chain, "--policy", policy, "-o", tmp_path)
    assert result.code == 2
    assert message in one_error_line(result)


def test_blob_readers_name_what_a_wrong_file_is(tmp_path: Path) -> None:
    session = tmp_path / "s.b64"
    session.write_bytes(base64.b64encode(bytes(SESSION_SIZE)))
    assert read_blob(session, "session", SESSION_SIZE) == bytes(SESSION_SIZE)
    with pytest.raises(SevInputError, match="a session blob") as info:
        read_blob(session, "GODH certificate", SEV_CERT_SIZE)
    assert info.value.hint is not None and "swapped" in info.value.hint
    godh = tmp_path / "g.bin"
    godh.write_bytes(bytes(SEV_CERT_SIZE))
    with pytest.raises(SevInputError, match="a SEV certificate") as info:
        read_blob(godh, "session", SESSION_SIZE)
    assert info.value.hint is not None and "--dh-cert" in info.value.hint
    tk = tmp_path / "tk.bin"
    tk.write_bytes(bytes(range(32)))
    with pytest.raises(SevInputError, match="TEK \\|\\| TIK") as info:
        read_value(str(tk), "TIK", 16)
    assert info.value.hint is not None and "--tk" in info.value.hint
    with pytest.raises(SevInputError, match="no file of that name"):
        read_value("not-a-file-nor-base64!", "TIK", 16)
    assert describe_blob(b"x" * 5) == "5 bytes of binary"


def test_launch_start_refusals_name_the_files_and_causes(
    machine_factory: MachineFactory, tmp_path: Path
) -> None:
    mine, other = machine_factory("sim", "mine"), machine_factory("sim", "other")
    chain = _export(mine, tmp_path / "chain")
    _export(other, tmp_path / "other")
    assert sevtool("session", chain, "--policy", "0x1", "-o", tmp_path).code == 0
    godh_file, session_file = tmp_path / "vm_godh.b64", tmp_path / "vm_session.b64"
    godh, session = read_session_files(godh_file, session_file)
    with pytest.raises(PspError) as wrong_platform:
        open_session(_pdh_key(other), godh, session, 0x1)
    message = str(explain_launch_start(wrong_platform.value, godh_file, session_file, 0x1))
    assert str(session_file) in message and str(godh_file) in message
    assert "another platform's PDH" in message and "same `sevtool session` run" in message
    with pytest.raises(PspError) as wrong_policy:
        open_session(_pdh_key(mine), godh, session, 0x3)
    message = str(explain_launch_start(wrong_policy.value, godh_file, session_file, 0x3))
    assert "a policy other than 0x3" in message
    with pytest.raises(SevInputError, match="found a session blob") as swapped:
        read_session_files(session_file, godh_file)
    assert swapped.value.hint is not None and "swapped" in swapped.value.hint


def test_base64_key_file_is_read_and_a_header_is_not_a_blob(tmp_path: Path) -> None:
    tik = tmp_path / "tik.b64"
    tik.write_text(base64.b64encode(bytes(range(16))).decode() + "\n")
    assert read_value(str(tik), "TIK", 16) == bytes(range(16))
    header = tmp_path / "secret_header.bin"
    header.write_bytes(bytes(52))
    with pytest.raises(SevInputError, match="found a secret packet header, binary"):
        read_value(str(header), "--launch-measure-blob", 48)
