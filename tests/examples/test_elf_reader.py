"""The examples as built and as signed read the same with sgxtool's ELF reader as with
pyelftools (tests/sgxtool/test_elffile.py does the Intel enclaves and the refusals)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.elforacle import compare
from tests.examples.build import make_example
from tests.examples.conftest import Built


@pytest.mark.parametrize(
    ("example", "name"), [("hello", "hello"), ("sealing", "sealing"), ("signing-oracle", "oracle")]
)
def test_examples_read_as_pyelftools_reads_them(
    signed_example: Built, example: str, name: str
) -> None:
    image = signed_example(example, name)
    assert compare(image.parent / f"{name}.elf") > 10
    assert compare(image) > 10


def test_the_sev_guest_elf_reads_as_pyelftools_reads_it(tmp_path: Path) -> None:
    """A fixed-address (ET_EXEC) ELF linked with its own script: not an enclave, but the
    reader reads any ELF64."""
    assert compare(make_example("sev-guest", tmp_path, "guest.elf")) > 10
