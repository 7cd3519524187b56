"""Enclave execution speed: an empty ECALL round trip and a tight loop inside an enclave.

Baseline: plain Unicorn in this process running the very same machine code (the enclave's
pages mapped at the same addresses with RWX, the same registers and GS base), with no
virtual TLB, no EPC, no write-back and an ENCLU hook that only stops. Goals (issue 17): an
empty ECALL round trip (the device's enter, EENTER to EEXIT) at most 1.2x bare Unicorn, the
loop at least 0.6x bare Unicorn's rate with the default limits (the call's timeout, no
instruction count). The loop under an instruction budget (Unicorn's exact count, in
slices) is shown too. Min and median over interleaved rounds of the calling thread's CPU
time (Unicorn runs in that thread; CPU time is what other load on a shared machine disturbs
least); the load average is printed.

    PYTHONPATH=. python bench/bench_ecall.py
"""

from __future__ import annotations

import os
import statistics
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _enclave import signed_image  # noqa: E402
from _timing import cpu_rounds, figure  # noqa: E402

from hwsim.machine import Machine  # noqa: E402
from hwsim.sgx.device import HOST_BASE  # noqa: E402
from sgxtool.layout import EnclaveLayout  # noqa: E402
from sgxtool.runtime import Enclave  # noqa: E402

SOURCE = r"""
#include <enclave.h>
SGX_ECALL(empty) { (void)in; (void)in_len; (void)out; (void)out_cap; return 0; }
SGX_ECALL(spin) {
    uint64_t n = 0;
    memcpy(&n, in, in_len < 8 ? in_len : 8);
    __asm__ volatile("1: dec %0; jnz 1b" : "+r"(n));  /* 2 instructions per iteration */
    (void)out; (void)out_cap;
    return 0;
}
"""
CONFIG = '[enclave]\ndebug = true\n[memory]\nheap_size = "256K"\n'
LOOP = 50_000_000
ROUNDS = 2_000
PAIRS = 25  # interleaved rounds of each figure (7 let one slow round decide the min)
SCRATCH = {"r10": HOST_BASE + 0x1000, "r11": 0x10000}
OUT = 64  # output buffer of every call: the entry stub zeroes that much enclave heap


class PlainUnicorn:
    """The enclave's pages in a bare Unicorn: what the same code costs with nothing else."""

    def __init__(self, enclave: Enclave) -> None:
        import importlib

        from unicorn import UC_ARCH_X86, UC_HOOK_INSN_INVALID, UC_MODE_64
        from unicorn.x86_const import UC_X86_REG_GS_BASE

        layout: EnclaveLayout = enclave.layout
        self.base = enclave.base
        uc_class: Any = importlib.import_module("unicorn").Uc  # the binding is untyped
        self.uc: Any = uc_class(UC_ARCH_X86, UC_MODE_64)
        self.uc.mem_map(HOST_BASE, 16 << 20)
        with layout.open_source() as fd:
            for region in layout.regions:
                at = self.base + region.offset
                self.uc.mem_map(at, region.pages * 4096)
                self.uc.mem_write(at, region.read_pages(fd, 0, region.pages))
        thread = layout.threads[0]
        self.uc.reg_write(UC_X86_REG_GS_BASE, self.base + thread.data)
        self.entry = self.base + layout.entry
        self.uc.hook_add(UC_HOOK_INSN_INVALID, self._stop)

    @staticmethod
    def _stop(uc: Any, _data: object) -> bool:
        uc.emu_stop()
        return True

    def call(self, index: int, src: int, length: int) -> None:
        from unicorn.x86_const import (
            UC_X86_REG_R8,
            UC_X86_REG_R9,
            UC_X86_REG_R10,
            UC_X86_REG_R11,
            UC_X86_REG_RAX,
            UC_X86_REG_RDI,
            UC_X86_REG_RDX,
            UC_X86_REG_RSI,
        )

        regs = [(UC_X86_REG_RAX, 0), (UC_X86_REG_RDI, index), (UC_X86_REG_RSI, src),
                (UC_X86_REG_RDX, length), (UC_X86_REG_R8, src + 0x1000), (UC_X86_REG_R9, OUT),
                (UC_X86_REG_R10, SCRATCH["r10"]), (UC_X86_REG_R11, SCRATCH["r11"])]  # fmt: skip
        self.uc.reg_write_batch(regs)
        self.uc.emu_start(self.entry, 0)


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.2f}; min / median of {PAIRS} interleaved rounds")
    with tempfile.TemporaryDirectory() as tmp:
        image = signed_image(Path(tmp), "b", SOURCE, CONFIG)
        machine = Machine.init(Path(tmp) / "machine", "sim")
        with Enclave.load(image, machine=machine) as enclave:
            plain = PlainUnicorn(enclave)
            empty_ecall(enclave, plain)
            bare = loop(enclave, plain)
        with Enclave.load(image, machine=machine, budget=4 * LOOP) as counted:
            budgeted_loop(counted, bare)
        machine.close()


