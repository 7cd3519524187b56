"""Small SEV guests for tests: flat images from machine code, launched through KVM."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwsim.sev import migrate
from hwsim.sev.device import SevDevice
from hwsim.sev.kvm import SevVm

if TYPE_CHECKING:
    from hwsim.machine import Machine

MIB = 1 << 20
COM1 = 0x3F8


def flat_image(code: bytes, size: int = 4096) -> bytes:
    """``code`` at the start of a ``size``-byte image whose reset vector jumps to it."""
    image = bytearray(size)
    image[: len(code)] = code
    rel = -(size - 16 + 5)  # jmp rel32 from the reset vector back to the image's start
    image[size - 16 : size - 11] = b"\xe9" + (rel & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(image)


def serial(text: bytes) -> bytes:
    """Code that writes ``text`` to COM1 (mov dx, 0x3f8; mov al, c; out dx, al ...)."""
    return b"\x66\xba\xf8\x03" + b"".join(b"\xb0" + bytes([c]) + b"\xee" for c in text)


def store(gva: int, value: int) -> bytes:
    """movabs rax, value; movabs rbx, gva; mov [rbx], rax."""
    rax, rbx = value.to_bytes(8, "little"), gva.to_bytes(8, "little")
    return b"\x48\xb8" + rax + b"\x48\xbb" + rbx + b"\x48\x89\x03"


POWER_OFF = b"\xb0\x00\xe6\xf4"  # mov al, 0; out 0xf4, al
HLT = b"\xf4"


def launch(
    dev: SevDevice,
    image: bytes,
    *,
    policy: int = 0,
    name: str = "t",
    godh: bytes | None = None,
    session: bytes | None = None,
) -> SevVm:
    """LAUNCH_START + ACTIVATE, load and LAUNCH_UPDATE_DATA ``image`` (state LUPDATE)."""
    vm = SevVm.create(dev, name=name, memory_size=16 * MIB, firmware_size=len(image),
                      policy=policy, godh=godh, session=session)  # fmt: skip
    vm.load(vm.record.flash_gpa, image)
    vm.launch_update_data(vm.record.flash_gpa, len(image))
    return vm


def running(dev: SevDevice, image: bytes, **kwargs: object) -> SevVm:
    """A guest launched, measured and finished: ready to run."""
    vm = launch(dev, image, **kwargs)  # type: ignore[arg-type]
    vm.launch_measure()
    vm.launch_finish()
    return vm


ES_POLICY = 0x4  # policy bit 2: SEV-ES
GHCB_GPA = 0x20_0000  # in the 2 MiB page the test guests share (PD entry 1, at 0x3008)


def share_page(cbit: int) -> bytes:
    """Clear the C-bit of the PD entry for guest physical 2 MiB, then reload CR3."""
    return (b"\x48\xbb" + (0x3008).to_bytes(8, "little")  # movabs rbx, 0x3008
            + b"\x48\x8b\x03"  # mov rax, [rbx]
            + b"\x48\x0f\xba\xf0" + bytes([cbit])  # btr rax, cbit
            + b"\x48\x89\x03"  # mov [rbx], rax
            + b"\x0f\x20\xd8\x0f\x22\xd8")  # mov rax, cr3; mov cr3, rax  # fmt: skip


def vmgexit(ghcb: int = GHCB_GPA) -> bytes:
    """wrmsr(0xC0010130, ghcb) then VMGEXIT (rep vmmcall), as Linux's sev_es_wr_ghcb_msr."""
    return (b"\xb9" + (0xC001_0130).to_bytes(4, "little")  # mov ecx, GHCB MSR
            + b"\xb8" + (ghcb & 0xFFFF_FFFF).to_bytes(4, "little")  # mov eax, low
            + b"\xba" + (ghcb >> 32).to_bytes(4, "little")  # mov edx, high
            + b"\x0f\x30" + b"\xf3\x0f\x01\xd9")  # fmt: skip


def ghcb_out(port: int, value: int, ghcb: int = GHCB_GPA) -> bytes:
    """What a #VC handler does for ``out dx, al``: an IOIO exit through the GHCB."""
    info1 = port << 16 | 0x10 | 0x200  # 8-bit data, 64-bit address
    valid_lo = 1 << 63  # RAX (offset 0x1F8 / 8)
    valid_hi = 0b111 << (114 - 64)  # SW_EXIT_CODE, SW_EXIT_INFO_1, SW_EXIT_INFO_2
    return b"".join((
        store(ghcb + 0x1F8, value), store(ghcb + 0x390, 0x7B), store(ghcb + 0x398, info1),
        store(ghcb + 0x3A0, 0), store(ghcb + 0x3F0, valid_lo), store(ghcb + 0x3F8, valid_hi),
        store(ghcb + 0xFF8, 1 << 16),  # protocol version 1, usage 0
        vmgexit(ghcb),
    ))  # fmt: skip


def ghcb_serial(text: bytes) -> bytes:
    return b"".join(ghcb_out(COM1, c) for c in text)


def chain_of(machine: Machine) -> migrate.TargetChain:
    """The target platform's chain a migration's SEND_START checks: PDH, PEK, OCA, CEK, ASK, ARK."""
    with SevDevice.open(machine) as dev:
        pdh, (pek, oca, _) = dev.pdh_cert_export()
        ask, ark = dev.kds_ca()
        return pdh, pek, oca, dev.kds_cek(dev.get_id()), ask, ark
