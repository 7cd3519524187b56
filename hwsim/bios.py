"""BIOS settings: the ``[bios]`` table of machine.toml, with defaults from the profile.

The simulated BIOS applies these settings at each power cycle (IA32_FEATURE_CONTROL,
the LE public-key hash MSRs, SYSCFG, the EPC reservation), so a changed setting takes
effect at the next ``hwsim power-cycle``, as on a real machine.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsim.arch import PAGE_SIZE
from hwsim.errors import MachineError
from hwsim.profiles import PROFILES, Profile, get_profile
from hwsim.sgx.arch import INTEL_LE_PUBKEY_HASH
from memcrypt.errors import InvalidInput
from memcrypt.files import read_file, write_atomic

__all__ = [
    "SETTINGS",
    "BiosConfig",
    "format_size",
    "parse_machine_toml",
    "read_machine_toml",
    "render_toml",
    "write_machine_toml",
]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_TRUE = {"true", "on", "yes", "1", "enabled"}
_FALSE = {"false", "off", "no", "0", "disabled"}


@dataclass(frozen=True)
class BiosConfig:
    """BIOS settings as the simulated firmware applies them at boot.

    ``lc_locked``: the BIOS locks IA32_FEATURE_CONTROL with SGX_LC (bit 17) clear, so the
    LE public-key hash MSRs keep the value the BIOS left (vendor key, or ``le_pubkey_hash``).
    ``le_pubkey_hash``: an owner's hash the BIOS writes to the MSRs before locking (FLC
    parts only); ``None`` leaves the reset value, the SGX vendor's key hash.
    """

    sgx_enabled: bool
    lc_locked: bool
    le_pubkey_hash: bytes | None
    sme_enabled: bool
    epc_size: int

    @classmethod
    def defaults(cls, profile: Profile) -> BiosConfig:
        return cls(
            sgx_enabled=profile.sgx1,
            lc_locked=not profile.flc,
            le_pubkey_hash=None,
            sme_enabled=profile.sme,
            epc_size=profile.epc_size,
        )

    @classmethod
    def from_table(cls, profile: Profile, table: Mapping[str, Any]) -> BiosConfig:
        """Settings from a parsed ``[bios]`` table; :class:`InvalidInput` naming the key."""
        unknown = sorted(set(table) - set(SETTINGS))
        if unknown:
            raise InvalidInput(
                f"unknown BIOS setting {unknown[0]!r}; allowed: {', '.join(SETTINGS)}"
            )
        values = {k: SETTINGS[k].coerce(k, v) for k, v in table.items()}
        config = dataclasses.replace(cls.defaults(profile), **values)
        config.check(profile)
        return config

    def with_setting(self, profile: Profile, key: str, text: str) -> BiosConfig:
        """A copy with ``key`` set from command-line ``text``, checked against the profile."""
        setting = SETTINGS.get(key)
        if setting is None:
            raise InvalidInput(f"unknown BIOS setting {key!r}; allowed: {', '.join(SETTINGS)}")
        config = dataclasses.replace(self, **{key: setting.parse(key, text)})
        config.check(profile)
        return config

    def check(self, profile: Profile) -> None:
        """Refuse settings the part cannot have, naming key, value and what is allowed."""
        refusals = [
            (self.sgx_enabled and not profile.sgx1, "sgx_enabled = true", "has no SGX", "false"),
            (not self.lc_locked and not profile.flc, "lc_locked = false", _NO_FLC, "true"),
            (
                self.le_pubkey_hash not in (None, INTEL_LE_PUBKEY_HASH) and not profile.flc,
                "le_pubkey_hash",
                _HARDWIRED,
                f'"" or {INTEL_LE_PUBKEY_HASH.hex()}',
            ),
            (self.sme_enabled and not profile.sme, "sme_enabled = true", "has no SME", "false"),
        ]
        for bad, what, why, allowed in refusals:
            if bad:
                raise InvalidInput(f"{what}: profile {profile.name} {why}; allowed: {allowed}")
        if not profile.sgx1 and self.epc_size:
            raise InvalidInput(
                f"epc_size = {format_size(self.epc_size)}: profile {profile.name} has no SGX; "
                "allowed: 0"
            )
        if profile.sgx1 and not 0 < self.epc_size <= profile.epc_size:
            raise InvalidInput(
                f"epc_size = {format_size(self.epc_size)}: allowed 4K to "
                f"{format_size(profile.epc_size)} on profile {profile.name}"
            )

    def as_dict(self) -> dict[str, Any]:
        """Settings as JSON-ready values (hash as hex, size in bytes)."""
        return {k: SETTINGS[k].show(getattr(self, k)) for k in SETTINGS}


_NO_FLC = "has no Flexible Launch Control"
# A part without FLC has its launch key hash fixed in silicon: the simulated vendor's
# (the default) or Intel's, as the parts Intel sold were.
_HARDWIRED = "has no Flexible Launch Control: its hash is hardwired, the vendor's or Intel's"


@dataclass(frozen=True)
class _Setting:
    help: str
    coerce: Callable[[str, Any], Any]  # from a TOML value
    parse: Callable[[str, str], Any]  # from command-line text
    show: Callable[[Any], Any]  # to a JSON / TOML value


def _coerce_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{key} = {value!r}: allowed true or false")
    return value


def _parse_bool(key: str, text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE | _FALSE:
        return low in _TRUE
    raise InvalidInput(f"{key} = {text!r}: allowed true or false")


def _coerce_size(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidInput(f"{key} = {value!r}: allowed a size such as 64M or 1G")
    return _parse_size(key, str(value))


def _parse_size(key: str, text: str) -> int:
    # At most 20 digits: any larger size is refused anyway, and int() of more than 4300
    # digits raises ValueError.
    match = re.fullmatch(r"\s*([0-9]{1,20})\s*([KMG]?)(i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise InvalidInput(f"{key} = {text!r}: allowed a size such as 64M or 1G")
    size = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if size % PAGE_SIZE:
        raise InvalidInput(f"{key} = {text!r}: allowed a multiple of 4K")
    return size


def format_size(size: int) -> str:
    if size == 0:
        return "0"
    for unit in ("G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def _coerce_hash(key: str, value: Any) -> bytes | None:
    if not isinstance(value, str):
        raise InvalidInput(f'{key} = {value!r}: allowed 64 hex digits, or "" for the default')
    return _parse_hash(key, value)


def _parse_hash(key: str, text: str) -> bytes | None:
    text = text.strip()
    if not text:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise InvalidInput(f'{key} = {text!r}: allowed 64 hex digits, or "" for the default')
    return bytes.fromhex(text)


SETTINGS: dict[str, _Setting] = {
    "sgx_enabled": _Setting(
        "SGX enable (IA32_FEATURE_CONTROL bit 18)", _coerce_bool, _parse_bool, bool
    ),
    "lc_locked": _Setting(
        "lock the LE public-key hash MSRs (SGX_LC, bit 17, left clear)",
        _coerce_bool,
        _parse_bool,
        bool,
    ),
    "le_pubkey_hash": _Setting(
        "LE public-key hash the BIOS writes (hex SHA-256; FLC parts: an owner key; parts "
        "without FLC: Intel's hardwired hash), empty for the vendor's",
        _coerce_hash,
        _parse_hash,
        lambda v: "" if v is None else v.hex(),
    ),
    "sme_enabled": _Setting(
        "SME / memory encryption (SYSCFG bit 23 MemEncryptionModEn)",
        _coerce_bool,
        _parse_bool,
        bool,
    ),
    "epc_size": _Setting("EPC size reserved by the BIOS", _coerce_size, _parse_size, format_size),
}


def render_toml(profile: Profile, config: BiosConfig) -> str:
    """machine.toml text: the profile and every BIOS setting, with a comment on each."""
    lines = [
        "# hwsim machine: see hwsim-machine.toml(5). BIOS settings take effect at the",
        "# next `hwsim power-cycle`.",
        f"profile = {json.dumps(profile.name)}",
        "",
        "[bios]",
    ]
    for key, setting in SETTINGS.items():
        value = setting.show(getattr(config, key))
        lines.append(f"# {setting.help}")
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def read_machine_toml(path: Path) -> tuple[Profile, BiosConfig]:
    """The profile and BIOS settings in a machine.toml; :class:`MachineError` naming it."""
    return _settings_of(_load(path), path)


def parse_machine_toml(raw: bytes, path: Path) -> tuple[Profile, BiosConfig]:
    """The profile and BIOS settings in machine.toml text (``path`` names it in errors)."""
    return _settings_of(_parse(raw, path), path)


def _settings_of(doc: Mapping[str, Any], path: Path) -> tuple[Profile, BiosConfig]:
    try:
        return _from_document(doc)
    except InvalidInput as exc:
        raise MachineError(f"{path}: {exc}") from exc


def profile_named_in(path: Path) -> str | None:
    """The ``profile`` a machine.toml names, or None when it cannot be read at all."""
    try:
        name = _load(path).get("profile")
    except MachineError:
        return None
    return name if isinstance(name, str) else None


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MachineError(f"{path.parent} is not a hwsim machine (no {path.name})")
    try:
        # A hand-edited file is a few hundred bytes; refuse one that is not.
        raw = read_file(path, "machine.toml", max_size=1 << 20)
    except InvalidInput as exc:
        raise MachineError(str(exc)) from exc
    return _parse(raw, path)


def _parse(raw: bytes, path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib

    try:
        doc: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MachineError(f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MachineError(f"{path}: invalid TOML: {exc}") from exc
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise MachineError(f"{path}: invalid TOML: nested too deeply") from None
    except ValueError as exc:  # int() refuses more than 4300 digits (CVE-2020-10735)
        raise MachineError(f"{path}: invalid TOML: a number has too many digits") from exc
    return doc


def _from_document(doc: Mapping[str, Any]) -> tuple[Profile, BiosConfig]:
    unknown = sorted(set(doc) - {"profile", "bios"})
    if unknown:
        raise InvalidInput(f"unknown key {unknown[0]!r}; allowed: profile, [bios]")
    name = doc.get("profile")
    if not isinstance(name, str):
        raise InvalidInput(f"profile = {name!r}: allowed one of {', '.join(PROFILES)}")
    profile = get_profile(name)
    bios = doc.get("bios", {})
    if not isinstance(bios, dict):
        raise InvalidInput("bios must be a table ([bios])")
    return profile, BiosConfig.from_table(profile, bios)


def write_machine_toml(path: Path, profile: Profile, config: BiosConfig) -> None:
    write_atomic(path, render_toml(profile, config).encode())
