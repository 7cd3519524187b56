"""EGETKEY key names and policies, SVN checks, and EREPORT local attestation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hwsim.machine import Machine
from hwsim.sgx._enclu import check_report, egetkey_leaf, ereport
from hwsim.sgx.arch import (
    AttributeFlag,
    KeyName,
    KeyPolicy,
    Keyrequest,
    Report,
    SgxStatus,
    Targetinfo,
)
from hwsim.sgx.epc import Enclave
from hwsim.sgx.errors import GP, SgxError, SgxFault, SgxStatusError
from hwsim.sgx.keys import CR_CPUSVN
from tests.hwsim.sgx.conftest import ImageMaker, build_device

MachineFactory = Callable[..., Machine]
Launch = Callable[..., Enclave]


@pytest.fixture
def launch(machine: Machine, image: ImageMaker) -> Launch:
    """``launch(signer="author", machine=None, **image options)``: an initialized enclave."""

    def go(signer: str = "author", on: Machine | None = None, **kw: object) -> Enclave:
        img = image(signer, **kw)
        return build_device(on or machine, img).init(img.sigstruct)

    return go


def key(enclave: Enclave, name: KeyName, policy: int = 0, **kw: object) -> bytes:
    req = Keyrequest(keyname=name, keypolicy=policy, cpusvn=CR_CPUSVN, **kw)  # type: ignore[arg-type]
    return egetkey_leaf(enclave, req.pack())


def seal(enclave: Enclave, policy: KeyPolicy) -> bytes:
    return key(enclave, KeyName.SEAL, int(policy), isvsvn=1)


def test_seal_key_policies(launch: Launch) -> None:
    v1, v1_again, v2 = launch(payload=b"v1"), launch(payload=b"v1"), launch(payload=b"v2")
    assert seal(v1, KeyPolicy.MRENCLAVE) == seal(v1_again, KeyPolicy.MRENCLAVE)
    assert seal(v1, KeyPolicy.MRENCLAVE) != seal(v2, KeyPolicy.MRENCLAVE)
    assert seal(v1, KeyPolicy.MRSIGNER) == seal(v2, KeyPolicy.MRSIGNER)
    assert seal(v1, KeyPolicy.MRSIGNER) != seal(launch("other"), KeyPolicy.MRSIGNER)
    assert seal(v1, KeyPolicy.MRSIGNER) != seal(launch(debug=True), KeyPolicy.MRSIGNER)
    assert seal(v1, KeyPolicy.MRSIGNER) != key(
        v1, KeyName.SEAL, KeyPolicy.MRSIGNER, keyid=b"k" * 32
    )


def test_seal_key_differs_on_another_machine(
    launch: Launch, machine_factory: MachineFactory
) -> None:
    here, there = launch(), launch(on=machine_factory("sim", "other"))
    assert seal(here, KeyPolicy.MRENCLAVE) != seal(there, KeyPolicy.MRENCLAVE)


def test_seal_key_survives_power_cycle_but_not_reset(launch: Launch, machine: Machine) -> None:
    before = seal(launch(), KeyPolicy.MRSIGNER)
    machine.power_cycle()
    assert seal(launch(), KeyPolicy.MRSIGNER) == before
    machine.reset()
    assert seal(launch(), KeyPolicy.MRSIGNER) != before


def test_svn_checks(launch: Launch) -> None:
    enclave = launch(isvsvn=3)
    key(enclave, KeyName.SEAL, KeyPolicy.MRSIGNER, isvsvn=2)  # older SVNs are fine
    with pytest.raises(SgxStatusError) as caught:
        key(enclave, KeyName.SEAL, KeyPolicy.MRSIGNER, isvsvn=4)
    assert caught.value.status == SgxStatus.INVALID_ISVSVN
    beyond = bytes([0xFF]) + CR_CPUSVN[1:]
    req = Keyrequest(keyname=KeyName.SEAL, keypolicy=2, cpusvn=beyond)
    with pytest.raises(SgxStatusError) as caught:
        egetkey_leaf(enclave, req.pack())
    assert caught.value.status == SgxStatus.INVALID_CPUSVN


def test_gated_keys_need_their_attribute(launch: Launch) -> None:
    plain = launch()
    for name in (KeyName.PROVISION, KeyName.PROVISION_SEAL, KeyName.EINITTOKEN):
        with pytest.raises(SgxStatusError) as caught:
            key(plain, name)
        assert caught.value.status == SgxStatus.INVALID_ATTRIBUTE
    prov = launch(flags=int(AttributeFlag.PROVISIONKEY))
    # The provisioning key ignores KEYID and OWNEREPOCH: same signer, same key.
    assert key(prov, KeyName.PROVISION) == key(prov, KeyName.PROVISION, keyid=b"x" * 32)
    assert key(prov, KeyName.PROVISION_SEAL) != key(prov, KeyName.PROVISION)


def test_bad_requests(launch: Launch) -> None:
    enclave = launch()
    with pytest.raises(SgxStatusError) as caught:
        key(enclave, 9)  # type: ignore[arg-type]
    assert caught.value.status == SgxStatus.INVALID_KEYNAME
    raw = bytearray(Keyrequest(keyname=KeyName.SEAL).pack())
    raw[100] = 1
    with pytest.raises(SgxFault) as fault:
        egetkey_leaf(enclave, bytes(raw))
    assert fault.value.vector == GP
    with pytest.raises(SgxFault, match="KSS"):
        key(enclave, KeyName.SEAL, KeyPolicy.CONFIGID | KeyPolicy.MRSIGNER)
    kss = launch(flags=int(AttributeFlag.KSS))
    key(kss, KeyName.SEAL, KeyPolicy.CONFIGID | KeyPolicy.MRSIGNER)


def target_of(enclave: Enclave) -> bytes:
    who = enclave.identity
    assert who is not None
    return Targetinfo(
        mrenclave=who.mrenclave, attributes_flags=who.attributes.flags,
        attributes_xfrm=who.attributes.xfrm, miscselect=who.miscselect,
    ).pack()  # fmt: skip


def test_local_attestation(launch: Launch, machine_factory: MachineFactory) -> None:
    alice, bob = launch(payload=b"alice"), launch("other", payload=b"bob")
    raw = ereport(alice, target_of(bob), b"hello bob".ljust(64, b"\0"))
    report = check_report(bob, raw)
    assert report.mrenclave == alice.identity.mrenclave  # type: ignore[union-attr]
    assert report.reportdata.startswith(b"hello bob")
    assert report.attributes_flags & AttributeFlag.INIT
    with pytest.raises(SgxError, match="another enclave or on another machine"):
        check_report(alice, raw)  # made for bob, not alice
    tampered = bytearray(raw)
    tampered[320] ^= 1
    with pytest.raises(SgxError):
        check_report(bob, bytes(tampered))
    elsewhere = machine_factory("sim", "elsewhere")
    bob_there = launch("other", on=elsewhere, payload=b"bob")
    assert bob_there.identity == bob.identity
    with pytest.raises(SgxError, match="another machine"):
        check_report(bob_there, raw)


def test_report_fields(launch: Launch) -> None:
    enclave = launch(isvsvn=5)
    report = Report.unpack(ereport(enclave, target_of(enclave), bytes(64)))
    assert report.isvsvn == 5 and report.isvprodid == 7 and report.cpusvn == CR_CPUSVN
    assert report.mrsigner == enclave.identity.mrsigner  # type: ignore[union-attr]
    check_report(enclave, report.pack())


def test_attribute_mask_is_kept_as_requested(launch: Launch) -> None:
    """SDM EGETKEY: ATTRIBUTEMASK enters the key dependencies unchanged (INIT and DEBUG are
    ORed in only for the attributes themselves), so masks differing in bits 0-1 give
    different keys."""
    enclave = launch()
    base = int(AttributeFlag.MODE64BIT)
    keys = {
        key(enclave, KeyName.SEAL, KeyPolicy.MRSIGNER, isvsvn=1, attributemask_flags=base | low)
        for low in range(4)
    }
    assert len(keys) == 4
