"""The execution core under real enclave code: faults and AEX, the instruction budget,
illegal instructions, EPCM permissions per mapping (and the TLB flush when they change),
write-back of dirty pages, abort-page host views, and the SDK's entry checks."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hwsim._exec import PF, Cpu
from hwsim.machine import Machine
from hwsim.sgx.arch import SgxStatus
from hwsim.sgx.device import HOST_BASE
from sgxtool.errors import SgxToolError
from sgxtool.runtime import Enclave, EnclaveCallError, EnclaveCrashed
from tests.examples.build import compile_enclave, sign_image

SOURCE = r"""
#include <enclave.h>
static const char motto[4096] __attribute__((aligned(4096))) = "read only";
static char store[4096] __attribute__((aligned(4096)));
static uint64_t arg(const uint8_t *in, size_t n) {
    uint64_t v = 0;
    memcpy(&v, in, n < 8 ? n : 8);
    return v;
}

SGX_ECALL(write_rodata) { ((volatile char *)motto)[1] = 'x'; return 0; }
SGX_ECALL(read_unmapped) {
    return *(volatile char *)((char *)sgx_enclave_base() + sgx_enclave_size() - 8);
}
SGX_ECALL(spin) { for (;;) __asm__ volatile(""); }
SGX_ECALL(count) {
    volatile uint64_t n = arg(in, in_len), i = 0;
    while (i < n) i++;
    memcpy(out, (const void *)&i, 8);
    return 8;
}
SGX_ECALL(do_cpuid) {
    unsigned a = 0, b, c = 0, d;
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    return a;
}
SGX_ECALL(do_ud2) { __asm__ volatile("ud2"); return 0; }
SGX_ECALL(jump_out) { ((void (*)(void))arg(in, in_len))(); return 0; }
SGX_ECALL(divide) { volatile long zero = arg(in, in_len); return 10 / zero; }
SGX_ECALL(keep) { memcpy(store, in, in_len); return 0; }
SGX_ECALL(bad_key) {
    static sgx_keyrequest_t req;
    uint8_t key[16];
    req.keyname = 99;
    long status = sgx_getkey(&req, key);
    memcpy(out, &status, 8);
    return 8;
}
SGX_ECALL(whoami) {
    static sgx_report_t r;
    sgx_self_report(&r);
    memcpy(out, r.mrenclave, 32);
    return 32;
}
SGX_ECALL(accept_ro) {
    static sgx_secinfo_t si;
    si.flags = 0x200 | 0x20 | 1; /* PT_REG, PR, R */
    return sgx_accept(&si, store);
}
SGX_ECALL(call_host) { return sgx_ocall("echo", in, in_len, out, out_cap); }
static const char *const words[] = {"alpha", "beta"}; /* R_X86_64_RELATIVE pointers */
SGX_ECALL(word) {
    const char *w = words[arg(in, in_len) & 1];
    memcpy(out, w, strlen(w));
    return (long)strlen(w);
}
"""

CONFIG = """
[enclave]
debug = true
[memory]
heap_size = "256K"
stack_size = "32K"
threads = 2
[security]
miscselect = 1
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, vector: Callable[[str], Path]) -> Path:
    out = tmp_path_factory.mktemp("exec")
    elf = compile_enclave(SOURCE, out / "t.elf")
    return sign_image(elf, CONFIG, vector("sgx/fortanix-rust-sgx/sig1.key.pem"), out / "t.img")


@pytest.fixture
def enclave(image: Path, machine: Machine) -> Iterator[Enclave]:
    with Enclave.load(image, machine=machine, budget=2_000_000) as loaded:
        yield loaded


def crash(enclave: Enclave, name: str, data: bytes = b"") -> str:
    with pytest.raises(EnclaveCrashed) as info:
        enclave.call(name, data)
    return str(info.value)


def test_write_to_a_read_only_page_is_an_epcm_fault(enclave: Enclave) -> None:
    text = crash(enclave, "write_rodata")
    assert "#PF (error code 0x8007)" in text  # P, W, U and the SGX bit, as on hardware
    assert "EPCM denies writing" in text
    with pytest.raises(EnclaveCrashed, match="crashed earlier"):
        enclave.call("count", b"\x01")


