"""The runtime through the device only: host views that never reach the CPU's page cache,
code rewritten by a debugger or the host, and a budget and timeout for the whole call."""

from __future__ import annotations

import dataclasses
import io
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from hwsim.machine import Machine
from hwsim.sgx.device import HOST_BASE, HOST_SIZE
from hwsim.sgx.errors import SgxFault
from sgxtool.runtime import Enclave, EnclaveCrashed
from sgxtool.sgxs import read_sgxs
from tests.examples.build import compile_enclave, sign_image
from tests.examples.conftest import Built, signed_example
from tests.sgxtool.test_runtime_fortanix import signed

__all__ = ["signed_example"]  # the fixture, shared with the example tests

SOURCE = r"""
#include <enclave.h>
__attribute__((noinline)) long twice(long v) { return 2 * v + 1; }
SGX_ECALL(calc) { volatile long v = (long)in_len; long r = twice(v); memcpy(out, &r, 8); return 8; }
SGX_ECALL(chatter) { for (;;) sgx_print("x"); return 0; }
SGX_ECALL(spin) { for (;;) __asm__ volatile(""); return 0; }
SGX_ECALL(say) { sgx_print("hi"); return 0; }
"""
CONFIG = '[enclave]\ndebug = true\n[memory]\nheap_size = "256K"\n'
CACHE_WINDOW = 0x40_0000_0000  # where the simulated CPU keeps plaintext pages


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, vector: Callable[[str], Path]) -> Path:
    out = tmp_path_factory.mktemp("door")
    elf = compile_enclave(SOURCE, out / "d.elf")
    return sign_image(elf, CONFIG, vector("sgx/fortanix-rust-sgx/sig1.key.pem"), out / "d.img")


@pytest.fixture
def enclave(image: Path, machine: Machine) -> Iterator[Enclave]:
    with Enclave.load(image, machine=machine, console=io.StringIO()) as loaded:
        yield loaded


