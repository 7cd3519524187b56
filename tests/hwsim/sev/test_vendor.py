"""The simulator's own ARK and ASK: deterministic, self-consistent, and not AMD's."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hwsim.sev.arch import SevAlgo, SevUsage
from hwsim.sev.certs import (
    CertificateError,
    load_amd_cert,
    make_sev_cert,
    verify_amd_cert,
    verify_sev_cert,
)
from hwsim.sev.vendor import SIM_ARK_NAME, sim_ark_cert, sim_ask_cert, sim_sign_cek
from tests.hwsim.sev.conftest import GENERATIONS

# Pinned so that a change to the derivation (which would orphan every exported chain and
# every ARK users saved) is a deliberate, visible decision.
SIM_ARK_SHA256 = "6dfbff1705d828d58fefbe088ffbedcaaaf9edcca6717833f80a6c4c0c2a9182"


def test_sim_root_is_deterministic_and_pinned() -> None:
    ark = sim_ark_cert()
    assert len(ark.pack()) == 832
    assert hashlib.sha256(ark.pack()).hexdigest() == SIM_ARK_SHA256
    assert "not AMD's" in SIM_ARK_NAME


def test_sim_ark_and_ask_verify() -> None:
    ark, ask = sim_ark_cert(), sim_ask_cert()
    verify_amd_cert(ark, SevUsage.ARK, ark)
    verify_amd_cert(ask, SevUsage.ASK, ark)


def test_sim_key_ids_are_not_amds(sev_expected: dict[str, Any]) -> None:
    amd_ids = set(sev_expected["amd_root_key_ids"].values()) | set(
        sev_expected["amd_ask_key_ids"].values()
    )
    assert sim_ark_cert().header.key_id.hex() not in amd_ids
    assert sim_ask_cert().header.key_id.hex() not in amd_ids


@pytest.mark.parametrize("gen", GENERATIONS)
def test_sim_cek_fails_under_every_amd_ask(sev_vector: Callable[[str], bytes], gen: str) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cek = sim_sign_cek(make_sev_cert(key.public_key(), SevUsage.CEK, SevAlgo.ECDSA_SHA256))
    verify_sev_cert(cek, SevUsage.CEK, sim_ask_cert())
    amd_ask = load_amd_cert(sev_vector(f"builtin-sev/{gen}/ask.cert"))
    with pytest.raises(CertificateError) as exc:
        verify_sev_cert(cek, SevUsage.CEK, amd_ask)
    assert exc.value.check == "signature"
