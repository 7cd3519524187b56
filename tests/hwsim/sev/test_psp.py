"""The simulated secure processor: state machine, ownership, key rotation, persistence."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hwsim.machine import Machine
from hwsim.sev.arch import PlatformState, SevAlgo, SevCert, SevCommand, SevStatus, SevUsage
from hwsim.sev.certs import make_sev_cert, sign_sev_cert, verify_sev_cert
from hwsim.sev.device import SevDevice, SevUnavailable
from hwsim.sev.psp import ALLOWED_STATES, STATE_NS, Psp, PspError
from tests.conftest import MachineFactory


@contextmanager
def psp_of(machine: Machine) -> Iterator[Psp]:
    with SevDevice.open(machine) as dev:
        yield dev.psp


def _force_state(machine: Machine, state: PlatformState) -> None:
    """Put the platform in ``state`` (WORKING stands for "a guest is running")."""
    with machine.transaction() as txn:
        txn.put(STATE_NS, "state", bytes([state]))


def _owner() -> tuple[ec.EllipticCurvePrivateKey, SevCert]:
    key = ec.generate_private_key(ec.SECP384R1())
    oca = make_sev_cert(key.public_key(), SevUsage.OCA, SevAlgo.ECDSA_SHA256)
    return key, sign_sev_cert(oca, key, SevUsage.OCA, SevAlgo.ECDSA_SHA256)


def _signed_csr(csr: SevCert, key: ec.EllipticCurvePrivateKey) -> SevCert:
    return sign_sev_cert(csr, key, SevUsage.OCA, SevAlgo.ECDSA_SHA256)


def _take_ownership(machine: Machine) -> SevCert:
    key, oca = _owner()
    with SevDevice.open(machine) as dev:
        dev.pek_cert_import(_signed_csr(dev.pek_csr(), key), oca)
    return oca


# Every platform command with arguments that are valid whenever the state allows it.
_COMMANDS: dict[SevCommand, Callable[[Psp], Any]] = {
    SevCommand.INIT: Psp.init,
    SevCommand.SHUTDOWN: Psp.shutdown,
    SevCommand.PLATFORM_RESET: Psp.platform_reset,
    SevCommand.PLATFORM_STATUS: Psp.platform_status,
    SevCommand.PEK_GEN: Psp.pek_gen,
    SevCommand.PEK_CSR: Psp.pek_csr,
    SevCommand.PDH_GEN: Psp.pdh_gen,
    SevCommand.PDH_CERT_EXPORT: Psp.pdh_cert_export,
    SevCommand.DF_FLUSH: Psp.df_flush,
    SevCommand.GET_ID: Psp.get_id,
    # Empty certificates: refused for their content once the state allows the command.
    SevCommand.PEK_CERT_IMPORT: lambda psp: psp.pek_cert_import(SevCert(), SevCert()),
}


@pytest.mark.parametrize("state", list(PlatformState))
@pytest.mark.parametrize("command", list(ALLOWED_STATES))
def test_each_command_only_in_its_states(
    machine: Machine, state: PlatformState, command: SevCommand
) -> None:
    with psp_of(machine) as psp:
        psp.init()  # the platform has keys, whatever state it is put in next
    _force_state(machine, state)
    with psp_of(machine) as psp:
        try:
            _COMMANDS[command](psp)
        except PspError as exc:
            assert exc.command == command
            refused_for_state = exc.status == SevStatus.INVALID_PLATFORM_STATE
        else:
            refused_for_state = False
    assert refused_for_state == (state not in ALLOWED_STATES[command])


def test_fresh_machine_is_uninit_and_init_makes_a_verifiable_chain(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        assert dev.platform_status().state == PlatformState.UNINIT
        pdh, (pek, oca, cek) = dev.pdh_cert_export()
        assert dev.platform_status().state == PlatformState.INIT
        assert dev.platform_status().owner == 0
        signed_cek = dev.kds_cek(dev.get_id())
        ask, _ark = dev.kds_ca()
    assert not any(u != SevUsage.INVALID for u, _, _ in cek.slots())
    verify_sev_cert(signed_cek, SevUsage.CEK, ask)
    verify_sev_cert(pek, SevUsage.PEK, signed_cek)
    verify_sev_cert(pek, SevUsage.PEK, oca)
    verify_sev_cert(oca, SevUsage.OCA, oca)
    verify_sev_cert(pdh, SevUsage.PDH, pek)


def test_external_ownership_survives_power_cycle_and_is_cleared_by_reset(
    machine: Machine,
) -> None:
    oca = _take_ownership(machine)
    machine.power_cycle()
    with SevDevice.open(machine) as dev:
        status = dev.platform_status()
        assert status.state == PlatformState.UNINIT
        assert status.owner == 1
        _pdh, (pek, exported_oca, _cek) = dev.pdh_cert_export()
        assert exported_oca == oca
        verify_sev_cert(pek, SevUsage.PEK, oca)
        dev.factory_reset()
        assert dev.platform_status().owner == 0
        _pdh, (_pek, new_oca, _cek) = dev.pdh_cert_export()
        assert new_oca != oca


def test_machine_reset_clears_ownership_and_changes_the_cek(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        cek_before = dev.psp.cek_cert()
    _take_ownership(machine)
    machine.reset()
    with SevDevice.open(machine) as dev:
        assert dev.platform_status().owner == 0
        assert dev.psp.cek_cert() != cek_before


def test_cek_and_id_stable_across_platform_reset_and_power_cycle(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        cek, chip_id = dev.psp.cek_cert(), dev.get_id()
        dev.factory_reset()
    machine.power_cycle()
    with SevDevice.open(machine) as dev:
        assert dev.psp.cek_cert() == cek
        assert dev.get_id() == chip_id
        assert len(chip_id) == 64


def test_pdh_rotation_changes_pdh_and_keeps_pek(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        pdh1, (pek1, _, _) = dev.pdh_cert_export()
        dev.pdh_gen()
        pdh2, (pek2, _, _) = dev.pdh_cert_export()
    assert pdh1.pub_key != pdh2.pub_key
    assert pek1 == pek2
    verify_sev_cert(pdh2, SevUsage.PDH, pek2)


def test_pek_rotation_changes_pek_and_pdh_and_returns_to_self_owned(machine: Machine) -> None:
    _take_ownership(machine)
    with SevDevice.open(machine) as dev:
        pdh1, (pek1, _, _) = dev.pdh_cert_export()
        dev.pek_gen()
        pdh2, (pek2, oca2, _) = dev.pdh_cert_export()
        assert dev.platform_status().owner == 0
    assert pek1.pub_key != pek2.pub_key and pdh1.pub_key != pdh2.pub_key
    verify_sev_cert(pek2, SevUsage.PEK, oca2)


def test_second_import_is_already_owned(machine: Machine) -> None:
    _take_ownership(machine)
    with pytest.raises(PspError) as exc:
        _take_ownership(machine)
    assert exc.value.status == SevStatus.ALREADY_OWNED


def test_stale_csr_is_an_invalid_certificate(machine: Machine) -> None:
    key, oca = _owner()
    with SevDevice.open(machine) as dev:
        csr = dev.pek_csr()
        dev.pek_gen()
        with pytest.raises(PspError) as exc:
            dev.pek_cert_import(_signed_csr(csr, key), oca)
    assert exc.value.status == SevStatus.INVALID_CERTIFICATE


def test_csr_signed_by_another_key_is_a_bad_signature(machine: Machine) -> None:
    _key, oca = _owner()
    other, _ = _owner()
    with SevDevice.open(machine) as dev:
        with pytest.raises(PspError) as exc:
            dev.pek_cert_import(_signed_csr(dev.pek_csr(), other), oca)
        assert dev.platform_status().owner == 0
    assert exc.value.status == SevStatus.BAD_SIGNATURE


def test_factory_reset_refused_while_guests_run(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        dev.platform_init()
    _force_state(machine, PlatformState.WORKING)
    with SevDevice.open(machine) as dev, pytest.raises(PspError) as exc:
        dev.factory_reset()
    assert exc.value.status == SevStatus.INVALID_PLATFORM_STATE


def test_failed_command_leaves_state_untouched(machine: Machine) -> None:
    """One transaction per command: an error rolls back what the command had done."""
    _key, oca = _owner()
    other, _ = _owner()
    with pytest.raises(PspError), SevDevice.open(machine) as dev:
        dev.pek_gen()  # implicit INIT, then a new PEK ...
        dev.pek_cert_import(_signed_csr(dev.pek_csr(), other), oca)  # ... then a failure
    with SevDevice.open(machine) as dev:
        assert dev.platform_status().state == PlatformState.UNINIT


@pytest.mark.parametrize(("profile", "es"), [("naples", False), ("rome", True)])
def test_status_reports_profile_api_and_es(
    machine_factory: MachineFactory, profile: str, es: bool
) -> None:
    m = machine_factory(profile)
    with SevDevice.open(m) as dev:
        dev.platform_init()
        status = dev.platform_status()
    assert (status.api_major, status.api_minor, status.build) == m.profile.sev_api
    assert bool(status.config & 1) == es


def test_profile_without_sev_is_refused(machine_factory: MachineFactory) -> None:
    m = machine_factory("skylake")
    with pytest.raises(SevUnavailable, match="has no AMD SEV"), SevDevice.open(m):
        pass


def test_bios_without_memory_encryption_has_no_sev(machine: Machine) -> None:
    machine.set_config("sme_enabled", "false")
    machine.power_cycle()
    with pytest.raises(SevUnavailable, match="BIOS left disabled") as exc, SevDevice.open(machine):
        pass
    assert exc.value.hint is not None and "sme_enabled" in exc.value.hint
