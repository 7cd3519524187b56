"""Intel's ``sgx_sign`` XML configuration (``Enclave.config.xml``).

Two readers: :func:`import_intel_config` converts it to enclave.toml for memcrypt's own
images (elements with a direct equivalent are mapped; those that only matter to Intel's
runtime, such as dynamic threads, heap growth under EDMM, TCS binding and reserved memory,
are reported in notes); :func:`read_sign_config` reads it as ``sgx_sign`` does for signing an
Intel SDK enclave, with that release's element table, bounds and defaults (linux-sgx
``sign_tool.cpp`` ``main``, ``manage_metadata.cpp`` ``parse_metadata_file`` and
``check_xml_parameter``; the table in ``shared/reference/sgx.md`` 1.2).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w

from hwsim.sgx.arch import VENDOR_INTEL, AttributeFlag
from memcrypt.files import read_file
from sgxtool.config import U64, EnclaveConfig, parse_config
from sgxtool.errors import ConfigError

__all__ = ["SignConfig", "import_intel_config", "read_sign_config"]

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
    values: dict[str, int] = {}
    for element in _root(path):
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


def _root(path: str | Path) -> ET.Element:
    raw = read_file(path, "Intel enclave configuration", max_size=1 << 20)
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise ConfigError(f"{path}: not well-formed XML: {exc}") from exc
    if root.tag != "EnclaveConfiguration":
        raise ConfigError(f"{path}: root element is <{root.tag}>, not <EnclaveConfiguration>")
    return root


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


# -- reading it as sgx_sign does ------------------------------------------------------------

_PAGE = 0x1000
_U32, _U64 = 0xFFFF_FFFF, (1 << 64) - 1


@dataclass(frozen=True)
class SignConfig:
    """The XML's values after sgx_sign's defaults; sizes in bytes."""

    prodid: int = 0
    isvsvn: int = 0
    release_type: int = 0
    intel_signed: int = 0
    provision_key: int = 0
    launch_key: int = 0
    disable_debug: int = 0
    hw: int = 0
    tcs_num: int = 1
    tcs_max_num: int = 1  # TCSNum when the XML does not say
    tcs_min_pool: int = 1
    tcs_policy: int = 1
    stack_max: int = 0x40000
    stack_min: int = 0x2000
    heap_max: int = 0x1000000
    heap_min: int = 0x1000
    heap_init: int = 0x1000000  # HeapMaxSize when the XML does not say
    misc_select: int = 0
    misc_mask: int = _U32
    enable_kss: int = 0
    isvfamilyid: bytes = bytes(16)
    isvextprodid: bytes = bytes(16)


# element -> (SignConfig field, max, min); max None = half the largest enclave
_SIGN_TABLE: dict[str, tuple[str, int | None, int]] = {
    "ProdID": ("prodid", 0xFFFF, 0),
    "ISVSVN": ("isvsvn", 0xFFFF, 0),
    "ReleaseType": ("release_type", 1, 0),
    "IntelSigned": ("intel_signed", 1, 0),
    "ProvisionKey": ("provision_key", 1, 0),
    "LaunchKey": ("launch_key", 1, 0),
    "DisableDebug": ("disable_debug", 1, 0),
    "HW": ("hw", 0x10, 0),
    "TCSNum": ("tcs_num", _U32, 1),
    "TCSMaxNum": ("tcs_max_num", _U32, 1),
    "TCSMinPool": ("tcs_min_pool", _U32, 0),
    "TCSPolicy": ("tcs_policy", 1, 0),
    "StackMaxSize": ("stack_max", None, -1),  # min: the release's STACK_SIZE_MIN
    "StackMinSize": ("stack_min", None, -1),
    "HeapMaxSize": ("heap_max", None, 0),
    "HeapMinSize": ("heap_min", None, 0),
    "HeapInitSize": ("heap_init", None, 0),
    "MiscSelect": ("misc_select", _U32, 0),
    "MiscMask": ("misc_mask", _U32, 0),
}
_KSS_TABLE: dict[str, tuple[str, int | None, int]] = {
    "EnableKSS": ("enable_kss", 1, 0),
    "ISVFAMILYID_H": ("", _U64, 0),
    "ISVFAMILYID_L": ("", _U64, 0),
    "ISVEXTPRODID_H": ("", _U64, 0),
    "ISVEXTPRODID_L": ("", _U64, 0),
}
# Reserved memory needs RSRV layout records sgxtool does not write: only zero is accepted.
_RSRV = ("ReservedMemMaxSize", "ReservedMemMinSize", "ReservedMemInitSize",
         "ReservedMemExecutable")  # fmt: skip


def read_sign_config(
    path: str | Path | None, *, stack_size_min: int, size_max: int, kss: bool
) -> SignConfig:
    """The XML as the ``sgx_sign`` of one SDK release reads it: its elements, bounds and
    defaults (``stack_size_min``, ``size_max`` and ``kss`` come from the release). Without
    a file, sgx_sign's defaults."""
    if path is None:
        return _checked({}, "default configuration", stack_size_min)
    table = {**_SIGN_TABLE, **(_KSS_TABLE if kss else {}), **{r: ("", None, 0) for r in _RSRV}}
    given: dict[str, int] = {}
    for element in _root(path):
        if not isinstance(element.tag, str):
            continue
        name = element.tag
        if name not in table or (name in _RSRV and not kss):
            raise ConfigError(f"{path}: <{name}> is not an element this sgx_sign release knows")
        if name in given:
            raise ConfigError(f"{path}: <{name}> appears twice")
        if element.attrib or len(element):
            raise ConfigError(f"{path}: <{name}> must hold only a number")
        _field, high, low = table[name]
        given[name] = _number(path, name, element.text)
        high = size_max // 2 if high is None else high
        low = stack_size_min if low < 0 else low
        if not low <= given[name] <= high:
            raise ConfigError(f"{path}: <{name}> {given[name]:#x} is out of range "
                              f"({low:#x} to {high:#x})")  # fmt: skip
    return _checked(given, str(path), stack_size_min)


