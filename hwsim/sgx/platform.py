"""The SGX part of one machine inside this process: its EPC and key material.

Enclaves are volatile and live in the process that loaded them (DESIGN.md), so the EPC
is an in-process object over the machine's PRM region. It is keyed by the machine and its
current boot: a power cycle loads a new EPC key into the memory engine, hence a new, empty
PRM and EPC, as on real parts. The
fused secrets behind the derived keys survive power cycles; ``hwsim reset`` replaces them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwsim.sgx.errors import SgxError
from hwsim.sgx.keys import KeyContext

if TYPE_CHECKING:
    from hwsim.machine import Machine, Transaction
    from hwsim.prm import PrmRegion
    from hwsim.sgx.epc import Epc

__all__ = ["epc_of", "key_context", "require_sgx"]

_EPCS: dict[tuple[str, PrmRegion], Epc] = {}


def require_sgx(txn: Transaction) -> None:
    """Refuse a machine whose part has no SGX, or whose BIOS left SGX disabled."""
    from hwsim.cpu import FC_LOCK, FC_SGX_ENABLE, IA32_FEATURE_CONTROL, raw_msr

    profile = txn.profile
    if not profile.sgx1:
        raise SgxError(
            f"profile {profile.name} has no SGX",
            hint="make a machine with an SGX part: hwsim init --profile sim (or skylake, "
            "icelake-sp)",
        )
    fc = raw_msr(txn, IA32_FEATURE_CONTROL)
    if not (fc & FC_LOCK and fc & FC_SGX_ENABLE):
        # Linux feat_ctl.c: "SGX disabled by BIOS."; ENCLS is #GP without LOCK and ENABLE.
        raise SgxError(
            "SGX disabled by BIOS (IA32_FEATURE_CONTROL bit 18 clear)",
            hint="hwsim config set sgx_enabled true, then hwsim power-cycle",
        )


def key_context(txn: Transaction) -> KeyContext:
    """The chip's fused roots and this boot's REPORT KEYID, as EGETKEY/EREPORT use them."""
    return KeyContext(
        root=txn.fused_secret("sgx.derivation-root")[:16],
        seal_fuses=txn.fused_secret("sgx.seal-fuses")[:16],
        owner_epoch=txn.fused_secret("sgx.owner-epoch")[:16],
        report_keyid=txn.boot_secret("sgx.report-keyid"),
    )


def epc_of(machine: Machine) -> Epc:
    """The EPC of ``machine`` for its current boot (made on first use in this process)."""
    from hwsim.sgx.epc import Epc

    with machine.transaction(write=False) as txn:
        require_sgx(txn)
        region = txn.engine.epc_region()  # this boot's, under its EPC key slot
        slot = (str(machine.path), region)
        found = _EPCS.get(slot)
        if found is not None:
            return found
        keys = key_context(txn)

    def read_le_hash() -> bytes:
        with machine.transaction(write=False) as t:
            return t.le_pubkey_hash()

    epc = Epc(machine.profile, region, keys, read_le_hash)
    for old in [k for k in _EPCS if k[0] == slot[0]]:
        del _EPCS[old]  # an earlier boot's EPC: its enclaves died with the power cycle
    _EPCS[slot] = epc
    return epc
