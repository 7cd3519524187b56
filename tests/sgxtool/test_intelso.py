"""Enclaves built and signed with Intel's SDK: sgx_sign's metadata read and re-measured."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sgxtool.image import ImageKind, detect
from sgxtool.intelso import intel_layout, read_metadata, runnable_copy
from sgxtool.measure import mrenclave

Vector = Callable[[str], Path]

# (folder, MRENCLAVE from its SOURCE.txt, metadata versions in file order)
ENCLAVES = [
    ("ShuntaIshihara+test_hash_SGX",
     "ca9df6d77437b8ade175ed07daf1eb33ea5c055f9335d218359ebb78d251087f", ["2.4", "2.1", "1.4"]),
    ("njuyuanrui+testEnclaveSO",
     "b705015b98c32f9d8a204eb15889138d8576e676dc5c45ccc51c95651e9d0dcd", ["2.1", "1.4"]),
    ("DongpingZ+SgxRandTest",
     "ebc97cee56c256b418dbf0a2ebb900827d456929d7931ff84a7bed9f2b977eed", ["2.4", "2.1", "1.4"]),
]  # fmt: skip
MRSIGNER_INTEL_SAMPLE = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"


def so_path(vector: Vector, folder: str) -> Path:
    return vector(f"sgx/intel-sdk-enclaves/{folder}/enclave.signed.so")


@pytest.mark.parametrize(("folder", "expected", "versions"), ENCLAVES)
def test_every_copy_measures_to_the_signed_mrenclave(
    vector: Vector, folder: str, expected: str, versions: list[str]
) -> None:
    so = so_path(vector, folder)
    assert detect(so) is ImageKind.INTEL_SO
    copies = read_metadata(so)
    assert [c.version_text for c in copies] == versions
    for copy in copies:
        assert copy.sigstruct.enclavehash.hex() == expected
        assert mrenclave(intel_layout(so, copy)).hex() == expected
    assert runnable_copy(copies).version[0] == 1


def test_sampleenclave_layout_matches_sgx_sign(vector: Vector) -> None:
    """intel-sdk.md section 5: 10 TCSs from the 1.4 copy's group, first one rebased."""
    layout = intel_layout(so_path(vector, "DongpingZ+SgxRandTest"))
    assert layout.size == 0x1000000 and layout.ssaframesize == 1
    assert len(layout.threads) == 10
    assert [t.tcs for t in layout.threads[:2]] == [0x28C000, 0x28C000 + 0x74000]
    assert layout.threads[0].ssa == 0x28D000 and layout.threads[0].data == 0x29F000
    assert layout.entry == 0x1E79E
    assert layout.page_count == 1235