def _number(path: str | Path, name: str, text: str | None) -> int:
    """strtoull(text, 0) as sgx_sign applies it: decimal, 0x hex or 0 octal; no sign."""
    raw = (text or "").strip()
    try:
        if "-" in raw or "+" in raw or not raw:
            raise ValueError(raw)
        if raw[:2].lower() == "0x":
            return int(raw[2:], 16)
        return int(raw, 8) if raw.startswith("0") and len(raw) > 1 else int(raw, 10)
    except ValueError:
        raise ConfigError(f"{path}: <{name}> {text!r} is not an unsigned number") from None


def _checked(given: dict[str, int], source: str, stack_size_min: int) -> SignConfig:
    """check_xml_parameter's rules, then the values with defaults filled in."""
    named = {**_SIGN_TABLE, **_KSS_TABLE}
    values: dict[str, Any] = {named[n][0]: v for n, v in given.items() if named.get(n, ("",))[0]}
    cfg = replace(SignConfig(stack_min=stack_size_min), **values)
    cfg = replace(cfg, tcs_max_num=given.get("TCSMaxNum", cfg.tcs_num),
                  heap_init=given.get("HeapInitSize", cfg.heap_max))  # fmt: skip
    for name in ("StackMaxSize", "StackMinSize", "HeapMaxSize", "HeapMinSize", "HeapInitSize"):
        if getattr(cfg, _SIGN_TABLE[name][0]) % _PAGE:
            raise ConfigError(f"{source}: <{name}> must be a multiple of 4 KiB")
    rules = [
        (cfg.stack_min > cfg.stack_max, "StackMinSize is larger than StackMaxSize"),
        (cfg.heap_init > cfg.heap_max, "HeapInitSize is larger than HeapMaxSize"),
        (cfg.heap_min > cfg.heap_init, "HeapMinSize is larger than HeapInitSize"),
        (bool(cfg.hw) != bool(cfg.launch_key),
         "HW and LaunchKey go together (a Launch Enclave sets both)"),
        (cfg.tcs_max_num < cfg.tcs_num, "TCSMaxNum is smaller than TCSNum"),
        ("TCSMinPool" in given and cfg.tcs_min_pool > cfg.tcs_max_num,
         "TCSMinPool is larger than TCSMaxNum"),
        (any(given.get(r) for r in _RSRV), "reserved memory (ReservedMem*) is not supported by "
         "sgxtool sign; set it to 0 or sign with sgx_sign"),
    ]  # fmt: skip
    for broken, why in rules:
        if broken:
            raise ConfigError(f"{source}: {why}")
    kss_ids = [given.get(f"{n}_{h}", 0) for n in ("ISVFAMILYID", "ISVEXTPRODID") for h in "LH"]
    if any(kss_ids) and not cfg.enable_kss:
        raise ConfigError(f"{source}: ISVFAMILYID/ISVEXTPRODID need EnableKSS=1")
    pack = [x.to_bytes(8, "little") for x in kss_ids]
    return replace(cfg, isvfamilyid=pack[0] + pack[1], isvextprodid=pack[2] + pack[3])
