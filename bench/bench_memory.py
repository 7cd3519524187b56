"""Memory encryption engine speed, as ratios against baselines measured in this process.

1. Write then read back 64 MiB of encrypted pages through the engine (state.db storage
   included), against raw AES-128-XTS encryption then decryption of the same bytes in
   the same 4 KiB data units with the cryptography package. Goal: at most 2x.
2. Read one encrypted page against one unencrypted page, both through the engine:
   inside one open transaction, and as separate one-page transactions (how a command
   reads). Goal: at most 1.5x.

Run: PYTHONPATH=. python bench/bench_memory.py [--mib N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from _timing import best_of, figure
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hwsim.machine import Machine
from hwsim.memory import HOST_KEYID, PAGE_SIZE

BASE = 0x1000_0000


def raw_xts(key: bytes, data: bytes) -> None:
    aes = algorithms.AES(key)
    pages = range(0, len(data), PAGE_SIZE)
    cts = []
    for off in pages:
        enc = Cipher(aes, modes.XTS((BASE + off).to_bytes(16, "little"))).encryptor()
        cts.append(enc.update(data[off : off + PAGE_SIZE]) + enc.finalize())
    for off, ct in zip(pages, cts, strict=True):
        dec = Cipher(aes, modes.XTS((BASE + off).to_bytes(16, "little"))).decryptor()
        dec.update(ct) + dec.finalize()


def engine_roundtrip(machine: Machine, data: bytes, keyid: int | None = HOST_KEYID) -> None:
    with machine.transaction() as txn:
        txn.dram_write(BASE, data, keyid)
    with machine.transaction(write=False) as txn:
        back = txn.dram_read(BASE, len(data), keyid)
    assert back == data


def bulk(machine: Machine, mib: int) -> None:
    """Persisted pages: the floor is the same round trip unencrypted (state.db's own cost)."""
    data = os.urandom(mib << 20)
    raw = best_of(3, lambda: raw_xts(os.urandom(32), data))
    engine = best_of(3, lambda: engine_roundtrip(machine, data))
    floor = best_of(3, lambda: engine_roundtrip(machine, data, None))
    print(f"bulk {mib} MiB write+read: raw AES-XTS {raw:.3f} s, engine {engine:.3f} s, "
          f"unencrypted through state.db (the floor) {floor:.3f} s")  # fmt: skip
    above = (engine - floor) / raw
    print(f"  ratio engine/raw = {engine / raw:.2f}x; above the floor {above:.2f}x")
    figure(f"bulk {mib} MiB write+read, state.db", f"{engine:.3f} s", f"raw AES-XTS {raw:.3f} s",
           engine / raw)  # fmt: skip
    figure(f"bulk {mib} MiB, above the state.db floor ({floor:.3f} s)", f"{engine - floor:.3f} s",
           f"raw AES-XTS {raw:.3f} s", above)  # fmt: skip


def raw_page_read(n: int) -> float:
    """Decrypting one 4 KiB page with a fresh XTS context (what a cold read must do)."""
    key, page = os.urandom(32), os.urandom(PAGE_SIZE)
    aes = algorithms.AES(key)

    def run() -> None:
        for i in range(n):
            tweak = (BASE + i * PAGE_SIZE).to_bytes(16, "little")
            dec = Cipher(aes, modes.XTS(tweak)).decryptor()
            dec.update(page) + dec.finalize()

    return best_of(5, run) / n


def page_reads(machine: Machine, n: int = 2000) -> None:
    """Per-page reads: hot (one page again and again) and cold (n distinct pages once)."""
    enc_at, plain_at = BASE, BASE + 0x1000_0000
    with machine.transaction() as txn:
        txn.dram_write(enc_at, os.urandom(n * PAGE_SIZE), HOST_KEYID)
        txn.dram_write(plain_at, os.urandom(n * PAGE_SIZE), None)

    def reads(keyid: int | None, at: int, cold: bool, each: bool) -> Callable[[], object]:
        addresses = [at + (i * PAGE_SIZE if cold else 0) for i in range(n)]

        def run() -> None:
            if each:
                for a in addresses:
                    with machine.transaction(write=False) as txn:
                        txn.dram_read(a, PAGE_SIZE, keyid)
            else:
                with machine.transaction(write=False) as txn:
                    for a in addresses:
                        txn.dram_read(a, PAGE_SIZE, keyid)

        return run

    for cold in (False, True):
        for each in (False, True):
            scope = "one transaction each" if each else "one transaction"
            label = f"{'cold' if cold else 'hot '} page, {scope}"
            enc = statistics.median(
                best_of(3, reads(HOST_KEYID, enc_at, cold, each)) for _ in range(3)
            )
            plain = statistics.median(
                best_of(3, reads(None, plain_at, cold, each)) for _ in range(3)
            )
            print(
                f"{label}: encrypted {enc / n * 1e6:.1f} us, unencrypted {plain / n * 1e6:.1f} us,"
                f" ratio {enc / plain:.2f}x  (goal <= 1.5x)"
            )
            if cold and not each:  # the per-page cost, without a transaction per read
                cold_page(enc / n, plain / n, raw_page_read(n))


def cold_page(enc: float, floor: float, raw: float) -> None:
    us = 1e6
    print(f"cold page: raw AES-XTS {raw * us:.1f} us; state.db floor (unencrypted) "
          f"{floor * us:.1f} us; above the floor {(enc - floor) / raw:.2f}x raw")  # fmt: skip
    figure("cold 4 KiB page read, state.db", f"{enc * us:.1f} us", f"raw AES-XTS {raw * us:.1f} us",
           enc / raw)  # fmt: skip
    above = f"{(enc - floor) * us:.1f} us"
    name = f"cold page, above the state.db floor ({floor * us:.1f} us)"
    figure(name, above, f"raw AES-XTS {raw * us:.1f} us", (enc - floor) / raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="bulk size in MiB (default 64)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        machine = Machine.init(Path(tmp) / "bench", "sim")
        bulk(machine, args.mib)
        page_reads(machine)
        machine.close()


if __name__ == "__main__":
    main()
