"""What the three command-line programs share: error reporting, output and colour.

Kept free of heavy imports (rich, cryptography, unicorn) so that ``--help`` and
``--version`` start fast; rich is imported only when a table is printed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from memcrypt.errors import MemcryptError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "console",
    "emit_json",
    "json_option",
    "passphrase_options",
    "resolve_passphrase",
    "run_main",
]


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
        _click_error(exc, prog)
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


def _click_error(exc: click.ClickException, prog: str) -> None:
    """Click's errors in the one-line form of all others, not its four-line usage block;
    a group run without a command still shows its help (click >= 8.2 raises for that)."""
    ctx = exc.ctx if isinstance(exc, click.UsageError) else None
    message = exc.format_message()
    if ctx is not None and message == ctx.get_help():
        exc.show()
        return
    click.echo(f"{prog}: error: {' '.join(message.split())}", err=True)
    if ctx is not None:
        click.echo(f"{prog}: hint: see '{ctx.command_path} --help'", err=True)


def console(*, stderr: bool = False) -> Console:
    """A rich console that honours NO_COLOR and plain pipes."""
    from rich.console import Console

    no_color = "NO_COLOR" in os.environ
    return Console(stderr=stderr, no_color=no_color, highlight=False, soft_wrap=False)


def emit_json(obj: Any) -> None:
    """Print ``obj`` as stable, sorted JSON on stdout (the ``--json`` schema)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: the command reports as JSON (:func:`emit_json`), passed as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def lazy_attr(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports public names on first use (PEP 562)."""

    def getattr_(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        import importlib

        return getattr(importlib.import_module(target), name)

    return getattr_


def passphrase_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--passphrase-env VAR``, ``--passphrase-file FILE`` and ``--ask-passphrase``."""
    in_file = click.Path(path_type=Path, exists=True, dir_okay=False)
    f = click.option("--ask-passphrase", is_flag=True, help="Prompt for the key passphrase.")(f)
    f = click.option("--passphrase-file", type=in_file, help="Read the passphrase from FILE.")(f)
    return click.option(
        "--passphrase-env", metavar="VAR", help="Read the passphrase from environment variable VAR."
    )(f)


def resolve_passphrase(
    env: str | None, file: Path | None, ask: bool, *, confirm: bool = False
) -> bytes | None:
    """The passphrase from at most one of: environment variable, file (its whole contents
    less trailing line ends), prompt."""
    if sum((env is not None, file is not None, ask)) > 1:
        raise click.UsageError(
            "give only one of --passphrase-env, --passphrase-file, --ask-passphrase"
        )
    if env is not None:
        if env not in os.environ:
            raise click.UsageError(f"--passphrase-env: environment variable {env} is not set")
        return os.fsencode(os.environ[env])  # the bytes as set, even when not UTF-8
    if file is not None:
        from memcrypt.files import read_file

        return read_file(file, "passphrase file", max_size=4096).rstrip(b"\r\n")
    if ask:
        text = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm, err=True)
        return str(text).encode()
    return None
