"""The AMD roots built into sevtool are AMD's (key ids of expected.json), each ARK signs
itself and its ASK, and a CEK's generation is found from the chain alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.sev.arch import SevCert, SevUsage
from hwsim.sev.certs import verify_amd_cert
from sevtool.roots import AMD_GENERATIONS, amd_roots, cek_signer, identify, simulator_roots


def test_builtin_roots_are_amds_published_ones(vector: Callable[[str], Path]) -> None:
    expected = json.loads(vector("sev/expected.json").read_text())
    assert [r.generation for r in amd_roots()] == list(AMD_GENERATIONS)
    for roots in amd_roots():
        gen = roots.generation
        assert gen is not None
        assert roots.ark.header.key_id.hex() == expected["amd_root_key_ids"][gen]
        assert roots.ask.header.key_id.hex() == expected["amd_ask_key_ids"][gen]
        verify_amd_cert(roots.ark, SevUsage.ARK, roots.ark)
        verify_amd_cert(roots.ask, SevUsage.ASK, roots.ark)
        shipped = vector(f"sev/virtee-sev/builtin-sev/{gen}/ark.cert").read_bytes()
        assert roots.ark.pack() == shipped
        assert identify(roots.ask) == roots


@pytest.mark.parametrize("gen", ["naples", "rome"])
def test_generation_found_from_the_cek(vector: Callable[[str], Path], gen: str) -> None:
    cek = SevCert.unpack(vector(f"sev/virtee-sev/{gen}/cek.cert").read_bytes())
    found = cek_signer(cek)
    assert found is not None and found.generation == gen
    assert cek_signer(cek.unsigned()) is None


def test_simulator_roots_are_named_as_such() -> None:
    sim = simulator_roots()
    assert not sim.is_amd and "not AMD's" in sim.name
    assert identify(sim.ark) == sim
