"""What the three command-line programs share: error reporting, output and colour, and
groups whose commands are imported only when run (:class:`LazyGroup`).

Reports are printed in one of two looks, chosen once here for the three programs: rich
tables for a person at a terminal, and plain text when stdout is a pipe or a file, where
scripts grep whole values: one ``field: value`` per line (records one per line,
tab-separated, under a title and a header line), nothing cut or wrapped, no trailing
spaces, no colour.
``MEMCRYPT_FORMAT=plain|table`` overrides the choice; ``--json`` is always there for scripts.
Colour follows no-color.org: off when ``NO_COLOR`` is set and not empty.

Kept free of heavy imports (rich, cryptography, unicorn) so that ``--help`` and
``--version`` start fast; rich is imported only when a table is printed.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from memcrypt.errors import MemcryptError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "CommandSource",
    "LazyGroup",
    "console",
    "emit_json",
    "exit_on_signals",
    "is_plain",
    "json_option",
    "lazy_help",
    "names_token_key",
    "number_callback",
    "passphrase_options",
    "print_fields",
    "print_records",
    "print_status_line",
    "program_name",
    "read_input",
    "resolve_passphrase",
    "run_main",
    "write_output",
]

Row = tuple[str, str]
# Where a lazy command comes from: "module:attribute", or a function making it.
CommandSource = str | Callable[[], click.Command]


_program: dict[str, str] = {}


def program_name(default: str) -> str:
    """The program running (``sgxtool``, ``sevtool``, ``hwsim``), for notices on stderr;
    ``default`` when called from Python rather than from one of the programs."""
    return _program.get("name", default)


def run_main(group: click.Group, prog: str, argv: Sequence[str] | None = None) -> None:
    """Run a click group, turning memcrypt errors into one line on stderr.

    ``--debug`` anywhere on the command line keeps the traceback, for bug reports.
    """
    _program["name"] = prog
    exit_on_signals()
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


def exit_on_signals() -> None:
    """Make SIGTERM and SIGHUP exit through Python (SystemExit), so that temporary files
    are removed and open transactions roll back, as on an error."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, leave)


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


def no_color() -> bool:
    """NO_COLOR set to a non-empty value (no-color.org), or a dumb terminal."""
    return bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"


def is_plain() -> bool:
    """Whether reports take the plain look: stdout is not a terminal, unless overridden."""
    chosen = os.environ.get("MEMCRYPT_FORMAT", "").strip().lower()
    if chosen in ("plain", "table"):
        return chosen == "plain"
    return not sys.stdout.isatty()


def console(*, stderr: bool = False) -> Console:
    """A rich console for the terminal look, honouring NO_COLOR."""
    from rich.console import Console

    return Console(stderr=stderr, no_color=no_color(), highlight=False, soft_wrap=False)


def _plain(text: object) -> str:
    """One value on one line: line ends inside a value would split a field in two."""
    return " ".join(str(text).splitlines()).rstrip()


def print_fields(rows: Iterable[Row], *, title: str | None = None) -> None:
    """A key/value report. Plain: ``key: value`` lines (a row with an empty key continues
    the previous key's value on a line of its own, under the same key); the title is for
    people only. Terminal: a two-column table."""
    if is_plain():
        last = ""
        for key, value in rows:
            last = key or last
            click.echo(f"{last}: {_plain(value)}".rstrip())
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title) if title else None, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(escape(key), escape(value))
    console().print(table)


def print_records(
    columns: Sequence[str], rows: Iterable[Sequence[str]], *, title: str | None = None
) -> None:
    """A table of records. Plain: the title on a line of its own, a header line, then one
    record per line, fields separated by tabs. Terminal: a rich table."""
    if is_plain():
        if title:
            click.echo(_plain(title))
        for row in (columns, *rows):
            click.echo("\t".join(_plain(cell) for cell in row))
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title) if title else None)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    console().print(table)


def print_status_line(ok: bool, text: str, *, good: str = "ok", bad: str = "FAILED") -> None:
    """A check's result: ``ok``/``FAILED`` then the text, coloured on a terminal."""
    mark = good if ok else bad
    width = max(len(good), len(bad))
    if is_plain() or no_color():
        click.echo(f"{mark:>{width}} {_plain(text)}")
        return
    from rich.markup import escape

    colour = "green" if ok else "red"
    console().print(f"[{colour}]{mark:>{width}}[/] {escape(text)}")


