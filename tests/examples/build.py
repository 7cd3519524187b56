"""Building and signing SDK enclaves in tests: the examples through their Makefiles, and
small purpose-built enclaves from C source, all with `sgxtool sdk` flags."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sgxtool import sdkinfo
from sgxtool.build import Target, sign_enclave
from sgxtool.config import load_config, parse_config
from sgxtool.keys import load_private_key
from sgxtool.sign import KeySigner

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
DATE = 0x20250101
SDK_CMD = f"{sys.executable} {REPO / 'sgxtool' / 'sdkinfo.py'}"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not on PATH; .ci/run installs it")
    return found


def make_example(example: str, out_dir: Path, target: str, **variables: str) -> Path:
    """``make`` one output of ``examples/<example>`` into ``out_dir`` (the tree stays clean)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [f"O={out_dir}", f"SDK={SDK_CMD}", *(f"{k}={v}" for k, v in variables.items())]
    subprocess.run(
        [tool("make"), "-s", "-B", "-C", str(EXAMPLES / example), *args, str(out_dir / target)],
        check=True,
    )
    return out_dir / target


def compile_enclave(source: str, out: Path) -> Path:
    """Compile one C file of enclave code with the SDK (the same command the README gives)."""
    src = out.with_suffix(".c")
    src.write_text(source)
    flags = ["-O2", "-Wall", "-Werror"]
    cmd = [tool("cc"), *sdkinfo.cflags(), *flags, str(src), *sdkinfo.ldflags(), "-o", str(out)]
    subprocess.run(cmd, check=True)
    return out


def sign_image(elf: Path, config: Path | str, key: Path, out: Path) -> Path:
    """Sign ``elf`` with ``config`` (a path, or enclave.toml text) into a signed image."""
    cfg = load_config(config) if isinstance(config, Path) else parse_config(config)
    signer = KeySigner(load_private_key(key))
    sign_enclave(Target(cfg, elf), signer, DATE, out=out)
    return out
