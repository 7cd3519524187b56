"""MRENCLAVE speed and memory: 256 MiB of measured pages plus a 4 GiB unmeasured heap.

Baseline, in the same process: hashlib SHA-256 over the very byte stream MRENCLAVE covers
(ECREATE, EADD and EEXTEND blocks and the measured bytes, 384 MiB here), held in memory.
The ratio is what streaming costs on top of the hashing the hardware definition requires.
Peak memory is the child process's maximum resident set while measuring.

Usage: python bench/bench_measure.py [--measured-mib N] [--heap-gib N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from _timing import best_of

from hwsim.sgx.arch import PageType, secinfo_flags
from sgxtool.layout import Content, EnclaveLayout, LayoutBuilder, Region
from sgxtool.measure import mrenclave

RW = secinfo_flags(PageType.REG, 3)


def make_layout(blob: Path, measured: int, heap: int) -> EnclaveLayout:
    b = LayoutBuilder(source=blob)
    b.add(Region(0, measured // 4096, RW, "data", "data", Content(length=measured)))
    b.add(Region(b.cursor, heap // 4096, RW, "heap", "heap", mrmask=0))
    return b.build()


def reference_stream(layout: EnclaveLayout, blob: bytes) -> bytes:
    """The measurement stream built plainly in memory (the baseline's input)."""
    parts = [struct.pack("<8sIQ44x", b"ECREATE", layout.ssaframesize, layout.size)]
    data, heap = layout.regions
    for i in range(data.pages):
        off = i * 4096
        parts.append(struct.pack("<8sQQ40x", b"EADD", off, data.flags))
        for c in range(0, 4096, 256):
            parts += (struct.pack("<8sQ48x", b"EEXTEND", off + c), blob[off + c : off + c + 256])
    eadd = struct.Struct("<8sQQ40x")
    parts += [eadd.pack(b"EADD", heap.offset + i * 4096, heap.flags) for i in range(heap.pages)]
    return b"".join(parts)


def baseline(layout: EnclaveLayout, data: bytes) -> tuple[str, float]:
    """The reference MRENCLAVE and the best time hashlib takes over the stream."""
    stream = reference_stream(layout, data)
    return hashlib.sha256(stream).hexdigest(), best_of(3, lambda: hashlib.sha256(stream))


def child(blob: Path, measured: int, heap: int) -> None:
    """Measure in a fresh process and report MRENCLAVE and peak RSS (MiB)."""
    digest = mrenclave(make_layout(blob, measured, heap)).hex()
    print(digest, f"{peak_rss_mib():.1f}")


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that across
    fork and exec, so a child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measured-mib", type=int, default=256)
    ap.add_argument("--heap-gib", type=int, default=4)
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), int(args.child[2]))
        return
    measured, heap = args.measured_mib << 20, args.heap_gib << 30
    with tempfile.TemporaryDirectory() as tmp:
        blob = Path(tmp) / "blob"
        data = os.urandom(measured)
        blob.write_bytes(data)
        layout = make_layout(blob, measured, heap)
        expected, base = baseline(layout, data)
        del data
        ours = best_of(3, lambda: mrenclave(layout))
        assert mrenclave(layout).hex() == expected, "fast path disagrees with the reference"
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(blob), str(measured), str(heap)],
            capture_output=True,
            text=True,
            check=True,
        )
        digest, peak = out.stdout.split()
        assert digest == expected
    print(
        f"MRENCLAVE of {args.measured_mib} MiB measured + {args.heap_gib} GiB unmeasured "
        f"heap ({layout.page_count} pages)"
    )
    stream_mib = (measured * 5 // 4 + layout.page_count * 64) >> 20
    print(f"  hashlib over the same {stream_mib} MiB stream:  {base:.3f} s")
    print(
        f"  sgxtool.measure:                     {ours:.3f} s  ratio {ours / base:.2f}x "
        f"(goal <= 1.25x)"
    )
    print(f"  peak RSS while measuring: {peak} MiB (goal < 100 MiB)")


if __name__ == "__main__":
    main()
