"""``sevtool vmsa``: sevctl's VMSA vectors byte for byte (build, update, show), the second
x87/SSE layout, and the VMSA layout's round trip."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.sev.arch import VMSA_LAYOUT, Vmsa
from memcrypt.errors import FormatError
from sevtool.vmsa import build_vmsa, cpu_signature
from tests.sevtool.test_cli import one_error_line, sevtool

DATA = "sev/sevctl/data"
OVMF = f"{DATA}/OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9"
SKU = ["--family", "25", "--model", "1", "--stepping", "1"]


@pytest.mark.parametrize("cpu", [0, 1])
def test_build_and_show_reproduce_sevctl(
    vector: Callable[[str], Path], tmp_path: Path, cpu: int
) -> None:
    out = tmp_path / f"vmsa{cpu}.bin"
    args: list[str | Path] = ["vmsa", "build", out, "--cpu", str(cpu), *SKU, "--userspace", "qemu"]
    result = sevtool(*args, "--firmware", vector(OVMF))
    assert result.code == 0, result.err
    assert out.read_bytes() == vector(f"{DATA}/vmsa{cpu}.bin").read_bytes()
    shown = sevtool("vmsa", "show", vector(f"{DATA}/vmsa{cpu}.bin"))
    assert shown.out == vector(f"{DATA}/vmsa{cpu}-show.txt").read_text()


def test_update_sets_signature_and_reset_address(
    vector: Callable[[str], Path], tmp_path: Path
) -> None:
    out = tmp_path / "v.bin"
    assert sevtool("vmsa", "build", out, "--cpu", "1").code == 0
    assert out.read_bytes() != vector(f"{DATA}/vmsa1.bin").read_bytes()
    result = sevtool("vmsa", "update", out, "--cpu", "1", *SKU, "--firmware", vector(OVMF))
    assert result.code == 0, result.err
    assert out.read_bytes() == vector(f"{DATA}/vmsa1.bin").read_bytes()


def test_fpu_reset_layout(vector: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "v.bin"
    args: list[str | Path] = ["vmsa", "build", out, "--cpu", "0", *SKU, "--fpu", "reset", "--json"]
    result = sevtool(*args)
    assert result.code == 0 and json.loads(result.out)["file"] == str(out)
    data, zero = out.read_bytes(), vector(f"{DATA}/vmsa0.bin").read_bytes()
    assert data[0x408:0x40C] == (0x1F80).to_bytes(4, "little")
    assert data[0x410:0x412] == (0x37F).to_bytes(2, "little")
    assert data[:0x408] == zero[:0x408] and data[0x412:] == zero[0x412:]
    shown = json.loads(sevtool("vmsa", "show", out).out)
    assert shown["mxcsr"] == 0x1F80 and shown["x87_fcw"] == 0x37F


def test_signature_and_krun() -> None:
    assert cpu_signature(25, 1, 1) == 0x00A00F11
    assert cpu_signature(23, 0x31, 0) == 0x00830F10  # Rome: family 0x17, model 0x31
    ap = build_vmsa(1, userspace="krun")
    assert (ap["cs_selector"], ap["cs_base"], ap["rip"]) == (0x9100, 0x91000, 0)
    assert build_vmsa(0, userspace="krun")["rsp"] == 0x8FF0


def test_layout_round_trip_and_offsets(vector: Callable[[str], Path]) -> None:
    data = vector(f"{DATA}/vmsa1.bin").read_bytes()
    assert Vmsa.unpack(data).pack() == data
    offsets = {
        name: VMSA_LAYOUT.offset(name)
        for name in (
            "cpl",
            "efer",
            "rip",
            "rsp",
            "rax",
            "g_pat",
            "pkru",
            "rcx",
            "sw_exit_code",
            "xcr0",
            "x87_state_gpa",
            "mxcsr",
            "x87_fcw",
        )
    }
    assert offsets == {
        "cpl": 0xCB,
        "efer": 0xD0,
        "rip": 0x178,
        "rsp": 0x1D8,
        "rax": 0x1F8,
        "g_pat": 0x268,
        "pkru": 0x2E8,
        "rcx": 0x308,
        "sw_exit_code": 0x390,
        "xcr0": 0x3E8,
        "x87_state_gpa": 0x400,
        "mxcsr": 0x408,
        "x87_fcw": 0x410,
    }
    stray = bytearray(data)
    stray[0x1000 - 1] = 1
    with pytest.raises(FormatError, match="not zero"):
        Vmsa.unpack(bytes(stray))


def test_bad_inputs_are_one_line(vector: Callable[[str], Path], tmp_path: Path) -> None:
    short = tmp_path / "short.bin"
    short.write_bytes(bytes(100))
    result = sevtool("vmsa", "show", short)
    assert result.code == 2 and "a VMSA is 4096 bytes, got 100" in one_error_line(result)
    not_ovmf = tmp_path / "fw.fd"
    not_ovmf.write_bytes(bytes(8192))
    refused = sevtool("vmsa", "build", tmp_path / "v.bin", "--cpu", "1", "--firmware", not_ovmf)
    assert refused.code == 2 and "no OVMF footer table" in one_error_line(refused)
    assert not (tmp_path / "v.bin").exists()


def test_measurement_build_reproduces_the_sev_es_vector(
    vector: Callable[[str], Path], tmp_path: Path
) -> None:
    """sevctl's SEV-ES entry of expected.json: policy 0x05, API 1.49 build 6, 4 vCPUs,
    digest over OVMF || VMSA0 || VMSA1 x 3, with VMSAs this tool builds."""
    expected = json.loads(vector("sev/expected.json").read_text())["launch_measurement"][4]
    vmsas = []
    for cpu in (0, 1):
        out = tmp_path / f"vmsa{cpu}.bin"
        args: list[str | Path] = ["vmsa", "build", out, "--cpu", str(cpu), *SKU]
        assert sevtool(*args, "--firmware", vector(OVMF)).code == 0
        vmsas.append(out)
    common: list[str | Path] = [
        "measurement",
        "build",
        "--api-major",
        "1",
        "--api-minor",
        "49",
        "--build-id",
        "6",
        "--tik",
        vector(f"{DATA}/measurement/tik1.bin"),
        "--firmware",
        vector(OVMF),
        "--launch-measure-blob",
        expected["output_b64"],
    ]
    es: list[str | Path] = ["--num-cpus", "4", "--vmsa-cpu0", vmsas[0], "--vmsa-cpu1", vmsas[1]]
    result = sevtool(*common, "--policy", "0x05", *es)
    assert result.code == 0, result.err
    assert result.out.strip() == expected["output_b64"]
    no_vmsas = sevtool(*common, "--policy", "0x05")
    assert no_vmsas.code == 2 and "--vmsa-cpu0" in one_error_line(no_vmsas)
    not_es = sevtool(*common, "--policy", "0x01", *es)
    assert not_es.code == 2 and "only with the ES policy bit" in one_error_line(not_es)
