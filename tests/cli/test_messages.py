"""Messages that give the real reason (issue 10 item 12)."""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.machine import Machine
from hwsim.sgx.launch import LaunchPolicy, approve_signer, launch_control, set_launch_policy
from tests.cli.conftest import Runner

Vector = Callable[[str], Path]


def test_a_damaged_sigstruct_size_is_named(
    sgxtool: Runner, sample_key: Path, enclave_copy: Path, tmp_path: Path
) -> None:
    signed = tmp_path / "signed.elf"
    r = sgxtool("sign", str(enclave_copy), "-k", str(sample_key), "-o", str(signed))
    assert r.code == 0, r.err
    data = bytearray(signed.read_bytes())
    elf_size, _, _ = struct.unpack_from("<QQ16s", data, len(data) - 32)
    struct.pack_into("<I", data, elf_size + 20, 127)  # magic (16), version (4), size (4)
    signed.write_bytes(bytes(data))
    r = sgxtool("dump", str(signed))
    assert r.code != 0
    assert "SIGSTRUCT size field is 127, not 1808" in r.err, r.err
    assert "unknown image metadata" not in r.err


def test_a_machine_reached_through_a_symlink(
    hwsim: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "real").mkdir()
    link = tmp_path / "link"
    link.symlink_to("real")
    r = hwsim("init", str(link))
    assert r.code == 0, r.err
    assert link.is_symlink() and (tmp_path / "real" / "machine.toml").is_file()
    assert hwsim("--machine", str(link), "config", "set", "epc_size", "8M").code == 0
    # The default machine too: a symlink to an empty directory is "first use".
    (tmp_path / "real2").mkdir()
    (tmp_path / "link2").symlink_to("real2")
    r = hwsim("--machine", str(tmp_path / "link2"), "status")
    assert r.code != 0 and "Not a directory" not in r.err  # --machine never creates
    monkeypatch.setenv("HWSIM_MACHINE", str(tmp_path / "link2"))
    r = hwsim("status", "--json")
    assert r.code == 0, r.err


def test_a_token_request_is_not_torn_by_a_policy_change(
    machine_factory: Callable[..., Machine], vector: Vector
) -> None:
    """A policy change that arrives while the Launch Enclave works waits for it: the token
    is decided under one policy (before: SGX_INVALID_ATTRIBUTE from a torn state)."""
    from hwsim.sgx.le import LaunchEnclave
    from sgxtool.token import get_token, load_sigstruct

    machine = machine_factory()
    sig = load_sigstruct(vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin"))
    approve_signer(machine, sig.mrsigner)
    set_launch_policy(machine, LaunchPolicy.VENDOR_KEY)
    machine.power_cycle()
    other = Machine.open(machine.path)  # another command, with its own connection

    def change_policy() -> None:
        set_launch_policy(other, LaunchPolicy.FLC_LOCKED, owner_key_hash=bytes(32 * [0x11]))
        other.power_cycle()

    changer = threading.Thread(target=change_policy)
    real_start = LaunchEnclave.start

    def start_racing(machine: Machine, epc: object) -> object:
        changer.start()
        changer.join(timeout=2)  # done at once unless the token request holds the lock
        return real_start(machine, epc)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LaunchEnclave, "start", start_racing)
        grant = get_token(sig, machine)
    changer.join()
    assert grant.token.mrsigner == sig.mrsigner
    assert launch_control(machine).policy is LaunchPolicy.FLC_LOCKED  # then it applied
