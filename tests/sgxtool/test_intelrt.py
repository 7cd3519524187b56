"""Intel SDK enclaves run with Intel's tRTS calling convention: the shared vectors' ECALLs,
their OCALLs served by name, and the entry registers the tRTS relies on."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hwsim.machine import Machine
from hwsim.sgx.arch import PAGE_SIZE, PageType, SecinfoFlag, Tcs, secinfo_flags
from hwsim.sgx.device import HOST_BASE
from sgxtool.edl import load_edl
from sgxtool.errors import SgxToolError, UsageError
from sgxtool.intelrt import (
    CPU_FEATURES,
    SYSTEM_FEATURES_SIZE,
    IntelCallError,
    IntelEnclave,
    OcallRefused,
    system_features,
)
from sgxtool.intelthreads import Deadlock
from sgxtool.layout import Content, LayoutBuilder, Region, Thread
from sgxtool.marshal import OcallCall
from sgxtool.runtime import Enclave
from sgxtool.sgxs import read_sgxs
from tests.sgxtool.test_runtime_fortanix import signed

Vector = Callable[[str], Path]
USER_TYPES = {"buffer_t": "void *", "array_t": "int[10]"}
HASH = "ShuntaIshihara+test_hash_SGX"
RSA = "njuyuanrui+testEnclaveSO"
SAMPLE = "DongpingZ+SgxRandTest"


def load(vector: Vector, folder: str, machine: Machine, **kw: object) -> IntelEnclave:
    base = f"sgx/intel-sdk-enclaves/{folder}"
    return IntelEnclave.load(vector(f"{base}/enclave.signed.so"), edl=vector(f"{base}/Enclave.edl"),
                             typedefs=USER_TYPES, machine=machine, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_test_hash_sgx_gives_its_ocall_and_returns_31337(vector: Vector, machine: Machine) -> None:
    """vectors README: "Hello Enclave." -> OCALL 1176122782, ECALL returns 31337."""
    seen: list[object] = []

    def ocall_print(call: OcallCall) -> None:
        seen.append(call.values["str"])

    with load(vector, HASH, machine, ocalls={"ocall_print": ocall_print}) as enclave:
        assert enclave.mrenclave.hex().startswith("ca9df6d7")
        result = enclave.ecall("ecall_test", message="Hello Enclave.", message_len=14)
    assert (result.retval, seen) == (31337, [1176122782])


def test_the_built_in_ocall_print_prints_the_int(vector: Vector, machine: Machine) -> None:
    console = io.StringIO()
    with load(vector, HASH, machine, console=console) as enclave:
        enclave.ecall("ecall_test", message="Hello Enclave.", message_len=14)
        enclave.ecall("ecall_test", message="Hello Enclave.", message_len=14)  # re-entry
    assert console.getvalue() == "1176122782\n1176122782\n"


def test_testenclaveso_calcu(vector: Vector, machine: Machine) -> None:
    """An SDK 2.0 enclave (natural-alignment system_features_t, no string _len)."""
    with load(vector, RSA, machine) as enclave:
        assert not enclave.string_len
        result = enclave.ecall("calcu", a_enc=23299030, b_enc=34996265, c_enc=74534944,
                               d_enc=84141560, pubkey_n=100761443, pubkey_e=257)  # fmt: skip
    assert result.retval == 36983334


@pytest.fixture
def sample(vector: Vector, machine: Machine) -> Iterator[IntelEnclave]:
    console = io.StringIO()
    with load(vector, SAMPLE, machine, console=console) as enclave:
        yield enclave


# SampleEnclave App's arguments; each ECALL asserts on them inside (abort() is a #UD).
SINGLE_THREADED = [
    ("ecall_type_char", {"val": 0x12}, None, {}),
    ("ecall_type_int", {"val": 1234}, None, {}),
    ("ecall_type_float", {"val": 1234.0}, None, {}),
    ("ecall_type_double", {"val": 1234.5678}, None, {}),
    ("ecall_type_size_t", {"val": 12345678}, None, {}),
    ("ecall_type_wchar_t", {"val": 0x1234}, None, {}),
    ("ecall_type_struct", {"val": struct.pack("<I4xQ", 1234, 5678)}, None, {}),
    ("ecall_pointer_in", {"val": [1]}, None, {}),
    ("ecall_pointer_out", {}, None, {"val": 1234}),
    ("ecall_pointer_in_out", {"val": [1]}, None, {"val": 1234}),
    ("ecall_pointer_string", {"str": "abcd"}, None, {"str": "0987"}),
    ("ecall_pointer_string_const", {"str": "abcd"}, None, {}),
    ("ecall_pointer_size", {"ptr": b"abcd", "len": 4}, None, {"ptr": b"0987"}),
    ("ecall_pointer_count", {"arr": [1, 2, 3, 4], "cnt": 4}, None, {"arr": [3, 2, 1, 0]}),
    ("ecall_pointer_isptr_readonly", {"buf": b"abcd", "len": 4}, None, {}),
    ("ocall_pointer_attr", {}, None, {}),  # the ocall_pointer_* set, checked inside
    ("ecall_array_in", {"arr": [0, 1, 2, 3]}, None, {}),
    ("ecall_array_out", {}, None, {"arr": [3, 2, 1, 0]}),
    ("ecall_array_in_out", {"arr": [0, 1, 2, 3]}, None, {"arr": [3, 2, 1, 0]}),
    ("ecall_function_public", {}, None, {}),  # ocall_function_allow -> private ECALL
    ("ecall_malloc_free", {}, None, {}),
    ("ecall_exception", {}, None, {}),  # C++ throw/catch inside
    ("ecall_map", {}, None, {}),
]


def test_sampleenclave_single_threaded_ecalls(sample: IntelEnclave) -> None:
    for name, args, retval, outputs in SINGLE_THREADED:
        result = sample.ecall(name, **args)  # type: ignore[arg-type]
        assert (name, result.retval, result.outputs) == (name, retval, outputs)
    counts = [sample.ecall("ecall_increase_counter").retval for _ in range(4)]
    assert counts == [0, 0, 0, 2000]  # 4 x LOOPS_PER_THREAD once all four ran


def test_sampleenclave_cpuid_comes_from_the_machine(sample: IntelEnclave, machine: Machine) -> None:
    """ecall_sgx_cpuid -> sgx_oc_cpuidex, answered with the simulated machine's CPUID."""
    for leaf in (0, 7, 0x12):
        got = sample.ecall("ecall_sgx_cpuid", leaf=leaf).outputs["cpuinfo"]
        assert [v & 0xFFFFFFFF for v in got] == list(machine.cpuid(leaf, 0))  # type: ignore[attr-defined]


