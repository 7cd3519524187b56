"""Launch control as a machine setting, and the simulated vendor's signed allow-list.

Three policies (DESIGN.md, "Launch policies"; ``shared/reference/sim.md`` 2.1-2.3):

- ``vendor-key`` (legacy launch control): the BIOS leaves IA32_SGXLEPUBKEYHASH at the
  vendor's key hash and locks IA32_FEATURE_CONTROL with SGX_LC clear. Only the vendor's
  Launch Enclave EINITs without a token; everything else needs an EINITTOKEN from it.
- ``flc-open`` (Flexible Launch Control): SGX_LC is left set, so the kernel writes each
  enclave's MRSIGNER into the MSRs right before EINIT, as Linux does; any signer runs.
- ``flc-locked``: the owner decides. Either the BIOS writes the owner's key hash and
  locks the MSRs (only that signer runs), or the MSRs stay writable and the kernel writes
  them only for signers on the owner's allow-list.

The policy is derived from the hardware state (BIOS settings in force, FEATURE_CONTROL,
the MSRs) plus the owner allow-list kept by the kernel-like layer, so it cannot disagree
with what EINIT does. Changing it edits the BIOS settings, which apply at the next power
cycle, as on a real machine.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hwsim.sgx.arch import INTEL_LE_PUBKEY_HASH, mrsigner
from hwsim.sgx.errors import SgxError
from memcrypt.errors import InvalidInput

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

    from hwsim.bios import BiosConfig
    from hwsim.machine import Machine, Transaction

__all__ = [
    "AllowList",
    "LaunchControl",
    "LaunchPolicy",
    "VendorInfo",
    "approve_signer",
    "launch_control",
    "msrs_writable",
    "owner_allow_list",
    "parse_signer",
    "read_allow_list",
    "revoke_signer",
    "set_launch_policy",
    "vendor_info",
]

_OWNER_NS = "sgx.owner"  # the kernel-like layer's launch policy (persistent)
_VENDOR_NS = "vendor"  # the vendor's state; machine reset keeps it, like the vendor key
_ALLOW_MAGIC = b"HWSIMAL1"
_PUBLIC_KEYS: dict[bytes, RSAPublicKey] = {}


class LaunchPolicy(str, enum.Enum):
    VENDOR_KEY = "vendor-key"
    FLC_OPEN = "flc-open"
    FLC_LOCKED = "flc-locked"


@dataclass(frozen=True)
class LaunchControl:
    """What ``hwsim sgx launch-control show`` reports."""

    policy: LaunchPolicy
    msr_hash: bytes  # IA32_SGXLEPUBKEYHASH0-3 now
    msrs_writable: bool  # FEATURE_CONTROL.SGX_LC: the kernel may write the MSRs
    vendor_hash: bytes
    owner_allow: tuple[bytes, ...]
    after_power_cycle: LaunchPolicy | None  # when machine.toml asks for another policy

    def as_json(self) -> dict[str, object]:
        return {
            "policy": self.policy.value,
            "le_pubkey_hash": self.msr_hash.hex(),
            "msrs_writable": self.msrs_writable,
            "vendor_key_hash": self.vendor_hash.hex(),
            "owner_allow_list": [s.hex() for s in self.owner_allow],
            "after_power_cycle": None if self.after_power_cycle is None
            else self.after_power_cycle.value,
        }  # fmt: skip


def _policy_of(config: BiosConfig, allow: tuple[bytes, ...]) -> LaunchPolicy:
    if config.lc_locked:  # Intel's hash locked in: a pre-FLC Intel part, Intel the vendor
        vendor = config.le_pubkey_hash in (None, INTEL_LE_PUBKEY_HASH)
        return LaunchPolicy.VENDOR_KEY if vendor else LaunchPolicy.FLC_LOCKED
    return LaunchPolicy.FLC_LOCKED if allow else LaunchPolicy.FLC_OPEN


def owner_allow_list(txn: Transaction) -> tuple[bytes, ...]:
    raw = txn.get(_OWNER_NS, "allow") or b""
    return tuple(raw[i : i + 32] for i in range(0, len(raw), 32))


def msrs_writable(txn: Transaction) -> bool:
    from hwsim.cpu import FC_SGX_LC, IA32_FEATURE_CONTROL, raw_msr

    return txn.profile.flc and bool(raw_msr(txn, IA32_FEATURE_CONTROL) & FC_SGX_LC)


def launch_control(machine: Machine) -> LaunchControl:
    """The launch policy in force on ``machine`` and what its MSRs hold."""
    from hwsim.sgx.platform import require_sgx

    with machine.transaction(write=False) as txn:
        require_sgx(txn)
        allow = owner_allow_list(txn)
        now = _policy_of(txn.booted_config(), allow)
        pending = _policy_of(txn.machine_config(), allow)
        return LaunchControl(
            policy=now, msr_hash=txn.le_pubkey_hash(), msrs_writable=msrs_writable(txn),
            vendor_hash=txn.sgx_vendor_key_hash(), owner_allow=allow,
            after_power_cycle=None if pending == now else pending,
        )  # fmt: skip


def set_launch_policy(
    machine: Machine,
    policy: LaunchPolicy,
    *,
    owner_key_hash: bytes | None = None,
    allow: tuple[bytes, ...] = (),
) -> LaunchControl:
    """Choose the launch policy: BIOS settings for the next boot, owner allow-list now.

    ``flc-locked`` needs exactly one of ``owner_key_hash`` (the BIOS locks the MSRs to
    it) and ``allow`` (the kernel writes the MSRs only for these signers).
    """
    profile = machine.profile
    if not profile.sgx1:
        raise SgxError(
            f"launch policy {policy.value} refused: profile {profile.name} has no SGX",
            hint="SGX launch control needs an SGX part (profiles sim, skylake, icelake-sp)",
        )
    if policy != LaunchPolicy.VENDOR_KEY and not profile.flc:
        raise SgxError(
            f"launch policy {policy.value} refused: profile {profile.name} has legacy launch "
            "control only (no Flexible Launch Control); its LE hash MSRs are fixed to the "
            "vendor's key",
            hint="use vendor-key on this part, or a part with FLC (sim, icelake-sp)",
        )
    locked, le_hash, owner = _settings_for(policy, owner_key_hash, allow)
    launch_control(machine)  # what the result shows must be readable before anything changes
    settings = (("sgx_enabled", "true"), ("lc_locked", str(locked).lower()),
                ("le_pubkey_hash", "" if le_hash is None else le_hash.hex()))  # fmt: skip

    def change(txn: Transaction, config: BiosConfig) -> BiosConfig:
        for key, text in settings:
            config = config.with_setting(profile, key, text)
        txn.put(_OWNER_NS, "allow", b"".join(owner))  # committed with the BIOS settings
        return config

    machine.change_config(change)
    return launch_control(machine)


def _settings_for(
    policy: LaunchPolicy, owner_key_hash: bytes | None, allow: tuple[bytes, ...]
) -> tuple[bool, bytes | None, tuple[bytes, ...]]:
    """(lc_locked, le_pubkey_hash, owner allow-list) that make ``policy``."""
    if policy != LaunchPolicy.FLC_LOCKED:
        if owner_key_hash is not None or allow:
            raise InvalidInput(f"{policy.value} takes no owner key or allow-list")
        return policy == LaunchPolicy.VENDOR_KEY, None, ()
    if (owner_key_hash is None) == (not allow):
        raise InvalidInput(
            "flc-locked needs an owner key (--owner-key) or an allow-list (--allow), not both"
        )
    if owner_key_hash is not None:
        return True, owner_key_hash, ()
    return False, None, tuple(dict.fromkeys(allow))


# -- the vendor role: a signed allow-list of production signers ---------------------------


@dataclass(frozen=True)
class AllowList:
    """The vendor-signed list of MRSIGNERs the Launch Enclave grants production tokens."""

    version: int
    signers: tuple[bytes, ...]

    def pack(self) -> bytes:
        head = _ALLOW_MAGIC + struct.pack("<II", self.version, len(self.signers))
        return head + b"".join(self.signers)

    @classmethod
    def unpack(cls, raw: bytes) -> AllowList:
        if raw[:8] != _ALLOW_MAGIC or len(raw) < 16:
            raise SgxError("the vendor allow-list is corrupt (bad magic)")
        version, count = struct.unpack_from("<II", raw, 8)
        if len(raw) != 16 + 32 * count:
            raise SgxError("the vendor allow-list is corrupt (bad length)")
        return cls(version, tuple(raw[16 + 32 * i : 48 + 32 * i] for i in range(count)))


@dataclass(frozen=True)
class VendorInfo:
    key_hash: bytes
    allow: AllowList


def read_allow_list(txn: Transaction) -> AllowList:
    """The allow-list, its vendor signature verified (what the Launch Enclave trusts)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    raw = txn.get(_VENDOR_NS, "sgx.allow-list")
    if raw is None:
        return AllowList(0, ())
    sig = txn.get(_VENDOR_NS, "sgx.allow-list.sig") or b""
    public = _vendor_public_key(txn)
    try:
        public.verify(sig, raw, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SgxError(
            "the vendor allow-list signature does not verify",
            hint="have the vendor sign it again: hwsim vendor approve SIGNER",
        ) from None
    return AllowList.unpack(raw)


def _vendor_public_key(txn: Transaction) -> RSAPublicKey:
    """The vendor's public key, which the Launch Enclave carries (cached per process:
    loading the private key to get it costs about 0.1 s of key checks)."""
    vendor_hash = txn.sgx_vendor_key_hash()
    public = _PUBLIC_KEYS.get(vendor_hash)
    if public is None:
        public = _PUBLIC_KEYS[vendor_hash] = txn.sgx_vendor_private_key().public_key()
    return public


def _store_allow_list(txn: Transaction, signers: tuple[bytes, ...]) -> AllowList:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    new = AllowList(read_allow_list(txn).version + 1, signers)
    raw = new.pack()
    sig = txn.sgx_vendor_private_key().sign(raw, padding.PKCS1v15(), hashes.SHA256())
    txn.put(_VENDOR_NS, "sgx.allow-list", raw)
    txn.put(_VENDOR_NS, "sgx.allow-list.sig", sig)
    return new


def approve_signer(machine: Machine, signer: bytes) -> AllowList:
    """The vendor approves a production signer (the commercial licence) and re-signs."""
    with machine.transaction() as txn:
        current = read_allow_list(txn).signers
        return _store_allow_list(txn, tuple(dict.fromkeys((*current, signer))))


def revoke_signer(machine: Machine, signer: bytes) -> AllowList:
    """The vendor withdraws an approval; :class:`InvalidInput` if it was not there."""
    with machine.transaction() as txn:
        current = read_allow_list(txn).signers
        if signer not in current:
            raise InvalidInput(f"signer {signer.hex()} is not on the vendor allow-list")
        return _store_allow_list(txn, tuple(s for s in current if s != signer))


def vendor_info(machine: Machine) -> VendorInfo:
    with machine.transaction(write=False) as txn:
        return VendorInfo(txn.sgx_vendor_key_hash(), read_allow_list(txn))


def parse_signer(text: str) -> bytes:
    """An MRSIGNER from 64 hex digits, or from a PEM RSA key file (public or private)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if re.fullmatch(r"[0-9a-fA-F]{64}", text.strip()):
        return bytes.fromhex(text.strip())
    path = Path(text)
    if not path.is_file():
        raise InvalidInput(f"signer {text!r}: give an MRSIGNER (64 hex digits) or a PEM key file")
    from memcrypt.files import read_file

    pem = read_file(path, "signing key", max_size=1 << 20)
    try:
        key: object = (
            serialization.load_pem_public_key(pem)
            if b"PUBLIC KEY" in pem
            else serialization.load_pem_private_key(pem, password=None).public_key()
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"{path}: not an unencrypted PEM RSA key ({exc})") from exc
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != 3072:
        raise InvalidInput(f"{path}: SGX signers are RSA-3072 keys")
    return mrsigner(key.public_numbers().n)
