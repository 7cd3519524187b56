"""`sevtool guest send` / `guest receive`: a guest moves between two simulated machines,
and no transport key (the owner's TEK/TIK, the migration's, the VEK) is ever printed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from hwsim.machine import Machine
from hwsim.sev.arch import SevCommand
from hwsim.sev.device import SevDevice
from tests.conftest import MachineFactory
from tests.hwsim.sev.guests import HLT, POWER_OFF, flat_image, serial, store
from tests.sevtool.test_cli import Result, one_error_line, sevtool
from tests.sevtool.test_guest_cli import launch, ok, owner_session

PRIVATE = 0x40_0000
ECHO = b"\x48\xbb" + PRIVATE.to_bytes(8, "little") + b"\x8a\x03\x66\xba\xf8\x03\xee"


def _forms(data: bytes) -> list[str]:
    return [data.hex(), data.hex().upper(), base64.b64encode(data).decode()]


def _keys(machine: Machine) -> list[bytes]:
    with SevDevice.open(machine) as dev:
        contexts = [dev.guests.context(SevCommand.GUEST_STATUS, h) for h in dev.guests.handles()]
    return [k for c in contexts for k in (c.tek, c.tik, c.vek, c.transfer) if k]


def test_send_receive_and_run_on_the_target(
    machine: Machine, machine_factory: MachineFactory, tmp_path: Path
) -> None:
    a, b = machine.path, machine_factory(name="b")
    outputs: list[Result] = []

    def run(*args: str | Path, code: int = 0) -> Result:
        result = sevtool(*args)
        assert result.code == code, result.err
        outputs.append(result)
        return result

    owner = owner_session(a, tmp_path)
    image = tmp_path / "g.bin"
    image.write_bytes(flat_image(store(PRIVATE, ord("Z")) + serial(b"a") + HLT + ECHO + POWER_OFF))
    ok(launch(a, owner, image))
    for step in ("measure", "finish", "run"):
        run("--machine", a, "guest", step)
    run("--machine", b.path, "export", "--full", tmp_path / "b.chain")
    sent = json.loads(run("--machine", a, "guest", "send", "--to", tmp_path / "b.chain",
                          "-o", tmp_path / "t.bin", "--json").out)  # fmt: skip
    assert sent["state"] == "SENT" and sent["bytes"] == (tmp_path / "t.bin").stat().st_size
    again = run("--machine", a, "guest", "run", code=1)
    assert "SENT, not RUNNING" in one_error_line(again)
    got = json.loads(run("--machine", b.path, "guest", "receive", tmp_path / "t.bin",
                         "--name", "moved", "--json").out)  # fmt: skip
    assert got["state"] == "RUNNING" and got["name"] == "moved"
    ran = json.loads(run("--machine", b.path, "guest", "run", "--json").out)
    assert (ran["serial"], ran["stop"]) == ("Z", "shutdown")
    run("--machine", b.path, "guest", "status")
    clash = run("--machine", b.path, "guest", "receive", tmp_path / "t.bin", "--name", "moved",
                code=1)  # fmt: skip
    assert "exists already" in one_error_line(clash)
    # Nothing in pre-SNP SEV stops a replayed stream: the target gets a second copy.
    run("--machine", b.path, "guest", "receive", tmp_path / "t.bin", "--name", "clone")
    secrets = _keys(machine) + _keys(b)
    secrets += [(owner / "vm_tek.bin").read_bytes(), (owner / "vm_tik.bin").read_bytes()]
    text = "".join(r.out + r.err for r in outputs)
    assert not [f for s in secrets for f in _forms(s) if f in text]


def test_refusals(machine: Machine, machine_factory: MachineFactory, tmp_path: Path) -> None:
    a, b = machine.path, machine_factory(name="b")
    image = tmp_path / "g.bin"
    image.write_bytes(flat_image(HLT))
    ok(sevtool("--machine", a, "guest", "launch", image, "--policy", "0x8"))
    ok(sevtool("--machine", a, "guest", "measure"))
    ok(sevtool("--machine", a, "guest", "finish"))
    ok(sevtool("--machine", b.path, "export", "--full", tmp_path / "b.chain"))
    nosend = sevtool("--machine", a, "guest", "send", "--to", tmp_path / "b.chain", "-o",
                     tmp_path / "t.bin")  # fmt: skip
    assert nosend.code == 1 and "NOSEND" in one_error_line(nosend)
    assert not (tmp_path / "t.bin").exists()
    ok(sevtool("--machine", b.path, "export", tmp_path / "b.short"))
    short = sevtool("--machine", a, "guest", "send", "--to", tmp_path / "b.short", "-o",
                    tmp_path / "t.bin")  # fmt: skip
    assert short.code != 0 and "Traceback" not in short.err
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a transport")
    bad = sevtool("--machine", b.path, "guest", "receive", junk)
    assert bad.code == 2 and "MCSEVMG1" in one_error_line(bad)