def test_sampleenclave_printf_reaches_the_console(vector: Vector, machine: Machine) -> None:
    """printf = 4 x sgx_read_rand(500000) (RDRAND) then ocall_print_string (%p adds 0x)."""
    text = b"from the host\0"
    console = io.StringIO()
    with load(vector, SAMPLE, machine, console=console) as enclave:
        enclave.device.host_write(HOST_BASE + 0x800, text)
        result = enclave.ecall("ecall_pointer_user_check", val=HOST_BASE + 0x800, sz=len(text))
    assert result.retval == len(text)
    # SampleEnclave checksum_internal: ~(sum of the int16 words), printed as 0x%x.
    checksum = ~sum(v for (v,) in struct.iter_unpack("<h", text)) & 0xFFFFFFFF
    assert console.getvalue() == f"Checksum(0x0x10000800, 14) = {checksum:#x}\n"


def test_a_private_ecall_is_refused_from_the_host(sample: IntelEnclave) -> None:
    with pytest.raises(IntelCallError, match="ECALL_NOT_ALLOWED") as info:
        sample.ecall("ecall_function_private")
    assert info.value.status == 0x1007
    assert sample.ecall("ecall_function_public").retval is None  # still usable


def test_a_wait_no_thread_can_end_fails_cleanly(sample: IntelEnclave) -> None:
    """ecall_consumer on an empty queue waits on its TCS event: with no other ECALL in
    progress nothing can set it, so the call fails (a deadlock) instead of hanging."""
    with pytest.raises(Deadlock, match=r"deadlock: ecall_consumer on TCS 0x28c000 waits"):
        sample.ecall("ecall_consumer")
    assert sample.crashed  # its thread stays stopped inside, holding the mutex


def test_an_ocall_nobody_serves_names_itself(
    vector: Vector, machine: Machine, tmp_path: Path
) -> None:
    folder = vector(f"sgx/intel-sdk-enclaves/{HASH}/Enclave.edl").parent
    edl = tmp_path / "Enclave.edl"
    edl.write_text((folder / "Enclave.edl").read_text().replace("ocall_print(", "ocall_show("))
    with IntelEnclave.load(folder / "enclave.signed.so", edl=edl, machine=machine) as enclave:
        with pytest.raises(OcallRefused, match=r"OCALL ocall_show\(str=1176122782\)"):
            enclave.ecall("ecall_test", message="Hello Enclave.", message_len=14)
        assert not enclave.crashed  # the enclave unwound; it runs again
        with pytest.raises(OcallRefused):
            enclave.ecall("ecall_test", message="Hello Enclave.", message_len=14)


