"""enclave.toml: what the enclave author decides, validated before anything is built.

Every key is documented in enclave.toml(5). Validation messages name the key, the value
found and what is allowed, because a signer that silently clamps a value produces an
enclave whose MRENCLAVE nobody expected.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwsim.sgx.arch import PAGE_SIZE, VENDOR_INTEL, AttributeFlag
from memcrypt.files import read_file
from sgxtool.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["MAX_ENCLAVE_SIZE", "EnclaveConfig", "load_config", "parse_config"]

U16 = 0xFFFF
U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF
# Attribute bits an author may request; DEBUG and MODE64BIT come from other keys, INIT and
# EINITTOKEN_KEY are set only by hardware and the vendor's Launch Enclave respectively.
REQUESTABLE = {
    "PROVISIONKEY": AttributeFlag.PROVISIONKEY,
    "KSS": AttributeFlag.KSS,
    "AEXNOTIFY": AttributeFlag.AEXNOTIFY,
}
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MAX_ENCLAVE_SIZE = 1 << 47  # the largest SECS.SIZE sgxtool builds (128 TiB)


@dataclass(frozen=True)
class EnclaveConfig:
    """The validated contents of an enclave.toml, with every default filled in."""

    isvprodid: int = 0
    isvsvn: int = 0
    debug: bool = False
    vendor: int = 0
    size: int = 0  # 0: the smallest power of two that holds the layout
    heap_size: int = 1 << 20
    heap_measured: bool = False
    stack_size: int = 64 << 10
    threads: int = 1
    ssa_frames: int = 2
    ssa_frame_size: int = 1
    guard_pages: int = 1
    miscselect: int = 0
    miscmask: int = U32
    attributes: tuple[str, ...] = ()
    attributes_mask: int = U64
    xfrm: int = 0x3
    xfrm_mask: int = 0xFFFF_FFFF_FFFF_FF1B
    isvfamilyid: bytes = field(default=bytes(16))
    isvextprodid: bytes = field(default=bytes(16))

    @property
    def attribute_flags(self) -> int:
        """SIGSTRUCT ATTRIBUTES.FLAGS: 64-bit mode, DEBUG when asked, requested bits."""
        flags = AttributeFlag.MODE64BIT
        if self.debug:
            flags |= AttributeFlag.DEBUG
        for name in self.attributes:
            flags |= REQUESTABLE[name]
        if any(self.isvfamilyid) or any(self.isvextprodid):
            flags |= AttributeFlag.KSS
        return int(flags)

    def to_toml_dict(self) -> dict[str, Any]:
        """This configuration as enclave.toml tables, every key explicit."""
        d = asdict(self)
        return {
            "enclave": {k: d[k] for k in ("isvprodid", "isvsvn", "debug", "vendor", "size")},
            "memory": {
                k: d[k]
                for k in (
                    "heap_size",
                    "heap_measured",
                    "stack_size",
                    "threads",
                    "ssa_frames",
                    "ssa_frame_size",
                    "guard_pages",
                )
            },
            "security": {
                "miscselect": self.miscselect,
                "miscmask": self.miscmask,
                "attributes": list(self.attributes),
                "attributes_mask": self.attributes_mask,
                "xfrm": self.xfrm,
                "xfrm_mask": self.xfrm_mask,
            },
            "kss": {"isvfamilyid": self.isvfamilyid.hex(), "isvextprodid": self.isvextprodid.hex()},
        }


def load_config(path: str | Path) -> EnclaveConfig:
    """Read and validate an enclave.toml file."""
    raw = read_file(path, "enclave configuration", max_size=1 << 20)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text") from exc
    return parse_config(text, str(path))


def parse_config(text: str, source: str = "enclave.toml") -> EnclaveConfig:
    """Validate enclave.toml text; every problem names the key, the value and the rule."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses once per nested array or table
        raise ConfigError(f"{source}: invalid TOML: arrays or tables nested too deeply") from exc
    return _Reader(doc, source).config()


@dataclass(frozen=True)
class _Key:
    table: str
    name: str
    kind: str  # "int", "size", "bool", "flags", "hex16"
    lo: int = 0
    hi: int = U64


