"""hwsim(1) and hwsim-machine.toml(5) keep up with the code."""

from __future__ import annotations

from pathlib import Path

from hwsim.bios import SETTINGS, read_machine_toml
from hwsim.cpu import MSRS
from hwsim.profiles import PROFILES

MAN = Path(__file__).resolve().parents[2] / "man"


def _text(name: str) -> str:
    return (MAN / name).read_text().replace("\\-", "-")


def test_machine_toml_page_documents_every_setting() -> None:
    text = _text("hwsim-machine.toml.5")
    for key in SETTINGS:
        assert f".B {key}\n" in text, f"hwsim-machine.toml(5) does not document {key}"
    for name in PROFILES:
        assert name in text


def test_machine_toml_page_example_is_valid(tmp_path: Path) -> None:
    text = _text("hwsim-machine.toml.5")
    example = text.split(".SH EXAMPLE\n.nf\n", 1)[1].split(".fi", 1)[0]
    (tmp_path / "machine.toml").write_text(example)
    profile, config = read_machine_toml(tmp_path / "machine.toml")
    assert profile.name == "icelake-sp" and config.lc_locked and config.le_pubkey_hash


def test_hwsim_page_names_profiles_and_msrs() -> None:
    text = _text("hwsim.1")
    for name in PROFILES:
        assert f".B {name}\n" in text
    for msr in MSRS.values():
        assert msr.name.rstrip("0123") in text
        if not msr.name.startswith("IA32_SGXLEPUBKEYHASH"):  # documented as a range
            assert f"{msr.index:#x}" in text
