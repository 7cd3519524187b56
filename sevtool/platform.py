"""SEV platform management: what a platform owner does through ``/dev/sev``.

One function per ``sevtool`` command; each opens the machine's SEV device for one
transaction, so a command either happens whole or not at all. Names follow AMD's sev-tool
and virtee's sevctl (``reset``, ``rotate``, ``provision``, ``export``). The owner's key
and the certificates it signs are :mod:`sevtool.owner`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hwsim.sev.arch import PlatformState, PlatformStatus, SevCert, SevUsage
from hwsim.sev.certs import check_sev_cert
from hwsim.sev.device import SevDevice
from sevtool.chainfiles import Chain
from sevtool.owner import OwnerKey, sign_pek_csr

if TYPE_CHECKING:
    from hwsim.machine import Machine

__all__ = [
    "PlatformInfo",
    "export_chain",
    "factory_reset",
    "get_id",
    "pek_cert_import",
    "pek_csr",
    "platform_status",
    "provision",
    "rotate",
]


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
