"""EPC paging cost: one enclave workload with its working set inside the EPC, then on an
EPC a quarter of it.

Two workloads over PAGES heap pages: ``sweep`` writes then reads one word in each page,
ROUNDS times per call (a cyclic pattern larger than the EPC: every access misses, under
any recency policy); ``skewed`` makes ACCESSES read-modify-writes, 7 in 8 of them to a
hot eighth of the pages, the rest anywhere (the hot set fits the small EPC, and the
reclaimer's accessed bits keep it there). Baseline: the same call on a machine whose EPC
holds the whole enclave (nothing is evicted). Against it: the same call with ``epc_size``
set to a quarter of the working set, so pages are evicted (EBLOCK, ETRACK, EWB) and
reloaded (ELDU, ERESUME) through the device's fault path. Printed: min / median of
interleaved rounds of the calling thread's CPU time (Unicorn and the paging run in it),
the ratio, the pages evicted and reloaded per call, and the time per reload.

    PYTHONPATH=. python bench/bench_paging.py
"""

from __future__ import annotations

import os
import statistics
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _enclave import signed_image  # noqa: E402
from _timing import cpu_rounds  # noqa: E402

from hwsim.machine import Machine  # noqa: E402
from sgxtool.runtime import Enclave  # noqa: E402

PAGES = 256  # the working set: 1 MiB of heap
ROUNDS = 4
SMALL_EPC = PAGES // 4
ACCESSES = 4096
PAIRS = 5
SOURCE = rf"""
#include <enclave.h>
#define PAGES {PAGES}
#define ROUNDS {ROUNDS}
static uint64_t *heap;
SGX_ECALL(sweep) {{
    if (!heap) heap = sgx_alloc(PAGES * 4096);
    if (!heap || out_cap < 8) return -1;
    uint64_t sum = 0;
    for (uint64_t r = 0; r < ROUNDS; r++) {{
        for (uint64_t i = 0; i < PAGES; i++) heap[i * 512] = i + r;
        for (uint64_t i = 0; i < PAGES; i++) sum += heap[i * 512];
    }}
    memcpy(out, &sum, 8);
    return 8;
}}
SGX_ECALL(skewed) {{
    if (!heap) heap = sgx_alloc(PAGES * 4096);
    if (!heap || out_cap < 8) return -1;
    uint64_t x = 12345, sum = 0;
    for (uint64_t n = 0; n < {ACCESSES}; n++) {{
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t r = x >> 33;
        uint64_t page = (r & 7) ? (r >> 3) % (PAGES / 8) : (r >> 3) % PAGES;
        heap[page * 512 + 1] += 1;
        sum += heap[page * 512 + 1];
    }}
    memcpy(out, &sum, 8);
    return 8;
}}
"""
CONFIG = '[enclave]\ndebug = true\n[memory]\nheap_size = "1152K"\nstack_size = "32K"\n'


def machine(path: Path, epc_pages: int | None) -> Machine:
    m = Machine.init(path, "sim")
    if epc_pages is not None:
        m.set_config("epc_size", f"{epc_pages * 4}K")
        m.power_cycle()
    return m


def expected() -> int:
    return sum(i + r for r in range(ROUNDS) for i in range(PAGES))


def call(enclave: Enclave, entry: str) -> Callable[[], bytes]:
    def run() -> bytes:
        out = enclave.call(entry, out_size=8)
        assert entry != "sweep" or struct.unpack("<Q", out)[0] == expected()
        return out

    return run


def ms(values: list[float]) -> str:
    return f"{min(values) * 1e3:.1f} / {statistics.median(values) * 1e3:.1f} ms"


def compare(fits: Enclave, tight: Enclave, entry: str, what: str) -> None:
    assert call(fits, entry)() == call(tight, entry)()  # warm, and the same result
    before = tight.device.stats.as_json()
    t_fits, t_tight = cpu_rounds(PAIRS, call(fits, entry), call(tight, entry))
    after = tight.device.stats.as_json()
    assert fits.device.stats.evicted == 0
    evicted = (after["evicted"] - before["evicted"]) / PAIRS
    reloaded = (after["reloaded"] - before["reloaded"]) / PAIRS
    per = (min(t_tight) - min(t_fits)) / max(reloaded, 1) * 1e6
    print(f"{entry}: {what}")
    print(f"  EPC holds it all:  {ms(t_fits)}")
    print(f"  EPC of {SMALL_EPC} pages:   {ms(t_tight)}  -> {min(t_tight) / min(t_fits):.0f}x")
    print(f"  per call: {evicted:.0f} pages evicted, {reloaded:.0f} reloaded; "
          f"{per:.0f} us per reload (with its share of evictions)")  # fmt: skip


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.2f}; min / median of {PAIRS} interleaved rounds")
    with tempfile.TemporaryDirectory() as tmp:
        image = signed_image(Path(tmp), "p", SOURCE, CONFIG)
        roomy, small = machine(Path(tmp) / "roomy", None), machine(Path(tmp) / "small", SMALL_EPC)
        with (
            Enclave.load(image, machine=roomy) as fits,
            Enclave.load(image, machine=small) as tight,
        ):
            compare(fits, tight, "sweep", f"{PAGES} pages x {ROUNDS} rounds of write + read")
            compare(fits, tight, "skewed", f"{ACCESSES} accesses, 7/8 to {PAGES // 8} pages")
        roomy.close()
        small.close()


if __name__ == "__main__":
    main()
