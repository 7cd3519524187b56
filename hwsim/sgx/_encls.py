"""ENCLS: the privileged SGX leaves, dispatched through one table.

Each leaf is a function over the :class:`~hwsim.sgx.epc.Epc` and one frozen operand
record (the contents RBX/RCX/RDX point at on real hardware: PAGEINFO fields, the target
EPC page, SIGSTRUCT and EINITTOKEN bytes). :func:`encls` finds the leaf by the record's
type in :data:`_LEAVES`, which also marks the leaves only SGX2 parts have. Faults are
:class:`~hwsim.sgx.errors.SgxFault` (#GP/#PF); error codes (ZF=1, RAX=code) are
:class:`~hwsim.sgx.errors.SgxStatusError`. The leaves live in ``_build`` (ECREATE, EADD,
EEXTEND, EREMOVE, EDBGRD/WR), ``_einit`` and ``_paging`` (EPA ... ELDU, EAUG, EMODPR/T).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hwsim.sgx import _build, _einit, _paging
from hwsim.sgx._build import EAdd, ECreate, EDbgRd, EDbgWr, EExtend, ERemove, Op
from hwsim.sgx._einit import EInit
from hwsim.sgx._paging import (
    EAug,
    EBlock,
    ELd,
    EModPr,
    EModT,
    EPa,
    ETrack,
    EvictedPage,
    EWb,
    tracked,
)
from hwsim.sgx.arch import EnclsLeaf
from hwsim.sgx.epc import Epc
from hwsim.sgx.errors import GP, SgxFault

__all__ = [
    "EAdd", "EAug", "EBlock", "ECreate", "EDbgRd", "EDbgWr", "EExtend", "EInit", "ELd",
    "EModPr", "EModT", "EPa", "ERemove", "ETrack", "EWb", "EvictedPage", "Op", "encls",
    "leaf_of", "tracked",
]  # fmt: skip

R = TypeVar("R")


@dataclass(frozen=True)
class _Leaf:
    leaf: EnclsLeaf
    run: Callable[[Epc, Any], Any]
    sgx2: bool = False


_LEAVES: dict[type, _Leaf] = {
    ECreate: _Leaf(EnclsLeaf.ECREATE, _build.ecreate),
    EAdd: _Leaf(EnclsLeaf.EADD, _build.eadd),
    EInit: _Leaf(EnclsLeaf.EINIT, _einit.einit),
    ERemove: _Leaf(EnclsLeaf.EREMOVE, _build.eremove),
    EDbgRd: _Leaf(EnclsLeaf.EDBGRD, _build.edbgrd),
    EDbgWr: _Leaf(EnclsLeaf.EDBGWR, _build.edbgwr),
    EExtend: _Leaf(EnclsLeaf.EEXTEND, _build.eextend),
    ELd: _Leaf(EnclsLeaf.ELDU, _paging.eld),
    EBlock: _Leaf(EnclsLeaf.EBLOCK, _paging.eblock),
    EPa: _Leaf(EnclsLeaf.EPA, _paging.epa),
    EWb: _Leaf(EnclsLeaf.EWB, _paging.ewb),
    ETrack: _Leaf(EnclsLeaf.ETRACK, _paging.etrack),
    EAug: _Leaf(EnclsLeaf.EAUG, _paging.eaug, sgx2=True),
    EModPr: _Leaf(EnclsLeaf.EMODPR, _paging.emodpr, sgx2=True),
    EModT: _Leaf(EnclsLeaf.EMODT, _paging.emodt, sgx2=True),
}


def leaf_of(op: Op[Any]) -> EnclsLeaf:
    """The ENCLS leaf an operand record is for (ELDB is ``ELd(blocked=True)``)."""
    if isinstance(op, ELd) and op.blocked:
        return EnclsLeaf.ELDB
    return _LEAVES[type(op)].leaf


def encls(epc: Epc, op: Op[R]) -> R:
    """Execute one ENCLS leaf on ``epc``; an SGX2 leaf on an SGX1 part is #GP(0)."""
    entry = _LEAVES[type(op)]
    if entry.sgx2 and not epc.profile.sgx2:
        raise SgxFault(GP, f"ENCLS[{entry.leaf.name}] is an SGX2 leaf; this part has SGX1 only")
    epc.generation += 1  # EPCM may change: the execution core's TLB must be flushed
    result: R = entry.run(epc, op)
    return result
