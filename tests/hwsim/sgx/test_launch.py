"""Launch policies end to end through the device: vendor-key, flc-open, flc-locked."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from hwsim._cli import main as hwsim_main
from hwsim.machine import Machine
from hwsim.sgx._encls import EInit, encls
from hwsim.sgx.arch import AttributeFlag, SgxStatus
from hwsim.sgx.device import launch_token
from hwsim.sgx.errors import LaunchRefused, SgxError, SgxStatusError
from hwsim.sgx.launch import (
    LaunchPolicy,
    approve_signer,
    launch_control,
    revoke_signer,
    set_launch_policy,
)
from memcrypt.errors import InvalidInput
from tests.hwsim.sgx.conftest import ImageMaker, build_device

MachineFactory = Callable[..., Machine]


def with_policy(machine: Machine, policy: LaunchPolicy, **kw: object) -> Machine:
    set_launch_policy(machine, policy, **kw)  # type: ignore[arg-type]
    machine.power_cycle()
    assert launch_control(machine).policy == policy
    return machine


@pytest.fixture
def vendor_machine(machine: Machine) -> Machine:
    return with_policy(machine, LaunchPolicy.VENDOR_KEY)


def test_vendor_key_flow_end_to_end(
    vendor_machine: Machine, image: ImageMaker, capsys: pytest.CaptureFixture[str]
) -> None:
    prod = image(payload=b"production build")
    with pytest.raises(LaunchRefused) as refused:
        build_device(vendor_machine, prod).init(prod.sigstruct)
    message = str(refused.value)
    assert "Launch Enclave" in message and "unapproved production signer" in message
    assert (
        refused.value.hint and f"hwsim vendor approve {prod.mrsigner.hex()}" in refused.value.hint
    )

    debug = image(debug=True, payload=b"debug build")
    assert build_device(vendor_machine, debug).init(debug.sigstruct).initialized

    hwsim_main(["--machine", str(vendor_machine.path), "vendor", "approve", prod.mrsigner.hex()])
    assert "approved" in capsys.readouterr().out
    enclave = build_device(vendor_machine, prod).init(prod.sigstruct)
    assert enclave.identity is not None and enclave.identity.mrsigner == prod.mrsigner


def test_revoked_signer_is_refused_again(vendor_machine: Machine, image: ImageMaker) -> None:
    prod = image()
    approve_signer(vendor_machine, prod.mrsigner)
    revoke_signer(vendor_machine, prod.mrsigner)
    with pytest.raises(LaunchRefused, match="unapproved production signer"):
        build_device(vendor_machine, prod).init(prod.sigstruct)
    with pytest.raises(InvalidInput, match="not on the vendor allow-list"):
        revoke_signer(vendor_machine, prod.mrsigner)


def test_tampered_allow_list_is_not_trusted(vendor_machine: Machine, image: ImageMaker) -> None:
    prod = image()
    approve_signer(vendor_machine, prod.mrsigner)
    with vendor_machine.transaction() as txn:
        raw = bytearray(txn.get("vendor", "sgx.allow-list") or b"")
        raw[-1] ^= 1
        txn.put("vendor", "sgx.allow-list", bytes(raw))
    with pytest.raises(SgxError, match="signature does not verify"):
        build_device(vendor_machine, prod).init(prod.sigstruct)


def test_provisionkey_needs_an_approved_signer(vendor_machine: Machine, image: ImageMaker) -> None:
    img = image(debug=True, flags=int(AttributeFlag.PROVISIONKEY))
    with pytest.raises(LaunchRefused, match="wrong attributes: PROVISIONKEY"):
        build_device(vendor_machine, img).init(img.sigstruct)


def test_legacy_part_runs_the_vendor_key_flow(
    machine_factory: MachineFactory, image: ImageMaker
) -> None:
    legacy = machine_factory("skylake")
    assert launch_control(legacy).policy == LaunchPolicy.VENDOR_KEY
    debug = image(debug=True)
    assert build_device(legacy, debug).init(debug.sigstruct).initialized


def test_flc_open_runs_any_self_signed_enclave(machine: Machine, image: ImageMaker) -> None:
    with_policy(machine, LaunchPolicy.FLC_OPEN)
    for signer in ("author", "owner", "other"):
        img = image(signer)
        assert build_device(machine, img).init(img.sigstruct).initialized
        assert launch_control(machine).msr_hash == img.mrsigner  # written before EINIT


def test_owner_key_lock_refuses_foreign_signer(machine: Machine, image: ImageMaker) -> None:
    owner, foreign = image("owner"), image("other")
    with_policy(machine, LaunchPolicy.FLC_LOCKED, owner_key_hash=owner.mrsigner)
    with pytest.raises(LaunchRefused, match=r"flc-locked.*locked to the owner's key") as refused:
        build_device(machine, foreign).init(foreign.sigstruct)
    assert refused.value.hint and "owner's key" in refused.value.hint
    assert build_device(machine, owner).init(owner.sigstruct).initialized


def test_owner_allow_list_refuses_others(machine: Machine, image: ImageMaker) -> None:
    allowed, foreign = image("owner"), image("other")
    with_policy(machine, LaunchPolicy.FLC_LOCKED, allow=(allowed.mrsigner,))
    with pytest.raises(LaunchRefused, match="owner's allow-list"):
        build_device(machine, foreign).init(foreign.sigstruct)
    assert build_device(machine, allowed).init(allowed.sigstruct).initialized


def test_token_from_another_machine_is_refused(
    machine_factory: MachineFactory, image: ImageMaker
) -> None:
    a, b = machine_factory("skylake", "a"), machine_factory("skylake", "b")
    img = image(debug=True)
    token = launch_token(a, img.sigstruct)
    assert build_device(a, img).init(img.sigstruct, token).initialized
    with pytest.raises(SgxStatusError, match="another machine") as caught:
        build_device(b, img).init(img.sigstruct, token)
    assert caught.value.status == SgxStatus.INVALID_EINITTOKEN


def test_token_is_refused_after_the_msrs_change(vendor_machine: Machine, image: ImageMaker) -> None:
    img, owner = image(debug=True), image("owner")
    token = launch_token(vendor_machine, img.sigstruct).pack()
    with_policy(vendor_machine, LaunchPolicy.FLC_LOCKED, owner_key_hash=owner.mrsigner)
    dev = build_device(vendor_machine, img)
    with pytest.raises(SgxStatusError) as caught:
        encls(dev.epc, EInit(dev.enclave.secs_page, img.sigstruct.pack(), token))
    assert caught.value.status == SgxStatus.INVALID_EINITTOKEN
    # Back to the vendor's hash in the MSRs, the same token is good again: it is bound to
    # the MSR value, not to the boot.
    with_policy(vendor_machine, LaunchPolicy.VENDOR_KEY)
    assert build_device(vendor_machine, img).init(img.sigstruct, token).initialized


def test_no_token_service_where_tokens_are_not_used(machine: Machine, image: ImageMaker) -> None:
    img = image(debug=True)
    with pytest.raises(LaunchRefused, match="no token is needed"):
        launch_token(machine, img.sigstruct)
    with_policy(machine, LaunchPolicy.FLC_LOCKED, owner_key_hash=image("owner").mrsigner)
    with pytest.raises(LaunchRefused, match="Launch Enclave cannot run"):
        launch_token(machine, img.sigstruct)


def test_policies_refused_on_parts_that_cannot_have_them(
    machine_factory: MachineFactory,
) -> None:
    naples, legacy = machine_factory("naples", "naples"), machine_factory("skylake", "legacy")
    with pytest.raises(SgxError, match="profile naples has no SGX"):
        set_launch_policy(naples, LaunchPolicy.VENDOR_KEY)
    for policy in (LaunchPolicy.FLC_OPEN, LaunchPolicy.FLC_LOCKED):
        with pytest.raises(SgxError, match="legacy launch control only") as caught:
            set_launch_policy(legacy, policy, owner_key_hash=bytes(32))
        assert caught.value.hint and "FLC" in caught.value.hint
    with pytest.raises(SgxError, match="has no SGX"):
        launch_control(naples)


def test_flc_locked_needs_one_of_owner_key_or_allow_list(machine: Machine) -> None:
    with pytest.raises(InvalidInput, match="not both"):
        set_launch_policy(machine, LaunchPolicy.FLC_LOCKED)
    with pytest.raises(InvalidInput, match="takes no owner key"):
        set_launch_policy(machine, LaunchPolicy.FLC_OPEN, allow=(bytes(32),))


def test_policy_change_waits_for_power_cycle(machine: Machine) -> None:
    lc = set_launch_policy(machine, LaunchPolicy.VENDOR_KEY)
    assert lc.policy == LaunchPolicy.FLC_OPEN and lc.after_power_cycle == LaunchPolicy.VENDOR_KEY
    machine.power_cycle()
    lc = launch_control(machine)
    assert lc.after_power_cycle is None and lc.msr_hash == lc.vendor_hash
    assert not lc.msrs_writable


def test_enclaves_die_with_a_power_cycle(machine: Machine, image: ImageMaker) -> None:
    img = image()
    dev = build_device(machine, img)
    machine.power_cycle()
    with pytest.raises(SgxError):
        dev.init(img.sigstruct)  # its SECS lived in the old boot's EPC...
    fresh = build_device(machine, img)
    assert fresh.epc is not dev.epc and fresh.init(img.sigstruct).initialized


def test_debug_token_attributes_must_match(vendor_machine: Machine, image: ImageMaker) -> None:
    img = image(debug=True)
    token = launch_token(vendor_machine, img.sigstruct)
    assert token.attributes_flags & AttributeFlag.DEBUG
    bad = dataclasses.replace(token, valid=3)
    with pytest.raises(SgxStatusError, match="INVALID_EINITTOKEN"):
        build_device(vendor_machine, img).init(img.sigstruct, bad)