def read_input(name: str, what: str, max_size: int) -> bytes:
    """The bytes of file ``name``, or of standard input for ``-``, at most ``max_size``."""
    from memcrypt.errors import InvalidInput
    from memcrypt.files import read_file

    if name != "-":
        return read_file(name, what, max_size=max_size)
    data = sys.stdin.buffer.read(max_size + 1)
    if len(data) > max_size:
        raise InvalidInput(f"{what} on standard input is larger than {max_size} bytes")
    return data


def write_output(name: str, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to file ``name`` atomically, or to standard output for ``-``."""
    if name == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from memcrypt.files import write_atomic

    write_atomic(name, data, mode=mode)


def number_callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """A click callback parsing an integer in decimal or with a 0x / 0o / 0b prefix."""
    if value is None:
        return None
    try:
        return int(value.replace("_", ""), 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (decimal or 0x-hex)") from None


def emit_json(obj: Any) -> None:
    """Print ``obj`` as stable, sorted JSON on stdout (the ``--json`` schema)."""
    import json  # only for --json

    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: the command reports as JSON (:func:`emit_json`), passed as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


class LazyGroup(click.Group):
    """A group whose commands from other modules are imported when one is asked for (run):
    a command loads no other command's code, and ``--help`` lists them from their one-line
    summaries without importing them."""

    def __init__(
        self, *args: Any, lazy: Mapping[str, tuple[CommandSource, str]], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)  # name -> (where the command is, its first line)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            source = self.lazy[cmd_name][0]
            if isinstance(source, str):
                module, attr = source.split(":")
                command = getattr(importlib.import_module(module), attr)
            else:
                command = source()
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name[:1].isalnum() and not ctx.resilient_parsing and not self.get_command(ctx, name):
            # Suggested here, lazy commands included, in click's words: click names close
            # commands itself only from 8.4 on, and only those it has loaded.
            ctx.fail(f"No such command {name!r}.{_did_you_mean(name, self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's listing asks every command for its summary; a stub with the same first
        # line gives the same text (tests/cli/test_lazy.py holds them equal).
        stubs = {name: click.Command(name, help=line) for name, (_, line) in self.lazy.items()
                 if name not in self.commands}  # fmt: skip
        listing = click.Group(self.name, commands={**self.commands, **stubs})
        listing.format_commands(ctx, formatter)


def lazy_help(program: str) -> tuple[CommandSource, str]:
    """``program``'s ``help`` command for a :class:`LazyGroup`: the manual pages load only
    when it runs."""

    def make() -> click.Command:
        from memcrypt.manual import help_command

        return help_command(program)

    summary = (f"Show a manual page shipped with memcrypt ({program}, enclave.toml, ...); "
               "without PAGE, list them.")  # fmt: skip
    return make, summary


def _did_you_mean(name: str, names: list[str]) -> str:
    import difflib  # only on this error's path

    close = sorted(difflib.get_close_matches(name, names))
    if len(close) == 1:
        return f" Did you mean {close[0]!r}?"
    return f" (Did you mean one of: {', '.join(map(repr, close))}?)" if close else ""


def lazy_attr(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports public names on first use (PEP 562)."""

    def getattr_(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return getattr(importlib.import_module(target), name)

    return getattr_


def passphrase_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--passphrase-env VAR``, ``--passphrase-file FILE`` and ``--ask-passphrase``."""
    in_file = click.Path(path_type=Path, exists=True, dir_okay=False)
    f = click.option(
        "--ask-passphrase", is_flag=True, help="Prompt for the key passphrase (a token's PIN)."
    )(f)
    f = click.option("--passphrase-file", type=in_file, help="Read the passphrase from FILE.")(f)
    return click.option(
        "--passphrase-env", metavar="VAR", help="Read the passphrase from environment variable VAR."
    )(f)


def names_token_key(key: object) -> bool:
    """Whether a key option names a key in a PKCS#11 token (an RFC 7512 ``pkcs11:`` URI)
    rather than a file: ``memcrypt.pkcs11.is_pkcs11_uri``, without loading that module (and
    cryptography) for commands that sign with a file or only parse their options."""
    return str(key).lower().startswith("pkcs11:")


def secret_prompt(key: object) -> str:
    """What --ask-passphrase asks for: a token's PIN for a ``pkcs11:`` key, else the key
    file's passphrase."""
    return "PIN of the PKCS#11 token" if names_token_key(key) else "Passphrase"


def resolve_passphrase(
    env: str | None, file: Path | None, ask: bool, *, confirm: bool = False,
    prompt: str = "Passphrase",
) -> bytes | None:  # fmt: skip
    """The passphrase (or PIN) from at most one of: environment variable, file (its whole
    contents less trailing line ends), ``prompt`` on the terminal."""
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
        text = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
        return str(text).encode()
    return None
