"""SEV-ES VMSAs as a VMM gives them to LAUNCH_UPDATE_VMSA, for measuring offline.

The register state follows virtee/sev ``vmsa::Vmsa`` (``init_amd64``, ``init_kvm``,
``init_qemu``/``init_krun``, ``cpu_sku``, ``reset_addr``), which sevctl ``vmsa build`` and
libvirt's ``virt-qemu-sev-validate`` also use (``shared/reference/sev-guests.md`` 3.2):

- reset state: CR0 0x10, RIP 0xFFF0, CS 0xF000:0xFFFF0000, limits 0xFFFF, DR6 0xFFFF0FF0,
  DR7 0x400, RFLAGS 0x2, XCR0 0x1; KVM: CR4 0x40, EFER 0x1000, G_PAT, LDTR 0x82, TR 0x83;
  QEMU's segment attributes (CS 0x9B, data 0x93, TR 0x8B) or krun's;
- RDX is CPUID(1).EAX of the CPU (family, model, stepping);
- an application processor (``--cpu`` other than 0, QEMU) starts at the SEV-ES reset
  address from OVMF's footer table rather than the reset vector.

Two x87/SSE layouts are found in practice: zero, as sevctl and libvirt 9 build it and as
KVM gives it with ``KVM_SEV_ES_INIT``; and MXCSR 0x1F80 with FCW 0x37F, as KVM gives it to
``KVM_SEV_INIT2`` VMs and sev-snp-measure builds it. The VMSA layout is ``hwsim.sev.arch``.
"""

from __future__ import annotations

import json
from pathlib import Path

from hwsim.sev.arch import VMSA_LAYOUT, VMSA_SEGMENTS, VMSA_SEVCTL_END, Vmsa
from hwsim.sev.ovmf import SEV_ES_RESET_BLOCK, footer_table, footer_u32
from memcrypt.errors import FormatError
from sevtool.errors import SevFormatError, SevInputError

__all__ = ["FPU_LAYOUTS", "USERSPACES", "build_vmsa", "reset_address", "show_json", "update_vmsa"]

USERSPACES = ("qemu", "krun")
FPU_LAYOUTS = ("zero", "reset")
_TAIL = 4096  # OVMF's footer table sits in the last bytes of the image

# Segment attributes in the VMCB's 12-bit form (descriptor bits 8-15 and 20-23).
_CODE, _DATA = 0x9B, 0x93  # present, S, code read accessed / data write accessed
_KRUN = {"cs": 0x9A, "ds": 0x93, "es": 0x93, "ss": 0x92, "fs": 0x93, "gs": 0x93}


def _init_amd64(v: Vmsa) -> None:
    """The architectural reset state (APM vol. 2 14.1.3)."""
    v["cr0"], v["rip"] = 0x10, 0xFFF0
    v["cs_selector"], v["cs_base"] = 0xF000, 0xFFFF0000
    for seg in VMSA_SEGMENTS:
        v[f"{seg}_limit"] = 0xFFFF
    v["dr6"], v["dr7"], v["rflags"], v["xcr0"] = 0xFFFF0FF0, 0x400, 0x2, 0x1


def _init_kvm(v: Vmsa) -> None:
    v["cr4"], v["efer"], v["g_pat"] = 0x40, 0x1000, 0x0007040600070406
    v["ldtr_attrib"], v["tr_attrib"] = 0x82, 0x83


def _init_qemu(v: Vmsa) -> None:
    v["ldtr_attrib"], v["tr_attrib"], v["cs_attrib"] = 0x82, 0x8B, _CODE
    for seg in ("ds", "es", "ss", "fs", "gs"):
        v[f"{seg}_attrib"] = _DATA


def _init_krun(v: Vmsa, cpu: int) -> None:
    for seg, attrib in _KRUN.items():
        v[f"{seg}_attrib"] = attrib
    if cpu == 0:
        v["rsi"], v["rbp"], v["rsp"] = 0x7000, 0x8FF0, 0x8FF0
    else:
        v["rip"], v["cs_selector"], v["cs_base"] = 0, 0x9100, 0x91000


