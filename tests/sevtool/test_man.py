"""man/sevtool.1 documents every command and option the CLI has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click

from sevtool._cli import cli

MAN = Path(__file__).resolve().parents[2] / "man" / "sevtool.1"


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


def test_every_command_and_option_is_in_the_man_page() -> None:
    text = MAN.read_text().replace("\\-", "-")
    for name, command in _commands(cli):
        assert f".B {name}" in text or f"sevtool {name}" in text, name
        for param in command.params:
            for flag in getattr(param, "opts", []):
                if flag.startswith("--") and flag != "--help":
                    assert flag in text, f"{name} {flag}"
