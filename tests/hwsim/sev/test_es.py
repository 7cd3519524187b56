"""SEV-ES guests: the VMSA encrypted under the guest key, port I/O only through the GHCB."""

from __future__ import annotations

import pytest

from hwsim.machine import Machine
from hwsim.sev.arch import SevStatus, Vmsa
from hwsim.sev.device import SevDevice
from hwsim.sev.guest import guest_read, run_guest
from hwsim.sev.kvm import KvmError, SevVm
from hwsim.sev.psp import PspError
from hwsim.sev.transport import receive_vm, send_vm
from hwsim.sev.vc import candidates, decode
from memcrypt.errors import FormatError
from sevtool.vmsa import build_vmsa
from tests.conftest import MachineFactory
from tests.hwsim.sev.es_asm import AP_ENTRY, RESULTS, es_program
from tests.hwsim.sev.guests import (
    ES_POLICY,
    GHCB_GPA,
    HLT,
    POWER_OFF,
    chain_of,
    flat_image,
    ghcb_out,
    ghcb_serial,
    launch,
    running,
    serial,
    share_page,
)

PRIVATE_GHCB = 0x40_0000


def es_guest(dev: SevDevice, code: bytes, name: str = "es", aps: int = 0) -> SevVm:
    vm = launch(dev, flat_image(code), policy=ES_POLICY, name=name)
    ap = build_vmsa(0)
    ap["rip"] = 0xF000 + AP_ENTRY  # CS.base 0xFFFF0000: the AP entry of the flat image
    vm.launch_update_vmsa([build_vmsa(0).pack()] + [ap.pack()] * aps)
    vm.launch_measure()
    vm.launch_finish()
    return vm


def test_es_guest_prints_through_the_ghcb_and_its_registers_are_ciphertext(
    machine: Machine,
) -> None:
    code = share_page(machine.profile.cbit) + ghcb_serial(b"es!") + HLT + ghcb_out(0xF4, 0)
    with SevDevice.open(machine) as dev:
        vm = es_guest(dev, code)
        first = run_guest(vm, 100_000)
        assert (first.stop, first.serial) == ("halt", b"es!")
        view = vm.vcpu_view()
        assert view.protected and view.registers == {}
        # The hypervisor saw the GHCB's valid fields: the byte written and the port.
        assert view.ghcb["ghcb_gpa"] == f"{GHCB_GPA:#x}"
        assert view.ghcb["taken"]["rax"] == hex(ord("!"))  # type: ignore[index]
        with pytest.raises(FormatError, match="not zero"):
            Vmsa.unpack(view.vmsa)  # ciphertext, not a save area
        with pytest.raises(KvmError, match="encrypted VMSA"):
            vm.set_registers(rip=0)
        assert vm.record.vcpu == {}
    with SevDevice.open(machine) as dev:  # resumes from the encrypted VMSA
        second = run_guest(SevVm.get(dev, 1), 100_000)
        assert (second.stop, second.exit_code) == ("shutdown", 0)


