"""Migration between two simulated machines: SEND_* on the source, RECEIVE_* on the target."""

from __future__ import annotations

import pytest

from hwsim.machine import Machine
from hwsim.sev import migrate
from hwsim.sev.arch import GuestPolicy, GuestState, SevCommand, SevStatus
from hwsim.sev.device import SevDevice
from hwsim.sev.guest import run_guest
from hwsim.sev.kvm import SevVm
from hwsim.sev.psp import PspError
from hwsim.sev.transport import Transport, receive_vm, send_vm
from sevtool.vmsa import build_vmsa
from tests.conftest import MachineFactory
from tests.hwsim.sev.guests import (
    ES_POLICY,
    HLT,
    POWER_OFF,
    chain_of,
    flat_image,
    ghcb_out,
    launch,
    running,
    share_page,
    store,
)

PRIVATE = 0x40_0000
ECHO = (
    b"\x48\xbb" + PRIVATE.to_bytes(8, "little") + b"\x8a\x03\x66\xba\xf8\x03\xee"
)  # out [PRIVATE]


def moved(src: Machine, dst: Machine, policy: int = 0) -> tuple[Transport, bytes, bytes]:
    """A guest that wrote 'Z' to private memory and halted, sent from src to dst."""
    with SevDevice.open(src) as dev:
        vm = running(
            dev, flat_image(store(PRIVATE, ord("Z")) + HLT + ECHO + POWER_OFF), policy=policy
        )
        assert run_guest(vm, 10_000).stop == "halt"
        ctx = dev.guests.context(SevCommand.GUEST_STATUS, vm.record.handle)
        digest, measure = ctx.final_digest(), ctx.measure
    chain = chain_of(dst)
    with SevDevice.open(src) as dev:
        transport = send_vm(SevVm.get(dev, 1), chain)
    return transport, digest, measure


def test_a_guest_runs_on_the_target_with_its_data_and_measurement(
    machine: Machine, machine_factory: MachineFactory
) -> None:
    target = machine_factory(name="b")
    transport, digest, measure = moved(machine, target)
    raw = Transport.unpack(transport.pack()).pack()
    assert raw == transport.pack()
    page = next(r for r in transport.records if r[1] == PRIVATE)
    assert page[0] == 1 and page[3][:8] != ord("Z").to_bytes(8, "little")  # transport-encrypted
    with SevDevice.open(machine) as dev:
        vm = SevVm.get(dev, 1)
        assert GuestState(vm.status().state) == GuestState.SENT
        with pytest.raises(Exception, match="SENT, not RUNNING"):
            run_guest(vm, 100)
    with SevDevice.open(target) as dev:
        vm = receive_vm(dev, Transport.unpack(raw))
        assert GuestState(vm.status().state) == GuestState.RUNNING
        ctx = dev.guests.context(SevCommand.GUEST_STATUS, vm.record.handle)
        assert (ctx.final_digest(), ctx.measure) == (digest, measure)
        result = run_guest(vm, 10_000)
        assert (result.stop, result.serial, result.exit_code) == ("shutdown", b"Z", 0)


def test_refusals(machine: Machine, machine_factory: MachineFactory) -> None:
    target = machine_factory(name="b")
    with SevDevice.open(machine) as dev:
        vm = running(dev, flat_image(HLT), policy=GuestPolicy.NOSEND, name="nosend")
        with pytest.raises(PspError) as err:
            send_vm(vm, chain_of(target))
        assert err.value.status == SevStatus.POLICY_FAILURE
        vm = running(dev, flat_image(HLT), policy=GuestPolicy.DOMAIN, name="domain")
        with pytest.raises(PspError) as err:
            send_vm(vm, chain_of(target))
        assert err.value.status == SevStatus.POLICY_FAILURE and "DOMAIN" in str(err.value)
        fresh = launch(dev, flat_image(HLT), name="launching")
        with pytest.raises(PspError) as err:
            migrate.send_start(dev.guests, fresh.record.handle, chain_of(target))
        assert err.value.status == SevStatus.INVALID_GUEST_STATE
        with pytest.raises(PspError) as err:
            migrate.send_finish(dev.guests, fresh.record.handle)
        assert err.value.status == SevStatus.INVALID_GUEST_STATE


def test_a_tampered_transport_is_refused(machine: Machine, machine_factory: MachineFactory) -> None:
    target = machine_factory(name="b")
    transport, _, _ = moved(machine, target)
    kind, gpa, hdr, data = transport.records[0]
    transport.records[0] = (kind, gpa, hdr, bytes([data[0] ^ 1]) + data[1:])
    with pytest.raises(PspError) as err, SevDevice.open(target) as dev:
        receive_vm(dev, transport)
    assert err.value.status == SevStatus.BAD_MEASUREMENT
    dropped, _, _ = moved(machine_factory(name="c"), target)
    dropped.records.pop()
    with pytest.raises(PspError, match="packets"), SevDevice.open(target) as dev:
        receive_vm(dev, dropped)


def test_a_transport_for_another_target_is_refused(
    machine: Machine, machine_factory: MachineFactory
) -> None:
    transport, _, _ = moved(machine, machine_factory(name="b"))
    with pytest.raises(PspError) as err, SevDevice.open(machine_factory(name="c")) as dev:
        receive_vm(dev, transport)
    assert err.value.status == SevStatus.BAD_MEASUREMENT


def test_an_es_guest_moves_with_its_encrypted_vmsa(
    machine: Machine, machine_factory: MachineFactory
) -> None:
    target = machine_factory(name="b")
    cbit = machine.profile.cbit
    code = share_page(cbit) + ghcb_out(0x3F8, ord("a")) + HLT + ghcb_out(0x3F8, ord("b"))
    with SevDevice.open(machine) as dev:
        vm = launch(dev, flat_image(code + ghcb_out(0xF4, 0)), policy=ES_POLICY)
        vm.launch_update_vmsa([build_vmsa(0).pack()])
        vm.launch_measure()
        vm.launch_finish()
        assert run_guest(vm, 100_000).serial == b"a"
    chain = chain_of(target)
    with SevDevice.open(machine) as dev:
        transport = send_vm(SevVm.get(dev, 1), chain)
    assert [r[0] for r in transport.records].count(2) == 1  # one VMSA packet
    with SevDevice.open(target) as dev:
        vm = receive_vm(dev, transport)
        assert vm.record.es and vm.record.vcpu == {}
        result = run_guest(vm, 100_000)
        assert (result.serial, result.exit_code) == (b"b", 0)
