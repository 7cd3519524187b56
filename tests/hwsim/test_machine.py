"""Machine directories, transactions, secrets, power cycles and resets."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.errors import MachineError
from hwsim.machine import Machine, default_machine_path
from memcrypt.errors import InvalidInput

MachineFactory = Callable[..., Machine]


def test_init_makes_directory_with_toml_and_db(machine: Machine) -> None:
    assert (machine.path / "machine.toml").is_file()
    assert (machine.path / "state.db").is_file()
    assert machine.profile.name == "sim"
    assert machine.boot_count == 1
    assert not [p for p in machine.path.parent.iterdir() if p.name.startswith(".")]


def test_init_refuses_existing_machine(machine: Machine) -> None:
    before = (machine.path / "state.db").read_bytes()
    with pytest.raises(MachineError, match="already exists"):
        Machine.init(machine.path)
    assert (machine.path / "state.db").read_bytes() == before


def test_init_refuses_non_empty_directory(tmp_path: Path, sgx_vendor_key: object) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(MachineError, match="not empty"):
        Machine.init(tmp_path / "busy", vendor_key=sgx_vendor_key)  # type: ignore[arg-type]
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_init_unknown_profile_lists_known(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"known profiles: .*skylake"):
        Machine.init(tmp_path / "m", "pentium")
    assert not (tmp_path / "m").exists()


def test_open_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MachineError, match="no machine at") as info:
        Machine.open(tmp_path / "nowhere")
    assert info.value.hint is not None and "hwsim init" in info.value.hint
    assert not (tmp_path / "nowhere").exists()


def test_open_reopens_same_state(machine: Machine) -> None:
    with machine.transaction() as txn:
        txn.put("app", "k", b"v")
    again = Machine.open(machine.path)
    with again.transaction(write=False) as txn:
        assert txn.get("app", "k") == b"v"
    assert again.fused_secret("x") == machine.fused_secret("x")


def test_default_machine_created_once_with_notice(capsys: pytest.CaptureFixture[str]) -> None:
    first = Machine.default()
    assert first.path == default_machine_path()
    assert capsys.readouterr().err.count("created machine") == 1
    second = Machine.default()
    assert second.fused_secret("a") == first.fused_secret("a")
    assert capsys.readouterr().err == ""


def test_default_path_honours_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HWSIM_MACHINE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_machine_path() == tmp_path / "data" / "hwsim" / "default"


def test_key_value_namespaces(machine: Machine) -> None:
    with machine.transaction() as txn:
        txn.put("a", "x", b"1")
        txn.put("a", "y", b"2")
        txn.put("b", "x", b"3")
        txn.delete("a", "y")
        assert txn.keys("a") == ["x"]
        assert txn.get("a", "y") is None
        assert txn.get("b", "x") == b"3"


def test_put_refuses_non_bytes(machine: Machine) -> None:
    with machine.transaction() as txn, pytest.raises(TypeError):
        txn.put("a", "x", "text")  # type: ignore[arg-type]


def test_exception_rolls_back_whole_transaction(machine: Machine) -> None:
    with pytest.raises(RuntimeError), machine.transaction() as txn:
        txn.put("a", "x", b"1")
        txn.dram_write(0x2000, b"lost", None)
        raise RuntimeError("boom")
    with machine.transaction(write=False) as txn:
        assert txn.get("a", "x") is None
        assert txn.physical_read(0x2000, 4) == bytes(4)


def test_nested_transactions_join_outer(machine: Machine) -> None:
    with machine.transaction() as outer:
        outer.put("a", "x", b"1")
        assert machine.fused_secret("l") == outer.fused_secret("l")
        with machine.transaction() as inner:
            assert inner.get("a", "x") == b"1"


def test_power_cycle_keeps_fused_changes_boot(machine: Machine) -> None:
    fused, boot = machine.fused_secret("seal"), machine.boot_secret("epc")
    with machine.transaction() as txn:
        txn.put("boot.guests", "g1", b"ctx")
        txn.put("psp", "nv", b"keep")
    machine.power_cycle()
    assert machine.boot_count == 2
    assert machine.fused_secret("seal") == fused
    assert machine.boot_secret("epc") != boot
    with machine.transaction(write=False) as txn:
        assert txn.get("boot.guests", "g1") is None
        assert txn.get("psp", "nv") == b"keep"


def test_reset_changes_everything_but_vendor(machine: Machine) -> None:
    fused, boot = machine.fused_secret("seal"), machine.boot_secret("epc")
    vendor = machine.sgx_vendor_key_hash()
    with machine.transaction() as txn:
        txn.put("psp", "nv", b"gone")
        txn.dram_write(0, b"gone", None)
    machine.power_cycle()
    machine.reset()
    assert machine.boot_count == 1
    assert machine.fused_secret("seal") != fused
    assert machine.boot_secret("epc") != boot
    assert machine.sgx_vendor_key_hash() == vendor
    with machine.transaction(write=False) as txn:
        assert txn.get("psp", "nv") is None
        assert txn.physical_read(0, 4) == bytes(4)


def test_secrets_are_label_separated_and_per_machine(machine_factory: MachineFactory) -> None:
    a, b = machine_factory(), machine_factory()
    assert len(a.fused_secret("x")) == 32
    assert a.fused_secret("x") != a.fused_secret("y")
    assert a.fused_secret("x") != b.fused_secret("x")
    assert a.fused_secret("x") != a.boot_secret("x")


def test_vendor_key_hash_is_mrsigner_of_private_key(machine: Machine) -> None:
    with machine.transaction(write=False) as txn:
        key = txn.sgx_vendor_private_key()
    n = key.public_key().public_numbers().n
    assert key.key_size == 3072 and key.public_key().public_numbers().e == 3
    expected = hashlib.sha256(n.to_bytes(384, "little")).digest()
    assert machine.sgx_vendor_key_hash() == expected


def test_vendor_key_must_be_rsa3072_e3(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidInput, match="RSA-3072"):
        Machine.init(tmp_path / "m", vendor_key=small)


def test_set_config_takes_effect_at_power_cycle(machine: Machine) -> None:
    machine.set_config("sgx_enabled", "false")
    assert Machine.open(machine.path).config.sgx_enabled is False
    assert machine.cpuid(0x12)[0] & 1  # still the booted setting: SGX1
    machine.power_cycle()
    assert machine.cpuid(0x12) == (0, 0, 0, 0)


def test_set_config_refuses_feature_the_part_lacks(machine_factory: MachineFactory) -> None:
    m = machine_factory("skylake")
    before = (m.path / "machine.toml").read_text()
    with pytest.raises(InvalidInput, match="lc_locked = false: profile skylake"):
        m.set_config("lc_locked", "false")
    with pytest.raises(InvalidInput, match="unknown BIOS setting 'turbo'"):
        m.set_config("turbo", "on")
    with pytest.raises(InvalidInput, match="epc_size = 1G: allowed 4K to"):
        m.set_config("epc_size", "1G")
    assert (m.path / "machine.toml").read_text() == before


def test_profile_is_fixed_at_init(machine: Machine) -> None:
    (machine.path / "machine.toml").write_text('profile = "naples"\n')
    with pytest.raises(MachineError, match="made as 'sim'"):
        Machine.open(machine.path)


def test_write_cannot_join_read_only_transaction(machine: Machine) -> None:
    with (
        machine.transaction(write=False),
        pytest.raises(RuntimeError, match="cannot join a read-only"),
    ):
        machine.power_cycle()
    assert machine.boot_count == 1


def test_threads_share_one_machine_object(machine: Machine) -> None:
    import threading

    def bump() -> None:
        for _ in range(50):
            with machine.transaction() as txn:
                count = int(txn.get("t", "n") or b"0")
                txn.put("t", "n", str(count + 1).encode())

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with machine.transaction(write=False) as txn:
        assert txn.get("t", "n") == b"200"


def test_oversized_machine_toml_is_refused(machine: Machine) -> None:
    """machine.toml is hand-edited and small; a huge one is refused, not parsed."""
    toml = machine.path / "machine.toml"
    with toml.open("a") as f:
        f.write("#" + "x" * (2 << 20) + "\n")
    with pytest.raises(MachineError, match="larger than 1048576 bytes"):
        Machine.open(machine.path)


def test_profile_change_is_named(machine_factory: MachineFactory) -> None:
    """A machine.toml edited to another part is refused for that reason, not for the first
    setting the other part cannot have."""
    made = machine_factory("naples", "n")
    toml = made.path / "machine.toml"
    toml.write_text(toml.read_text().replace('profile = "naples"', 'profile = "skylake"'))
    with pytest.raises(MachineError, match="names profile 'skylake' but the machine was made"):
        Machine.open(made.path)
