"""The ``hwsim`` command line, run through its real entry point (``main``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwsim._cli import main
from hwsim.machine import Machine

MachineFactory = Callable[..., Machine]
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def one_error_line(self) -> str:
        lines = self.err.strip().splitlines()
        assert lines and lines[0].startswith("hwsim: error: "), self.err
        assert "Traceback" not in self.err
        assert all(line.startswith("hwsim: hint: ") for line in lines[1:]), self.err
        return lines[0]


def hwsim(*args: str, input: str | None = None) -> Run:
    with CliRunner().isolation(input=input) as (out, err, _mixed):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return Run(code, out.getvalue().decode(), err.getvalue().decode())


def test_help_lists_every_command() -> None:
    run = hwsim("--help")
    assert run.code == 0
    for command in ("init", "status", "profiles", "power-cycle", "reset", "config", "cpuid", "msr"):
        assert command in run.out


def test_help_imports_no_heavy_modules() -> None:
    code = (
        "import sys; from hwsim._cli import main\n"
        "try: main(['--help'])\nexcept SystemExit: pass\n"
        "heavy = [m for m in ('rich', 'cryptography', 'unicorn') if m in sys.modules]\n"
        "sys.exit(repr(heavy) if heavy else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_init_status_json(tmp_path: Path) -> None:
    target = tmp_path / "m"
    run = hwsim("init", "--profile", "naples", str(target))
    assert run.code == 0 and "created machine" in run.out
    run = hwsim("--machine", str(target), "status", "--json")
    assert run.code == 0
    status = json.loads(run.out)
    assert status["profile"]["name"] == "naples"
    assert status["profile"]["features"] == ["SME", "SEV"]
    assert status["boot_count"] == 1 and status["key_slots"] == [0]
    assert status["msrs"]["SYSCFG"] == "0x0000000000800000"
    assert status["schema_version"] == 3 and status["pending_bios"] == {}


def test_status_rich_table(machine: Machine) -> None:
    run = hwsim("--machine", str(machine.path), "status")
    assert run.code == 0
    assert "IA32_FEATURE_CONTROL" in run.out and "not a real part" in run.out


def test_init_existing_refused(machine: Machine) -> None:
    run = hwsim("init", str(machine.path))
    assert run.code == 1
    assert "already exists" in run.one_error_line()


def test_init_unknown_profile_is_usage_error(tmp_path: Path) -> None:
    run = hwsim("init", "--profile", "pentium", str(tmp_path / "m"))
    assert run.code == 2 and not (tmp_path / "m").exists()


def test_default_machine_made_with_notice() -> None:
    run = hwsim("cpuid", "0")
    assert run.code == 0
    assert run.err.count("hwsim: created machine") == 1 and len(run.err.splitlines()) == 1


def test_profiles_lists_all(tmp_path: Path) -> None:
    run = hwsim("profiles", "--json")
    names = [p["name"] for p in json.loads(run.out)]
    assert names == ["skylake", "icelake-sp", "naples", "rome", "sim"]
    table = hwsim("profiles")
    assert table.code == 0 and "SEV-ES" in table.out and "FLC" in table.out


def test_power_cycle_and_reset(machine: Machine) -> None:
    fused = machine.fused_secret("x")
    run = hwsim("--machine", str(machine.path), "power-cycle")
    assert run.code == 0 and "boot 2" in run.out
    refused = hwsim("--machine", str(machine.path), "reset", input="n\n")
    assert refused.code == 1 and machine.fused_secret("x") == fused
    done = hwsim("--machine", str(machine.path), "reset", input="y\n")
    assert done.code == 0 and machine.fused_secret("x") != fused
    fused = machine.fused_secret("x")
    assert hwsim("--machine", str(machine.path), "reset", "--yes").code == 0
    assert machine.fused_secret("x") != fused


def test_config_get_set(machine: Machine) -> None:
    m = str(machine.path)
    assert hwsim("--machine", m, "config", "get", "sgx_enabled").out == "sgx_enabled = true\n"
    run = hwsim("--machine", m, "config", "set", "epc_size", "128M")
    assert run.code == 0 and "next power-cycle" in run.out
    assert json.loads(hwsim("--machine", m, "config", "get", "--json").out)["epc_size"] == "128M"
    bad = hwsim("--machine", m, "config", "set", "epc_size", "huge")
    assert bad.code == 2 and "epc_size = 'huge'" in bad.one_error_line()
    unknown = hwsim("--machine", m, "config", "get", "fan")
    assert unknown.code == 2 and "unknown BIOS setting 'fan'" in unknown.one_error_line()


def test_cpuid_command(machine_factory: MachineFactory) -> None:
    m = str(machine_factory("naples").path)
    run = hwsim("--machine", m, "cpuid", "0x8000001f")
    assert run.out.split() == [
        "eax=0x00000003",
        "ebx=0x0000016f",
        "ecx=0x0000000f",
        "edx=0x00000001",
    ]
    regs = json.loads(hwsim("--machine", m, "cpuid", "7", "0", "--json").out)
    assert regs["ebx"] == "0x00000000"
    assert hwsim("--machine", m, "cpuid", "seven").code == 2


def test_msr_read_write(machine: Machine) -> None:
    m = str(machine.path)
    assert hwsim("--machine", m, "msr", "read", "IA32_FEATURE_CONTROL").out.strip() == (
        "0x0000000000060001"
    )
    assert hwsim("--machine", m, "msr", "write", "0x8c", "0x1234").code == 0
    assert json.loads(hwsim("--machine", m, "msr", "read", "0x8c", "--json").out)["value"] == (
        "0x0000000000001234"
    )
    refused = hwsim("--machine", m, "msr", "write", "0x3a", "0")
    assert refused.code == 1 and "#GP(0)" in refused.one_error_line()
    absent = hwsim("--machine", m, "msr", "read", "0x1234")
    assert absent.code == 1 and "no such MSR" in absent.one_error_line()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "no machine at"),
        ("toml", "invalid TOML"),
        ("db", "is unusable"),
        ("schema", "newer than this hwsim supports"),
    ],
)
def test_unusable_machine_one_line_nothing_overwritten(
    machine: Machine, damage: str, message: str
) -> None:
    path = machine.path
    machine.close()
    if damage == "missing":
        path = path.parent / "absent"
    elif damage == "toml":
        (path / "machine.toml").write_text("profile = = 1\n")
    elif damage == "db":
        (path / "state.db").write_bytes(b"garbage" * 1000)
    else:
        import sqlite3

        db = sqlite3.connect(path / "state.db")
        db.execute("PRAGMA user_version = 7")
        db.commit()
        db.close()
    before = {p.name: p.read_bytes() for p in path.glob("*")} if path.exists() else {}
    for args in (["status"], ["power-cycle"], ["reset", "--yes"], ["msr", "write", "0x8c", "1"]):
        run = hwsim("--machine", str(path), *args)
        assert run.code == 1
        assert message in run.one_error_line()
    after = {p.name: p.read_bytes() for p in path.glob("*")} if path.exists() else {}
    assert after == before
    assert path.exists() == (damage != "missing")


def test_debug_keeps_traceback(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no machine at"):
        main(["--debug", "--machine", str(tmp_path / "none"), "status"])


def _secrets(machine: Machine) -> list[bytes]:
    """Every secret the machine holds, read straight from state.db."""
    import sqlite3

    db = sqlite3.connect(machine.path / "state.db")
    rows = db.execute(
        "SELECT ns, value FROM kv WHERE ns IN ('fused', 'boot.secret', 'boot.keys')"
    ).fetchall()
    db.close()
    found = [bytes(v) for _ns, v in rows]
    with machine.transaction(write=False) as txn:
        numbers = txn.sgx_vendor_private_key().private_numbers()
    for n in (numbers.p, numbers.q, numbers.d):
        found.append(n.to_bytes((n.bit_length() + 7) // 8, "big"))
    return found


def test_no_command_prints_a_secret(machine: Machine) -> None:
    secrets = _secrets(machine)
    assert len(secrets) >= 6
    m = str(machine.path)
    commands = [
        ["status", "--json"],
        ["status"],
        ["config", "get", "--json"],
        ["profiles", "--json"],
        ["cpuid", "0x12", "1"],
        *(["msr", "read", hex(i)] for i in (0x3A, 0x8C, 0x8D, 0x8E, 0x8F, 0xC0010010)),
    ]
    printed = "".join(hwsim("--machine", m, *c).out for c in commands)
    for secret in secrets:
        number = int.from_bytes(secret, "big")
        for form in (secret.hex(), secret[:8].hex(), str(number), f"{number:x}"):
            assert form not in printed.replace("\n", "")
