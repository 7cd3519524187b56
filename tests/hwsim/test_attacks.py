"""The attack lab: one test per matrix cell, and what the attackers really read.

Expected values are ``shared/reference/sim.md`` 4.5's (rows 1-12; its "~" is partial,
its n/a is n/a) and its SGX notes (MEE: integrity and freshness, 7b blocked; Ice Lake-SP's
XTS: 7b succeeds; software attacks on the EPC get the abort page). Where sim.md has no
value the model decides, and :data:`MODEL_DECIDES` says why for each such cell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hwsim._render_attacks import render_matrix
from hwsim.attacks import ATTACKS, Outcome, Target, run_attack
from hwsim.attacks.matrix import COLUMNS, Matrix, run_matrix
from hwsim.machine import Machine
from hwsim.sev.device import SevDevice
from hwsim.sev.kvm import SevVm
from tests.hwsim.test_cli import hwsim

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

R, P, B, NA = Outcome.RECOVERED, Outcome.PARTIAL, Outcome.BLOCKED, Outcome.NA
COLS = [c.name for c in COLUMNS]
# Columns: none, SME, TSME, SEV, SEV-ES, SGX (MEE), SGX (XTS).
EXPECTED: dict[str, tuple[Outcome, ...]] = {
    "cold-boot": (R, B, B, B, B, B, B),  # row 1
    "bus-snoop": (R, P, P, P, P, B, P),  # row 2: equality leaks; the MEE's counter hides them
    "dma": (R, B, R, B, B, B, B),  # row 3
    "kernel-read": (R, R, R, NA, NA, B, B),
    "pmem": (R, R, B, NA, NA, NA, NA),
    "hv-read": (R, R, R, B, B, NA, NA),  # row 4
    "hv-regs-read": (R, R, R, R, B, NA, NA),  # row 5
    "hv-regs-write": (R, R, R, R, B, NA, NA),  # row 6
    "replay": (R, R, R, R, R, B, B),  # row 7
    "replay-physical": (R, R, R, R, R, B, R),  # row 7b and the SGX notes
    "remap": (R, R, R, R, R, NA, NA),  # row 8
    "block-move": (R, R, R, P, P, B, B),  # row 9 (see MODEL_DECIDES)
    "bounce-oracle": (NA, NA, NA, R, R, NA, NA),  # row 10
    "asid-swap": (NA, NA, NA, R, R, NA, NA),  # row 11
    "cipherleaks": (NA, NA, NA, R, R, NA, NA),  # row 12
}
MODEL_DECIDES = {
    ("dma", "TSME"): "TSME is transparent: the memory controller decrypts for devices too",
    ("kernel-read", "SME"): "SME does not stop privileged software (the article)",
    ("kernel-read", "SGX (MEE)"): "host reads of the EPC get the abort page",
    ("pmem", "SME"): "Linux maps persistent memory decrypted: the SME key changes per boot",
    ("pmem", "TSME"): "TSME encrypts all DRAM, pmem included, with a per-boot key",
    ("bus-snoop", "SGX (MEE)"): "the MEE's per-write version makes every ciphertext new",
    ("replay-physical", "SGX (MEE)"): "SGX1's MEE stops the physical replay (freshness) "
    "that Ice Lake-SP's XTS allows",
    ("block-move", "SEV"): "sim.md rates it as succeeding on Zen 1's XE tweak (unverified); "
    "the simulator's engine is XTS, so a moved block decrypts to garbage: integrity lost "
    "(partial), content not recovered",
    ("replay", "SGX (XTS)"): "software cannot reach the EPC (abort page) whatever the engine",
}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory, sgx_vendor_key: RSAPrivateKey) -> Matrix:
    return run_matrix("sim", vendor_key=sgx_vendor_key, workdir=tmp_path_factory.mktemp("m"))


@pytest.mark.parametrize("column", COLS)
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_matrix_cell(matrix: Matrix, attack: str, column: str) -> None:
    """Each cell as sim.md 4.5 (or MODEL_DECIDES) says."""
    result = matrix.cell(attack, column)
    expected = EXPECTED[attack][COLS.index(column)]
    assert result.outcome is expected, (result.cell, MODEL_DECIDES.get((attack, column)))


def test_matrix_columns_run_on_fitting_parts(matrix: Matrix) -> None:
    assert matrix.profiles["SGX (MEE)"] == "skylake" and matrix.profiles["SME"] == "sim"
    assert set(matrix.cells) == {(a, c) for a in ATTACKS for c in COLS}


def test_cold_boot_reads_the_dimm_not_a_key(machine_factory: type) -> None:
    """Without SME the dump holds the planted key; with SME the same bytes are ciphertext,
    and the power cycle gave the machine a new host key."""
    plain = machine_factory("sim", "plain")
    plain.set_config("sme_enabled", "false")
    plain.power_cycle()
    result = run_attack(plain, "cold-boot")
    disk = result.secrets[0]
    assert disk.recovered and result.power_cycled and len(result.observed) > 64
    sme = machine_factory("sim", "sme")
    hwsim("--machine", str(sme.path), "power-cycle")
    from hwsim.sme.boot import configure

    configure(sme, enable=True)
    sme.power_cycle()
    boots = sme.boot_count
    enc = run_attack(sme, "cold-boot")
    assert not any(s.recovered for s in enc.secrets) and sme.boot_count == boots + 1
    assert enc.observed[:64] != bytes(64)


def test_bus_snoop_shows_the_pattern(matrix: Matrix) -> None:
    seen = matrix.cell("bus-snoop", "SME").observed
    first, second, third = seen[:16], seen[16:32], seen[32:48]
    assert first == third != second


def test_kernel_read_of_the_epc_is_the_abort_page(matrix: Matrix) -> None:
    assert matrix.cell("kernel-read", "SGX (XTS)").observed[:32] == b"\xff" * 32


def test_the_lab_cleans_up_the_machine(machine: Machine) -> None:
    run_attack(machine, "hv-read", Target.SEV)
    run_attack(machine, "asid-swap", Target.SEV)
    with SevDevice.open(machine) as dev:
        assert SevVm.all(dev) == []
    run_attack(machine, "kernel-read")
    with machine.transaction(write=False) as txn:
        assert txn.physical_read(0x0120_0000, 64) == bytes(64)


def test_render_matrix_plain(matrix: Matrix, capsys: pytest.CaptureFixture[str]) -> None:
    render_matrix(matrix)
    out = capsys.readouterr().out
    assert out.splitlines()[1].split("\t")[0] == "attack"
    assert "SEV: Guests against a benign but vulnerable hypervisor" in out
    assert not any(line != line.rstrip() for line in out.splitlines())


def test_cli_one_attack_json_and_text(machine: Machine) -> None:
    run = hwsim("--machine", str(machine.path), "attack", "hv-read", "--target", "sev", "--json")
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["outcome"] == "blocked" and "guest's key" in data["detail"]
    assert len(bytes.fromhex(data["read_excerpt"])) == 16
    region = data["secrets"][0]["map_region"]
    assert region["kind"] == "guest-private" and region["owner"].startswith("guest ")
    text = hwsim("--machine", str(machine.path), "attack", "kernel-read")
    assert text.code == 0 and "outcome: recovered" in text.out
    assert "attacker read: " in text.out
    assert "disk encryption key: memory map: host 0x100000-0x3c000000 (no key)" in text.out


# What an attacker's code may not touch: key slots, secrets, the engine, DRAM without a view.
FORBIDDEN = (
    "txn.dram_", "txn.physical_", "txn.engine", ".memory.", "set_key", "_slot",
    "boot_secret", "fused_secret", "xts_key", "vendor_private_key", "read_ciphertext",
)  # fmt: skip


def test_attackers_read_memory_only_through_the_views() -> None:
    """Issue 13's must-hold: the attackers' module reaches memory through hwsim.memview's
    views (and the hypervisor's own API), never a key slot or the engine."""
    source = (Path(__file__).parents[2] / "hwsim" / "attacks" / "_lab.py").read_text()
    assert [word for word in FORBIDDEN if word in source] == []
    assert "read_in(" in source and "write_in(" in source


def test_cli_refusals(machine: Machine, tmp_path: Path) -> None:
    bad = hwsim("--machine", str(machine.path), "attack", "teleport")
    assert bad.code == 2 and "unknown attack 'teleport'" in bad.one_error_line()
    assert hwsim("attack").code == 2
    assert hwsim("attack", "dma", "--matrix").code == 2