def test_the_aex_fills_the_ssa_frame(enclave: Enclave) -> None:
    crash(enclave, "write_rodata")
    cpu = enclave.device._cpu
    assert cpu is not None
    thread = cpu._threads[enclave.tcs[0]]
    assert thread.cssa == 1
    area = thread.tcs.ossa + 4096 - 184  # enclave offset of SSA[0]'s GPR area
    gpr = enclave.device.debug_read(area, 184)  # a debug enclave: EDBGRD
    rip, exitinfo = struct.unpack_from("<Q", gpr, 136)[0], struct.unpack_from("<I", gpr, 160)[0]
    assert enclave.base < rip < enclave.base + 0x2000
    assert exitinfo == 1 << 31 | 3 << 8 | PF  # valid, hardware exception, #PF
    maddr, errcd = struct.unpack("<QI", enclave.device.debug_read(area - 16, 12))
    assert (maddr & 0xFFF, errcd) == (0, 0x8007)


def test_unmapped_enclave_page(enclave: Enclave) -> None:
    assert "#PF (error code 0x4)" in crash(enclave, "read_unmapped")


def test_runaway_enclave_is_stopped_then_resumable(enclave: Enclave) -> None:
    text = crash(enclave, "spin")
    assert "ran 2000000 instructions (its budget for one call) without finishing" in text
    assert "endless loop" in text


def test_eresume_continues_after_the_budget_aex(image: Path, machine: Machine) -> None:
    with Enclave.load(image, machine=machine) as enclave:
        device, tcs = enclave.device, enclave.tcs[0]
        src = HOST_BASE + 0x11000
        device.host_write(src, struct.pack("<Q", 300_000))
        regs = dict(rdi=enclave.ecalls.index("count"), rsi=src, rdx=8, r8=src + 0x1000, r9=64,
                    r10=HOST_BASE + 0x1000, r11=0x10000)  # fmt: skip
        ex = device.enter(tcs, regs, 100_000)
        resumes = 0
        while ex.kind == "aex":
            assert ex.budget_exhausted and ex.fault is None
            assert ex.instructions == 100_000
            assert ex.regs["rax"] != 3  # the SSA saved the real state, not the synthetic one
            resumes += 1
            ex = device.enter(tcs, {}, 100_000, resume=True)
        assert resumes >= 3
        assert (ex.regs["rdi"], ex.regs["rsi"]) == (0, 8)
        assert device.host_read(src + 0x1000, 8) == struct.pack("<Q", 300_000)


def test_a_deadline_is_an_aex_and_the_thread_resumes(image: Path, machine: Machine) -> None:
    """The watchdog stops a run at its deadline like a timer interrupt: an AEX that saved
    the real state, after which ERESUME finishes the work with the right result."""
    with Enclave.load(image, machine=machine) as enclave:
        device, tcs = enclave.device, enclave.tcs[0]
        src = HOST_BASE + 0x11000
        device.host_write(src, struct.pack("<Q", 10_000_000))
        regs = dict(rdi=enclave.ecalls.index("count"), rsi=src, rdx=8, r8=src + 0x1000, r9=64,
                    r10=HOST_BASE + 0x1000, r11=0x10000)  # fmt: skip
        ex = device.enter(tcs, regs, deadline=time.monotonic() + 0.01)
        assert ex.kind == "aex" and ex.timed_out and not ex.budget_exhausted
        assert ex.instructions == 0  # nothing counted without a budget
        while ex.kind == "aex":
            ex = device.enter(tcs, {}, resume=True)
        assert (ex.regs["rdi"], ex.regs["rsi"]) == (0, 8)
        assert device.host_read(src + 0x1000, 8) == struct.pack("<Q", 10_000_000)


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("do_cpuid", b"", "#UD (error code 0x0)"),
        ("do_ud2", b"", "#UD (error code 0x0)"),
        ("divide", b"\0", "#DE"),
        ("jump_out", struct.pack("<Q", HOST_BASE + 0x100), "#GP (error code 0x0)"),
    ],
)
def test_illegal_instructions_and_exceptions(
    enclave: Enclave, name: str, data: bytes, expected: str
) -> None:
    text = crash(enclave, name, data)
    assert expected in text
    if name == "jump_out":
        assert "code fetch outside ELRANGE" in text


