"""MRENCLAVE, whole process: ``sgxtool measure`` against a fresh Python hashing the SGXS.

The enclave: an ELF with ``--measured-mib`` MiB of initialised data (every byte
measured) and a ``--heap-gib`` GiB unmeasured heap. Its SGXS file (written once by
``sgxtool sgxs``) is exactly the stream MRENCLAVE hashes, so the baseline is the floor:
a fresh interpreter reading that file and hashing it with hashlib, 1 MiB at a time. Both
run in interleaved rounds; min and median ratios, and each process's peak RSS.

In one process, the same enclave measured by ``sgxtool.measure`` against its SGXS file
hashed 1 MiB at a time, and the floor for measured bytes: MRENCLAVE puts a 64-byte EEXTEND
record before every 256-byte chunk, so the chunks have to be interleaved with records,
and each way Python has of doing that (a scatter read into the records' slots with
``os.preadv`` as sgxtool does, the same read through ctypes with a prebuilt iovec array,
``bytes.join`` of prebuilt views) is timed against one contiguous read of the same bytes.

Usage: python bench/bench_measure.py [--measured-mib N] [--heap-gib N] [--rounds N]
       [--before DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import mmap
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _proc import (
    CLICK_HASH_FILE,
    HASH_FILE,
    REPO,
    interleaved,
    load_average,
    min_median,
    ratio_line,
    sgxtool,
)
from _timing import cpu_rounds, figure
from bench_sign import build as build_elf

sys.path.insert(0, str(REPO))
from sgxtool.config import load_config
from sgxtool.image import layout_of
from sgxtool.measure import mrenclave

CHUNK, RECORD, WINDOW = 256, 64, 1 << 20  # data per EEXTEND, record size, data per window
STRIDE = RECORD + CHUNK


def build(tmp: Path, measured_mib: int, heap_gib: int) -> tuple[Path, Path]:
    """An enclave ELF with ``measured_mib`` MiB of data, and its enclave.toml."""
    code = f'#include "enclave.h"\nunsigned char blob[{measured_mib} << 20] = {{1}};\n'
    code += "SGX_ECALL(peek) { (void)in; out[0] = blob[in_len]; return 1; }\n"
    elf = build_elf(tmp, code, "big")
    toml = tmp / "enclave.toml"
    toml.write_text(f'[memory]\nheap_size = "{heap_gib}G"\n')
    return elf, toml


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class Interleave:
    """One 1 MiB window of measured data interleaved with its EEXTEND records, in a buffer
    of records and slots as sgxtool's templates are, filled from ``fd`` each way."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.chunks = WINDOW // CHUNK
        # Page-aligned buffers: the kernel copies into a destination 16 bytes off a cache line
        # (where a large bytearray's bytes start) several times slower.
        self.buf = mmap.mmap(-1, self.chunks * STRIDE)
        view = memoryview(self.buf)
        starts = range(0, len(self.buf), STRIDE)
        self.slots = [view[at + RECORD : at + STRIDE] for at in starts]
        self.data = mmap.mmap(-1, WINDOW)
        data = memoryview(self.data)
        records = [view[at : at + RECORD] for at in starts]
        chunks = [data[at : at + CHUNK] for at in range(0, WINDOW, CHUNK)]
        self.parts = [x for pair in zip(records, chunks, strict=True) for x in pair]
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))
        self.iov = (_Iovec * 1024)(*[_Iovec(base + at + RECORD, CHUNK) for at in starts[:1024]])
        self.libc_preadv = ctypes.CDLL(None, use_errno=True).preadv
        self.libc_preadv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_long]

    def preadv(self, at: int, h: hashlib._Hash) -> None:
        for i in range(0, self.chunks, 1024):
            os.preadv(self.fd, self.slots[i : i + 1024], at + i * CHUNK)
        h.update(self.buf)

    def ctypes_preadv(self, at: int, h: hashlib._Hash) -> None:
        # The prebuilt iovecs cover the first 1024 slots; the window's next 1024-slot
        # groups are the same slots moved by a fixed step, so one array is reused by
        # hashing each group as it is filled.
        for i in range(0, self.chunks, 1024):
            self.libc_preadv(self.fd, self.iov, 1024, at + i * CHUNK)
            h.update(memoryview(self.buf)[: 1024 * STRIDE])

    def join(self, at: int, h: hashlib._Hash) -> None:
        os.preadv(self.fd, [self.data], at)
        h.update(b"".join(self.parts))

    def contiguous(self, at: int, h: hashlib._Hash) -> None:
        """The same stream as one read: what hashing an SGXS file costs."""
        os.preadv(self.fd, [self.buf], at)
        h.update(self.buf)


