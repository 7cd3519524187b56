"""state.db schema versions, migration, and refusal of unusable machines."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.errors import MachineError
from hwsim.machine import Machine
from hwsim.memory import PAGE_SIZE
from hwsim.sgx.platform import epc_of
from hwsim.status import machine_status
from hwsim.store import SCHEMA_VERSION


def _snapshot(machine_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in machine_dir.iterdir() if p.is_file()}


def _downgrade_to_v2(db_path: Path) -> None:
    """Rewrite a current state.db in the schema-2 layout: no record of the PRM."""
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("BEGIN")
    db.execute("DELETE FROM kv WHERE ns = 'boot.prm'")
    db.execute("PRAGMA user_version = 2")
    db.execute("COMMIT")
    db.close()


def _downgrade_to_v1(db_path: Path) -> None:
    """Rewrite a current state.db in the schema-1 layout (see hwsim/store.py)."""
    _downgrade_to_v2(db_path)
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("BEGIN")
    for page, data in db.execute("SELECT page, data FROM dram").fetchall():
        db.execute("INSERT INTO kv VALUES ('dram', ?, ?)", (f"{page:x}", data))
    db.execute("DROP TABLE dram")
    db.execute("PRAGMA user_version = 1")
    db.execute("COMMIT")
    db.close()


def test_new_machine_has_current_schema(machine: Machine) -> None:
    assert machine.schema_version == SCHEMA_VERSION == 3


@pytest.mark.parametrize("downgrade", [_downgrade_to_v1, _downgrade_to_v2])
def test_older_machine_is_migrated(machine: Machine, downgrade: Callable[[Path], None]) -> None:
    fused = machine.fused_secret("seal")
    with machine.transaction() as txn:
        txn.dram_write(0x5000, b"kept across migration", 0)
        txn.physical_write(0x12_3000, b"plain")
        prm = txn.engine.prm()
    machine.close()
    downgrade(machine.path / "state.db")

    again = Machine.open(machine.path)
    assert again.schema_version == SCHEMA_VERSION
    assert again.fused_secret("seal") == fused
    with again.transaction(write=False) as txn:
        assert txn.dram_read(0x5000, 21, 0) == b"kept across migration"
        assert txn.physical_read(0x12_3000, 5) == b"plain"
        assert txn.keys("dram") == []
        assert txn.engine.prm() == prm  # the PRM this boot's BIOS settings reserved
    epc = epc_of(again)
    page = epc.alloc()
    epc.write(page, b"migrated".ljust(PAGE_SIZE, b"\0"))
    with again.transaction(write=False) as txn:
        assert txn.physical_read(epc.paddr(page), PAGE_SIZE) == epc.read_ciphertext(page)


def test_migration_leaves_a_boot_without_sgx_without_prm(machine: Machine) -> None:
    machine.set_config("sgx_enabled", "false")
    machine.power_cycle()
    machine.close()
    _downgrade_to_v2(machine.path / "state.db")
    with Machine.open(machine.path) as again, again.transaction(write=False) as txn:
        assert txn.engine.prm() is None


def _set_user_version(machine: Machine, version: int) -> None:
    machine.close()
    db = sqlite3.connect(machine.path / "state.db")
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


def test_newer_schema_refused_untouched(machine: Machine) -> None:
    _set_user_version(machine, 99)
    before = _snapshot(machine.path)
    with pytest.raises(MachineError, match="schema version 99, newer than") as info:
        Machine.open(machine.path)
    assert info.value.hint is not None
    assert _snapshot(machine.path) == before


def test_foreign_sqlite_database_refused(tmp_path: Path, machine: Machine) -> None:
    (machine.path / "state.db").unlink()
    db = sqlite3.connect(machine.path / "state.db")
    db.execute("CREATE TABLE songs (title TEXT)")
    db.commit()
    db.close()
    before = _snapshot(machine.path)
    with pytest.raises(MachineError, match=r"not a hwsim machine state \(schema version 0\)"):
        Machine.open(machine.path)
    assert _snapshot(machine.path) == before


@pytest.mark.parametrize(
    "content", [b"this is not a database at all" * 200, b"SQLite format 3\0" + bytes(84)]
)
def test_corrupt_state_db_refused_untouched(machine: Machine, content: bytes) -> None:
    machine.close()
    for leftover in machine.path.glob("state.db-*"):
        leftover.unlink()
    (machine.path / "state.db").write_bytes(content)
    before = _snapshot(machine.path)
    with pytest.raises(MachineError, match=r"state database .*state\.db is unusable"):
        Machine.open(machine.path)
    assert _snapshot(machine.path) == before


def test_missing_state_db(machine: Machine) -> None:
    machine.close()
    (machine.path / "state.db").unlink()
    with pytest.raises(MachineError, match=r"state\.db is missing"):
        Machine.open(machine.path)
    assert not (machine.path / "state.db").exists()


def test_not_a_machine_directory(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    with pytest.raises(MachineError, match=r"is not a hwsim machine \(no machine.toml\)"):
        Machine.open(tmp_path / "photos")
    (tmp_path / "file").write_text("x")
    with pytest.raises(MachineError, match="not a directory"):
        Machine.open(tmp_path / "file")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('profile = "sim"\n[bios\n', "invalid TOML"),
        ('profile = "pentium"\n', "unknown profile 'pentium'"),
        ("profile = 3\n", "profile = 3: allowed one of skylake"),
        ('profile = "sim"\nturbo = true\n', "unknown key 'turbo'"),
        ('profile = "sim"\n[bios]\nsgx_enabled = "maybe"\n', "sgx_enabled = 'maybe': allowed"),
        ('profile = "sim"\n[bios]\nepc_size = "lots"\n', "epc_size = 'lots': allowed a size"),
        ('profile = "sim"\n[bios]\nepc_size = 1000\n', "multiple of 4K"),
        ('profile = "sim"\n[bios]\nle_pubkey_hash = "abc"\n', "le_pubkey_hash = 'abc'"),
        ('profile = "sim"\n[bios]\nfan = 1\n', "unknown BIOS setting 'fan'"),
        ('profile = "sim"\nbios = 1\n', "bios must be a table"),
    ],
)
def test_bad_machine_toml_refused_untouched(machine: Machine, toml: str, message: str) -> None:
    (machine.path / "machine.toml").write_text(toml)
    before = _snapshot(machine.path)
    with pytest.raises(MachineError, match=message) as info:
        Machine.open(machine.path)
    assert "machine.toml" in str(info.value) and "\n" not in str(info.value)
    assert _snapshot(machine.path) == before


def test_partial_bios_table_takes_profile_defaults(machine: Machine) -> None:
    (machine.path / "machine.toml").write_text('profile = "sim"\n[bios]\nepc_size = "64M"\n')
    config = Machine.open(machine.path).config
    assert config.epc_size == 64 << 20 and config.sgx_enabled and config.sme_enabled


def test_damaged_pages_refused_on_use_untouched(machine: Machine) -> None:
    with machine.transaction() as txn:
        txn.dram_write(0, bytes(200_000), 0)
    machine.close()
    db = machine.path / "state.db"
    damaged = bytearray(db.read_bytes())
    for offset in range(65536, len(damaged), 65536):  # every B-tree page header
        damaged[offset : offset + 64] = b"\x13" * 64
    db.write_bytes(bytes(damaged))
    with pytest.raises(MachineError, match="database disk image is malformed"):
        machine_status(Machine.open(machine.path))
    assert db.read_bytes() == bytes(damaged)
