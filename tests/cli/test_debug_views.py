"""``sgxtool debug`` (breakpoints, writes, scripts) and ``sgxtool run --show-memory`` /
``--epc-stats``, through the real entry point."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hwsim.machine import Machine
from tests.cli.conftest import Runner
from tests.sgxtool.test_runtime_door import image, symbol

__all__ = ["image"]  # the fixture: a debug enclave with a noinline twice()


def test_a_breakpoint_stops_the_next_call_there(
    sgxtool: Runner, image: Path, machine: Machine
) -> None:
    m = ("--machine", str(machine.path))
    at = symbol(image, "twice")
    run = sgxtool("debug", str(image), "call calc --in-text abc", "break twice",
                  "call calc --in-text abc", "read twice 1", "--json", *m)  # fmt: skip
    assert run.code == 0, run.err
    first, brk, stopped, read = json.loads(run.out)
    assert bytes.fromhex(first["hex"]) == struct.pack("<q", 7)
    assert brk == {"command": "break twice", "kind": "break", "address": f"{at:#x}",
                   "detail": "int3 written with EDBGWR"}  # fmt: skip
    assert stopped["kind"] == "stopped" and stopped["address"] == f"{at:#x}"
    assert read["hex"] != "cc"  # the debugger shows the original byte under its int3
    text = sgxtool("debug", str(image), "break twice", "call calc", *m).out
    assert f"call calc: stopped at breakpoint {at:#x}" in text


def test_continue_resumes_the_stopped_call_with_its_right_result(
    sgxtool: Runner, image: Path, machine: Machine
) -> None:
    """At twice(3): the saved RDI is its argument; continue puts the byte and RIP back
    (EDBGWR), ERESUMEs over that instruction, writes the int3 again and runs on: calc
    returns 2 * 3 + 1 as if never stopped, and the next call stops there again."""
    m = ("--machine", str(machine.path))
    at = symbol(image, "twice")
    run = sgxtool("debug", str(image), "break twice", "call calc --in-text abc", "regs",
                  "read twice 1", "continue", "call calc --in-text abcd", "step", "step",
                  "continue", "--json", *m)  # fmt: skip
    assert run.code == 0, run.err
    _brk, stopped, regs, read, cont, again, step1, step2, last = json.loads(run.out)
    assert stopped["kind"] == "stopped" and stopped["address"] == f"{at:#x}"
    rip = int(regs["registers"]["rip"], 16)  # linear: the base plus the offset after int3
    assert regs["registers"]["rdi"] == "0x3" and (rip - (at + 1)) % 0x1000 == 0
    assert read["hex"] != "cc"
    assert cont["kind"] == "call" and bytes.fromhex(cont["hex"]) == struct.pack("<q", 7)
    assert again["kind"] == "stopped" and again["address"] == f"{at:#x}"  # re-armed
    first, second = int(step1["address"], 16), int(step2["address"], 16)
    assert step1["detail"] == f"stepped to {first:#x}" and at < first < at + 16
    assert second not in (at, first)  # twice() is two instructions: the second returns
    assert bytes.fromhex(last["hex"]) == struct.pack("<q", 9)
    text = sgxtool("debug", str(image), "break twice", "call calc", "regs", "continue", *m).out
    lines = text.splitlines()
    assert lines[-1] == "continue: " + struct.pack("<q", 1).hex()
    assert "  rdi 0x0" in lines
    alone = sgxtool("debug", str(image), "continue", *m)
    assert alone.code == 1 and "no call is stopped" in alone.one_error_line()
    busy = sgxtool("debug", str(image), "break twice", "call calc", "call calc", *m)
    assert busy.code == 1 and "stopped at a breakpoint: resume it first" in busy.one_error_line()


def test_write_then_read_and_a_script(
    sgxtool: Runner, image: Path, machine: Machine, tmp_path: Path
) -> None:
    m = ("--machine", str(machine.path))
    script = tmp_path / "dbg.txt"
    script.write_text("# patch twice() to return 41: mov eax, 41; ret\n"
                      "write twice b829000000c3\nread twice 6\ncall calc\n")  # fmt: skip
    run = sgxtool("debug", str(image), "--script", str(script), *m)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert (
        lines[0]
        == f"write twice b829000000c3: wrote 6 bytes with EDBGWR at {symbol(image, 'twice'):#x}"
    )
    assert "b8 29 00 00 00 c3" in lines[2]
    assert lines[-1] == "call calc: " + struct.pack("<q", 41).hex()
    assert all(line == line.rstrip() for line in lines)
    bad = sgxtool("debug", str(image), "poke 1 2", *m)
    assert bad.code == 2 and "unknown command 'poke'" in bad.one_error_line()
    assert sgxtool("debug", str(image), *m).code == 2


def test_run_shows_the_dimm_and_the_host_view_never_the_plaintext(
    sgxtool: Runner, image: Path, machine: Machine
) -> None:
    m = ("--machine", str(machine.path))
    at = symbol(image, "twice")
    run = sgxtool("run", str(image), "calc", "--show-memory", f"{at:#x}:16", "--epc-stats",
                  "--json", *m)  # fmt: skip
    assert run.code == 0, run.err
    doc = json.loads(run.out)
    memory, stats = doc["memory"], doc["epc_stats"]
    assert memory["host_hex"] == "ff" * 16
    from sgxtool.debug import DebugSession

    with DebugSession.open(image, machine=machine) as dbg:
        plain = dbg.read(at, 16)
    assert bytes.fromhex(memory["dimm_hex"]) != plain and len(memory["dimm_hex"]) == 32
    assert stats["added"] > 0 and stats["evicted"] == stats["reloaded"] == 0
    text = sgxtool("run", str(image), "calc", "--show-memory", f"{at:#x}:16", "--epc-stats",
                   *m).out  # fmt: skip
    assert "DIMM (ciphertext):" in text and "host (abort page):" in text
    assert "ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff" in text
    assert text.splitlines()[-1].startswith("EPC pages: ")
    outside = sgxtool("run", str(image), "calc", "--show-memory", "0x7fffffffffff:8", *m)
    assert outside.code == 2 and "not inside the enclave" in outside.one_error_line()
