"""``sgxtool help PAGE``, ``sevtool help PAGE``, ``hwsim help PAGE``: the shipped manual
pages, found where they are installed, rendered as plain text when piped, listed, completed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from memcrypt.manual import PAGES, find_page, installed_pages, render, show

ROOT = Path(__file__).resolve().parents[2]
Run = Callable[..., tuple[int, str, str]]


def _main(program: str) -> Callable[[list[str]], None]:
    module = __import__(f"{program}._cli", fromlist=["main"])
    main: Callable[[list[str]], None] = module.main
    return main


def run(program: str, *args: str) -> tuple[int, str, str]:
    """``program args`` in-process with stdout a pipe: (exit code, stdout, stderr)."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            _main(program)(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, out.getvalue().decode(), err.getvalue().decode()


def _only(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only ``tools`` (those installed), for the fallbacks."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed")
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_pages_are_the_man_folder() -> None:
    shipped = sorted(p.name for p in (ROOT / "man").glob("*.[1-9]"))
    assert sorted(f"{n}.{s}" for n, s in PAGES) == shipped
    for page in installed_pages():
        assert page.path.resolve() == (ROOT / "man" / f"{page.name}.{page.section}").resolve()


@pytest.mark.parametrize("program", ["sgxtool", "sevtool", "hwsim"])
def test_help_lists_the_pages(program: str) -> None:
    code, out, err = run(program, "help")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "page\tabout"
    assert [line.split("\t")[0] for line in lines[1:]] == [f"{n}({s})" for n, s in PAGES]
    assert "enclave.toml(5)\tconfiguration of an SGX enclave for sgxtool" in lines
    listed = json.loads(run(program, "help", "--json")[1])["pages"]
    assert [p["page"] for p in listed] == [f"{n}({s})" for n, s in PAGES]
    assert all(Path(p["path"]).is_file() for p in listed)


def test_help_page_piped_is_plain_text() -> None:
    if shutil.which("groff") is None and shutil.which("mandoc") is None:
        pytest.skip("neither groff nor mandoc is installed")
    code, out, err = run("sgxtool", "help", "enclave.toml")
    assert code == 0 and not err, err
    assert out.startswith("ENCLAVE.TOML(5)")
    assert "enclave.toml - configuration of an SGX enclave for sgxtool" in out
    assert "\x08" not in out and "\x1b" not in out and ".SH" not in out
    assert all(line == line.rstrip() for line in out.splitlines())
    # The same page by its other spellings, from the other programs.
    for program, name in (("sevtool", "enclave.toml.5"), ("hwsim", "enclave.toml(5)")):
        assert run(program, "help", name)[1] == out
    page = json.loads(run("hwsim", "help", "hwsim-sgx", "--json")[1])
    assert page["page"] == "hwsim-sgx(7)" and page["rendered"]
    assert page["text"].startswith("HWSIM-SGX(7)")


def test_unknown_page_is_one_line_naming_the_pages() -> None:
    code, out, err = run("sevtool", "help", "sevctl")
    assert code == 2 and not out
    assert err.splitlines() == [
        "sevtool: error: no manual page 'sevctl'; there are: sgxtool(1), sevtool(1), hwsim(1), "
        "enclave.toml(5), hwsim-machine.toml(5), hwsim-sgx(7)"
    ]
    assert run("sgxtool", "help", "sgxtool.5")[0] == 2  # a page, but not in that section


def test_mandoc_alone_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _only(tmp_path, "mandoc"))
    text = render(find_page("sevtool"))
    assert text is not None and text.startswith("SEVTOOL(1)")
    assert "\x08" not in text and "generate" in text


def test_without_renderer_the_source_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", _only(tmp_path))
    code, out, err = run("hwsim", "help", "hwsim-machine.toml")
    assert code == 0
    assert out == (ROOT / "man" / "hwsim-machine.toml.5").read_text()
    assert err.splitlines() == [
        "hwsim: note: neither groff nor mandoc is installed; this is the troff source of "
        "hwsim-machine.toml(5)"
    ]


def test_on_a_terminal_man_shows_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "man"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    page = find_page("sgxtool")
    show(page, terminal=True)
    assert (tmp_path / "args").read_text().split() == ["-l", str(page.path)]


@pytest.mark.parametrize("program", ["sgxtool", "sevtool", "hwsim"])
def test_page_names_complete(program: str) -> None:
    done = subprocess.run(
        [Path(sys.executable).parent / program], capture_output=True, text=True, check=False,
        env={**os.environ, f"_{program.upper()}_COMPLETE": "bash_complete",
             "COMP_WORDS": f"{program} help hwsim", "COMP_CWORD": "2"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["plain,hwsim", "plain,hwsim-machine.toml", "plain,hwsim-sgx"]
