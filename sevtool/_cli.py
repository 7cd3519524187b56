"""The ``sevtool`` command: SEV platform keys, guest-owner sessions and SME."""

from __future__ import annotations

from collections.abc import Sequence

import click

from hwsim._console import run_main
from sevtool import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sevtool")
def cli() -> None:
    """Manage AMD SEV platforms, guest launches and SME."""


def main(argv: Sequence[str] | None = None) -> None:
    run_main(cli, "sevtool", argv)
