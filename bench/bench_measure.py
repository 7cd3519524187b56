"""MRENCLAVE, whole process: ``sgxtool measure`` against a fresh Python hashing the SGXS.

The enclave: an ELF with ``--measured-mib`` MiB of initialised data (every byte
measured) and a ``--heap-gib`` GiB unmeasured heap. Its SGXS file (written once by
``sgxtool sgxs``) is exactly the stream MRENCLAVE hashes, so the baseline is the floor:
a fresh interpreter reading that file and hashing it with hashlib, 1 MiB at a time. Both
run in interleaved rounds; min and median ratios, and each process's peak RSS.

Usage: python bench/bench_measure.py [--measured-mib N] [--heap-gib N] [--rounds N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from _proc import interleaved, load_average, ratio_line

HASH_FILE = (
    "import hashlib,sys\n"
    "h=hashlib.sha256()\n"
    "with open(sys.argv[1],'rb',buffering=0) as f:\n"
    "    while b:=f.read(1<<20): h.update(b)\n"
    "print(h.hexdigest())\n"
)


def sgxtool(*args: str) -> list[str]:
    return [sys.executable, "-c", "from sgxtool._cli import main; main()", *args]


def build(tmp: Path, measured_mib: int, heap_gib: int) -> tuple[Path, Path]:
    """An enclave ELF with ``measured_mib`` MiB of data, and its enclave.toml."""
    sdk = subprocess.run(sgxtool("sdk", "--cflags"), capture_output=True, text=True, check=True)
    ld = subprocess.run(sgxtool("sdk", "--ldflags"), capture_output=True, text=True, check=True)
    src = tmp / "big.c"
    src.write_text(
        '#include "enclave.h"\n'
        f"unsigned char blob[{measured_mib} << 20] = {{1}};\n"
        "SGX_ECALL(peek) { (void)in; (void)in_len; out[0] = blob[in_len]; return 1; }\n"
    )
    elf = tmp / "big.elf"
    cc = ["cc", *sdk.stdout.split(), str(src), *ld.stdout.split(), "-o", str(elf)]
    subprocess.run(cc, check=True)
    toml = tmp / "enclave.toml"
    toml.write_text(f'[memory]\nheap_size = "{heap_gib}G"\nheap_measured = false\n')
    return elf, toml


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measured-mib", type=int, default=256)
    ap.add_argument("--heap-gib", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=7)
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
        results = interleaved(commands, args.rounds)
    base = results["python hashing the SGXS"]
    print(
        f"MRENCLAVE, {args.measured_mib} MiB measured + {args.heap_gib} GiB heap: "
        f"{size / 2**20:.0f} MiB stream, {args.rounds} interleaved rounds, {load_average()}"
    )
    for name, t in results.items():
        print(ratio_line(name, t, base))
    print("  goal: <= 1.15x, peak < 100 MiB")


if __name__ == "__main__":
    main()