def in_process(elf: Path, toml: Path, sgxs: Path, mib: int, rounds: int) -> None:
    """sgxtool's measurement against hashing the SGXS file, and the interleaving floor."""
    layout = layout_of(elf, load_config(toml))

    def hash_file() -> None:  # as HASH_FILE does
        h = hashlib.sha256()
        with open(sgxs, "rb", buffering=0) as f:
            while b := f.read(WINDOW):
                h.update(b)

    fd = os.open(elf, os.O_RDONLY)
    try:
        way = Interleave(fd)

        def windows(fill: Callable[[int, hashlib._Hash], None]) -> Callable[[], None]:
            def run() -> None:
                h = hashlib.sha256()
                for w in range(mib):
                    fill(w * WINDOW, h)

            return run

        names = ["hash the SGXS file", "sgxtool.measure.mrenclave", "contiguous read + hash",
                 "os.preadv into slots + hash", "ctypes preadv, prebuilt iovecs + hash",
                 "bytes.join of prebuilt views + hash"]  # fmt: skip
        fns = [hash_file, lambda: mrenclave(layout), windows(way.contiguous),
               windows(way.preadv), windows(way.ctypes_preadv), windows(way.join)]  # fmt: skip
        times = cpu_rounds(rounds, *fns)
    finally:
        os.close(fd)
    best = [min(t) for t in times]
    print(f"In one process, CPU time, best of {rounds} interleaved rounds, {load_average()}:")
    print(f"  {names[1]:40} {best[1]:7.3f} s  {best[1] / best[0]:5.2f}x of {names[0]} "
          f"({best[0]:.3f} s)")  # fmt: skip
    print(f"  interleaving {mib} MiB of measured data (per MiB, hashing included):")
    for name, t in zip(names[2:], best[2:], strict=True):
        print(f"    {name:38} {t / mib * 1e3:6.3f} ms  {t / best[2]:5.2f}x")
    figure("sgxtool measure in process", f"{best[1]:.3f} s", f"hashing the SGXS {best[0]:.3f} s",
           best[1] / best[0], "<= 1.15x")  # fmt: skip
    floor = min(best[3:]) / best[2]
    figure("interleaving floor (best way / contiguous)", f"{min(best[3:]) / mib * 1e3:.3f} ms/MiB",
           f"contiguous {best[2] / mib * 1e3:.3f} ms/MiB", floor)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measured-mib", type=int, default=256)
    ap.add_argument("--heap-gib", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--before", type=Path, help="Also time sgxtool from this checkout.")
    ap.add_argument("--in-process-only", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        elf, toml = build(tmp, args.measured_mib, args.heap_gib)
        sgxs = tmp / "big.sgxs"
        subprocess.run(sgxtool("sgxs", str(elf), "-c", str(toml), "-o", str(sgxs)), check=True,
                       capture_output=True)  # fmt: skip
        size = sgxs.stat().st_size
        in_process(elf, toml, sgxs, args.measured_mib, args.rounds)
        if args.in_process_only:
            return
        commands = {
            "python hashing the SGXS": [sys.executable, "-c", HASH_FILE, str(sgxs)],
            "the same after import click": [sys.executable, "-c", CLICK_HASH_FILE, str(sgxs)],
            "sgxtool measure": sgxtool("measure", str(elf), "-c", str(toml)),
        }
        if args.before:
            commands["before: sgxtool measure"] = sgxtool(
                "measure", str(elf), "-c", str(toml), tree=args.before
            )
        results = interleaved(commands, args.rounds)
    base = results["python hashing the SGXS"]
    print(
        f"MRENCLAVE, {args.measured_mib} MiB measured + {args.heap_gib} GiB heap: "
        f"{size / 2**20:.0f} MiB stream, {args.rounds} interleaved rounds, {load_average()}"
    )
    for name, t in results.items():
        print(ratio_line(name, t, base))
    print("  goal: <= 1.15x, peak < 100 MiB")
    t = results["sgxtool measure"]
    figure(f"sgxtool measure, {args.measured_mib} MiB + {args.heap_gib} GiB heap", min_median(t),
           f"hashing the SGXS {min_median(base)}", t.min / base.min, "<= 1.15x")  # fmt: skip


if __name__ == "__main__":
    main()