def stat(values: list[float], scale: float) -> str:
    return f"{min(values) * scale:.1f} / {statistics.median(values) * scale:.1f}"


def empty_ecall(enclave: Enclave, plain: PlainUnicorn) -> None:
    empty = enclave.ecalls.index("empty")
    src = HOST_BASE + 0x11000
    regs = dict(rdi=empty, rsi=src, rdx=0, r8=src + 0x1000, r9=OUT, **SCRATCH)
    tcs = enclave.tcs[0]

    def enter_rounds() -> None:
        for _ in range(ROUNDS):
            enclave.device.enter(tcs, regs)

    def api_rounds() -> None:
        for _ in range(ROUNDS):
            enclave.call("empty", out_size=OUT)

    def plain_rounds() -> None:
        for _ in range(ROUNDS):
            plain.call(empty, src, 0)

    enter_rounds()  # warm: translate the code, fill the page cache
    plain_rounds()
    t_enter, t_api, t_plain = cpu_rounds(PAIRS, enter_rounds, api_rounds, plain_rounds)
    us, base = 1e6 / ROUNDS, min(t_plain)
    print(f"empty ECALL, device.enter: {stat(t_enter, us)} us  "
          f"-> {min(t_enter) / base:.2f}x bare (goal <= 1.2x)")  # fmt: skip
    print(f"empty ECALL, Enclave.call: {stat(t_api, us)} us  "
          f"-> {min(t_api) / base:.2f}x bare (goal <= 1.2x)")  # fmt: skip
    print(f"bare Unicorn, same code:   {stat(t_plain, us)} us")
    bare = f"bare Unicorn {stat(t_plain, us)} us"
    figure("empty ECALL, device.enter (min / median)", f"{stat(t_enter, us)} us", bare,
           min(t_enter) / base, "<= 1.2x")  # fmt: skip
    figure("empty ECALL, Enclave.call", f"{stat(t_api, us)} us", bare, min(t_api) / base,
           "<= 1.2x")  # fmt: skip


def loop(enclave: Enclave, plain: PlainUnicorn) -> float:
    """The loop's rate in the enclave and in bare Unicorn; bare Unicorn's, in M instr/s."""
    src = HOST_BASE + 0x11000
    plain.uc.mem_write(src, struct.pack("<Q", LOOP))
    spin = enclave.ecalls.index("spin")
    t_loop, t_plain = cpu_rounds(
        PAIRS,
        lambda: enclave.call("spin", struct.pack("<Q", LOOP)),
        lambda: plain.call(spin, src, 8),
    )
    rate, bare = 2 * LOOP / min(t_loop) / 1e6, 2 * LOOP / min(t_plain) / 1e6
    print(f"loop in the enclave:       {rate:.0f} M instr/s  -> {rate / bare:.2f}x bare "
          "(goal >= 0.6x)")  # fmt: skip
    print(f"bare Unicorn, same loop:   {bare:.0f} M instr/s")
    figure("enclave loop, instructions/s", f"{rate:.0f} M/s", f"bare Unicorn {bare:.0f} M/s",
           rate / bare, ">= 0.6x")  # fmt: skip
    return bare


def budgeted_loop(enclave: Enclave, bare: float) -> None:
    t_loop = cpu_rounds(PAIRS, lambda: enclave.call("spin", struct.pack("<Q", LOOP)))[0]
    rate = 2 * LOOP / min(t_loop) / 1e6
    print(f"loop with a budget:        {rate:.0f} M instr/s  -> {rate / bare:.2f}x bare")
    figure("enclave loop with --budget", f"{rate:.0f} M/s", f"bare Unicorn {bare:.0f} M/s",
           rate / bare)  # fmt: skip


if __name__ == "__main__":
    main()
