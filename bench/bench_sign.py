"""Signing and measuring, whole process, in interleaved rounds (min / median, peak RSS).

1. ``sgxtool sign`` of the hello example against ``python -c "import click"`` (goal: 3x).
2. Scaling: an enclave with 1 MiB of measured code and a 1, 8, 64 (and, with ``--heaps``,
   512) GiB unmeasured heap, signed and measured, against a fresh Python hashing the same
   SGXS stream from a file (goal: 1.15x, time linear in the heap, peak < 100 MiB).

``--before DIR`` adds the same commands run from another checkout (e.g. ``git archive
main``), so a change is measured before and after in the same rounds.

Usage: python bench/bench_sign.py [--rounds N] [--heaps 1,8,64 (empty: none)] [--before DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
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
from _timing import figure


def build(tmp: Path, source: str, name: str) -> Path:
    """An enclave ELF built with the SDK from C ``source``."""
    flags = [
        subprocess.run(sgxtool("sdk", f"--{kind}"), capture_output=True, text=True, check=True)
        for kind in ("cflags", "ldflags")
    ]
    src = tmp / f"{name}.c"
    src.write_text(source)
    elf = tmp / f"{name}.elf"
    cc = ["cc", *flags[0].stdout.split(), str(src), *flags[1].stdout.split(), "-o", str(elf)]
    subprocess.run(cc, check=True)
    return elf


# The floor of any click command that signs with a key file: import click, load the
# RSA-3072 key with cryptography (without its full key check, as sgxtool does), sign a
# SIGSTRUCT-sized message, write 1808 bytes atomically.
BARE_SIGN = """
import click, hashlib, os, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
with open(sys.argv[1], "rb") as f:
    key = serialization.load_pem_private_key(f.read(), None,
                                             unsafe_skip_rsa_key_validation=True)
message = hashlib.sha256(b"enclave").digest() * 16
signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
with open(sys.argv[2] + ".tmp", "wb") as f:
    f.write(signature + bytes(1808 - len(signature)))
    os.fsync(f.fileno())
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
"""


def variants(args: argparse.Namespace, *command: str) -> dict[str, list[str]]:
    out = {"sgxtool " + command[0]: sgxtool(*command)}
    if args.before:
        out["before: sgxtool " + command[0]] = sgxtool(*command, tree=args.before)
    return out


def hello(tmp: Path, key: Path, args: argparse.Namespace) -> None:
    elf = build(tmp, (REPO / "examples/hello/hello.c").read_text(), "hello")
    toml = REPO / "examples/hello/enclave.toml"
    sign = ("sign", str(elf), "-c", str(toml), "-k", str(key), "-o", str(tmp / "h.signed"))
    commands = {
        "python -c 'import click'": [sys.executable, "-c", "import click"],
        "click + key load + RSA sign": [sys.executable, "-c", BARE_SIGN, str(key),
                                        str(tmp / "bare.sig")],
    }  # fmt: skip
    commands |= variants(args, *sign)
    results = interleaved(commands, args.rounds)
    print(f"sgxtool sign hello, {args.rounds} rounds, {load_average()} (goal <= 3x)")
    base = results["python -c 'import click'"]
    for name, t in results.items():
        print(ratio_line(name, t, base))
    t = results["sgxtool sign"]
    figure("sgxtool sign hello, whole process", min_median(t), f"import click {min_median(base)}",
           t.min / base.min, "<= 3x")  # fmt: skip


def scaling(tmp: Path, key: Path, args: argparse.Namespace) -> None:
    code = '#include "enclave.h"\nunsigned char blob[1 << 20] = {1};\n'
    code += "SGX_ECALL(peek) { (void)in; out[0] = blob[in_len]; return 1; }\n"
    elf = build(tmp, code, "code")
    for gib in (int(x) for x in args.heaps.split(",") if x):
        toml = tmp / "enclave.toml"
        toml.write_text(f'[memory]\nheap_size = "{gib}G"\n')
        sgxs = tmp / "e.sgxs"
        subprocess.run(sgxtool("sgxs", str(elf), "-c", str(toml), "-o", str(sgxs)),
                       check=True, capture_output=True)  # fmt: skip
        size = sgxs.stat().st_size
        commands = {"python hashing the SGXS": [sys.executable, "-c", HASH_FILE, str(sgxs)],
                    "the same after import click": [sys.executable, "-c", CLICK_HASH_FILE,
                                                    str(sgxs)]}  # fmt: skip
        commands |= variants(args, "sign", str(elf), "-c", str(toml), "-k", str(key),
                             "-s", str(tmp / "e.sig"))  # fmt: skip
        commands |= variants(args, "measure", str(elf), "-c", str(toml))
        results = interleaved(commands, args.rounds)
        os.unlink(sgxs)
        print(f"1 MiB code + {gib} GiB heap: {size / 2**20:.0f} MiB stream, {args.rounds} rounds, "
              f"{load_average()} (goal <= 1.15x, peak < 100 MiB)")  # fmt: skip
        base = results["python hashing the SGXS"]
        for name, t in results.items():
            print(ratio_line(name, t, base))
        for command in ("sign", "measure"):
            t = results[f"sgxtool {command}"]
            baseline = f"hashing the SGXS {min_median(base)}"
            ratio = t.min / base.min
            figure(f"sgxtool {command}, {gib} GiB heap", min_median(t), baseline, ratio, "<= 1.15x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--heaps", default="1,8,64")
    ap.add_argument("--before", type=Path)
    ap.add_argument("--skip-hello", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        key = tmp / "key.pem"
        subprocess.run(sgxtool("keygen", str(key)), check=True, capture_output=True)
        if not args.skip_hello:
            hello(tmp, key, args)
        scaling(tmp, key, args)


if __name__ == "__main__":
    main()