def test_plain_sev_hypervisor_reads_and_changes_registers(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        vm = running(dev, flat_image(HLT + serial(b"skipped") + HLT + serial(b"ok") + POWER_OFF))
        run_guest(vm, 10_000)
        view = vm.vcpu_view()
        assert not view.protected and view.registers["rip"] == 0xFFFF_F001
        vm.set_registers(rip=view.registers["rip"] + len(serial(b"skipped")) + 1)
        assert run_guest(vm, 10_000).serial == b"ok"


def test_port_io_without_a_vc_handler_stops_the_guest(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        result = run_guest(es_guest(dev, serial(b"x")), 10_000)
    assert result.stop == "fault" and result.serial == b""
    assert "#VC (exit code 0x7b) at rip 0xfffff006 with no #VC handler" in result.detail
    assert "triple fault" in result.detail


def test_a_private_ghcb_shows_the_hypervisor_ciphertext(machine: Machine) -> None:
    code = ghcb_out(0x3F8, ord("s"), PRIVATE_GHCB) + POWER_OFF
    with SevDevice.open(machine) as dev:
        vm = es_guest(dev, code)
        result = run_guest(vm, 10_000)
        assert result.serial == b""
        assert "GHCB_ERR" in str(vm.vcpu_view().ghcb["error"])


def test_es_policy_needs_an_es_part(machine_factory: object) -> None:
    naples = machine_factory(profile="naples")  # type: ignore[operator]
    with SevDevice.open(naples) as dev:
        with pytest.raises(KvmError, match="no SEV-ES"):
            launch(dev, flat_image(HLT), policy=ES_POLICY)
        dev.platform_init()
        with pytest.raises(PspError) as err:
            dev.guests.launch_start(ES_POLICY, None, None)
        assert err.value.status == SevStatus.POLICY_FAILURE


def test_launch_update_vmsa_rules(machine: Machine) -> None:
    with SevDevice.open(machine) as dev:
        plain = launch(dev, flat_image(HLT), name="plain")
        with pytest.raises(KvmError, match="not an SEV-ES"):
            plain.launch_update_vmsa([bytes(4096)])
        with pytest.raises(PspError) as err:
            dev.guests.launch_update_vmsa(plain.record.handle, plain.record.vmsa_spa(0))
        assert err.value.status == SevStatus.POLICY_FAILURE
        es = launch(dev, flat_image(HLT), policy=ES_POLICY, name="es")
        assert es.status().asid < machine.profile.min_sev_asid  # the ES ASID range
        es.launch_measure()
        with pytest.raises(PspError) as err:
            es.launch_update_vmsa([build_vmsa(0).pack()])
        assert err.value.status == SevStatus.INVALID_GUEST_STATE


PLAIN_IO = """
    mov dx, 0x3f8
    mov al, 'v'
    out dx, al
    mov al, 'c'
    out dx, al
    mov dx, 0x3fd
    in al, dx
    mov dx, 0x3f8
    out dx, al
    mov eax, 0x8000001f
    xor ecx, ecx
    cpuid
    mov eax, ebx
    and al, 0x3f
    mov dx, 0x3f8
    out dx, al
    hlt
    mov al, 0
    out 0xf4, al
"""


def test_vc_handler_serves_plain_in_out_and_cpuid(machine: Machine) -> None:
    """Ordinary IN/OUT/CPUID raise #VC; the guest's handler asks through the GHCB, then
    IRETQ; the IDT and GDT survive the VMSA round trip of a halt and resume."""
    cbit = machine.profile.cbit
    with SevDevice.open(machine) as dev:
        vm = es_guest(dev, es_program(PLAIN_IO, cbit))
        first = run_guest(vm, 100_000)
        assert (first.stop, first.serial) == ("halt", b"vc`" + bytes([cbit]))
        assert vm.vcpu_view().ghcb["taken"]["rax"] == hex(cbit)  # type: ignore[index]
        second = run_guest(vm, 100_000)
        assert (second.stop, second.exit_code) == ("shutdown", 0)


FRAME = """
    mov rsp, 0xf00008
    mov rdi, RESULTS
    lea rax, [rip + insn]
    mov [rdi + 64], rax
    mov [rdi + 72], rsp
    pushfq
    pop rax
    mov [rdi + 80], rax
    lea rax, [rip + ist1_top]
    mov [rdi + 88], rax
    mov ecx, 0x10
    mov dx, 0x80
insn:
    {insn}
"""


@pytest.mark.parametrize(("insn", "code"), [("out dx, al", 0x7B), ("cpuid", 0x72),
                                            ("rdmsr", 0x7C), ("in eax, 0x71", 0x7B)])  # fmt: skip
@pytest.mark.parametrize("ist", [0, 1])
def test_vc_frame_is_the_x86_64_exception_frame(
    machine: Machine, insn: str, code: int, ist: int
) -> None:
    program = es_program(FRAME.format(insn=insn), machine.profile.cbit, gate="vc_record", ist=ist)
    with SevDevice.open(machine) as dev:
        vm = es_guest(dev, program)
        assert run_guest(vm, 10_000).stop == "halt"
        words = guest_read(vm, RESULTS, 96)
    q = [int.from_bytes(words[i : i + 8], "little") for i in range(0, 96, 8)]
    error, rip, cs, rflags, rsp, ss, handler_rsp = q[:7]  # vc_record: frame, then its RSP
    insn_at, rsp_before, flags, ist_top = q[8:12]
    assert (error, rip, cs, rflags, rsp, ss) == (code, insn_at, 0x08, flags, rsp_before, 0x10)
    stack = ist_top if ist else rsp_before
    assert handler_rsp == (stack & ~0xF) - 48


MSR_PROTOCOL = """
    mov rdi, RESULTS
    mov ecx, 0xc0010130
    xor edx, edx
    mov eax, 0x002                   # SEV information request
    wrmsr
    vmgexit
    rdmsr
    mov [rdi], eax
    mov [rdi + 4], edx
    mov eax, 0x40000004              # CPUID request: EBX of leaf 0x8000001f
    mov edx, 0x8000001f
    wrmsr
    vmgexit
    rdmsr
    mov [rdi + 8], eax
    mov [rdi + 12], edx
    mov eax, 0x200012                # register the GHCB at 0x200000
    xor edx, edx
    wrmsr
    vmgexit
    rdmsr
    mov [rdi + 16], eax
    mov [rdi + 20], edx
    mov eax, 0x080                   # hypervisor features
    wrmsr
    vmgexit
    rdmsr
    mov [rdi + 24], eax
    mov [rdi + 28], edx
    mov eax, 0x100 | (1 << 12) | (5 << 16)
    wrmsr
    vmgexit
"""


def test_ghcb_msr_protocol_answers_through_rdmsr(machine: Machine) -> None:
    cbit = machine.profile.cbit
    with SevDevice.open(machine) as dev:
        vm = es_guest(dev, es_program(MSR_PROTOCOL, cbit))
        result = run_guest(vm, 10_000)
        words = guest_read(vm, RESULTS, 32)
        ebx = dev.txn.cpuid(0x8000_001F)[1]
        seen = vm.vcpu_view().ghcb
    info, cpuid, registered, features = (int.from_bytes(words[i : i + 8], "little")
                                         for i in range(0, 32, 8))  # fmt: skip
    assert info == 2 << 48 | 1 << 32 | cbit << 24 | 0x001
    assert cpuid == ebx << 32 | 1 << 30 | 0x005
    assert (registered, features) == (0x200013, 0x081)
    assert result.stop == "fault"
    assert result.detail == "vCPU 0: the guest terminated itself (reason set 1, code 5)"
    assert seen["msr"] == hex(0x100 | 1 << 12 | 5 << 16)  # the hypervisor sees the MSR


REGISTER_AT_0x300000 = """
    mov ecx, 0xc0010130
    xor edx, edx
    mov eax, 0x300012
    wrmsr
    vmgexit
"""


def test_a_ghcb_elsewhere_than_the_registered_page_is_refused(machine: Machine) -> None:
    main = f"""{REGISTER_AT_0x300000}
    mov dx, 0x3f8
    out dx, al
"""
    with SevDevice.open(machine) as dev:
        result = run_guest(es_guest(dev, es_program(main, machine.profile.cbit)), 10_000)
    assert "not at the page this vCPU registered (0x300000)" in result.detail


WHO_AM_I = """
    mov ecx, 0xc0010130
    mov eax, 0x40000004              # CPUID request via the MSR protocol: EBX of leaf 1
    mov edx, 1
    wrmsr
    vmgexit
    rdmsr
    shr edx, 24                      # EBX[31:24]: the APIC id
    mov rdi, RESULTS + 0x100
    mov [rdi + rdx * 8], rsp
    hlt
"""


def test_each_vcpu_runs_from_its_own_vmsa(machine: Machine) -> None:
    program = es_program(WHO_AM_I, machine.profile.cbit, ap=WHO_AM_I)
    with SevDevice.open(machine) as dev:
        vm = es_guest(dev, program, aps=2)
        assert run_guest(vm, 100_000).stop == "halt"
        stacks = guest_read(vm, RESULTS + 0x100, 24)
        views = [vm.vcpu_view(n) for n in range(3)]
        with pytest.raises(KvmError, match="no vCPU 3"):
            vm.vcpu_view(3)
    top = vm.record.memory_size
    assert [int.from_bytes(stacks[i : i + 8], "little") for i in (0, 8, 16)] == [
        top, top - 0x10000, top - 0x20000]  # fmt: skip
    for view in views:
        assert view.protected and view.registers == {}
        with pytest.raises(FormatError):
            Vmsa.unpack(view.vmsa)


def test_code_written_after_its_page_ran_stops_rather_than_skipping_the_vc(
    machine: Machine,
) -> None:
    main = """
    lea rdi, [rip + later]
    mov byte ptr [rdi], 0xee         # out dx, al: written after the page was scanned
later:
    nop
    hlt
"""
    with SevDevice.open(machine) as dev:
        result = run_guest(es_guest(dev, es_program(main, machine.profile.cbit)), 10_000)
    assert result.stop == "fault" and "OUT at rip" in result.detail
    assert "ran without its #VC" in result.detail


@pytest.mark.parametrize(
    ("code", "kind"),
    [(b"\xee", "ioio"), (b"\x66\xe5\x71", "ioio"), (b"\x66\x40\xec", "ioio"),
     (b"\x0f\xa2", "cpuid"), (b"\x48\x0f\xa2", "cpuid"), (b"\x0f\x32", "rdmsr"),
     (b"\x0f\x30", "wrmsr"), (b"\xf3\x6e", "string"), (b"\x6c", "string"),
     (b"\xf4", "hlt"), (b"\x90", None), (b"\x0f\x01\xd9", None), (b"\xb8\xec\x00\x00\x00", None)],
)  # fmt: skip
def test_decode_names_what_an_es_vcpu_intercepts(code: bytes, kind: str | None) -> None:
    assert decode(code) == kind


def test_candidates_cover_prefixes_and_a_page_that_ends_mid_instruction() -> None:
    page = bytearray(b"\x90" * 4096)
    page[10:13] = b"\x66\x48\xed"  # in eax, dx with two prefixes
    page[20:22] = b"\x0f\xa2"
    page[4094:4096] = b"\xf3\x66"  # prefixes the next page may complete
    assert candidates(bytes(page)) == [10, 11, 12, 20, 4094, 4095]


def test_string_port_io_is_refused_clearly(machine: Machine) -> None:
    main = """
    mov dx, 0x3f8
    lea rsi, [rip + main]
    mov ecx, 1
    rep outsb
"""
    with SevDevice.open(machine) as dev:
        result = run_guest(es_guest(dev, es_program(main, machine.profile.cbit)), 10_000)
    assert result.stop == "fault" and "INS/OUTS at rip" in result.detail
    assert "not modelled" in result.detail


def test_a_moved_es_guest_keeps_its_ghcb_msr_and_registration(
    machine: Machine, machine_factory: MachineFactory
) -> None:
    main = f"""{REGISTER_AT_0x300000}
    hlt
    mov dx, 0x3f8
    out dx, al
"""
    target = machine_factory(name="b")
    with SevDevice.open(machine) as dev:
        assert (
            run_guest(es_guest(dev, es_program(main, machine.profile.cbit)), 10_000).stop == "halt"
        )
    chain = chain_of(target)
    with SevDevice.open(machine) as dev:
        transport = send_vm(SevVm.get(dev, 1), chain)
    with SevDevice.open(target) as dev:
        vm = receive_vm(dev, transport)
        assert vm.vcpu_view().ghcb["msr"] == hex(0x300013)
        result = run_guest(vm, 10_000)
    assert "not at the page this vCPU registered (0x300000)" in result.detail
