"""The ``hwsim`` command: simulated machines, vendor roles and the attack lab."""

from __future__ import annotations

from collections.abc import Sequence

import click

from hwsim import __version__
from hwsim._console import run_main


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hwsim")
def cli() -> None:
    """Create and manage simulated machines with SGX and SME/SEV."""


def main(argv: Sequence[str] | None = None) -> None:
    run_main(cli, "hwsim", argv)
