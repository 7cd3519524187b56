"""The manual pages memcrypt ships, shown by ``sgxtool help PAGE`` (and sevtool's, hwsim's).

The wheel installs the pages as data files in PREFIX/share/man/manN, where ``man`` finds
them beside a virtualenv's bin/ (pyproject.toml ``data-files``; an editable install links
the source tree's man/ there, see the Makefile); a checkout run without installing has them
in man/ beside the packages. On a terminal a page goes through ``man`` when there is one;
otherwise, and always when piped, it is rendered to plain text by groff or mandoc (no
pager, no bold or underline, no trailing spaces), or shown as its troff source with a
note when neither is installed.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from memcrypt.cli import emit_json, json_option, print_records, program_name
from memcrypt.errors import InvalidInput, MemcryptError

__all__ = ["PAGES", "ManPage", "find_page", "help_command", "installed_pages", "render", "show"]

# Every page in man/ (tests/memcrypt/test_manual.py keeps this list equal to the folder).
PAGES = (
    ("sgxtool", 1),
    ("sevtool", 1),
    ("hwsim", 1),
    ("enclave.toml", 5),
    ("hwsim-machine.toml", 5),
    ("hwsim-sgx", 7),
)
_SOURCE_TREE = Path(__file__).resolve().parents[1] / "man"
# Overstrike (groff/mandoc bold and underline) and SGR escapes: neither belongs in plain text.
_STYLING = re.compile(r".\x08|\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class ManPage:
    """One shipped page and the file it was found in."""

    name: str
    section: int
    path: Path

    @property
    def title(self) -> str:
        return f"{self.name}({self.section})"

    def summary(self) -> str:
        """The NAME line's description (``sgxtool \\- build, ...``)."""
        lines = self.path.read_text(errors="replace").splitlines()
        for before, line in itertools.pairwise(lines):
            if before.strip() == ".SH NAME":
                return re.split(r"\s\\-\s", line, maxsplit=1)[-1].strip()
        return ""

    def as_json(self) -> dict[str, Any]:
        return {"page": self.title, "name": self.name, "section": self.section,
                "path": str(self.path), "summary": self.summary()}  # fmt: skip


def _candidates(name: str, section: int) -> list[Path]:
    """Where an installed page can be: the prefixes pip installs data files into (this
    environment's, the user's), then the source tree."""
    import sysconfig  # here and below: each tool's start-up pays only for what it runs

    roots = [Path(sysconfig.get_path("data")), Path(sys.prefix)]
    with contextlib.suppress(KeyError):  # a Python built without a user scheme
        roots.append(Path(sysconfig.get_path("data", sysconfig.get_preferred_scheme("user"))))
    found = [root / "share" / "man" / f"man{section}" / f"{name}.{section}" for root in roots]
    return [*found, _SOURCE_TREE / f"{name}.{section}"]


def installed_pages() -> list[ManPage]:
    """The shipped pages that can be found, in the order of :data:`PAGES`."""
    pages = []
    for name, section in PAGES:
        path = next((p for p in _candidates(name, section) if p.is_file()), None)
        if path is not None:
            pages.append(ManPage(name, section, path))
    if not pages:
        raise MemcryptError(
            "the manual pages are not installed here",
            hint="they come with the wheel (share/man) and with the source tree (man/)",
        )
    return pages


def find_page(query: str) -> ManPage:
    """The page ``query`` names: ``enclave.toml``, ``enclave.toml.5`` or ``enclave.toml(5)``."""
    match = re.fullmatch(r"(.+?)(?:\((\d)\)|\.(\d))?", query.strip().lower())
    pages = installed_pages()
    if match is not None:
        section = match[2] or match[3]
        for page in pages:
            if page.name == match[1] and (section is None or page.section == int(section)):
                return page
    raise InvalidInput(f"no manual page {query!r}; there are: {', '.join(p.title for p in pages)}")


def render(page: ManPage) -> str | None:
    """The page as plain text (groff, else mandoc), or None when neither is installed."""
    import shutil
    import subprocess

    # groff: no hyphenation (-rHY=0), so that a word grepped for is whole on its line.
    for tool, args in (("groff", ["-man", "-Tascii", "-rHY=0", "-P-c", "-P-b", "-P-u"]),
                       ("mandoc", ["-Tascii"])):  # fmt: skip
        exe = shutil.which(tool)
        if exe is None:
            continue
        done = subprocess.run([exe, *args, str(page.path)], capture_output=True, check=False)
        if done.returncode == 0 and done.stdout:
            text = _STYLING.sub("", done.stdout.decode(errors="replace"))
            return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")
    return None


def show(page: ManPage, *, terminal: bool) -> None:
    """On a terminal through ``man -l`` (man-db and mandoc's man read a file with -l), else
    rendered plain text: paged on a terminal, not when piped."""
    import shutil
    import subprocess

    man = shutil.which("man") if terminal else None
    if man is not None and subprocess.run([man, "-l", str(page.path)], check=False).returncode == 0:
        return
    text = render(page)
    if text is None:
        click.echo(
            f"{program_name('memcrypt')}: note: neither groff nor mandoc is installed; "
            f"this is the troff source of {page.title}",
            err=True,
        )
        text = page.path.read_text(errors="replace").rstrip("\n")
    if terminal:
        click.echo_via_pager(text + "\n")
    else:
        click.echo(text)


def _complete(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    names = [name for name, _ in PAGES if name.startswith(incomplete.lower())]
    return [CompletionItem(name) for name in names]


def help_command(program: str) -> click.Command:
    """``PROGRAM help [PAGE]``: show a shipped manual page, or list them."""

    @click.command(
        "help",
        help=f"Show a manual page shipped with memcrypt ({program}, enclave.toml, ...); "
        "without PAGE, list them.",
    )
    @click.argument("page", required=False, shell_complete=_complete)
    @json_option
    def help_(page: str | None, as_json: bool) -> None:
        if page is None:
            pages = installed_pages()
            if as_json:
                emit_json({"pages": [p.as_json() for p in pages]})
            else:
                print_records(("page", "about"), [(p.title, p.summary()) for p in pages])
            return
        found = find_page(page)
        if as_json:
            text = render(found)
            emit_json({**found.as_json(), "rendered": text is not None,
                       "text": text if text is not None else found.path.read_text()})  # fmt: skip
            return
        show(found, terminal=sys.stdout.isatty())

    return help_
