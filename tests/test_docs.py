"""Documentation that could drift is checked: man pages name every command and option,
enclave.toml(5) every key, and the README's quick start is what CI and the Makefile run;
every command line shown in the READMEs and man EXAMPLES parses as the programs parse it,
the README's signing commands run, configuration examples are valid, examples are complete,
and man pages render without warnings and refer to each other both ways."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
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
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # a lazy group loads its commands here
        cmd = group.get_command(ctx, name)
        assert cmd is not None, f"{prefix}{name} is listed but cannot be loaded"
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


# -- what the docs show must be what the programs do ---------------------------------------

PROGRAMS = ("sgxtool", "sevtool", "hwsim")
MAN_PAGES = sorted((ROOT / "man").glob("*.[1-9]"))
MARKDOWN = [
    ROOT / "README.md",
    ROOT / "examples" / "README.md",
    *sorted((ROOT / "examples").glob("*/README.md")),
]
EXAMPLE_DIRS = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
# Examples that are not enclaves (an SEV guest has no enclave.toml).
NOT_ENCLAVES = {"sev-guest"}
ENCLAVE_DIRS = [p for p in EXAMPLE_DIRS if p.name not in NOT_ENCLAVES]
_SHELL_OPERATORS = {"|", "||", "&&", ";", "(", ")", "$", "<", ">", ">>", "&"}


def _untroff(text: str) -> str:
    return text.replace("\\-", "-").replace("\\\\", "\\").replace("\\&", "")


def _man_section(page: Path, title: str) -> str:
    """The troff source of section ``.SH title``, up to the next ``.SH`` ("" if absent)."""
    parts = re.split(r'^\.SH +"?([^"\n]+?)"?\n', page.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True)).get(title, "")


def _nofill_blocks(troff: str) -> list[str]:
    return [_untroff(b) for b in re.findall(r"^\.nf\n(.*?)^\.fi$", troff, re.M | re.S)]


def _fenced(text: str, lang: str) -> list[str]:
    """The contents of the ```lang fenced blocks of markdown ``text``."""
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)


def _markdown_blocks(path: Path, lang: str) -> list[str]:
    return _fenced(path.read_text(), lang)


def _doc_shell_lines() -> list[tuple[str, str]]:
    """(where, line) for each shell line of the markdown docs and the man EXAMPLES."""
    blocks = [(md.name, b) for md in MARKDOWN for b in _markdown_blocks(md, "sh")]
    for page in MAN_PAGES:
        blocks += [(page.name, b) for b in _nofill_blocks(_man_section(page, "EXAMPLES"))]
    return [
        (f"{where}: {line.strip()}", line)
        for where, block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip()
    ]


def _invocations(line: str) -> list[tuple[str, list[str]]]:
    """(program, arguments) for each call of our programs in a shell line, including those
    behind pipes, ``&&`` and ``$(...)``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.commenters = "#"
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token in _SHELL_OPERATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    return [(s[0], s[1:]) for s in segments if s and s[0] in PROGRAMS]


def _check_invocation(program: str, args: list[str]) -> None:
    """Parse ``args`` with the program's own click parser (values are not converted, so
    files need not exist); raise on an unknown command or option, a missing required
    parameter or a stray argument."""
    cmd: click.Command = _program(program)
    ctx = click.Context(cmd, info_name=program)
    args = [a for a in args if a != "--debug"]  # run_main takes --debug anywhere
    while not {"-h", "--help", "--version"} & set(args):
        opts, rest, _ = cmd.make_parser(ctx).parse_args(list(args))
        if not isinstance(cmd, click.Group):
            assert not rest, f"{ctx.command_path}: unexpected arguments {rest}"
            missing = [p.name for p in cmd.params if p.required and p.name not in opts]
            assert not missing, f"{ctx.command_path}: missing {', '.join(map(str, missing))}"
            return
        assert rest, f"{ctx.command_path}: no command given"
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"{ctx.command_path}: no command {rest[0]!r}"
        cmd, ctx, args = sub, click.Context(sub, info_name=rest[0], parent=ctx), rest[1:]


def test_commands_in_docs_parse() -> None:
    """Every sgxtool/sevtool/hwsim command in the READMEs and man EXAMPLES names existing
    commands and options and gives every required parameter."""
    bad, seen = [], 0
    for where, line in _doc_shell_lines():
        for program, args in _invocations(line):
            seen += 1
            try:
                _check_invocation(program, args)
            except (AssertionError, click.ClickException) as exc:
                bad.append(f"{where}\n    -> {exc}")
    assert seen > 40, f"only {seen} commands found in the docs: is the extraction broken?"
    assert not bad, "commands in the docs that the programs refuse:\n" + "\n".join(bad)


def test_check_invocation_can_fail() -> None:
    """The checker itself refuses what the programs refuse."""
    for program, args in [
        ("sgxtool", ["sign", "x.elf", "--no-such-option"]),
        ("sgxtool", ["gendata", "x.elf"]),  # -o is required
        ("hwsim", ["status", "extra"]),
        ("sevtool", ["pek", "frobnicate"]),
    ]:
        with pytest.raises((AssertionError, click.ClickException)):
            _check_invocation(program, args)
    assert _invocations("cc $(sgxtool sdk --cflags) x.c | hwsim status # sevtool show") == [
        ("sgxtool", ["sdk", "--cflags"]),
        ("hwsim", ["status"]),
    ]


def test_readme_signing_commands_run(tmp_path: Path) -> None:
    """The README's signing section runs as written, with examples/hello as enclave.c."""
    section = (ROOT / "README.md").read_text().split("## Signing an enclave", 1)[1]
    blocks = _fenced(section.split("\n## ", 1)[0], "sh")
    assert len(blocks) >= 2, "README: the signing section lost its command blocks"
    missing = [t for t in ("cc", "openssl") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: README commands need them")
    shutil.copy(ROOT / "examples" / "hello" / "hello.c", tmp_path / "enclave.c")
    shutil.copy(ROOT / "examples" / "hello" / "enclave.toml", tmp_path / "enclave.toml")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    printed = ""
    for block in blocks:
        out = subprocess.run(
            ["sh", "-eu", "-c", block],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, f"README block failed:\n{block}\n{out.stderr}"
        printed += out.stdout
    assert "Hello, world!" in printed, "README: the signed hello enclave did not answer"


# -- configuration examples ---------------------------------------------------------------


def test_enclave_toml_examples_parse() -> None:
    """enclave.toml(5)'s example, every example's enclave.toml and any enclave.toml-like
    TOML block in the markdown docs are valid."""
    from sgxtool.config import load_config, parse_config

    examples = _nofill_blocks(_man_section(ROOT / "man" / "enclave.toml.5", "EXAMPLE"))
    assert examples, "enclave.toml(5) has no EXAMPLE block"
    examples += [b for md in MARKDOWN for b in _markdown_blocks(md, "toml") if "[memory]" in b]
    for text in examples:
        parse_config(text, "an example in the docs")
    for directory in ENCLAVE_DIRS:
        load_config(directory / "enclave.toml")


def test_machine_toml_example_parses(tmp_path: Path) -> None:
    from hwsim.bios import read_machine_toml

    blocks = _nofill_blocks(_man_section(ROOT / "man" / "hwsim-machine.toml.5", "EXAMPLE"))
    assert blocks, "hwsim-machine.toml(5) has no EXAMPLE block"
    path = tmp_path / "machine.toml"
    path.write_text(blocks[0])
    read_machine_toml(path)


# -- examples and man pages ---------------------------------------------------------------


def test_every_example_is_complete_and_listed() -> None:
    index = (ROOT / "examples" / "README.md").read_text()
    assert EXAMPLE_DIRS, "no example directories"
    for directory in EXAMPLE_DIRS:
        needed = ("README.md", "Makefile") + (
            () if directory.name in NOT_ENCLAVES else ("enclave.toml",)
        )
        for name in needed:
            assert (directory / name).is_file(), f"{directory.name}/ has no {name}"
        assert f"`{directory.name}/`" in index, f"examples/README.md omits {directory.name}/"


@pytest.mark.parametrize("page", MAN_PAGES, ids=lambda p: p.name)
def test_man_page_renders_cleanly(page: Path) -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed, so man pages cannot be checked for warnings")
    out = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and not out.stderr, f"{page.name}: {out.stderr}"


def _our_pages_named(troff: str) -> set[str]:
    """File names of our pages cross-referenced as ``name (N)`` (``.BR name (N)``)."""
    named = re.findall(r"([\w.-]+) \((\d)\)", _untroff(troff).replace(".BR ", ""))
    return {f"{n}.{s}" for n, s in named if n.startswith((*PROGRAMS, "enclave.toml"))}


def test_man_cross_references() -> None:
    """Every page referenced exists; SEE ALSO links go both ways; README names every page."""
    names = {p.name for p in MAN_PAGES}
    readme = (ROOT / "README.md").read_text()
    see_also: dict[str, set[str]] = {}
    for page in MAN_PAGES:
        dangling = _our_pages_named(page.read_text()) - names
        assert not dangling, f"{page.name} refers to missing pages {sorted(dangling)}"
        see_also[page.name] = _our_pages_named(_man_section(page, "SEE ALSO"))
        assert f"man/{page.name}" in readme, f"README does not point to man/{page.name}"
    for name, targets in see_also.items():
        assert targets, f"{name}: SEE ALSO names none of the other pages"
        for target in targets:
            assert name in see_also[target], f"{name} lists {target} in SEE ALSO, not back"


@pytest.mark.parametrize("program", PROGRAMS)
def test_synopsis_shows_group_options(program: str) -> None:
    """Options taken before the command (--machine, --version) are in the SYNOPSIS."""
    synopsis = _untroff(_man_section(ROOT / "man" / f"{program}.1", "SYNOPSIS"))
    for param in _program(program).params:
        for opt in getattr(param, "opts", []):
            if opt.startswith("--"):
                assert opt in synopsis, f"{program}(1) SYNOPSIS lacks {opt}"


# -- every command has its entry; pages render as intended ---------------------------------


def _tag_text(line: str) -> str:
    """The words a ``.TP`` tag line shows, without macros, quotes and font changes."""
    line = re.sub(r"^\.\w+\s*", "", line)
    line = re.sub(r"\\f[BIRP]", "", _untroff(line)).replace('"', " ")
    return " ".join(line.split())


def _command_entries(program: str) -> list[str]:
    """The tags of the COMMANDS sections of ``program``'s pages (section 1 and 7): every
    section titled COMMANDS or ending in it (sevtool has GUEST OWNER COMMANDS too)."""
    tags = []
    for page in (ROOT / "man").glob(f"{program}*.[17]"):
        titles = re.findall(r'^\.SH +"?([^"\n]+?)"?$', page.read_text(), flags=re.M)
        for title in (t for t in titles if t.endswith("COMMANDS")):
            lines = _man_section(page, title).splitlines()
            tags += [_tag_text(b) for a, b in itertools.pairwise(lines) if a.strip() == ".TP"]
    return tags


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_command_has_a_man_entry(program: str) -> None:
    """Each command a user can run (each leaf of the click tree) has its own tagged entry
    in a COMMANDS section: ``.TP`` then a line starting with the command's words."""
    tags = _command_entries(program)
    leaves = [n for n, c in _commands(_program(program)) if not isinstance(c, click.Group)]
    lacking = [n for n in leaves if not any(t == n or t.startswith(f"{n} ") for t in tags)]
    assert not lacking, (
        f"man/{program}.1 (COMMANDS) has no entry for: "
        + ", ".join(f"'{program} {n}'" for n in lacking)
        + " (add .TP and a line starting with the command's words)"
    )


def _rendered(page: Path) -> str:
    out = subprocess.run(
        ["groff", "-man", "-Tascii", "-P-c", "-P-b", "-P-u", str(page)],
        capture_output=True, text=True, check=True, env={**os.environ, "MANWIDTH": "80"},
    )  # fmt: skip
    return out.stdout


@pytest.mark.parametrize("page", MAN_PAGES, ids=lambda p: p.name)
def test_man_page_rendered_text_keeps_words_apart(page: Path) -> None:
    """What a reader sees: no words glued together, as ``.BR name (7)). Like other`` does
    (alternating-font macros join their arguments; groff -ww does not warn)."""
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed, so man pages cannot be rendered")
    glued = re.findall(r"\S*(?:\(\d\)\)?[.,;:]?[A-Za-z]|[A-Za-z]{25,})\S*", _rendered(page))
    assert not glued, f"{page.name} renders words run together: {glued}"


def test_glued_words_are_caught(tmp_path: Path) -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed, so man pages cannot be rendered")
    page = tmp_path / "x.1"
    page.write_text(".TH X 1\n.SH NAME\nx\n.BR hwsim\\-sgx (7)). Like other BIOS settings\n")
    assert "hwsim-sgx(7)).LikeotherBIOSsettings" in _rendered(page)


def test_man_page_headers_agree() -> None:
    """Every page's .TH: NAME SECTION DATE "memcrypt VERSION" "memcrypt manual"."""
    from importlib.metadata import version

    for page in MAN_PAGES:
        th = page.read_text().splitlines()[0]
        name, section = page.stem.upper(), page.suffix[1:]
        date = r"\d{4}-\d\d-\d\d"
        form = rf'\.TH {re.escape(name)} {section} {date} "memcrypt ([\d.]+)" "memcrypt manual"'
        match = re.fullmatch(form, th)
        assert match, f"{page.name}: .TH differs from the other pages: {th}"
        assert match[1] == version("memcrypt"), f"{page.name}: says memcrypt {match[1]}"


@pytest.mark.parametrize("program", PROGRAMS)
def test_completion_is_documented(program: str) -> None:
    """Shell completion: README and each program's page say how to install it for bash,
    zsh and fish, with the variable the program really reads."""
    var = f"_{program.upper()}_COMPLETE"
    page = _untroff(_man_section(ROOT / "man" / f"{program}.1", "SHELL COMPLETION"))
    readme = (ROOT / "README.md").read_text()
    for shell in ("bash", "zsh", "fish"):
        line = f"{var}={shell}_source {program}"
        assert line in page, f"{program}(1) SHELL COMPLETION lacks {line!r}"
        assert line in readme, f"README lacks {line!r}"
    done = subprocess.run(
        [Path(sys.executable).parent / program], capture_output=True, text=True, check=False,
        env={**os.environ, var: "bash_source"},
    )  # fmt: skip
    assert done.returncode == 0 and "complete -o nosort -F" in done.stdout, done.stderr
