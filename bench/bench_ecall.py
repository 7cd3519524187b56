"""Enclave execution speed: an empty ECALL round trip and a tight loop inside an enclave.

Baseline: plain Unicorn in this process running the very same machine code (the enclave's
pages mapped at the same addresses with RWX, the same registers and GS base), with no
virtual TLB, no EPC, no write-back and an ENCLU hook that only stops. Goals (issue 5):
an empty ECALL round trip (EENTER to EEXIT) of at most 50 us, a loop at 50 M instr/s or more.

    PYTHONPATH=. python bench/bench_ecall.py
"""

from __future__ import annotations

import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _timing import best_of  # noqa: E402

from hwsim.machine import Machine  # noqa: E402
from hwsim.sgx.run import HOST_BASE  # noqa: E402
from sgxtool import sdkinfo  # noqa: E402
from sgxtool.build import Target, sign_enclave  # noqa: E402
from sgxtool.config import parse_config  # noqa: E402
from sgxtool.keys import generate_key  # noqa: E402
from sgxtool.layout import EnclaveLayout  # noqa: E402
from sgxtool.runtime import Enclave  # noqa: E402
from sgxtool.sign import KeySigner  # noqa: E402

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
LOOP = 100_000_000
ROUNDS = 20_000
SCRATCH = {"r10": HOST_BASE + 0x1000, "r11": 0x10000}


def build(tmp: Path) -> Path:
    (tmp / "b.c").write_text(SOURCE)
    elf = tmp / "b.elf"
    cmd = ["cc", *sdkinfo.cflags(), "-O2", str(tmp / "b.c"), *sdkinfo.ldflags(), "-o", str(elf)]
    subprocess.run(cmd, check=True)
    image = tmp / "b.img"
    signer = KeySigner(generate_key())
    sign_enclave(Target(parse_config(CONFIG), elf), signer, 0x20250101, out=image)
    return image


class PlainUnicorn:
    """The enclave's pages in a bare Unicorn: what the same code costs with nothing else."""

    def __init__(self, enclave: Enclave) -> None:
        from unicorn import UC_ARCH_X86, UC_HOOK_INSN_INVALID, UC_MODE_64
        from unicorn.x86_const import UC_X86_REG_GS_BASE

        from hwsim.exec import Uc

        layout: EnclaveLayout = enclave.layout
        self.base = enclave.base
        self.uc: Any = Uc(UC_ARCH_X86, UC_MODE_64)
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
                (UC_X86_REG_RDX, length), (UC_X86_REG_R8, src + 0x1000), (UC_X86_REG_R9, 64),
                (UC_X86_REG_R10, SCRATCH["r10"]), (UC_X86_REG_R11, SCRATCH["r11"])]  # fmt: skip
        self.uc.reg_write_batch(regs)
        self.uc.emu_start(self.entry, 0)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image = build(Path(tmp))
        machine = Machine.init(Path(tmp) / "machine", "sim")
        with Enclave.load(image, machine=machine, budget=4 * LOOP) as enclave:
            report(enclave)
        machine.close()


def report(enclave: Enclave) -> None:
    plain = PlainUnicorn(enclave)
    empty, spin = enclave.ecalls.index("empty"), enclave.ecalls.index("spin")
    src = HOST_BASE + 0x11000
    regs = dict(rdi=empty, rsi=src, rdx=0, r8=src + 0x1000, r9=64, **SCRATCH)
    tcs = enclave.tcs[0]

    def enclave_rounds() -> None:
        for _ in range(ROUNDS):
            enclave.cpu.eenter(tcs, regs, enclave.budget)

    def api_rounds() -> None:
        for _ in range(ROUNDS):
            enclave.call("empty")

    def plain_rounds() -> None:
        for _ in range(ROUNDS):
            plain.call(empty, src, 0)

    enclave_rounds()  # warm: translate the code, fill the page cache
    plain_rounds()
    t_enc, t_api, t_plain = (
        best_of(3, enclave_rounds),
        best_of(3, api_rounds),
        best_of(3, plain_rounds),
    )
    us = 1e6 / ROUNDS
    print(f"empty ECALL, EENTER..EEXIT: {t_enc * us:.1f} us  (goal <= 50 us)")
    print(f"empty ECALL, Enclave.call:  {t_api * us:.1f} us")
    print(f"plain Unicorn, same code:   {t_plain * us:.1f} us  -> ratio {t_enc / t_plain:.2f}x")

    enclave.cpu.cpu.write_phys(src, struct.pack("<Q", LOOP))
    plain.uc.mem_write(src, struct.pack("<Q", LOOP))
    t_loop = best_of(2, lambda: enclave.call("spin", struct.pack("<Q", LOOP)))
    t_plain_loop = best_of(2, lambda: plain.call(spin, src, 8))
    n = 2 * LOOP
    print(f"tight loop in the enclave:  {n / t_loop / 1e6:.0f} M instr/s  (goal >= 50)")
    print(f"plain Unicorn, same loop:   {n / t_plain_loop / 1e6:.0f} M instr/s  "
          f"-> ratio {t_loop / t_plain_loop:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
