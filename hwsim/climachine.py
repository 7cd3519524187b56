"""``--machine DIR`` for the three command-line programs.

Kept apart from :mod:`hwsim.machine` so that declaring the option imports only click:
``--help`` and ``--version`` must not pay for SQLite or the machine model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from hwsim.machine import Machine

__all__ = ["cli_machine", "machine_option"]

_F = TypeVar("_F", bound=Callable[..., Any])
_DIR_KEY = "hwsim.machine_dir"
_MACHINE_KEY = "hwsim.machine"


def machine_option(f: _F) -> _F:
    """Click decorator adding ``--machine DIR`` to a group or command.

    The value is kept in the root context; a command then calls :func:`cli_machine`.
    Usable at any level (``prog --machine D cmd`` or ``prog cmd --machine D``).
    """

    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.find_root().meta[_DIR_KEY] = value

    return click.option(
        "--machine",
        metavar="DIR",
        expose_value=False,
        callback=remember,
        help="Machine directory (default: $HWSIM_MACHINE or ~/.local/share/hwsim/default).",
    )(f)


def machine_dir() -> str | None:
    """The ``--machine`` value given anywhere on the command line, if any."""
    value = click.get_current_context().find_root().meta.get(_DIR_KEY)
    return None if value is None else str(value)


def cli_machine() -> Machine:
    """The machine chosen with ``--machine`` in the current click command (or the default)."""
    from hwsim.machine import open_for_cli

    meta = click.get_current_context().find_root().meta
    machine: Machine | None = meta.get(_MACHINE_KEY)
    if machine is None:
        machine = meta[_MACHINE_KEY] = open_for_cli(meta.get(_DIR_KEY))
    return machine
