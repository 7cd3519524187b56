"""MRENCLAVE, whole process: ``sgxtool measure`` against a fresh Python hashing the SGXS.

The enclave: an ELF with ``--measured-mib`` MiB of initialised data (every byte
measured) and a ``--heap-gib`` GiB unmeasured heap. Its SGXS file (written once by
``sgxtool sgxs``) is exactly the stream MRENCLAVE hashes, so the baseline is the floor:
a fresh interpreter reading that file and hashing it with hashlib, 1 MiB at a time. Both
run in interleaved rounds; min and median ratios, and each process's peak RSS.

Usage: python bench/bench_measure.py [--measured-mib N] [--heap-gib N] [--rounds N]
       [--before DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from _proc import HASH_FILE, interleaved, load_average, min_median, ratio_line, sgxtool
from _timing import figure
from bench_sign import build as build_elf


def build(tmp: Path, measured_mib: int, heap_gib: int) -> tuple[Path, Path]:
    """An enclave ELF with ``measured_mib`` MiB of data, and its enclave.toml."""
    code = f'#include "enclave.h"\nunsigned char blob[{measured_mib} << 20] = {{1}};\n'
    code += "SGX_ECALL(peek) { (void)in; out[0] = blob[in_len]; return 1; }\n"
    elf = build_elf(tmp, code, "big")
    toml = tmp / "enclave.toml"
    toml.write_text(f'[memory]\nheap_size = "{heap_gib}G"\n')
    return elf, toml


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measured-mib", type=int, default=256)
    ap.add_argument("--heap-gib", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--before", type=Path, help="Also time sgxtool from this checkout.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        elf, toml = build(tmp, args.measured_mib, args.heap_gib)
        sgxs = tmp / "big.sgxs"
        subprocess.run(sgxtool("sgxs", str(elf), "-c", str(toml), "-o", str(sgxs)), check=True,
                       capture_output=True)  # fmt: skip
        size = sgxs.stat().st_size
        commands = {
            "python hashing the SGXS": [sys.executable, "-c", HASH_FILE, str(sgxs)],
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
