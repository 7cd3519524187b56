"""``/dev/sev`` of a simulated machine: what user space (sevtool) may ask the PSP.

The methods mirror Linux's SEV_ISSUE_CMD ioctls (``include/uapi/linux/psp-sev.h``:
SEV_FACTORY_RESET, SEV_PLATFORM_STATUS, SEV_PEK_GEN, SEV_PEK_CSR, SEV_PDH_GEN,
SEV_PDH_CERT_EXPORT, SEV_PEK_CERT_IMPORT, SEV_GET_ID2) including what the ccp driver does
around the firmware: it INITs an UNINIT platform before the key commands, and issues
SHUTDOWN before a factory reset of an INIT platform and refuses one while guests run
(``drivers/crypto/ccp/sev-dev.c``). Failures are :class:`~hwsim.sev.psp.PspError` with the
firmware status, as the ioctl's ``error`` field carries it.

The guest commands the kernel issues for KVM are :attr:`SevDevice.guests`
(:mod:`hwsim.sev.guestfw`); the hypervisor that issues them is :mod:`hwsim.sev.kvm`.

Also here, because a real host reaches it over the network rather than the PSP: the
simulated AMD key server (KDS), which returns this chip's CEK signed by the simulator's ASK.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from hwsim.errors import HwsimError
from hwsim.sev.arch import (
    AmdCert,
    PlatformState,
    PlatformStatus,
    SevCert,
    SevCommand,
    SevStatus,
)
from hwsim.sev.guestfw import GuestFirmware
from hwsim.sev.psp import Psp, PspError

if TYPE_CHECKING:
    from hwsim.machine import Machine, Transaction

__all__ = ["KDS_NS", "SevDevice", "SevUnavailable"]

KDS_NS = "sev.kds"


class SevUnavailable(HwsimError):
    """The machine has no usable SEV (its part lacks it, or the BIOS leaves it off)."""


class SevDevice:
    """The SEV device of one machine, bound to one open transaction.

    Use :meth:`open` so that a whole tool command is one transaction.
    """

    def __init__(self, txn: Transaction) -> None:
        profile = txn.profile
        where = f"machine {txn.machine.path} (profile {profile.name})"
        if not profile.sev:
            raise SevUnavailable(
                f"{where} has no AMD SEV",
                hint="make a machine with an SEV part: hwsim init --profile naples, rome or sim",
            )
        if not txn.booted_config().sme_enabled:
            raise SevUnavailable(
                f"{where}: SEV needs memory encryption, which the BIOS left "
                "disabled (SYSCFG.MemEncryptionModEn)",
                hint="set sme_enabled = true in machine.toml and power-cycle",
            )
        self.txn = txn
        self.memory = txn.engine
        self.address_bits = profile.phys_addr_bits - profile.phys_addr_reduction
        self.psp = Psp(
            txn,
            profile.sev_api,
            es=profile.sev_es,
            fused_secret=txn.fused_secret,
            memory=txn.engine,
        )
        self.guests = GuestFirmware(
            self.psp, txn.engine, sev_asids=profile.sev_asids, min_sev_asid=profile.min_sev_asid
        )

    @classmethod
    @contextmanager
    def open(cls, machine: Machine) -> Iterator[SevDevice]:
        """The device inside one new transaction of ``machine``."""
        with machine.transaction() as txn:
            yield cls(txn)

    # -- kernel-internal entry points (KVM and the driver use them) --------------------

    def platform_init(self) -> None:
        """INIT the platform if it is not already (``sev_platform_init``)."""
        if self.psp.state == PlatformState.UNINIT:
            self.psp.init()

    def platform_shutdown(self) -> None:
        """SHUTDOWN the firmware (``sev_platform_shutdown``)."""
        self.psp.shutdown()

    # -- SEV_ISSUE_CMD ioctls ------------------------------------------------------------

    def factory_reset(self) -> None:
        """SEV_FACTORY_RESET: PLATFORM_RESET, shutting an INIT platform down first."""
        state = self.psp.state
        if state == PlatformState.WORKING:
            raise PspError(
                SevCommand.PLATFORM_RESET,
                SevStatus.INVALID_PLATFORM_STATE,
                "guests are running (the driver answers EBUSY)",
                hint="decommission the running guests first",
            )
        if state == PlatformState.INIT:
            self.platform_shutdown()
        self.psp.platform_reset()

    def platform_status(self) -> PlatformStatus:
        """SEV_PLATFORM_STATUS."""
        return self.psp.platform_status()

    def pek_gen(self) -> None:
        """SEV_PEK_GEN: new PEK, PDH and firmware OCA; the platform becomes self-owned."""
        self.platform_init()
        self.psp.pek_gen()

    def pdh_gen(self) -> None:
        """SEV_PDH_GEN: new PDH."""
        self.platform_init()
        self.psp.pdh_gen()

    def pek_csr(self) -> SevCert:
        """SEV_PEK_CSR: the unsigned PEK certificate."""
        self.platform_init()
        return self.psp.pek_csr()

    def pek_cert_import(self, pek: SevCert, oca: SevCert) -> None:
        """SEV_PEK_CERT_IMPORT: the owner-signed PEK and the owner's OCA."""
        self.platform_init()
        self.psp.pek_cert_import(pek, oca)

    def pdh_cert_export(self) -> tuple[SevCert, tuple[SevCert, SevCert, SevCert]]:
        """SEV_PDH_CERT_EXPORT: PDH and the chain PEK, OCA, CEK (CEK unsigned)."""
        self.platform_init()
        return self.psp.pdh_cert_export()

    def get_id(self) -> bytes:
        """SEV_GET_ID2: the 64-byte chip id."""
        return self.psp.get_id()

    def df_flush(self) -> None:
        """WBINVD on every core, then DF_FLUSH (``sev_guest_df_flush`` after the
        ``wbinvd_on_all_cpus`` of ``__sev_recycle_asids``)."""
        self.psp.wbinvd()
        self.psp.df_flush()

    # -- the simulated AMD key distribution server ---------------------------------------

    def kds_cek(self, chip_id: bytes) -> SevCert:
        """``/cek/id/<chip id>``: this chip's CEK signed by the simulator's ASK."""
        from hwsim.sev.vendor import sim_sign_cek

        if chip_id != self.psp.get_id():
            raise HwsimError(f"simulated AMD key server: no CEK for chip id {chip_id.hex()}")
        cached = self.txn.get(KDS_NS, "cek")
        if cached is not None:
            return SevCert.unpack(cached)
        cek = sim_sign_cek(self.psp.cek_cert())
        self.txn.put(KDS_NS, "cek", cek.pack())
        return cek

    def kds_ca(self) -> tuple[AmdCert, AmdCert]:
        """The simulator's (ASK, ARK), as AMD publishes ``ask_ark_<generation>.cert``."""
        from hwsim.sev.certs import load_amd_cert
        from hwsim.sev.vendor import SIM_ARK_NAME, sim_ark_cert, sim_ask_cert

        ask, ark = self.txn.get(KDS_NS, "ask"), self.txn.get(KDS_NS, "ark")
        if ask is None or ark is None:
            ask, ark = sim_ask_cert().pack(), sim_ark_cert().pack()
            self.txn.put(KDS_NS, "ask", ask)
            self.txn.put(KDS_NS, "ark", ark)
        return load_amd_cert(ask, "simulated ASK"), load_amd_cert(ark, SIM_ARK_NAME)