def symbol(image: Path, name: str) -> int:
    with image.open("rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        found = symtab.get_symbol_by_name(name)
        assert found, f"{image} has no symbol {name}"
        return int(found[0]["st_value"])


# -- issue 10 item 2: the page cache is inside the CPU package ------------------------------
def test_no_host_path_reaches_the_page_cache(signed_example: Built, machine: Machine) -> None:
    """The signing oracle's seed is plaintext in the CPU's page cache while it runs; a host
    load there must fault like host code does, not return the seed."""
    with Enclave.load(signed_example("signing-oracle", "oracle"), machine=machine) as oracle:
        oracle.call("generate")
        for slot in range(8):  # the first slots: every page the oracle touched
            with pytest.raises(SgxFault, match="no memory"):
                oracle.device.host_read(CACHE_WINDOW + slot * 4096, 4096)
            with pytest.raises(SgxFault, match="no memory"):
                oracle.device.host_write(CACHE_WINDOW + slot * 4096, b"\0" * 8)
        for addr in (0, HOST_BASE - 8, HOST_BASE + HOST_SIZE, 1 << 63):
            with pytest.raises(SgxFault):
                oracle.device.host_read(addr, 16)
        assert oracle.call("public_key")  # and the enclave still runs


def test_host_code_cannot_load_from_the_page_cache(enclave: Enclave) -> None:
    enclave.call("calc", b"abc")
    code = bytes.fromhex("488b030f0b")  # mov rax,[rbx]; ud2
    enclave.device.host_write(HOST_BASE + 0x800, code)
    stop = enclave.device.run_host(HOST_BASE + 0x800, {"rbx": CACHE_WINDOW}, 100)
    assert stop.fault is not None and stop.fault.name == "#PF"


# -- issue 10 item 4: translated code is dropped when the code changes ----------------------
def test_a_breakpoint_written_with_edbgwr_traps_on_the_next_call(
    image: Path, enclave: Enclave
) -> None:
    assert enclave.call("calc", b"abc") == struct.pack("<q", 7)  # twice() is translated now
    at = symbol(image, "twice")
    original = enclave.device.debug_read(at, 1)
    enclave.device.debug_write(at, b"\xcc")  # int3, as a debugger sets a breakpoint
    assert enclave.device.debug_read(at, 8)[:1] == b"\xcc"
    # int3 is a trap: the SSA holds the address after it (SDM vol. 3A 6.5)
    with pytest.raises(EnclaveCrashed, match=rf"#BP .* at enclave offset {at + 1:#x}"):
        enclave.call("calc", b"abc")
    assert original != b"\xcc"


def test_rewritten_host_code_runs_as_rewritten(enclave: Enclave) -> None:
    device, at = enclave.device, HOST_BASE + 0x800
    device.host_write(at, bytes.fromhex("b801000000") + b"\x0f\x0b")  # mov eax,1; ud2
    device.run_host(at, {}, 10)
    assert device.host_regs("rax")["rax"] == 1
    device.host_write(at + 1, b"\x02")  # mov eax,2
    device.run_host(at, {}, 10)
    assert device.host_regs("rax")["rax"] == 2


# -- issue 10 item 11: the budget and timeout bound the whole call ---------------------------
def test_a_budget_stops_an_enclave_that_loops_through_ocalls(image: Path, machine: Machine) -> None:
    sink = io.StringIO()
    with Enclave.load(image, machine=machine, console=sink, budget=1000, timeout=None) as e:
        # A small output buffer: the SDK zeroes it on every entry, which the budget counts.
        with pytest.raises(EnclaveCrashed, match=r"ran 1000 instructions \(its budget"):
            e.call("chatter", out_size=64)
        assert 0 < len(sink.getvalue()) < 1000  # each round trip ran at least one instruction
        with pytest.raises(EnclaveCrashed, match="crashed earlier"):
            e.call("calc")


def test_a_budget_charges_at_least_what_ran(image: Path, machine: Machine) -> None:
    """Slices charge an entry at most twice what it ran plus the first slice: a call of a
    few thousand instructions with two entries fits a budget of a few slices."""
    with Enclave.load(image, machine=machine, console=io.StringIO(), budget=40_000) as e:
        assert e.call("say") == b""
        assert e.call("calc", b"ab") == struct.pack("<q", 5)


def test_a_timeout_stops_a_call_looping_outside_the_enclave(image: Path, machine: Machine) -> None:
    with Enclave.load(image, machine=machine, console=io.StringIO(), timeout=0.3) as e:
        started = time.monotonic()
        with pytest.raises(EnclaveCrashed, match=r"ran out of time: .* more than 0.3 s"):
            e.call("chatter")
        assert time.monotonic() - started < 30  # stopped, not left to run


def test_a_timeout_stops_a_loop_inside_the_enclave(image: Path, machine: Machine) -> None:
    with (
        Enclave.load(image, machine=machine, timeout=0.2) as e,
        pytest.raises(EnclaveCrashed, match=r"ran out of time.*stopped at enclave offset"),
    ):
        e.call("spin")


def test_sgxtool_run_budget_stops_an_ocall_loop(
    image: Path, machine: Machine, capsys: pytest.CaptureFixture[str]
) -> None:
    from sgxtool._cli import main

    argv = ["run", str(image), "chatter", "--budget", "1000", "--machine", str(machine.path)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "sgxtool: error: the enclave ran 1000 instructions (its budget" in err


def test_sgxtool_run_timeout(
    image: Path, machine: Machine, capsys: pytest.CaptureFixture[str]
) -> None:
    from sgxtool._cli import main

    argv = ["run", str(image), "spin", "--timeout", "0.2", "--machine", str(machine.path)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    assert "ran out of time" in capsys.readouterr().err


# -- issue 9: partial chunk masks go through the device --------------------------------------
def test_partly_measured_pages_load_through_the_device(
    vector: Callable[[str], Path], machine: Machine
) -> None:
    """EINIT accepts the enclave only if the device EEXTENDed exactly the masked chunks."""
    stream = read_sgxs(vector("sgx/fortanix-rust-sgx/report.sgxs"))
    last = stream.regions[-1]
    odd = dataclasses.replace(last, mrmask=0x0F0F)
    layout = dataclasses.replace(stream, regions=(*stream.regions[:-1], odd))
    key = vector("sgx/fortanix-rust-sgx/sig1.key.pem")
    with Enclave.from_layout(layout, signed(layout, key), machine=machine) as loaded:
        assert loaded.mrenclave == loaded.device.identity.mrenclave
