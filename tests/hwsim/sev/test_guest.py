"""Running SEV guests: the C-bit in the guest's own page tables decides what DRAM holds."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwsim._exec import ExecError
from hwsim.machine import Machine
from hwsim.sev.device import SevDevice
from hwsim.sev.guest import guest_read, run_guest
from hwsim.sev.kvm import SevVm
from tests.hwsim.sev.guests import HLT, POWER_OFF, flat_image, running, serial, store

SHARED = 0x20_0000  # the 2 MiB page the guest shares (PD entry 1, at 0x3008)
PRIVATE = 0x40_0000


def share_page(cbit: int) -> bytes:
    """Clear the C-bit of the PD entry for SHARED, then reload CR3 (flushes the TLB)."""
    return (b"\x48\xbb" + (0x3008).to_bytes(8, "little")  # movabs rbx, 0x3008
            + b"\x48\x8b\x03"  # mov rax, [rbx]
            + b"\x48\x0f\xba\xf0" + bytes([cbit])  # btr rax, cbit
            + b"\x48\x89\x03"  # mov [rbx], rax
            + b"\x0f\x20\xd8\x0f\x22\xd8")  # mov rax, cr3; mov cr3, rax  # fmt: skip


def test_serial_halt_resume_and_power_off(machine: Machine) -> None:
    image = flat_image(serial(b"hi\n") + HLT + serial(b"again") + POWER_OFF)
    with SevDevice.open(machine) as dev:
        handle = running(dev, image).record.handle
    with SevDevice.open(machine) as dev:
        first = run_guest(SevVm.get(dev, handle), 10_000)
    assert (first.stop, first.serial) == ("halt", b"hi\n")
    with SevDevice.open(machine) as dev:  # the guest survived between commands
        vm = SevVm.get(dev, handle)
        second = run_guest(vm, 10_000)
        assert (second.stop, second.serial, second.exit_code) == ("shutdown", b"again", 0)
        assert bytes.fromhex(vm.record.serial) == b"hi\nagain"
        with pytest.raises(ExecError, match="shutdown"):
            run_guest(vm, 10)


def test_private_pages_are_ciphertext_and_shared_pages_plaintext(machine: Machine) -> None:
    value = 0x1122334455667788
    cbit = machine.profile.cbit
    image = flat_image(share_page(cbit) + store(SHARED, value) + store(PRIVATE, value) + POWER_OFF)
    with SevDevice.open(machine) as dev:
        vm = running(dev, image)
        assert run_guest(vm, 10_000).stop == "shutdown"
        plain = value.to_bytes(8, "little")
        assert vm.host_read(SHARED, 8) == plain
        assert guest_read(vm, SHARED, 8) == plain
        assert guest_read(vm, PRIVATE, 8) == plain
        assert vm.host_read(PRIVATE, 8) != plain
        assert vm.host_read(0x3000, 8) != guest_read(vm, 0x3000, 8)  # the tables are private


def test_fetch_from_a_shared_page_and_unmapped_memory_crash_the_guest(machine: Machine) -> None:
    jump_shared = b"\x48\xb8" + SHARED.to_bytes(8, "little") + b"\xff\xe0"  # jmp rax
    beyond = store(0x8000_0000, 1)  # guest physical 2 GiB: not RAM in a 16 MiB guest
    with SevDevice.open(machine) as dev:
        vm = running(dev, flat_image(share_page(machine.profile.cbit) + jump_shared), name="a")
        result = run_guest(vm, 10_000)
        assert result.stop == "fault" and "shared page" in result.detail
        vm = running(dev, flat_image(beyond), name="b")
        result = run_guest(vm, 10_000)
        assert result.stop == "fault" and "not mapped" in result.detail
        assert vm.record.status == "crashed"


@settings(max_examples=6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    writes=st.lists(
        st.tuples(st.integers(0, 63), st.integers(0, 511), st.integers(1, 2**64 - 1)),
        min_size=1,
        max_size=12,
    )
)
def test_guest_writes_host_never_sees_plaintext(
    machine: Machine, writes: list[tuple[int, int, int]]
) -> None:
    """Over random guest writes: the host's view of every private page written is never
    its plaintext, the guest's view always is, and two guests with the same data have
    different ciphertext."""
    code = b"".join(store(PRIVATE + page * 4096 + slot * 8, v) for page, slot, v in writes)
    image = flat_image(code + POWER_OFF, size=4096 * (1 + len(code) // 4096))
    expected: dict[int, int] = {}
    for page, slot, v in writes:
        expected[PRIVATE + page * 4096 + slot * 8] = v
    with SevDevice.open(machine) as dev:
        guests = [running(dev, image, name=f"g{i}") for i in range(2)]
        for vm in guests:
            assert run_guest(vm, 100_000).stop == "shutdown"
        for addr, v in expected.items():
            plain = v.to_bytes(8, "little")
            host = [vm.host_read(addr, 8) for vm in guests]
            assert plain not in host
            assert host[0] != host[1]
            assert [guest_read(vm, addr, 8) for vm in guests] == [plain, plain]
        flash = guests[0].record.flash_gpa
        assert guests[0].host_read(flash, len(image)) != image
        for vm in guests:
            vm.decommission()


def test_the_hypervisor_can_remap_a_guest_page(machine: Machine) -> None:
    """An NPT edit (SEVered): the guest reads another of its own pages' plaintext."""
    value = 0x0BADC0FFEE
    image = flat_image(store(PRIVATE, value) + POWER_OFF)
    with SevDevice.open(machine) as dev:
        vm = running(dev, image)
        assert run_guest(vm, 10_000).stop == "shutdown"
        vm.remap(PRIVATE + 0x1000, PRIVATE)
        assert guest_read(vm, PRIVATE + 0x1000, 8) == value.to_bytes(8, "little")
