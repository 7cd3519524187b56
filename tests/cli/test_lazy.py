"""Commands loaded on demand (memcrypt.cli.LazyGroup): ``--help`` lists them with the text
they would give themselves, and imports none of their modules."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from memcrypt.cli import LazyGroup
from sevtool._cli import cli as sevtool_cli
from sgxtool._cli import cli as sgxtool_cli

GROUPS = {"sevtool": sevtool_cli, "sgxtool": sgxtool_cli}


@pytest.mark.parametrize("program", GROUPS)
def test_help_lists_the_lazy_commands_with_their_own_summaries(program: str) -> None:
    cli = GROUPS[program]
    assert isinstance(cli, LazyGroup)
    ctx = click.Context(cli)
    for name, (_, line) in cli.lazy.items():
        real = cli.get_command(ctx, name)
        assert real is not None
        for limit in (30, 45, 80, 300):
            stub = click.Command(name, help=line).get_short_help_str(limit)
            assert stub == real.get_short_help_str(limit), name


@pytest.mark.parametrize(
    ("program", "listed"),
    [("sevtool", "SEV guests on the machine: launch"), ("sgxtool", "Load IMAGE (a signed")],
)
def test_help_imports_none_of_the_lazy_command_modules(program: str, listed: str) -> None:
    cli = GROUPS[program]
    assert isinstance(cli, LazyGroup)
    lazy = {source.split(":")[0] for source, _ in cli.lazy.values() if isinstance(source, str)}
    probe = (
        "import sys\n"
        f"from {program}._cli import cli\n"
        "cli(['--help'], standalone_mode=False)\n"
        f"print(sorted(m for m in sys.modules if m in {sorted(lazy | {'memcrypt.manual'})}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert listed in out.stdout
    assert out.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("program", "typo", "meant"), [("sgxtool", "hlp", "help"), ("sevtool", "sesion", "session")]
)
def test_a_mistyped_lazy_command_is_suggested(program: str, typo: str, meant: str) -> None:
    result = CliRunner().invoke(GROUPS[program], [typo])
    assert result.exit_code == 2
    assert f"Did you mean '{meant}'?" in result.output


def test_a_name_near_several_commands_names_them_all_and_a_far_one_none() -> None:
    """The same words with any click the project allows (8.2 suggested nothing)."""
    several = CliRunner().invoke(GROUPS["sgxtool"], ["sigs"])
    assert "No such command 'sigs'. (Did you mean one of: 'catsig', 'sgxs', 'sign'?)" in (
        several.output
    )
    far = CliRunner().invoke(GROUPS["sevtool"], ["xyzzy"])
    assert far.exit_code == 2
    assert "No such command 'xyzzy'.\n" in far.output
