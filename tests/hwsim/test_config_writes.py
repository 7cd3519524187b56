"""machine.toml and state.db change as one (issue 10 items 5 and 6): concurrent writers
lose no update, and a kill at any point of a launch-policy change leaves the old policy
or the new one, never flc-open."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hwsim.bios import BiosConfig
from hwsim.machine import Machine
from hwsim.sgx.launch import LaunchPolicy, launch_control, set_launch_policy

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 12
OWNER = bytes(range(32))
ALLOWED = bytes([0xAA]) * 32

# Worker "config" sets epc_size, worker "launch" sets flc-locked with an owner key, each
# ROUNDS times with a value of its own (BASE + round); every worker opens the machine once,
# as a command does. A lost update shows as a value that was not some worker's last.
_WRITER = textwrap.dedent(
    """
    import sys
    from hwsim.machine import Machine
    from hwsim.sgx.launch import LaunchPolicy, set_launch_policy

    path, role, base, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    machine = Machine.open(path)
    for i in range(base + 1, base + rounds + 1):
        if role == "config":
            machine.set_config("epc_size", f"{i * 4}K")
        else:
            owner = bytes([i]) * 32
            set_launch_policy(machine, LaunchPolicy.FLC_LOCKED, owner_key_hash=owner)
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_concurrent_writers_lose_no_update(machine: Machine) -> None:
    workers = [("config", 0), ("launch", 0), ("config", 100), ("launch", 100)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(machine.path), role, str(base), str(ROUNDS)],
            env=_env(),
            stderr=subprocess.PIPE,
        )
        for role, base in workers
    ]
    errors = [(p.wait(timeout=300), p.stderr.read() if p.stderr else b"") for p in procs]
    assert errors == [(0, b"")] * len(procs)
    config = Machine.open(machine.path).config
    lasts = {ROUNDS, 100 + ROUNDS}
    assert config.epc_size // 4096 in lasts
    assert config.lc_locked and config.le_pubkey_hash is not None
    assert config.le_pubkey_hash[0] in lasts


def test_writers_through_the_cli_lose_no_update(machine: Machine) -> None:
    """`hwsim config set` and `hwsim sgx launch-control set` racing (the issue's case)."""
    hwsim = [sys.executable, "-c", "from hwsim._cli import main; main()"]
    m = ["--machine", str(machine.path)]
    owner = "11" * 32
    procs = [
        subprocess.Popen([*hwsim, *m, "config", "set", "epc_size", "32M"], env=_env()),
        subprocess.Popen(
            [*hwsim, *m, "sgx", "launch-control", "set", "flc-locked", "--owner-key", owner],
            env=_env(),
        ),
        subprocess.Popen([*hwsim, *m, "config", "set", "sme_enabled", "false"], env=_env()),
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    config = Machine.open(machine.path).config
    assert (config.epc_size, config.sme_enabled) == (32 << 20, False)
    assert config.lc_locked and config.le_pubkey_hash == bytes.fromhex(owner)


# A launch-policy change, killed at POINT: "put:N" at the Nth state.db write of the command,
# "toml:before" / "toml:after" around the replacement of machine.toml.
_KILLED_CHANGE = textwrap.dedent(
    """
    import os, signal, sys
    import hwsim.bios, hwsim.store
    from hwsim.machine import Machine
    from hwsim.sgx.launch import LaunchPolicy, set_launch_policy

    path, point = sys.argv[1], sys.argv[2]
    machine = Machine.open(path)
    def die():
        os.kill(os.getpid(), signal.SIGKILL)
    if point.startswith("put:"):
        n, real_put, calls = int(point[4:]), hwsim.store.StateTxn.put, []
        def put(self, *args):
            calls.append(args)
            if len(calls) == n:
                die()
            real_put(self, *args)
        hwsim.store.StateTxn.put = put
    else:
        real_write = hwsim.bios.write_atomic
        def write(*args, **kwargs):
            if point == "toml:before":
                die()
            real_write(*args, **kwargs)
            die()
        hwsim.bios.write_atomic = write
    set_launch_policy(machine, LaunchPolicy.FLC_LOCKED, allow=(bytes([0xAA]) * 32,))
    """
)


@pytest.mark.parametrize("point", ["put:1", "put:2", "toml:before", "toml:after"])
def test_a_killed_policy_change_leaves_old_or_new(machine: Machine, point: str) -> None:
    set_launch_policy(machine, LaunchPolicy.FLC_LOCKED, owner_key_hash=OWNER)
    machine.power_cycle()
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_CHANGE, str(machine.path), point],
        env=_env(),
        capture_output=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    reopened = Machine.open(machine.path)
    old = _is_old(reopened.config)
    reopened.power_cycle()
    lc = launch_control(reopened)
    assert lc.policy is LaunchPolicy.FLC_LOCKED, f"killed at {point}: {lc.policy.value}"
    if old:
        assert (lc.msr_hash, lc.owner_allow, lc.msrs_writable) == (OWNER, (), False)
    else:
        assert (lc.owner_allow, lc.msrs_writable) == ((ALLOWED,), True)


def _is_old(config: BiosConfig) -> bool:
    return config.lc_locked and config.le_pubkey_hash == OWNER


def test_a_change_cannot_hide_inside_an_open_transaction(machine: Machine) -> None:
    with machine.transaction(), pytest.raises(RuntimeError, match="commit on their own"):
        machine.set_config("epc_size", "8M")
