"""What the three command-line programs share: error reporting, output and colour.

Kept free of heavy imports (rich, cryptography, unicorn) so that ``--help`` and
``--version`` start fast; rich is imported only when a table is printed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from hwsim.errors import MemcryptError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["console", "emit_json", "run_main"]


def run_main(group: click.Group, prog: str, argv: Sequence[str] | None = None) -> None:
    """Run a click group, turning memcrypt errors into one line on stderr.

    ``--debug`` anywhere on the command line keeps the traceback, for bug reports.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        group.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MemcryptError as exc:
        if debug:
            raise
        click.echo(f"{prog}: error: {exc}", err=True)
        if exc.hint:
            click.echo(f"{prog}: hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        sys.exit(130)


def console(*, stderr: bool = False) -> Console:
    """A rich console that honours NO_COLOR and plain pipes."""
    from rich.console import Console

    no_color = "NO_COLOR" in os.environ
    return Console(stderr=stderr, no_color=no_color, highlight=False, soft_wrap=False)


def emit_json(obj: Any) -> None:
    """Print ``obj`` as stable, sorted JSON on stdout (the ``--json`` schema)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def lazy_attr(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports public names on first use (PEP 562)."""

    def getattr_(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        import importlib

        return getattr(importlib.import_module(target), name)

    return getattr_
