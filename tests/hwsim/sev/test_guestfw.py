"""The PSP's guest commands: the SEV API guest state machine, ASIDs, policy, each error."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import pytest

from hwsim.machine import Machine
from hwsim.sev._sha256 import ResumableSha256
from hwsim.sev.arch import GuestPolicy, GuestState, PlatformState, SevStatus
from hwsim.sev.device import SevDevice
from hwsim.sev.errors import PspError
from hwsim.sev.kvm import KvmError, SevVm
from hwsim.sev.session import build_session, seal_secret
from tests.conftest import MachineFactory
from tests.hwsim.sev.guests import HLT, flat_image, launch, running

IMAGE = flat_image(HLT)


def _status(excinfo: pytest.ExceptionInfo[PspError]) -> SevStatus:
    return excinfo.value.status


def test_launch_measure_finish_walk_the_states(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        assert dev.platform_status().state == PlatformState.UNINIT
        vm = launch(dev, IMAGE)
        assert GuestState(vm.status().state) == GuestState.LUPDATE
        assert dev.psp.state == PlatformState.WORKING
        assert dev.platform_status().guest_count == 1
        blob = vm.launch_measure()
        assert len(blob) == 48
        assert GuestState(vm.status().state) == GuestState.LSECRET
        vm.launch_finish()
        assert GuestState(vm.status().state) == GuestState.RUNNING
        vm.decommission()
        assert dev.platform_status().state == PlatformState.INIT
        assert dev.platform_status().guest_count == 0


def test_launch_digest_is_sha256_of_what_was_measured(machine: Machine) -> None:
    """The measurement is made of SHA-256 over the LAUNCH_UPDATE_DATA plaintext, in order,
    across separate transactions (the digest state survives in state.db)."""
    from hwsim.sev.session import TransportKeys, launch_measurement

    keys = TransportKeys.random()
    with SevDevice.open(machine) as dev:
        pdh, _ = dev.pdh_cert_export()
        owner = build_session(pdh, 0, keys=keys)
        godh, session = owner.godh.pack(), owner.session.pack()
        vm = SevVm.create(dev, name="d", memory_size=16 << 20, firmware_size=len(IMAGE),
                          policy=0, godh=godh, session=session)  # fmt: skip
        vm.load(vm.record.flash_gpa, IMAGE)
        vm.launch_update_data(vm.record.flash_gpa, 2048)
        handle = vm.record.handle
    with SevDevice.open(machine) as dev:
        vm = SevVm.get(dev, handle)
        vm.launch_update_data(vm.record.flash_gpa + 2048, 2048)
        blob = vm.launch_measure()
        major, minor, build = dev.psp.api
    expected = launch_measurement(keys.tik, api_major=major, api_minor=minor, build=build,
                                  policy=0, digest=hashlib.sha256(IMAGE).digest(),
                                  mnonce=blob[32:])  # fmt: skip
    assert blob[:32] == expected


@pytest.mark.parametrize("native", [True, False])
def test_resumable_sha256_matches_hashlib(native: bool) -> None:
    data = os.urandom(1000)
    for split in (0, 1, 63, 64, 65, 999):
        h = ResumableSha256(native=native)
        h.update(data[:split])
        h = ResumableSha256.load(h.save(), native=native)
        h.update(data[split:])
        assert h.digest() == hashlib.sha256(data).digest()


def test_commands_in_the_wrong_state_get_invalid_guest_state(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        vm = launch(dev, IMAGE)
        g, h = dev.guests, vm.record.handle
        calls: list[Callable[[], object]] = [
            lambda: g.launch_secret(h, bytes(52), bytes(16), vm.record.spa),
            lambda: g.launch_finish(h),
        ]
        for call in calls:
            with pytest.raises(PspError) as exc:
                call()
            assert _status(exc) == SevStatus.INVALID_GUEST_STATE
        vm.launch_measure()
        calls = [lambda: g.launch_measure(h), lambda: g.launch_update_data(h, vm.record.spa, 16)]
        for call in calls:
            with pytest.raises(PspError) as exc:
                call()
            assert _status(exc) == SevStatus.INVALID_GUEST_STATE
        vm.launch_finish()
        with pytest.raises(PspError) as exc:
            g.launch_finish(h)
        assert _status(exc) == SevStatus.INVALID_GUEST_STATE


def test_unknown_handle_is_invalid_guest(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        launch(dev, IMAGE)
        with pytest.raises(PspError) as exc:
            dev.guests.guest_status(99)
        assert _status(exc) == SevStatus.INVALID_GUEST


def test_guest_commands_need_a_working_platform(machine: Machine) -> None:
    with SevDevice.open(machine) as dev, pytest.raises(PspError) as exc:
        dev.guests.launch_start(0, None, None)
    assert _status(exc) == SevStatus.INVALID_PLATFORM_STATE
    with SevDevice.open(machine) as dev:
        dev.platform_init()
        with pytest.raises(PspError) as exc:
            dev.guests.guest_status(1)
    assert _status(exc) == SevStatus.INVALID_PLATFORM_STATE


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        (GuestPolicy.ES, "SEV-ES"),
        (0x00FF0000, "needs firmware API 255.0"),
    ],
)
def test_launch_start_policy_failures(machine: Machine, policy: int, words: str) -> None:
    with SevDevice.open(machine) as dev:
        dev.platform_init()
        with pytest.raises(PspError) as exc:
            dev.guests.launch_start(policy, None, None)
    assert _status(exc) == SevStatus.POLICY_FAILURE
    assert words in str(exc.value)


def test_key_sharing_is_refused_under_noks(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        vm = launch(dev, IMAGE, policy=GuestPolicy.NOKS)
        with pytest.raises(PspError) as exc:
            dev.guests.launch_start(0, None, None, share_with=vm.record.handle)
        assert _status(exc) == SevStatus.POLICY_FAILURE
        other = launch(dev, IMAGE, name="u")
        shared = dev.guests.launch_start(0, None, None, share_with=other.record.handle)
        dev.guests.activate(shared, other.status().asid)  # a shared key may share its ASID
        assert dev.guests.guest_status(shared).asid == other.status().asid


def test_debug_commands_are_refused_under_nodbg(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        vm = running(dev, IMAGE, policy=GuestPolicy.NODBG)
        with pytest.raises(PspError) as exc:
            vm.dbg_decrypt(vm.record.flash_gpa, 16)
        assert _status(exc) == SevStatus.POLICY_FAILURE
        with pytest.raises(PspError) as exc:
            vm.dbg_encrypt(vm.record.flash_gpa, bytes(16))
        assert _status(exc) == SevStatus.POLICY_FAILURE
        debuggable = running(dev, IMAGE, name="dbg")
        debuggable.dbg_encrypt(0x5000 + 3, b"hello")
        assert debuggable.dbg_decrypt(0x5000, 16)[3:8] == b"hello"
        assert debuggable.host_read(0x5000, 16)[3:8] != b"hello"
        assert debuggable.dbg_decrypt(debuggable.record.flash_gpa, len(IMAGE)) == IMAGE


def test_asid_rules(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        a = launch(dev, IMAGE, name="a")
        b = launch(dev, IMAGE, name="b")
        g, asid_a = dev.guests, a.status().asid
        cases: list[tuple[Callable[[], object], SevStatus]] = [
            (lambda: g.activate(b.record.handle, asid_a), SevStatus.ASID_OWNED),
            (lambda: g.activate(b.record.handle, 0), SevStatus.INVALID_ASID),
            (lambda: g.activate(b.record.handle, g.min_sev_asid - 1), SevStatus.INVALID_ASID),
            (lambda: g.activate(b.record.handle, g.sev_asids + 1), SevStatus.INVALID_ASID),
            (lambda: g.decommission(a.record.handle), SevStatus.ACTIVE),
        ]
        for call, status in cases:
            with pytest.raises(PspError) as exc:
                call()
            assert _status(exc) == status, status
        g.deactivate(a.record.handle)
        with pytest.raises(PspError) as exc:
            g.launch_update_data(a.record.handle, a.record.spa, 16)
        assert _status(exc) == SevStatus.INACTIVE
        with pytest.raises(PspError) as exc:
            g.deactivate(a.record.handle)
        assert _status(exc) == SevStatus.INACTIVE
        with pytest.raises(PspError) as exc:
            g.activate(a.record.handle, asid_a)  # deactivated, not flushed
        assert _status(exc) == SevStatus.DF_FLUSH_REQUIRED
        with pytest.raises(PspError) as exc:
            dev.psp.df_flush()  # DEACTIVATE cleared the WBINVD indicator
        assert _status(exc) == SevStatus.WBINVD_REQUIRED
        dev.psp.wbinvd()
        dev.psp.df_flush()
        g.activate(a.record.handle, asid_a)
        assert a.status().asid == asid_a


def test_alignment_and_length(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        vm = launch(dev, IMAGE)
        g, h = dev.guests, vm.record.handle
        with pytest.raises(PspError) as exc:
            g.launch_update_data(h, vm.record.spa + 8, 16)
        assert _status(exc) == SevStatus.INVALID_ADDRESS
        with pytest.raises(PspError) as exc:
            g.launch_update_data(h, vm.record.spa, 15)
        assert _status(exc) == SevStatus.INVALID_LENGTH


def test_kvm_recycles_asids_and_says_when_none_is_free(machine_factory: MachineFactory) -> None:
    machine = machine_factory("naples")  # 15 SEV ASIDs
    with SevDevice.open(machine) as dev:
        vms = [launch(dev, IMAGE, name=f"g{i}") for i in range(dev.guests.sev_asids)]
        with pytest.raises(KvmError, match="no free SEV ASID"):
            launch(dev, IMAGE, name="one-too-many")
        first = vms[0].status().asid
        vms[0].decommission()
        again = launch(dev, IMAGE, name="again")  # WBINVD + DF_FLUSH, then the ASID is free
        assert again.status().asid == first


def test_a_power_cycle_ends_every_guest(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        launch(dev, IMAGE)
    machine.power_cycle()
    with SevDevice.open(machine) as dev:
        assert SevVm.all(dev) == []
        assert dev.platform_status().guest_count == 0


def test_shutdown_drops_guest_contexts(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        launch(dev, IMAGE)
        dev.platform_shutdown()
        assert dev.psp.guest_count == 0


def test_session_for_another_machines_pdh_fails(machine_factory: MachineFactory) -> None:
    one, two = machine_factory(name="one"), machine_factory(name="two")
    with SevDevice.open(one) as dev:
        pdh, _ = dev.pdh_cert_export()
    owner = build_session(pdh, 0)
    with SevDevice.open(two) as dev, pytest.raises(PspError) as exc:
        launch(dev, IMAGE, godh=owner.godh.pack(), session=owner.session.pack())
    assert _status(exc) == SevStatus.BAD_MEASUREMENT
    assert "another platform's PDH" in str(exc.value)


def test_wrong_tik_fails_launch_secret_with_bad_measurement(machine: Machine) -> None:
    from hwsim.sev.session import TransportKeys

    with SevDevice.open(machine) as dev:
        pdh, _ = dev.pdh_cert_export()
        owner = build_session(pdh, 0)
        vm = launch(dev, IMAGE, godh=owner.godh.pack(), session=owner.session.pack())
        measure = vm.launch_measure()[:32]
        wrong = TransportKeys(owner.keys.tek, os.urandom(16))
        header, payload = seal_secret(wrong, bytes(32), measure)
        with pytest.raises(PspError) as exc:
            vm.launch_secret(header.pack(), payload, 0x800000)
        assert _status(exc) == SevStatus.BAD_MEASUREMENT
        header, payload = seal_secret(owner.keys, b"s" * 32, measure)
        vm.launch_secret(header.pack(), payload, 0x800000)
        assert vm.host_read(0x800000, 32) != b"s" * 32
