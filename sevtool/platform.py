"""SEV platform management: what a platform owner does through ``/dev/sev``.

One function per ``sevtool`` command; each opens the machine's SEV device for one
transaction, so a command either happens whole or not at all. Names follow AMD's sev-tool
and virtee's sevctl (``reset``, ``rotate``, ``generate``, ``provision``, ``export``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hwsim.sev.arch import PlatformState, PlatformStatus, SevAlgo, SevCert, SevUsage
from hwsim.sev.certs import (
    add_ecdsa_signature,
    check_sev_cert,
    load_sev_cert,
    make_sev_cert,
    sev_public_key,
    verify_sev_cert,
)
from hwsim.sev.device import SevDevice
from memcrypt.files import Output, read_file, write_files
from memcrypt.signer import (
    ECDSA_SHA256,
    KeySigner,
    Signer,
    describe_key,
    load_private_key_file,
)
from sevtool.chainfiles import Chain
from sevtool.errors import SevInputError, SevToolError

if TYPE_CHECKING:
    from hwsim.machine import Machine

__all__ = [
    "OwnerKey",
    "PlatformInfo",
    "export_chain",
    "factory_reset",
    "generate_oca",
    "get_id",
    "load_owner_key",
    "load_private_key",
    "oca_for_key",
    "pek_cert_import",
    "pek_csr",
    "platform_status",
    "provision",
    "rotate",
    "sign_pek_csr",
]

_MAX_FILE = 64 * 1024


@dataclass(frozen=True)
class PlatformInfo:
    """PLATFORM_STATUS, decoded, with the machine it came from."""

    machine: str
    profile: str
    state: str
    externally_owned: bool
    es_initialized: bool
    api_major: int
    api_minor: int
    build: int
    guest_count: int

    @classmethod
    def from_status(cls, machine: Machine, status: PlatformStatus) -> PlatformInfo:
        return cls(
            machine=str(machine.path),
            profile=machine.profile.name,
            state=PlatformState(status.state).name,
            externally_owned=bool(status.owner & PlatformStatus.OWNER_EXTERNAL),
            es_initialized=bool(status.config & PlatformStatus.CONFIG_ES),
            api_major=status.api_major,
            api_minor=status.api_minor,
            build=status.build,
            guest_count=status.guest_count,
        )

    @property
    def owner(self) -> str:
        return "external" if self.externally_owned else "self"

    def as_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "profile": self.profile,
            "state": self.state,
            "owner": self.owner,
            "api": f"{self.api_major}.{self.api_minor}",
            "build": self.build,
            "guest_count": self.guest_count,
            "flags": {"owned": self.externally_owned, "es": self.es_initialized},
        }


def _status(machine: Machine, dev: SevDevice) -> PlatformInfo:
    return PlatformInfo.from_status(machine, dev.platform_status())


def platform_status(machine: Machine) -> PlatformInfo:
    with SevDevice.open(machine) as dev:
        return _status(machine, dev)


def factory_reset(machine: Machine) -> PlatformInfo:
    """PLATFORM_RESET: new PEK, PDH and OCA; any external owner is forgotten."""
    with SevDevice.open(machine) as dev:
        dev.factory_reset()
        return _status(machine, dev)


def rotate(machine: Machine, *, pek: bool = False) -> PlatformInfo:
    """PDH_GEN (new PDH), or with ``pek`` PEK_GEN (new PEK and PDH; self-owned again)."""
    with SevDevice.open(machine) as dev:
        if pek:
            dev.pek_gen()
        else:
            dev.pdh_gen()
        return _status(machine, dev)


def get_id(machine: Machine) -> bytes:
    """GET_ID: the 64-byte chip id (AMD's key server names CEKs by it)."""
    with SevDevice.open(machine) as dev:
        return dev.get_id()


def pek_csr(machine: Machine) -> SevCert:
    """PEK_CSR: the PEK certificate for an owner to sign with the OCA key."""
    with SevDevice.open(machine) as dev:
        return dev.pek_csr()


@dataclass(frozen=True)
class OwnerKey:
    """A platform owner's OCA: the self-signed certificate and its private key."""

    cert: SevCert
    key: ec.EllipticCurvePrivateKey

    @property
    def signer(self) -> Signer:
        """The owner key behind the one signer interface (ECDSA with SHA-256)."""
        return KeySigner(self.key, ECDSA_SHA256)

    def sign(self, cert: SevCert) -> SevCert:
        """``cert`` signed by the owner (usage OCA, ECDSA_SHA256) in its first free slot."""
        raw = self.signer.sign(cert.signed_bytes())
        return add_ecdsa_signature(cert, SevUsage.OCA, SevAlgo.ECDSA_SHA256, raw)

    def write(self, cert_path: Path, key_path: Path, passphrase: bytes | None = None) -> None:
        """The certificate (binary, 2084 bytes) and the key (PKCS#8 PEM, mode 0600),
        encrypted when a passphrase is given; the same path twice is refused."""
        protect: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, protect
        )
        # One change: after a kill part-way the old pair or the new pair is on disk.
        write_files([Output(cert_path, self.cert.pack()), Output(key_path, pem, 0o600)])


