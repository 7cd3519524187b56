"""The import rule of DESIGN.md, checked on every module's source (README, "For developers").

- Tools (sgxtool, sevtool) import only public simulator modules: no ``hwsim`` module
  whose dotted path has a part starting with ``_`` (the engine stays behind the devices).
- hwsim never imports a tool.
- ``arch`` modules (formats) import nothing of machines or devices: from hwsim only other
  ``arch`` modules, the layout helper ``hwsim._layout`` and the error modules.
- memcrypt (the shared plumbing) imports nothing of hwsim, sgxtool or sevtool.

Every import counts, inside functions and ``TYPE_CHECKING`` blocks too; ``from pkg import
name`` counts as importing ``pkg.name`` when that is a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("memcrypt", "hwsim", "sgxtool", "sevtool")
TOOLS = ("sgxtool", "sevtool")


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _private(module: str) -> bool:
    return any(part.startswith("_") and part != "__init__" for part in module.split("."))


def _is_arch_dependency(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return last in ("arch", "errors") or module == "hwsim._layout"


def imports_of(name: str, source: str, is_package: bool = False) -> Iterator[str]:
    """Every module ``name`` imports (absolute dotted paths), candidates for ``from``
    imports included (``from a import b`` yields ``a`` and ``a.b``)."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def violations(name: str, imported: str, modules: set[str]) -> list[str]:
    """What is wrong with module ``name`` importing ``imported`` (``modules``: the known
    module names, to tell a submodule from a name imported out of a module)."""
    if _top(imported) not in PACKAGES or imported not in modules:
        return []
    me, it = _top(name), _top(imported)
    found = []
    if me in TOOLS and it == "hwsim" and _private(imported):
        found.append(f"{name} (a tool) imports the private simulator module {imported}")
    if me == "hwsim" and it in TOOLS:
        found.append(f"{name} (the simulator) imports the tool module {imported}")
    if name.endswith(".arch") and it == "hwsim" and not _is_arch_dependency(imported):
        found.append(f"{name} (formats) imports {imported}, which is not a format")
    if me == "memcrypt" and it != "memcrypt":
        found.append(f"{name} (shared plumbing) imports {imported}")
    return found


def check(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Violations over ``{module: (source, is_package)}``."""
    modules = set(sources)
    found = []
    for name, (source, is_package) in sorted(sources.items()):
        for imported in set(imports_of(name, source, is_package)):
            found += violations(name, imported, modules)
    return found


def repository_sources() -> dict[str, tuple[str, bool]]:
    sources = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            sources[name] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def test_the_repository_keeps_the_import_rule() -> None:
    sources = repository_sources()
    assert {"sgxtool.runtime", "hwsim.sgx.device", "hwsim.sgx.arch"} <= set(sources)
    assert check(sources) == []


def _with(module: str, source: str) -> dict[str, tuple[str, bool]]:
    sources = repository_sources()
    sources[module] = (source, False)
    return sources


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("sgxtool.sneaky", "from hwsim.sgx._run import EnclaveCpu\n", "private simulator"),
        ("sgxtool.sneaky", "from hwsim.sgx import _enclu\n", "private simulator"),
        ("sevtool.sneaky", "def f():\n    import hwsim._exec\n", "private simulator"),
        ("sgxtool.sneaky", "from ..hwsim_like import x\nfrom hwsim import _exec\n", "private"),
        ("hwsim.sneaky", "from sgxtool.runtime import Enclave\n", "imports the tool"),
        ("hwsim.sgx.arch", "from hwsim.sgx.device import SgxEnclaveDevice\n", "not a format"),
        ("memcrypt.sneaky", "import hwsim.machine\n", "shared plumbing"),
    ],
)
def test_a_broken_rule_is_reported(module: str, source: str, expected: str) -> None:
    found = check(_with(module, source))
    assert len(found) == 1 and expected in found[0], found


def test_public_modules_and_relative_imports_pass() -> None:
    ok = "from hwsim.sgx.device import HOST_BASE\nfrom . import errors\nimport hashlib\n"
    assert check(_with("sgxtool.fine", ok)) == []
