"""Code nobody here wrote: Fortanix's report.sgxs (EREPORT, copy the REPORT out, EEXIT).

Its code takes TARGETINFO from enclave offset 0x3000 and writes the REPORT at 0x3400, but
the stream has only pages 0x0 (code), 0x1000 (TCS) and 0x2000 (SSA). Fortanix's own user
(sgx-detect's ReportBuilder) appends page 0x3000 holding the TARGETINFO before loading.
Both are run here: the stream as published (MRENCLAVE a06a560b..., EINIT checks it), whose
EREPORT faults on the missing page exactly as hardware would, and Fortanix's flow, whose
REPORT carries the MRENCLAVE of the four pages and verifies for its target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.machine import Machine
from hwsim.sgx._enclu import check_report
from hwsim.sgx.arch import PageType, Report, SecinfoFlag, Sigstruct, Targetinfo, secinfo_flags
from hwsim.sgx.device import HOST_BASE
from hwsim.sgx.errors import SgxError
from sgxtool.config import EnclaveConfig
from sgxtool.keys import load_private_key
from sgxtool.layout import Content, EnclaveLayout, Region
from sgxtool.measure import mrenclave
from sgxtool.runtime import Enclave
from sgxtool.sgxs import read_sgxs
from sgxtool.sign import KeySigner, sign_sigstruct, unsigned_sigstruct
from tests.conftest import MachineFactory

MRENCLAVE = bytes.fromhex("a06a560b26f5e397b2d7872fac66fe4b43bf4f507296ee048f110be6fb1a2290")
TCS = 0x1000
BUDGET = 10_000
Vector = Callable[[str], Path]


def signed(layout: EnclaveLayout, key: Path) -> Sigstruct:
    unsigned = unsigned_sigstruct(EnclaveConfig(debug=True), mrenclave(layout), 0x20250101)
    return sign_sigstruct(unsigned, KeySigner(load_private_key(key)))


def with_targetinfo(layout: EnclaveLayout, target: Targetinfo) -> EnclaveLayout:
    """What sgx-detect does: add page 0x3000 (RW, measured) holding the TARGETINFO."""
    flags = secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.W)
    page = Region(0x3000, 1, flags, "data", "TARGETINFO", Content(data=target.pack()))
    return dataclasses.replace(layout, regions=(*layout.regions, page))


def run_once(enclave: Enclave) -> Report | str:
    """EENTER with RDI = a host buffer; the REPORT it copied there, or how it faulted."""
    ex = enclave.device.enter(enclave.base + TCS, {"rdi": HOST_BASE + 0x2000}, BUDGET)
    if ex.kind != "eexit":
        return ex.describe()
    assert ex.regs["rip"] == HOST_BASE  # EEXIT went back where EENTER came from (RCX)
    return Report.unpack(enclave.device.host_read(HOST_BASE + 0x2000, Report.LAYOUT.size))


def test_the_published_stream_loads_and_faults_where_hardware_would(
    vector: Vector, machine: Machine
) -> None:
    path = vector("sgx/fortanix-rust-sgx/report.sgxs")
    layout = read_sgxs(path)
    key = vector("sgx/fortanix-rust-sgx/sig1.key.pem")
    with Enclave.from_layout(layout, signed(layout, key), machine=machine) as enclave:
        assert enclave.mrenclave == MRENCLAVE  # EINIT compared it with the SIGSTRUCT
        outcome = run_once(enclave)
    assert outcome == (
        "#PF (error code 0x4) at enclave offset 0x1a, address enclave offset 0x3000: "
        "ENCLU: TARGETINFO: no enclave page there"
    )


def test_fortanix_flow_reports_its_own_measurement(
    vector: Vector, machine: Machine, machine_factory: MachineFactory
) -> None:
    key = vector("sgx/fortanix-rust-sgx/sig1.key.pem")
    stream = read_sgxs(vector("sgx/fortanix-rust-sgx/report.sgxs"))
    target_layout = with_targetinfo(stream, Targetinfo())  # any enclave can be the target
    with Enclave.from_layout(target_layout, signed(target_layout, key), machine=machine) as t:
        target = Targetinfo(
            mrenclave=t.mrenclave, attributes_flags=t.device.identity.attributes.flags,
            attributes_xfrm=t.device.identity.attributes.xfrm,
        )  # fmt: skip
        layout = with_targetinfo(stream, target)
        with Enclave.from_layout(layout, signed(layout, key), machine=machine) as enclave:
            report = run_once(enclave)
            assert isinstance(report, Report)
            assert report.mrenclave == mrenclave(layout) == enclave.mrenclave
            assert report.mrsigner == enclave.mrsigner
            # the target verifies the MAC on this machine
            check_report(t.device.enclave, report.pack())
    with (
        Enclave.from_layout(
            target_layout, signed(target_layout, key), machine=machine_factory("sim", "other")
        ) as elsewhere,
        pytest.raises(SgxError, match="another machine"),
    ):
        check_report(elsewhere.device.enclave, report.pack())