def generate_oca() -> OwnerKey:
    """A new owner key (ECDSA P-384) and its self-signed OCA certificate."""
    return oca_for_key(ec.generate_private_key(ec.SECP384R1()))


def oca_for_key(key: ec.EllipticCurvePrivateKey) -> OwnerKey:
    """The self-signed OCA certificate of an existing owner key, as sev-tool's
    ``create_oca_cert`` makes it (usage OCA, ECDSA_SHA256)."""
    cert = make_sev_cert(key.public_key(), SevUsage.OCA, SevAlgo.ECDSA_SHA256)
    owner = OwnerKey(cert, key)
    return OwnerKey(owner.sign(cert), key)


def load_private_key(path: Path, passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """An owner's private key: PEM or DER (sevctl ``generate`` writes SEC1 DER), PKCS#8 or
    SEC1, encrypted or not; it must be an EC key, as SEV owner keys are."""
    key = load_private_key_file(path, passphrase, "OCA key")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SevInputError(
            f"OCA key {path}: {describe_key(key.public_key())}; SEV owner keys are ECDSA "
            "(P-384, as sevctl and sev-tool make them)"
        )
    return key


def load_owner_key(cert_path: Path, key_path: Path, passphrase: bytes | None = None) -> OwnerKey:
    """Read an OCA certificate and its key, checking they belong together."""
    cert = load_sev_cert(
        read_file(cert_path, "OCA certificate", max_size=_MAX_FILE), f"OCA certificate {cert_path}"
    )
    key = load_private_key(key_path, passphrase)
    verify_sev_cert(cert, SevUsage.OCA, cert, f"OCA certificate {cert_path}")
    if sev_public_key(cert) != key.public_key():
        raise SevToolError(f"OCA key {key_path} does not belong to certificate {cert_path}")
    return OwnerKey(cert, key)


def sign_pek_csr(csr: SevCert, owner: OwnerKey) -> SevCert:
    """The owner's signature on a PEK CSR (sev-tool ``--sign_pek_csr``)."""
    check_sev_cert(csr, SevUsage.PEK, "PEK CSR")
    return owner.sign(csr.unsigned())


def pek_cert_import(machine: Machine, pek: SevCert, oca: SevCert) -> PlatformInfo:
    """PEK_CERT_IMPORT: the platform becomes owned by the holder of the OCA key.

    The roles are checked first, so that a PDH given as the PEK is named as such rather
    than refused by the firmware as another platform's PEK.
    """
    for cert, usage in ((pek, SevUsage.PEK), (oca, SevUsage.OCA)):
        if cert.pub_key_usage != usage:
            check_sev_cert(cert, usage, f"{usage.name} certificate")
    with SevDevice.open(machine) as dev:
        dev.pek_cert_import(pek, oca)
        return _status(machine, dev)


def provision(machine: Machine, owner: OwnerKey) -> PlatformInfo:
    """Take ownership in one step: PEK_CSR, sign with the OCA key, PEK_CERT_IMPORT."""
    with SevDevice.open(machine) as dev:
        signed = sign_pek_csr(dev.pek_csr(), owner)
        dev.pek_cert_import(signed, owner.cert)
        return _status(machine, dev)


def export_chain(machine: Machine, *, full: bool = False) -> Chain:
    """PDH, PEK, OCA and the CEK signed by the (simulated) AMD key server; ``full`` adds
    the ASK and ARK it chains to."""
    with SevDevice.open(machine) as dev:
        pdh, (pek, oca, _unsigned_cek) = dev.pdh_cert_export()
        cek = dev.kds_cek(dev.get_id())
        chain = Chain(cek=cek, pek=pek, oca=oca, pdh=pdh)
        if full:
            chain.ask, chain.ark = dev.kds_ca()
        return chain
