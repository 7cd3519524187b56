"""Documentation that could drift is checked: man pages name every command and option,
enclave.toml(5) every key, and the README's quick start is what CI and the Makefile run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _man_text(name: str) -> str:
    path = ROOT / "man" / name
    assert path.is_file(), f"missing man page {path}"
    return path.read_text().replace("\\-", "-")


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, cmd in group.commands.items():
        found.append((f"{prefix}{name}", cmd))
        if isinstance(cmd, click.Group):
            found += _commands(cmd, f"{prefix}{name} ")
    return found


def _program(name: str) -> click.Group:
    module = __import__(f"{name}._cli", fromlist=["cli"])
    group = module.cli
    assert isinstance(group, click.Group)
    return group


@pytest.mark.parametrize("program", ["sgxtool", "sevtool", "hwsim"])
def test_man_page_names_every_command_and_option(program: str) -> None:
    text = _man_text(f"{program}.1")
    missing = []
    for name, cmd in _commands(_program(program)):
        if not re.search(rf"\b{re.escape(name.split()[-1])}\b", text):
            missing.append(name)
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt not in text:
                    missing.append(f"{name} {opt}")
    assert not missing, f"man/{program}.1 does not mention: {', '.join(missing)}"


def test_enclave_toml_page_names_every_key() -> None:
    from sgxtool.config import EnclaveConfig

    text = _man_text("enclave.toml.5")
    for table, keys in EnclaveConfig().to_toml_dict().items():
        assert f"[{table}]" in text
        for key in keys:
            assert key in text, f"enclave.toml(5) does not document {table}.{key}"


def test_quick_start_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_demo_runs(tmp_path: Path) -> None:
    """The demo script `make demo` runs, with the installed programs on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        ["sh", str(ROOT / "examples" / "demo.sh")],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "ok  MRENCLAVE" in out.stdout
    assert "Hello, memcrypt!" in out.stdout
    assert "chain verified" in out.stdout
