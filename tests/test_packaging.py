"""What a user installs: the wheel and sdist carry the man pages, the licence and (the
sdist) the examples; installed, the pages are where `man` finds them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(p.name for p in (ROOT / "man").glob("*.[1-9]"))


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def test_wheel_has_pages_and_licence(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read("memcrypt-0.1.0.dist-info/METADATA").decode()
    data = "memcrypt-0.1.0.data/data/share/man"
    for page in PAGES:
        assert f"{data}/man{page[-1]}/{page}" in names, f"wheel lacks {page}"
    assert "memcrypt-0.1.0.dist-info/licenses/LICENSE" in names
    assert "License-Expression: Apache-2.0" in metadata
    # Read as files beside their package once installed: sevtool's built-in AMD roots and
    # sgxtool's SDK must be in the wheel, every one.
    for folder in (ROOT / "sevtool" / "data" / "amd", ROOT / "sgxtool" / "sdk"):
        for path in folder.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                name = path.relative_to(ROOT).as_posix()
                assert name in names, f"wheel lacks {name}"


def test_sdist_has_pages_licence_and_examples(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    wanted = ["LICENSE", "examples/hello/hello.c", "examples/ci/pipeline.sh", ".ci/run"]
    for name in [*(f"man/{p}" for p in PAGES), *wanted]:
        assert name in names, f"sdist lacks {name}"
    assert not any(n.endswith((".elf", ".pyc")) for n in names)


def test_installed_pages_are_found_by_man(dist: Path, tmp_path: Path) -> None:
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (wheel,) = dist.glob("*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MANPATH", None)
    for page in PAGES:
        name, section = page.rsplit(".", 1)
        found = subprocess.run(
            ["man", "-w", section, name], env=env, capture_output=True, text=True, check=False
        )
        assert found.stdout.strip() == str(venv / "share" / "man" / f"man{section}" / page)
