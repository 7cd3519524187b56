"""``sevtool`` end to end through click's runner: platform commands and chain verification."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwsim.machine import Machine
from sevtool._cli import main

AMD = "sev/virtee-sev/builtin-sev"


@dataclass
class Result:
    code: int
    out: str
    err: str


def sevtool(*args: str | Path) -> Result:
    """Run ``sevtool ARGS`` the way the console script does (errors -> exit codes)."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return Result(code, out.getvalue().decode(), err.getvalue().decode())


def one_error_line(result: Result) -> str:
    lines = [line for line in result.err.splitlines() if line.startswith("sevtool: error:")]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    return lines[0]


@pytest.fixture
def m(machine: Machine) -> Path:
    return machine.path


def test_show_json_and_text(m: Path) -> None:
    result = sevtool("--machine", m, "show", "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    assert info["state"] == "UNINIT" and info["owner"] == "self" and info["api"] == "0.24"
    text = sevtool("show", "--machine", m)
    assert "self-owned" in text.out and "0.24 build 15" in text.out


def test_export_full_verifies_against_sim_ark_and_not_amds(
    m: Path, tmp_path: Path, vector: Callable[[str], Path]
) -> None:
    out = tmp_path / "chain"
    assert sevtool("--machine", m, "export", "--full", "--dir", out).code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "ark.cert",
        "ask.cert",
        "cek.cert",
        "oca.cert",
        "pdh.cert",
        "pek.cert",
    ]
    ok = sevtool("verify", out, "--json")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["verified"] is True
    assert json.loads(ok.out)["roots"] == "the simulator's (hwsim), not AMD's (given)"
    for gen in ("naples", "rome", "milan"):
        bad = sevtool(
            "verify",
            out,
            "--ark",
            vector(f"{AMD}/{gen}/ark.cert"),
            "--ask",
            vector(f"{AMD}/{gen}/ask.cert"),
        )
        assert bad.code == 1
        assert "this chain is the simulator's, not AMD's" in one_error_line(bad)
        assert "FAILED" in bad.out


def test_export_without_full_uses_the_simulators_roots(m: Path, tmp_path: Path) -> None:
    assert sevtool("--machine", m, "export", "--dir", tmp_path / "c").code == 0
    found = sevtool("verify", tmp_path / "c", "--json")
    assert found.code == 0, found.err
    assert json.loads(found.out)["roots"] == "the simulator's (hwsim), not AMD's (built in)"
    (tmp_path / "c" / "pdh.cert").unlink()
    incomplete = sevtool("verify", tmp_path / "c")
    assert incomplete.code == 2
    assert "no PDH" in one_error_line(incomplete)
    partial = sevtool("verify", tmp_path / "c", "--partial", "--json")
    assert partial.code == 0
    assert json.loads(partial.out)["complete"] is False


@pytest.mark.parametrize("gen", ["naples", "rome"])
def test_real_chain_verifies_from_named_files(vector: Callable[[str], Path], gen: str) -> None:
    chain = vector(f"sev/virtee-sev/{gen}/pek.cert").parent
    result = sevtool(
        "verify",
        chain,
        "--ark",
        vector(f"{AMD}/{gen}/ark.cert"),
        "--ask",
        vector(f"{AMD}/{gen}/ask.cert"),
        "--json",
    )
    assert result.code == 0, result.err
    links = json.loads(result.out)["links"]
    assert len(links) == 7 and all(link["ok"] for link in links)


def test_naples_ark_without_signature_uses_the_sig_file(
    vector: Callable[[str], Path], tmp_path: Path
) -> None:
    bad_ark = vector("sev/virtee-sev/naples/ark.cert.bad")
    vector("sev/virtee-sev/naples/ark.cert.sig")
    common: list[str | Path] = [
        "--ark",
        bad_ark,
        "--ask",
        vector(f"{AMD}/naples/ask.cert"),
        "--partial",
    ]
    assert sevtool("verify", *common).code == 0  # ark.cert.sig found beside it
    alone = tmp_path / "ark.cert"
    alone.write_bytes(bad_ark.read_bytes())
    refused = sevtool("verify", "--ark", alone, "--partial")
    assert refused.code == 1
    assert "no signature" in one_error_line(refused)
    assert "ark.cert.sig" in refused.err


