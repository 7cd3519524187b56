"""The GHCB: the page an SEV-ES guest shares with its hypervisor, and what KVM does with it.

Layout and codes from Linux ``struct ghcb`` / ``sev-common.h`` / ``svm.h``
(``shared/reference/sev-guests.md`` 3.4-3.7). At VMGEXIT the hypervisor reads the GHCB
through its own mapping (plaintext only if the guest shared the page), takes only the
fields whose valid bit the guest set, performs the exit and writes the reply back:
``SW_EXIT_INFO_1`` 0 for done, 2 with a ``GHCB_ERR_*`` code in ``SW_EXIT_INFO_2`` for a
malformed request (``sev_es_validate_vmgexit``), and RAX-RDX always (``sev_es_sync_to_ghcb``).
This is everything the hypervisor of an SEV-ES guest sees of its registers. Exits served:
IOIO (0x7B, not the string forms), CPUID (0x72) and MSR (0x7C, answered by injecting #GP,
as KVM does for an MSR it does not know: no guest MSR is modelled).

A GHCB MSR that holds a request rather than a GHCB address is the MSR protocol
(:func:`msr_protocol`, sev-guests.md 3.5): SEV information (0x002 -> 0x001, protocol
range and C-bit), CPUID one register at a time (0x004 -> 0x005), GHCB registration
(0x012 -> 0x013; KVM serves it to SNP guests only, the simulator to SEV-ES guests too,
and then holds the vCPU to that page), hypervisor features (0x080 -> 0x081, none) and
termination (0x100). Anything else (AP reset hold 0x006 included) leaves the MSR as it
was, as KVM does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "EXIT_CPUID",
    "EXIT_IOIO",
    "EXIT_MSR",
    "EXIT_VMGEXIT",
    "GHCB_MSR",
    "GHCB_SIZE",
    "MSR_GHCB_GPA",
    "MSR_TERMINATE",
    "PROTOCOL_MAX",
    "PROTOCOL_MIN",
    "VC_VECTOR",
    "GhcbExit",
    "MsrReply",
    "PortIo",
    "handle_ghcb",
    "msr_protocol",
]

GHCB_SIZE = 4096
GHCB_MSR = 0xC001_0130
VC_VECTOR = 29  # X86_TRAP_VC
EXIT_CPUID, EXIT_IOIO, EXIT_MSR, EXIT_VMGEXIT = 0x72, 0x7B, 0x7C, 0x403
# GHCB MSR protocol codes (bits 11:0; sev-common.h), requests and their responses.
MSR_GHCB_GPA, MSR_TERMINATE = 0x000, 0x100
_SEV_INFO_RESP, _SEV_INFO_REQ, _CPUID_REQ, _CPUID_RESP = 0x001, 0x002, 0x004, 0x005
_REG_GPA_REQ, _REG_GPA_RESP, _HV_FT_REQ, _HV_FT_RESP = 0x012, 0x013, 0x080, 0x081
PROTOCOL_MIN, PROTOCOL_MAX = 1, 2  # what KVM supports

# struct ghcb_save_area offsets of the fields the modelled exits use.
_FIELDS = {"cpl": 0x0CB, "rax": 0x1F8, "rcx": 0x308, "rdx": 0x310, "rbx": 0x318,
           "sw_exit_code": 0x390, "sw_exit_info_1": 0x398, "sw_exit_info_2": 0x3A0,
           "sw_scratch": 0x3A8, "xcr0": 0x3E8}  # fmt: skip
_VALID_BITMAP = 0x3F0
_PROTOCOL_VERSION = 0xFFA
_USAGE = 0xFFC
# SW_EXIT_INFO_2 of an "inject exception" reply: #GP in EVENTINJ format (valid, error
# code valid, type exception, vector 13), what KVM does for an MSR it does not know.
_INJECT_GP = 1 << 31 | 1 << 11 | 3 << 8 | 13
_ERR_INVALID_USAGE, _ERR_MISSING_INPUT, _ERR_INVALID_INPUT, _ERR_INVALID_EVENT = 2, 4, 5, 6
# IOIO SW_EXIT_INFO_1 (AMD APM vol. 2 15.10.2; Linux vc_ioio_exitinfo).
_IOIO_IN, _IOIO_STRING = 0x1, 0x4
_IOIO_SIZES = {0x10: 1, 0x20: 2, 0x40: 4}


class PortIo(Protocol):
    """The VMM's port devices (serial port, power-off port)."""

    def out(self, port: int, size: int, value: int) -> None: ...
    def in_(self, port: int, size: int) -> int: ...


@dataclass
class GhcbExit:
    """One VMGEXIT as the hypervisor saw it: the GHCB's address and the fields the guest
    marked valid (register values included), and the reply it gave."""

    ghcb_gpa: int
    taken: dict[str, int] = field(default_factory=dict)
    reply: dict[str, int] = field(default_factory=dict)
    error: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "ghcb_gpa": f"{self.ghcb_gpa:#x}",
            "taken": {k: f"{v:#x}" for k, v in self.taken.items()},
            "reply": {k: f"{v:#x}" for k, v in self.reply.items()},
            "error": self.error,
        }


def _get(page: bytes, off: int, n: int = 8) -> int:
    return int.from_bytes(page[off : off + n], "little")


