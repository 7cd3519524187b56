"""``sgxtool token``: launch tokens from the machine's Launch Enclave, or a clear refusal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.machine import Machine
from hwsim.sgx.arch import Einittoken
from hwsim.sgx.errors import LaunchRefused
from hwsim.sgx.launch import LaunchPolicy, approve_signer, set_launch_policy
from sgxtool._cli import main
from sgxtool.errors import SgxToolError
from sgxtool.token import get_token
from tests.hwsim.sgx.conftest import ImageMaker, build_device, image, keys

__all__ = ["image", "keys"]  # fixtures shared with the simulator tests

MachineFactory = Callable[..., Machine]


@pytest.fixture
def legacy(machine_factory: MachineFactory) -> Machine:
    return machine_factory("skylake", "legacy")


def sig_file(tmp_path: Path, img_sig: bytes, name: str = "enclave.sig") -> Path:
    path = tmp_path / name
    path.write_bytes(img_sig)
    return path


def test_token_for_a_debug_enclave_launches_it(
    legacy: Machine, image: ImageMaker, tmp_path: Path
) -> None:
    img = image(debug=True)
    grant = get_token(sig_file(tmp_path, img.sigstruct.pack()), legacy)
    assert grant.token.mrenclave == img.sigstruct.enclavehash
    assert grant.as_json()["debug"] is True
    assert build_device(legacy, img).init(img.sigstruct, grant.token).initialized


def test_unapproved_production_signer_is_refused_with_remedy(
    legacy: Machine, image: ImageMaker
) -> None:
    img = image()
    with pytest.raises(LaunchRefused, match="unapproved production signer") as caught:
        get_token(img.sigstruct, legacy)
    assert caught.value.hint and "hwsim vendor approve" in caught.value.hint
    approve_signer(legacy, img.mrsigner)
    assert get_token(img.sigstruct, legacy).token.valid == 1


def test_no_token_on_flc_machines(machine: Machine, image: ImageMaker) -> None:
    with pytest.raises(LaunchRefused, match="no token is needed"):
        get_token(image().sigstruct, machine)
    set_launch_policy(machine, LaunchPolicy.FLC_LOCKED, allow=(bytes(32),))
    machine.power_cycle()
    with pytest.raises(LaunchRefused, match="owner's allow-list decides"):
        get_token(image().sigstruct, machine)


def test_cli_writes_the_token(
    legacy: Machine, image: ImageMaker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = image(debug=True)
    out = tmp_path / "enclave.token"
    main(["token", str(sig_file(tmp_path, img.sigstruct.pack())), "-o", str(out),
          "--machine", str(legacy.path), "--json"])  # fmt: skip
    shown = json.loads(capsys.readouterr().out)
    token = Einittoken.unpack(out.read_bytes())
    assert shown["mac"] == token.mac.hex() and shown["mrsigner"] == img.mrsigner.hex()


def test_cli_refusal_is_one_line_with_hint(
    legacy: Machine, image: ImageMaker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = sig_file(tmp_path, image().sigstruct.pack())
    with pytest.raises(SystemExit) as done:
        main(["token", str(path), "--machine", str(legacy.path)])
    assert done.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("sgxtool: error: launch refused by")
    assert err[1].startswith("sgxtool: hint: ") and "Traceback" not in "".join(err)


def test_unsigned_or_unreadable_input(legacy: Machine, tmp_path: Path) -> None:
    junk = sig_file(tmp_path, b"not an enclave", "junk.bin")
    with pytest.raises(SystemExit) as done:
        main(["token", str(junk), "--machine", str(legacy.path)])
    assert done.value.code == 2
    sgxs = sig_file(tmp_path, b"ECREATE\0".ljust(64, b"\0"), "e.sgxs")
    with pytest.raises(SgxToolError, match="unsigned"):
        get_token(sgxs, legacy)