def test_the_host_sees_host_registers_after_eexit_and_aex(enclave: Enclave) -> None:
    """EEXIT and AEX hand the host its FS/GS bases back (and the AEX its synthetic
    registers), whenever the host looks: the core writes them to the CPU lazily."""
    device, names = enclave.device, ("fs_base", "gs_base", "rax", "r8", "r15", "rip", "rcx")
    before = device.host_regs("fs_base", "gs_base")
    enclave.call("count", struct.pack("<Q", 3))
    after = device.host_regs(*names)
    assert (after["fs_base"], after["gs_base"]) == (before["fs_base"], before["gs_base"])
    assert after["rax"] == 4  # the EEXIT leaf
    crash(enclave, "divide", b"\0")
    aex = device.host_regs(*names)
    assert (aex["fs_base"], aex["gs_base"]) == (before["fs_base"], before["gs_base"])
    assert aex["rax"] == 3 and aex["r8"] == aex["r15"] == 0  # ERESUME leaf, cleared GPRs
    assert aex["rip"] == aex["rcx"]  # the AEP


def test_dirty_pages_reach_the_epc_encrypted(enclave: Enclave) -> None:
    secret = b"only inside the package" * 8
    enclave.call("keep", secret)
    epc, hw = enclave.device.epc, enclave.device.enclave
    holders = [i for i in hw.pages.values() if secret in epc.read(i)]
    assert len(holders) == 1  # written back at EEXIT: the EPC is current
    assert secret not in epc.read_ciphertext(holders[0])
    for linear, index in hw.pages.items():
        if index == holders[0]:
            assert enclave.device.host_read(linear, 4096) == b"\xff" * 4096