def handle_ghcb(
    gpa: int, page: bytes, io: PortIo, cpuid: Callable[[int, int], tuple[int, int, int, int]]
) -> tuple[bytes, GhcbExit]:
    """Perform the exit the GHCB ``page`` (at ``gpa``) asks for; returns the page to
    write back and what was seen."""
    seen = GhcbExit(gpa)
    valid = _get(page, _VALID_BITMAP, 16)
    seen.taken = {n: _get(page, o, 1 if n == "cpl" else 8)
                  for n, o in _FIELDS.items() if valid >> (o // 8) & 1}  # fmt: skip
    regs = {r: seen.taken.get(r, 0) for r in ("rax", "rbx", "rcx", "rdx")}
    error = _check(page, seen.taken)
    info1, info2 = 0, 0
    try:
        if not error:
            error = _perform(seen.taken, regs, io, cpuid)
    except _Inject as inject:
        info1, info2 = 1, inject.event
    if error:
        seen.error = f"GHCB_ERR {error[0]}: {error[1]}"
        info1, info2 = 2, error[0]
    seen.reply = {**regs, "sw_exit_info_1": info1, "sw_exit_info_2": info2}
    return _reply(page, seen.reply), seen


def _check(page: bytes, taken: dict[str, int]) -> tuple[int, str] | None:
    if _get(page, _USAGE, 4) != 0:
        return _ERR_INVALID_USAGE, f"GHCB usage {_get(page, _USAGE, 4)} (only 0 is defined)"
    version = _get(page, _PROTOCOL_VERSION, 2)
    if not PROTOCOL_MIN <= version <= PROTOCOL_MAX:
        return _ERR_INVALID_INPUT, f"GHCB protocol version {version} is not supported"
    missing = [n for n in ("sw_exit_code", "sw_exit_info_1", "sw_exit_info_2") if n not in taken]
    if missing:
        return _ERR_MISSING_INPUT, f"{', '.join(missing)} not marked valid"
    return None


def _perform(
    taken: dict[str, int],
    regs: dict[str, int],
    io: PortIo,
    cpuid: Callable[[int, int], tuple[int, int, int, int]],
) -> tuple[int, str] | None:
    code = taken["sw_exit_code"]
    if code == EXIT_IOIO:
        return _ioio(taken, regs, io)
    if code == EXIT_CPUID:
        if "rax" not in taken:
            return _ERR_MISSING_INPUT, "CPUID needs RAX"
        values = cpuid(regs["rax"] & 0xFFFF_FFFF, regs["rcx"] & 0xFFFF_FFFF)
        regs.update(zip(("rax", "rbx", "rcx", "rdx"), values, strict=True))
        return None
    if code == EXIT_MSR:
        if "rcx" not in taken:
            return _ERR_MISSING_INPUT, "an MSR exit needs RCX"
        raise _Inject(_INJECT_GP)  # no guest MSR is modelled behind the intercept
    return _ERR_INVALID_EVENT, f"exit code {code:#x} is not modelled"


class _Inject(Exception):
    """The exit is answered by injecting an exception (SW_EXIT_INFO_1 = 1)."""

    def __init__(self, event: int) -> None:
        super().__init__(f"inject {event:#x}")
        self.event = event


def _ioio(taken: dict[str, int], regs: dict[str, int], io: PortIo) -> tuple[int, str] | None:
    info = taken["sw_exit_info_1"]
    size = next((n for bit, n in _IOIO_SIZES.items() if info & bit), 0)
    if info & _IOIO_STRING or not size:
        return _ERR_INVALID_INPUT, f"IOIO exit info {info:#x}: string I/O is not modelled"
    port, mask = info >> 16 & 0xFFFF, (1 << 8 * size) - 1
    if info & _IOIO_IN:
        regs["rax"] = (regs["rax"] & ~mask) | (io.in_(port, size) & mask)
        return None
    if "rax" not in taken:
        return _ERR_MISSING_INPUT, "OUT needs RAX"
    io.out(port, size, regs["rax"] & mask)
    return None


def _reply(page: bytes, values: dict[str, int]) -> bytes:
    out = bytearray(page)
    valid = 0
    for name, value in values.items():
        off = _FIELDS[name]
        out[off : off + 8] = (value & (1 << 64) - 1).to_bytes(8, "little")
        valid |= 1 << (off // 8)
    out[_VALID_BITMAP : _VALID_BITMAP + 16] = valid.to_bytes(16, "little")
    return bytes(out)


@dataclass(frozen=True)
class MsrReply:
    """The hypervisor's answer to a GHCB MSR protocol request: the MSR's new value, or
    ``terminate`` (the guest's reason), and the GHCB page the guest registered."""

    value: int
    terminate: str = ""
    registered_gfn: int | None = None
    error: str = ""


def msr_protocol(
    value: int, cbit: int, cpuid: Callable[[int, int], tuple[int, int, int, int]]
) -> MsrReply:
    """Serve the request in the GHCB MSR ``value`` (sev-guests.md 3.5; KVM
    ``sev_handle_vmgexit_msr_protocol``). An unknown request leaves the MSR unchanged."""
    code, data = value & 0xFFF, value >> 12
    if code == _SEV_INFO_REQ:
        info = PROTOCOL_MAX << 48 | PROTOCOL_MIN << 32 | (cbit & 0xFF) << 24
        return MsrReply(info | _SEV_INFO_RESP)
    if code == _CPUID_REQ:
        register = data >> 18 & 0x3  # bits 31:30: 0 EAX, 1 EBX, 2 ECX, 3 EDX
        result = cpuid(value >> 32, 0)[register]
        return MsrReply((result & 0xFFFF_FFFF) << 32 | register << 30 | _CPUID_RESP)
    if code == _REG_GPA_REQ:
        return MsrReply(data << 12 | _REG_GPA_RESP, registered_gfn=data)
    if code == _HV_FT_REQ:
        return MsrReply(_HV_FT_RESP)  # no hypervisor features (they are SNP's)
    if code == MSR_TERMINATE:
        why = f"reason set {data & 0xF}, code {data >> 4 & 0xFF}"
        return MsrReply(value, terminate=why)
    return MsrReply(value, error=f"GHCB MSR protocol request {code:#x} is not served")