_SCHEMA = [
    _Key("enclave", "isvprodid", "int", 0, U16),
    _Key("enclave", "isvsvn", "int", 0, U16),
    _Key("enclave", "debug", "bool"),
    _Key("enclave", "vendor", "int", 0, VENDOR_INTEL),
    _Key("enclave", "size", "size", 0, MAX_ENCLAVE_SIZE),
    _Key("memory", "heap_size", "size", 0, 1 << 46),
    _Key("memory", "heap_measured", "bool"),
    _Key("memory", "stack_size", "size", PAGE_SIZE, 1 << 40),
    _Key("memory", "threads", "int", 1, 4096),
    _Key("memory", "ssa_frames", "int", 1, 16),
    _Key("memory", "ssa_frame_size", "int", 1, 64),
    _Key("memory", "guard_pages", "int", 0, 256),
    _Key("security", "miscselect", "int", 0, U32),
    _Key("security", "miscmask", "int", 0, U32),
    _Key("security", "attributes", "flags"),
    _Key("security", "attributes_mask", "int", 0, U64),
    _Key("security", "xfrm", "int", 0, U64),
    _Key("security", "xfrm_mask", "int", 0, U64),
    _Key("kss", "isvfamilyid", "hex16"),
    _Key("kss", "isvextprodid", "hex16"),
]


class _Reader:
    def __init__(self, doc: dict[str, Any], source: str) -> None:
        self.doc = doc
        self.source = source

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {message}", hint="see enclave.toml(5)")

    def config(self) -> EnclaveConfig:
        self._reject_unknown()
        values: dict[str, Any] = {}
        for key in _SCHEMA:
            table = self.doc.get(key.table, {})
            if key.name in table:
                values[key.name] = self._convert(key, table[key.name])
        cfg = EnclaveConfig(**values)
        self._cross_check(cfg)
        return cfg

    def _reject_unknown(self) -> None:
        known: dict[str, set[str]] = {}
        for key in _SCHEMA:
            known.setdefault(key.table, set()).add(key.name)
        for tname, table in self.doc.items():
            homes = [t for t, names in known.items() if tname in names]
            if not isinstance(table, dict) and homes:
                # `isvsvn = 2` above every table: a key where a table was expected.
                where = " or ".join(f"[{t}]" for t in homes)
                raise self.fail(f"{tname} = {table!r} is outside any table; it belongs in {where}")
            if tname not in known:
                allowed = ", ".join(f"[{t}]" for t in known)
                raise self.fail(f"unknown table [{tname}] (allowed: {allowed})")
            if not isinstance(table, dict):
                raise self.fail(f"{tname} must be a table, got {table!r}")
            for name in table:
                if name not in known[tname]:
                    allowed = ", ".join(sorted(known[tname]))
                    raise self.fail(f"unknown key {tname}.{name} (allowed: {allowed})")

    def _convert(self, key: _Key, value: Any) -> Any:
        where = f"{key.table}.{key.name}"
        if key.kind == "bool":
            if not isinstance(value, bool):
                raise self.fail(f"{where} = {value!r}: must be true or false")
            return value
        if key.kind == "flags":
            return self._flags(where, value)
        if key.kind == "hex16":
            return self._hex16(where, value)
        n = parse_size(value) if key.kind == "size" else value
        if not isinstance(n, int) or isinstance(n, bool):
            raise self.fail(
                f"{where} = {value!r}: must be an integer"
                + (' or a size like "64K"' if key.kind == "size" else "")
            )
        if not key.lo <= n <= key.hi:
            raise self.fail(f"{where} = {value!r}: must be between {key.lo} and {key.hi:#x}")
        return n

    def _flags(self, where: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{where} = {value!r}: must be a list of attribute names")
        for v in value:
            if v not in REQUESTABLE:
                raise self.fail(
                    f"{where}: unknown attribute {v!r} (allowed: {', '.join(REQUESTABLE)})"
                )
        return tuple(sorted(set(value)))

    def _hex16(self, where: str, value: Any) -> bytes:
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != 16:
            raise self.fail(f"{where} = {value!r}: must be 32 hex digits (16 bytes)")
        return raw

    def _cross_check(self, cfg: EnclaveConfig) -> None:
        for name in ("heap_size", "stack_size"):
            if getattr(cfg, name) % PAGE_SIZE:
                raise self.fail(
                    f"memory.{name} = {getattr(cfg, name)}: must be a multiple of 4096 (one page)"
                )
        if cfg.size and cfg.size & (cfg.size - 1):
            raise self.fail(f"enclave.size = {cfg.size:#x}: must be a power of two")
        if cfg.vendor not in (0, VENDOR_INTEL):
            raise self.fail(f"enclave.vendor = {cfg.vendor:#x}: must be 0 or 0x8086")
        if cfg.xfrm & 0x3 != 0x3:
            raise self.fail(f"security.xfrm = {cfg.xfrm:#x}: must include x87 and SSE (0x3)")


def parse_size(value: Any) -> Any:
    """``4096``, ``"64K"``, ``"1M"``, ``"4G"`` to bytes; anything else is returned as is."""
    if not isinstance(value, str):
        return value
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    number = text[: len(text) - len(unit)]
    try:
        return int(number, 0) * _UNITS[unit]
    except ValueError:
        return value
