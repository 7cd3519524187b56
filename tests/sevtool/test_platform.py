"""sevtool's Python API: the same operations as the commands, without a shell."""

from __future__ import annotations

from pathlib import Path

import pytest

import sevtool
from hwsim.machine import Machine
from sevtool.errors import SevToolError
from tests.conftest import MachineFactory


def test_python_api_owns_exports_and_verifies(machine: Machine, tmp_path: Path) -> None:
    owner = sevtool.generate_oca()
    info = sevtool.provision(machine, owner)
    assert info.externally_owned and info.state == "INIT"
    chain = sevtool.export_chain(machine, full=True)
    assert chain.oca == owner.cert
    report = sevtool.verify_chain(chain)
    assert report.ok and report.complete
    assert [link.title for link in report.links][:3] == [
        "ARK signed by itself",
        "ASK signed by ARK",
        "CEK signed by ASK",
    ]
    written = sevtool.write_chain_dir(chain, tmp_path / "out")
    assert sevtool.verify_chain(sevtool.load_chain(tmp_path / "out")).ok
    assert len(written) == 6


def test_owner_key_must_match_its_certificate(tmp_path: Path) -> None:
    first, second = sevtool.generate_oca(), sevtool.generate_oca()
    first.write(tmp_path / "a.cert", tmp_path / "a.key")
    second.write(tmp_path / "b.cert", tmp_path / "b.key")
    with pytest.raises(SevToolError, match="does not belong"):
        sevtool.load_owner_key(tmp_path / "a.cert", tmp_path / "b.key")


def test_chain_error_carries_every_link(machine: Machine, machine_factory: MachineFactory) -> None:
    chain = sevtool.export_chain(machine, full=True)
    other = machine_factory("rome")
    chain.pdh = sevtool.export_chain(other).pdh
    with pytest.raises(sevtool.ChainVerificationError) as exc:
        sevtool.verify_chain(chain)
    failed = [link for link in exc.value.report.links if not link.ok]
    assert [(f.subject, f.signer, f.check) for f in failed] == [("pdh", "pek", "signature")]