def test_stores_after_the_tlb_retired_clean_pages_reach_the_epc(
    enclave: Enclave, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exits that keep finding the written pages clean end in a TLB flush, after which
    only pages stored to again are write-back candidates (hwsim.sgx._pagecache): a store
    made after that flush must still reach the EPC at the next exit."""
    flushes = []
    flush = Cpu.flush_tlb

    def counted(cpu: Cpu) -> None:
        flushes.append(cpu)
        flush(cpu)

    monkeypatch.setattr(Cpu, "flush_tlb", counted)
    for _ in range(80):
        enclave.call("keep", b"same every call")
    assert flushes  # the clean candidates were retired
    secret = b"written after the flush" * 8
    enclave.call("keep", secret)
    epc, hw = enclave.device.epc, enclave.device.enclave
    assert [i for i in hw.pages.values() if secret in epc.read(i)]


def test_enclu_status_and_self_report(enclave: Enclave) -> None:
    status = struct.unpack("<q", enclave.call("bad_key"))[0]
    assert status == SgxStatus.INVALID_KEYNAME  # EGETKEY's RAX (with ZF set)
    assert enclave.call("whoami") == enclave.mrenclave


def test_restricted_page_faults_after_eaccept(enclave: Enclave) -> None:
    """Linux selftest epcm_permissions: EMODPR to R, EACCEPT, then a write is #PF 0x8007.
    The page was writable in the TLB before, so this also proves the TLB flush."""
    enclave.call("keep", b"before")
    hw = enclave.device.enclave
    store = next(lin for lin, i in hw.pages.items() if hw.epc.read(i).startswith(b"before"))
    enclave.device.restrict_permissions(store - enclave.base, 4096, 1)
    assert enclave.call("accept_ro") == b""  # EACCEPT returned 0
    assert "#PF (error code 0x8007)" in crash(enclave, "keep", b"after")


def test_entry_stub_checks(enclave: Enclave) -> None:
    scratch = {"r10": HOST_BASE + 0x1000, "r11": 0x10000}
    bad_index = enclave.enter(dict(rdi=len(enclave.ecalls), rsi=0, rdx=0, r8=0, r9=0, **scratch))
    assert bad_index.regs["rsi"] == 2**64 - 1  # SGX_ERR_BAD_ECALL
    inside = enclave.enter(
        dict(rdi=enclave.ecalls.index("keep"), rsi=enclave.base, rdx=64, r8=0, r9=0, **scratch)
    )
    assert inside.regs["rsi"] == 2**64 - 2  # SGX_ERR_BAD_BUFFER: input inside the enclave
    forged = enclave.enter(dict(rdi=2**64 - 1, rsi=0, **scratch))
    assert forged.regs["rsi"] == 2**64 - 5  # an OCALL return with no OCALL pending


def test_ocalls_and_nested_entry(enclave: Enclave) -> None:
    seen: list[int] = []

    def echo(data: bytes) -> bytes:
        nested = enclave.enter({"rdi": 0, "r10": HOST_BASE + 0x1000, "r11": 0x10000})
        seen.append(nested.regs["rsi"])
        return data[::-1]

    enclave.ocalls["echo"] = echo
    assert enclave.call("call_host", b"abc") == b"cba"
    assert seen == [2**64 - 5]  # a new ECALL while an OCALL is pending is refused
    del enclave.ocalls["echo"]
    with pytest.raises(EnclaveCallError, match="OCALL failed"):
        enclave.call("call_host", b"abc")


def test_an_ocall_handler_may_call_back_in(enclave: Enclave) -> None:
    enclave.ocalls["echo"] = lambda data: enclave.call("whoami") + data
    assert enclave.call("call_host", b"!") == enclave.mrenclave + b"!"  # on the second TCS
    enclave.ocalls["echo"] = lambda data: enclave.call("call_host", data)
    with pytest.raises(SgxToolError, match="threads are busy"):
        enclave.call("call_host", b"deeper")  # the third level finds no free thread
    enclave.ocalls["echo"] = lambda data: data
    assert enclave.call("call_host", b"ok") == b"ok"  # both threads unwound cleanly


def test_sgxtool_run_reports_a_runaway_in_one_line(
    image: Path, machine: Machine, capsys: pytest.CaptureFixture[str]
) -> None:
    from sgxtool._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(image), "spin", "--budget", "5000", "--machine", str(machine.path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.startswith("sgxtool: error: the enclave ran 5000 instructions (its budget")
    assert len(err.strip().splitlines()) == 1


def test_host_code_sees_the_abort_page(enclave: Enclave) -> None:
    """Real x86 host code outside enclave mode: loads from ELRANGE read all ones, stores
    are dropped, even right after the enclave ran with those pages in its TLB."""
    enclave.call("keep", b"enclave data")
    hw = enclave.device.enclave
    store = next(lin for lin, i in hw.pages.items() if hw.epc.read(i).startswith(b"encl"))
    code = bytes.fromhex("488b0348890b0f0b")  # mov rax,[rbx]; mov [rbx],rcx; ud2
    enclave.device.host_write(HOST_BASE + 0x800, code)
    stop = enclave.device.run_host(HOST_BASE + 0x800, {"rbx": store, "rcx": 0x41414141}, 100)
    assert stop.fault is not None and stop.fault.name == "#UD"  # the ud2 at the end
    assert enclave.device.host_regs("rax")["rax"] == 2**64 - 1
    assert hw.epc.read(hw.pages[store]).startswith(b"enclave data")
    assert enclave.call("whoami") == enclave.mrenclave  # and the enclave still runs


def test_relocations_are_applied_on_first_entry(image: Path, enclave: Enclave) -> None:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection

    with image.open("rb") as f:
        rela = ELFFile(f).get_section_by_name(".rela.dyn")
        assert isinstance(rela, RelocationSection)
        assert rela.num_relocations() >= 2  # the pages are measured unrelocated
    assert enclave.call("word", b"\1") == b"beta"
    assert enclave.call("word", b"\0") == b"alpha"