def test_enclave_load_picks_the_intel_convention(vector: Vector, machine: Machine) -> None:
    so = vector(f"sgx/intel-sdk-enclaves/{HASH}/enclave.signed.so")
    with pytest.raises(UsageError, match="Intel SDK enclave"):
        Enclave.load(so, machine=machine)
    edl = so.parent / "Enclave.edl"
    with Enclave.load(so, machine=machine, edl=edl, console=io.StringIO()) as enclave:
        assert isinstance(enclave, IntelEnclave)
        with pytest.raises(UsageError, match="by name"):
            enclave.call("ecall_test", b"")


def test_unknown_ecall_and_parameter(sample: IntelEnclave) -> None:
    with pytest.raises(SgxToolError, match="no ECALL named 'nope'"):
        sample.ecall("nope")
    with pytest.raises(SgxToolError, match="no parameter 'x'"):
        sample.ecall("ecall_type_int", x=1)


def test_system_features_layouts() -> None:
    """rts.h: 2.0 natural alignment (24 bytes used), 2.2+ packed with the cpuinfo table."""
    rows = {0: (0x12, 1, 2, 3), 7: (0, 4, 0, 0)}
    new = system_features(False, lambda leaf, _s: rows.get(leaf, (0, 0, 0, 0)))
    old = system_features(True, lambda leaf, _s: (9, 9, 9, 9))
    assert len(new) == len(old) == SYSTEM_FEATURES_SIZE
    assert struct.unpack_from("<QIQ", new) == (CPU_FEATURES, 0, 1 << 63)
    assert struct.unpack_from("<4I", new, 20) == (0x12, 1, 2, 3)
    assert struct.unpack_from("<4I", new, 20 + 7 * 16) == (0, 4, 0, 0)
    assert struct.unpack_from("<QI4xQ", old) == (CPU_FEATURES, 0, 1 << 63)
    assert old[24:] == bytes(SYSTEM_FEATURES_SIZE - 24)
    assert CPU_FEATURES & 0x3FF == 0x3FF  # the tRTS refuses less than SSE4.1


def test_rbx_holds_the_tcs_at_eenter(machine: Machine, sample_key: Path) -> None:
    """RBX is EENTER's TCS operand: code that EEXITs with RDI = RBX hands it back."""
    code = bytes.fromhex("4889dfb8040000000f01d7").ljust(PAGE_SIZE, b"\xcc")
    rx = secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.X)
    rw = secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.W)
    b = LayoutBuilder()
    b.add(Region(0, 1, rx, "code", "code", Content(data=code)))
    b.add(Region(PAGE_SIZE, 1, secinfo_flags(PageType.TCS), "tcs", "TCS",
                 Content(data=Tcs(ossa=2 * PAGE_SIZE, nssa=1).pack())))  # fmt: skip
    b.add(Region(2 * PAGE_SIZE, 1, rw, "ssa", "SSA"))
    b.threads.append(Thread(PAGE_SIZE, 2 * PAGE_SIZE, 0, 0, 0))
    layout = b.build()
    with Enclave.from_layout(layout, signed(layout, sample_key), machine=machine) as enclave:
        ex = enclave.enter({"rdi": 0, "rbx": 0x1234})
        assert ex.regs["rdi"] == enclave.tcs[0] == enclave.base + PAGE_SIZE


def test_sgxs_tcs_discovery(vector: Vector) -> None:
    """The TCS pages of an SGXS stream are the EADD records whose SECINFO says PT_TCS."""
    report = read_sgxs(vector("sgx/fortanix-rust-sgx/report.sgxs"))
    assert [(t.tcs, t.ssa) for t in report.threads] == [(0x1000, 0x2000)]
    le = read_sgxs(vector("sgx/fortanix-rust-sgx/le.signed.sgxs"))
    assert [t.tcs for t in le.threads] == [0x99000]


def test_edl_indices_drive_the_ocall_table(vector: Vector) -> None:
    """OCALL i at EEXIT is the EDL's i-th untrusted function (edger8r order)."""
    edl = load_edl(vector(f"sgx/intel-sdk-enclaves/{SAMPLE}/Enclave.edl"), typedefs=USER_TYPES)
    assert edl.ocalls[6].name == "sgx_oc_cpuidex"