def test_naples_cek_under_rome_ask_fails(vector: Callable[[str], Path]) -> None:
    result = sevtool(
        "verify",
        "--cek",
        vector("sev/virtee-sev/naples/cek.cert"),
        "--ask",
        vector(f"{AMD}/rome/ask.cert"),
        "--partial",
    )
    assert result.code == 1
    line = one_error_line(result)
    assert "this CEK is Naples-generation (RSA_SHA256), the ASK is Rome" in line
    assert "[check: generation]" in line


def test_malformed_input_exits_2(vector: Callable[[str], Path], tmp_path: Path) -> None:
    short = tmp_path / "pdh.cert"
    short.write_bytes(vector("sev/virtee-sev/rome/pdh.cert").read_bytes()[:2000])
    result = sevtool("verify", "--pdh", short, "--partial")
    assert result.code == 2
    assert "must be 2084 bytes, got 2000" in one_error_line(result)


def test_flipped_byte_exits_1_naming_the_check(
    vector: Callable[[str], Path], tmp_path: Path
) -> None:
    data = bytearray(vector("sev/virtee-sev/rome/pdh.cert").read_bytes())
    data[0x14] ^= 1
    (tmp_path / "pdh.cert").write_bytes(bytes(data))
    result = sevtool(
        "verify",
        "--pdh",
        tmp_path / "pdh.cert",
        "--pek",
        vector("sev/virtee-sev/rome/pek.cert"),
        "--partial",
        "--json",
    )
    assert result.code == 1
    failed = [link for link in json.loads(result.out)["links"] if not link["ok"]]
    assert [(f["subject"], f["check"]) for f in failed] == [("pdh", "point")]


