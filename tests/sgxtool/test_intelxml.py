"""Importing Intel's sgx_sign XML: every real sample file, field by field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.sgx.arch import AttributeFlag
from sgxtool.errors import ConfigError
from sgxtool.intelxml import SignConfig, import_intel_config, read_sign_config

Vector = Callable[[str], Path]
SAMPLES = ["Enclave.config", "config.01", "config.02", "config.03", "config.04", "config.05"]


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_imports(vector: Vector, name: str) -> None:
    cfg, notes = import_intel_config(vector(f"sgx/intel-linux-sgx/SampleEnclave_{name}.xml"))
    assert cfg.isvprodid == 0 and cfg.isvsvn == 0
    assert not cfg.attributes_mask & AttributeFlag.DEBUG  # DisableDebug=0: loader decides
    assert any("DisableDebug=0" in n for n in notes)
    assert any("TCSPolicy" in n for n in notes)


def test_fields(vector: Vector) -> None:
    base, _ = import_intel_config(vector("sgx/intel-linux-sgx/SampleEnclave_Enclave.config.xml"))
    assert (base.threads, base.stack_size, base.heap_size) == (10, 0x40000, 0x100000)
    assert (base.miscselect, base.miscmask) == (0, 0xFFFFFFFF)
    one, _ = import_intel_config(vector("sgx/intel-linux-sgx/SampleEnclave_config.01.xml"))
    assert (one.miscselect, one.miscmask, one.threads) == (1, 0xFFFFFFFE, 10)
    two, notes = import_intel_config(vector("sgx/intel-linux-sgx/SampleEnclave_config.02.xml"))
    assert two.heap_size == 0x40000  # HeapInitSize: what is available without EDMM
    assert any("needs EDMM" in n for n in notes)
    five, notes = import_intel_config(vector("sgx/intel-linux-sgx/SampleEnclave_config.05.xml"))
    assert (five.threads, five.stack_size, five.heap_size) == (1, 0x4000, 0x5000)
    assert any("UserRegionSize" in n for n in notes) and any("TCSMaxNum" in n for n in notes)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "<EnclaveConfiguration><Bogus>1</Bogus></EnclaveConfiguration>",
            "unknown element <Bogus>",
        ),
        ("<EnclaveConfiguration><ProdID>x</ProdID></EnclaveConfiguration>", "is not a number"),
        ("<EnclaveConfiguration><ProdID>70000</ProdID></EnclaveConfiguration>", "isvprodid"),
        ("<EnclaveConfiguration><LaunchKey>1</LaunchKey></EnclaveConfiguration>", "LaunchKey=1"),
        ("<Other/>", "not <EnclaveConfiguration>"),
        ("<EnclaveConfiguration>", "not well-formed"),
    ],
)
def test_refusals(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "c.xml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        import_intel_config(path)


def test_production_kss_and_vendor(tmp_path: Path) -> None:
    path = tmp_path / "c.xml"
    path.write_text(
        "<EnclaveConfiguration><DisableDebug>1</DisableDebug><IntelSigned>1"
        "</IntelSigned><EnableKSS>1</EnableKSS><ISVFAMILYID_L>0x1</ISVFAMILYID_L>"
        "<ISVFAMILYID_H>0x2</ISVFAMILYID_H><ProvisionKey>1</ProvisionKey>"
        "</EnclaveConfiguration>"
    )
    cfg, notes = import_intel_config(path)
    assert cfg.attributes_mask & AttributeFlag.DEBUG and not cfg.debug
    assert cfg.vendor == 0x8086
    assert cfg.isvfamilyid == bytes([1] + [0] * 7 + [2] + [0] * 7)
    assert set(cfg.attributes) == {"KSS", "PROVISIONKEY"}
    assert not any("DisableDebug" in n for n in notes)


def _sign_config(tmp_path: Path, body: str, *, kss: bool = True) -> SignConfig:
    path = tmp_path / "c.xml"
    path.write_text(f"<EnclaveConfiguration>{body}</EnclaveConfiguration>")
    return read_sign_config(path, stack_size_min=0x2000, size_max=(1 << 64) - 1, kss=kss)


def test_sign_config_reads_numbers_as_strtoull_does(tmp_path: Path) -> None:
    cfg = _sign_config(tmp_path, "<TCSNum>010</TCSNum><ProdID>0x10</ProdID><ISVSVN>9</ISVSVN>")
    assert (cfg.tcs_num, cfg.prodid, cfg.isvsvn) == (8, 16, 9)  # 010 is octal
    with pytest.raises(ConfigError, match="not an unsigned number"):
        _sign_config(tmp_path, "<TCSNum>08</TCSNum>")


def test_sign_config_defaults_follow_sgx_sign(vector: Vector, tmp_path: Path) -> None:
    default = read_sign_config(None, stack_size_min=0x1000, size_max=1 << 37, kss=False)
    assert (default.tcs_num, default.tcs_max_num, default.tcs_min_pool) == (1, 1, 1)
    assert (default.stack_max, default.stack_min) == (0x40000, 0x1000)
    assert (default.heap_max, default.heap_init, default.heap_min) == (0x1000000,) * 2 + (0x1000,)
    two = read_sign_config(vector("sgx/intel-linux-sgx/SampleEnclave_config.02.xml"),
                           stack_size_min=0x2000, size_max=(1 << 64) - 1, kss=True)  # fmt: skip
    assert (two.heap_max, two.heap_init, two.heap_min, two.tcs_min_pool) == (
        0x100000, 0x40000, 0x1000, 10)  # fmt: skip
    kss = _sign_config(tmp_path, "<EnableKSS>1</EnableKSS><ISVEXTPRODID_H>2</ISVEXTPRODID_H>")
    assert kss.isvextprodid == bytes(8) + bytes([2]) + bytes(7)
    with pytest.raises(ConfigError, match="not an element"):
        _sign_config(tmp_path, "<EnableKSS>1</EnableKSS>", kss=False)
    with pytest.raises(ConfigError, match="must hold only a number"):
        _sign_config(tmp_path, '<TCSNum a="1">2</TCSNum>')
