"""Small SEV guests for tests: flat images from machine code, launched through KVM."""

from __future__ import annotations

from hwsim.sev.device import SevDevice
from hwsim.sev.kvm import SevVm

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