def cpu_signature(family: int, model: int, stepping: int) -> int:
    """CPUID(1).EAX for a family, model and stepping (extended family above 0xF)."""
    family, model, stepping = family & 0xFFF, model & 0xFF, stepping & 0xF
    value = stepping | (model & 0xF) << 4 | (model >> 4) << 16
    return value | (0xF00 | (family - 0xF) << 20 if family > 0xF else family << 8)


def reset_address(firmware: Path) -> int:
    """The SEV-ES reset address APs start at, from OVMF's footer table."""
    try:
        with firmware.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(size - _TAIL, 0))
            table = footer_table(f.read())
    except OSError as exc:
        raise SevInputError(f"cannot read firmware {firmware}: {exc.strerror}") from exc
    except FormatError as exc:
        raise SevFormatError(f"firmware {firmware}: {exc}") from exc
    if not table:
        raise SevFormatError(f"firmware {firmware} has no OVMF footer table (not an OVMF image)")
    address = footer_u32(table, SEV_ES_RESET_BLOCK)
    if address is None:
        raise SevFormatError(
            f"firmware {firmware} has no SEV-ES reset block: build OVMF with SEV-ES support"
        )
    return address


def _apply(
    v: Vmsa, cpu: int, sku: tuple[int, int, int], userspace: str, firmware: Path | None
) -> None:
    """What ``build`` and ``update`` share: the CPU signature and the AP reset address."""
    if any(sku):
        v["rdx"] = cpu_signature(*sku)
    if firmware is not None:
        address = reset_address(firmware)
        if userspace == "qemu" and cpu != 0:  # QEMU sev_es_set_reset_vector
            v["cs_base"], v["rip"] = address & 0xFFFF0000, address & 0xFFFF


def build_vmsa(
    cpu: int,
    *,
    userspace: str = "qemu",
    sku: tuple[int, int, int] = (0, 0, 0),
    firmware: Path | None = None,
    fpu: str = "zero",
) -> Vmsa:
    """The VMSA of vCPU ``cpu`` as ``sevctl vmsa build`` makes it; ``sku`` is (family,
    model, stepping) and ``fpu`` one of :data:`FPU_LAYOUTS`."""
    if userspace not in USERSPACES or fpu not in FPU_LAYOUTS:
        raise SevInputError(f"unknown userspace {userspace!r} or x87 layout {fpu!r}")
    if cpu < 0:
        raise SevInputError(f"--cpu must not be negative, got {cpu}")
    v = Vmsa()
    _init_amd64(v)
    _init_kvm(v)
    if userspace == "qemu":
        _init_qemu(v)
    else:
        _init_krun(v, cpu)
    if fpu == "reset":
        v["mxcsr"], v["x87_fcw"] = 0x1F80, 0x37F
    _apply(v, cpu, sku, userspace, firmware)
    return v


def update_vmsa(
    v: Vmsa,
    cpu: int,
    *,
    userspace: str = "qemu",
    sku: tuple[int, int, int] = (0, 0, 0),
    firmware: Path | None = None,
) -> Vmsa:
    """``sevctl vmsa update``: a new CPU signature and, for an AP, OVMF's reset address."""
    _apply(v, cpu, sku, userspace, firmware)
    return v


def show_json(v: Vmsa) -> str:
    """The VMSA as ``sevctl vmsa show`` prints it (serde's JSON of virtee's ``Vmsa``), with
    the x87/SSE fields after it when they are set."""
    out: dict[str, object] = {}
    for off, name, _ in VMSA_LAYOUT.fields:
        value = v[name]
        if off < 0x10 * len(VMSA_SEGMENTS):  # segments print as objects
            segment = VMSA_SEGMENTS[off // 0x10]
            fields = out.setdefault(segment, {})
            assert isinstance(fields, dict)
            fields[name[len(segment) + 1 :]] = value
        elif off < VMSA_SEVCTL_END or value:
            out[name] = list(value) if isinstance(value, bytes) else value
    return json.dumps(out, indent=2)
