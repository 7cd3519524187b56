"""Import Intel's ``sgx_sign`` XML configuration (``Enclave.config.xml``) as enclave.toml.

Every element Intel's signer knows is read (linux-sgx ``sign_tool.cpp``, the table in
``shared/reference/sgx.md`` 1.2). Elements with a direct equivalent are mapped; those that
only matter to Intel's runtime (dynamic threads and heap growth under EDMM, TCS binding,
reserved memory) are reported in notes, so nobody is surprised by what changed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import tomli_w

from hwsim.sgx.arch import VENDOR_INTEL, AttributeFlag
from memcrypt.files import read_file
from sgxtool.config import U64, EnclaveConfig, parse_config
from sgxtool.errors import ConfigError

__all__ = ["import_intel_config"]

# Intel's default ATTRIBUTEMASK.FLAGS leaves DEBUG and bits 55:48 unenforced
# (manage_metadata.cpp: ~(DEBUG | NON_CHECK_BITS)); DisableDebug=1 enforces DEBUG (= 0).
# int() first: `~` on an IntFlag keeps only its defined bits on Python 3.11+, not all 64.
_INTEL_FLAGS_MASK = 0xFFFF_FFFF_FFFF_FFFF & ~(0x00FF_0000_0000_0000 | int(AttributeFlag.DEBUG))
_IGNORED = {
    "TCSPolicy": "TCS binding policy is a property of Intel's runtime",
    "TCSMinPool": "dynamic threads (EDMM) are not supported; threads = TCSNum",
    "TCSMaxNum": "dynamic threads (EDMM) are not supported; threads = TCSNum",
    "StackMinSize": "stacks are static; stack_size = StackMaxSize",
    "HeapMinSize": "heap growth (EDMM) is not supported",
    "ReservedMemMaxSize": "reserved memory regions are not supported",
    "ReservedMemMinSize": "reserved memory regions are not supported",
    "ReservedMemInitSize": "reserved memory regions are not supported",
    "ReservedMemExecutable": "reserved memory regions are not supported",
    "UserRegionSize": "EDMM user regions are not supported",
    "EnclaveImageAddress": "the enclave image is always linked at 0",
    "ELRangeStartAddress": "ELRANGE is not configurable",
    "ELRangeSize": "ELRANGE is not configurable",
    "ReleaseType": "the SIGSTRUCT HEADER release bit is not set",
    "HW": "SWDEFINED is not set from configuration",
    "EnableIPPFIPS": "FIPS mode of Intel's crypto libraries does not apply",
    "EnableOSSLFIPS": "FIPS mode of Intel's crypto libraries does not apply",
    "PKRU": "XFRM features are set with security.xfrm",
    "AMX": "XFRM features are set with security.xfrm",
}


def import_intel_config(path: str | Path) -> tuple[EnclaveConfig, list[str]]:
    """An EnclaveConfig from an sgx_sign XML file, and notes on what did not carry over."""
    raw = read_file(path, "Intel enclave configuration", max_size=1 << 20)
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise ConfigError(f"{path}: not well-formed XML: {exc}") from exc
    if root.tag != "EnclaveConfiguration":
        raise ConfigError(f"{path}: root element is <{root.tag}>, not <EnclaveConfiguration>")
    values: dict[str, int] = {}
    for element in root:
        if element.tag in values:
            raise ConfigError(f"{path}: <{element.tag}> appears twice")
        try:
            values[element.tag] = int((element.text or "").strip(), 0)
        except ValueError as exc:
            raise ConfigError(f"{path}: <{element.tag}> {element.text!r} is not a number") from exc
        if not 0 <= values[element.tag] <= U64:  # 128-bit KSS ids come as _H/_L halves
            raise ConfigError(
                f"{path}: <{element.tag}> {element.text!r} is not a 64-bit unsigned number"
            )
    return _convert(values, str(path))


def _convert(v: dict[str, int], source: str) -> tuple[EnclaveConfig, list[str]]:
    cfg = EnclaveConfig(attributes_mask=_INTEL_FLAGS_MASK)
    notes: list[str] = []
    for tag, value in v.items():
        if tag in _MAPPERS:
            cfg = _MAPPERS[tag](cfg, value, v)
        elif tag in _IGNORED:
            notes.append(f"{tag}={value:#x} ignored: {_IGNORED[tag]}")
        else:
            raise ConfigError(f"{source}: unknown element <{tag}>")
    if v.get("HeapInitSize", v.get("HeapMaxSize", 0)) < v.get("HeapMaxSize", 0):
        notes.append("heap_size = HeapInitSize: heap growth to HeapMaxSize needs EDMM")
    if v.get("LaunchKey"):
        raise ConfigError(
            f"{source}: LaunchKey=1 requests EINITTOKEN_KEY, which only the "
            "platform vendor's Launch Enclave may have"
        )
    if not v.get("DisableDebug"):
        notes.append(
            "DisableDebug=0: DEBUG is not enforced, so the signature launches as debug or "
            "production (sgx_sign semantics); set enclave.debug or DisableDebug=1 to pin it"
        )
    # One validation path: the result must be a valid enclave.toml.
    return parse_config(tomli_w.dumps(cfg.to_toml_dict()), source), notes


def _kss_id(v: dict[str, int], name: str) -> bytes:
    low, high = v.get(f"{name}_L", 0), v.get(f"{name}_H", 0)
    return low.to_bytes(8, "little") + high.to_bytes(8, "little")


def _flag(cfg: EnclaveConfig, on: int, name: str) -> EnclaveConfig:
    return replace(cfg, attributes=tuple(sorted({*cfg.attributes, name}))) if on else cfg


_Mapper = Callable[[EnclaveConfig, int, dict[str, int]], EnclaveConfig]
_MAPPERS: dict[str, _Mapper] = {
    "ProdID": lambda c, x, v: replace(c, isvprodid=x),
    "ISVSVN": lambda c, x, v: replace(c, isvsvn=x),
    "TCSNum": lambda c, x, v: replace(c, threads=x),
    "StackMaxSize": lambda c, x, v: replace(c, stack_size=x),
    "HeapMaxSize": lambda c, x, v: replace(c, heap_size=v.get("HeapInitSize", x)),
    "HeapInitSize": lambda c, x, v: replace(c, heap_size=x),
    "MiscSelect": lambda c, x, v: replace(c, miscselect=x),
    "MiscMask": lambda c, x, v: replace(c, miscmask=x),
    "IntelSigned": lambda c, x, v: replace(c, vendor=VENDOR_INTEL if x else 0),
    "DisableDebug": lambda c, x, v: (
        replace(c, attributes_mask=c.attributes_mask | AttributeFlag.DEBUG) if x else c
    ),
    "ProvisionKey": lambda c, x, v: _flag(c, x, "PROVISIONKEY"),
    "EnableKSS": lambda c, x, v: _flag(c, x, "KSS"),
    "EnableAEXNotify": lambda c, x, v: _flag(c, x, "AEXNOTIFY"),
    "LaunchKey": lambda c, x, v: c,
    "ISVFAMILYID_H": lambda c, x, v: replace(c, isvfamilyid=_kss_id(v, "ISVFAMILYID")),
    "ISVFAMILYID_L": lambda c, x, v: replace(c, isvfamilyid=_kss_id(v, "ISVFAMILYID")),
    "ISVEXTPRODID_H": lambda c, x, v: replace(c, isvextprodid=_kss_id(v, "ISVEXTPRODID")),
    "ISVEXTPRODID_L": lambda c, x, v: replace(c, isvextprodid=_kss_id(v, "ISVEXTPRODID")),
}