def test_generate_provision_survives_power_cycle_reset_clears(m: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "oca.cert", tmp_path / "oca.key"
    assert sevtool("generate", cert, key).code == 0
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert sevtool("generate", cert, key).code == 2  # never overwrites an owner key
    assert sevtool("--machine", m, "provision", cert, key).code == 0
    again = sevtool("--machine", m, "provision", cert, key)
    assert again.code == 1 and "ALREADY_OWNED (0x05)" in one_error_line(again)
    with Machine.open(m) as machine:
        machine.power_cycle()
    shown = json.loads(sevtool("--machine", m, "show", "--json").out)
    assert shown["owner"] == "external" and shown["state"] == "UNINIT"
    assert sevtool("--machine", m, "export", "--dir", tmp_path / "c").code == 0
    assert (tmp_path / "c" / "oca.cert").read_bytes() == cert.read_bytes()
    assert sevtool("--machine", m, "reset").code == 0
    assert json.loads(sevtool("--machine", m, "show", "--json").out)["owner"] == "self"


def test_offline_owner_flow_csr_sign_import(m: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "oca.cert", tmp_path / "oca.key"
    sevtool("generate", cert, key)
    assert sevtool("--machine", m, "pek", "csr", tmp_path / "csr").code == 0
    signed = tmp_path / "pek.signed"
    assert sevtool("pek", "sign", tmp_path / "csr", cert, key, signed).code == 0
    assert sevtool("--machine", m, "pek", "import", signed, cert).code == 0
    assert sevtool("--machine", m, "export", "--full", "--dir", tmp_path / "c").code == 0
    assert sevtool("verify", tmp_path / "c", "--oca", cert).code == 0


def test_rotate_pdh_keeps_pek(m: Path, tmp_path: Path) -> None:
    sevtool("--machine", m, "export", "--dir", tmp_path / "a")
    assert sevtool("--machine", m, "rotate").code == 0
    sevtool("--machine", m, "export", "--dir", tmp_path / "b")
    assert (tmp_path / "a/pek.cert").read_bytes() == (tmp_path / "b/pek.cert").read_bytes()
    assert (tmp_path / "a/pdh.cert").read_bytes() != (tmp_path / "b/pdh.cert").read_bytes()
    assert sevtool("--machine", m, "rotate", "--pek").code == 0
    sevtool("--machine", m, "export", "--dir", tmp_path / "c")
    assert (tmp_path / "b/pek.cert").read_bytes() != (tmp_path / "c/pek.cert").read_bytes()


def test_get_id_is_stable(m: Path) -> None:
    first = sevtool("--machine", m, "get-id")
    assert first.code == 0 and len(first.out.strip()) == 128
    again = json.loads(sevtool("--machine", m, "get-id", "--json").out)["id"]
    assert again == first.out.strip()


def test_no_sev_profile_is_one_clear_error(machine_factory: Callable[..., Machine]) -> None:
    intel = machine_factory("skylake")
    result = sevtool("--machine", intel.path, "show")
    assert result.code == 1
    assert "has no AMD SEV" in one_error_line(result)
    assert "hint:" in result.err


def test_nothing_to_verify_is_usage_error() -> None:
    result = sevtool("verify")
    assert result.code == 2
    assert "nothing to verify" in one_error_line(result)


def test_help_lists_every_command() -> None:
    result = sevtool("--help")
    for command in (
        "show",
        "reset",
        "rotate",
        "generate",
        "provision",
        "pek",
        "export",
        "get-id",
        "verify",
    ):
        assert command in result.out


def test_encrypted_owner_key(m: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "oca.cert", tmp_path / "oca.key"
    monkeypatch.setenv("OCA_PASS", "correct horse")
    assert sevtool("generate", cert, key, "--passphrase-env", "OCA_PASS").code == 0
    assert b"ENCRYPTED" in key.read_bytes()
    missing = sevtool("--machine", m, "provision", cert, key)
    assert missing.code == 2 and "encrypted" in one_error_line(missing)
    monkeypatch.setenv("WRONG", "battery staple")
    wrong = sevtool("--machine", m, "provision", cert, key, "--passphrase-env", "WRONG")
    assert wrong.code == 2 and "wrong passphrase" in one_error_line(wrong)
    ok = sevtool("--machine", m, "provision", cert, key, "--passphrase-env", "OCA_PASS")
    assert ok.code == 0, ok.err


def test_chain_files_of_the_other_tools(
    m: Path, tmp_path: Path, vector: Callable[[str], Path]
) -> None:
    out = tmp_path / "c"
    sevtool("--machine", m, "export", "--full", "--dir", out)
    names = ("pdh", "pek", "oca", "cek", "ask", "ark")
    parts = {n: (out / f"{n}.cert").read_bytes() for n in names}
    sevctl_full = tmp_path / "sevctl.chain"
    sevctl_full.write_bytes(b"".join(parts.values()))
    assert sevtool("verify", sevctl_full).code == 0
    cert_chain = tmp_path / "cert_chain.cert"
    cert_chain.write_bytes(parts["pek"] + parts["oca"] + parts["cek"])
    assert sevtool("verify", cert_chain, "--pdh", out / "pdh.cert", "--partial").code == 0
    ask_ark = tmp_path / "ask_ark_rome.cert"
    ask_ark.write_bytes(
        vector(f"{AMD}/rome/ask.cert").read_bytes() + vector(f"{AMD}/rome/ark.cert").read_bytes()
    )
    result = sevtool("verify", ask_ark, "--partial", "--json")
    assert [link["ok"] for link in json.loads(result.out)["links"]] == [True, True]
    odd = tmp_path / "odd.chain"
    odd.write_bytes(parts["pdh"] + b"\0" * 10)
    refused = sevtool("verify", odd)
    assert refused.code == 2 and "not a certificate or chain file" in one_error_line(refused)
