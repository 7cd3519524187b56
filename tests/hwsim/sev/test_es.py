"""SEV-ES guests: the VMSA encrypted under the guest key, port I/O only through the GHCB."""

from __future__ import annotations

import pytest

from hwsim.machine import Machine
from hwsim.sev.arch import SevStatus, Vmsa
from hwsim.sev.device import SevDevice
from hwsim.sev.guest import run_guest
from hwsim.sev.kvm import KvmError, SevVm
from hwsim.sev.psp import PspError
from memcrypt.errors import FormatError
from sevtool.vmsa import build_vmsa
from tests.hwsim.sev.guests import (
    ES_POLICY,
    GHCB_GPA,
    HLT,
    POWER_OFF,
    flat_image,
    ghcb_out,
    ghcb_serial,
    launch,
    running,
    serial,
    share_page,
)

PRIVATE_GHCB = 0x40_0000


def es_guest(dev: SevDevice, code: bytes, name: str = "es") -> SevVm:
    vm = launch(dev, flat_image(code), policy=ES_POLICY, name=name)
    vm.launch_update_vmsa([build_vmsa(0).pack()])
    vm.launch_measure()
    vm.launch_finish()
    return vm


def test_es_guest_prints_through_the_ghcb_and_its_registers_are_ciphertext(
    machine: Machine,
) -> None:
    code = share_page(machine.profile.cbit) + ghcb_serial(b"es!") + HLT + ghcb_out(0xF4, 0)
    with SevDevice.open(machine) as dev:
        vm = es_guest(dev, code)
        first = run_guest(vm, 100_000)
        assert (first.stop, first.serial) == ("halt", b"es!")
        view = vm.vcpu_view()
        assert view.protected and view.registers == {}
        # The hypervisor saw the GHCB's valid fields: the byte written and the port.
        assert view.ghcb["ghcb_gpa"] == f"{GHCB_GPA:#x}"
        assert view.ghcb["taken"]["rax"] == hex(ord("!"))  # type: ignore[index]
        with pytest.raises(FormatError, match="not zero"):
            Vmsa.unpack(view.vmsa)  # ciphertext, not a save area
        with pytest.raises(KvmError, match="encrypted VMSA"):
            vm.set_registers(rip=0)
        assert vm.record.vcpu == {}
    with SevDevice.open(machine) as dev:  # resumes from the encrypted VMSA
        second = run_guest(SevVm.get(dev, 1), 100_000)
        assert (second.stop, second.exit_code) == ("shutdown", 0)


def test_plain_sev_hypervisor_reads_and_changes_registers(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        vm = running(dev, flat_image(HLT + serial(b"skipped") + HLT + serial(b"ok") + POWER_OFF))
        run_guest(vm, 10_000)
        view = vm.vcpu_view()
        assert not view.protected and view.registers["rip"] == 0xFFFF_F001
        vm.set_registers(rip=view.registers["rip"] + len(serial(b"skipped")) + 1)
        assert run_guest(vm, 10_000).serial == b"ok"


def test_direct_port_io_in_an_es_guest_stops_it(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        result = run_guest(es_guest(dev, serial(b"x")), 10_000)
    assert result.stop == "fault" and "#VC" in result.detail and result.serial == b""


def test_a_private_ghcb_shows_the_hypervisor_ciphertext(machine: Machine) -> None:
    code = ghcb_out(0x3F8, ord("s"), PRIVATE_GHCB) + POWER_OFF
    with SevDevice.open(machine) as dev:
        vm = es_guest(dev, code)
        result = run_guest(vm, 10_000)
        assert result.serial == b""
        assert "GHCB_ERR" in str(vm.vcpu_view().ghcb["error"])


def test_es_policy_needs_an_es_part(machine_factory: object) -> None:
    naples = machine_factory(profile="naples")  # type: ignore[operator]
    with SevDevice.open(naples) as dev:
        with pytest.raises(KvmError, match="no SEV-ES"):
            launch(dev, flat_image(HLT), policy=ES_POLICY)
        dev.platform_init()
        with pytest.raises(PspError) as err:
            dev.guests.launch_start(ES_POLICY, None, None)
        assert err.value.status == SevStatus.POLICY_FAILURE


def test_launch_update_vmsa_rules(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        plain = launch(dev, flat_image(HLT), name="plain")
        with pytest.raises(KvmError, match="not an SEV-ES"):
            plain.launch_update_vmsa([bytes(4096)])
        with pytest.raises(PspError) as err:
            dev.guests.launch_update_vmsa(plain.record.handle, plain.record.vmsa_spa(0))
        assert err.value.status == SevStatus.POLICY_FAILURE
        es = launch(dev, flat_image(HLT), policy=ES_POLICY, name="es")
        assert es.status().asid < machine.profile.min_sev_asid  # the ES ASID range
        es.launch_measure()
        with pytest.raises(PspError) as err:
            es.launch_update_vmsa([build_vmsa(0).pack()])
        assert err.value.status == SevStatus.INVALID_GUEST_STATE
