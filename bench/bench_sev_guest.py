"""SEV guest launch and run, as ratios against baselines measured in this process.

1. LAUNCH_UPDATE_DATA of a 64 MiB firmware image (the firmware reads the plaintext from
   DRAM, extends the launch digest, encrypts it in place under the guest's key; one
   transaction, state.db included) against raw AES-128-XTS of the same bytes in 4 KiB data
   units plus SHA-256 over them. Goal: at most 1.5x, or the floor of persisting 64 MiB in
   state.db, measured here as an unencrypted DRAM read plus write of the same range.
2. The example guest (examples/sev-guest, built with cc): launch with the owner's
   session, measure, inject the disk key, finish, run to its serial output, through the
   library calls the sevtool commands make. Recorded, no goal.
3. Instructions per second of an SEV-ES guest against the same loop in a plain SEV guest:
   an SEV-ES vCPU runs with a code hook that checks every instruction for the ones that
   raise #VC (hwsim/sev/vc.py), which plain SEV guests do without. Recorded, no goal.
   Also the cost of one #VC round trip (OUT -> #VC -> the guest's handler fills the GHCB
   -> VMGEXIT -> the host -> IRETQ) against one plain SEV port exit (needs GNU as).

Run: PYTHONPATH=. python bench/bench_sev_guest.py [--mib N] [--es-only]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _timing import best_of
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hwsim.machine import Machine
from hwsim.memory import PAGE_SIZE
from hwsim.sev.device import SevDevice
from hwsim.sev.guest import run_guest
from hwsim.sev.kvm import SevVm
from hwsim.sev.ovmf import secret_table
from hwsim.sev.session import build_session, seal_secret
from sevtool import guest
from sevtool.vmsa import build_vmsa

REPO = Path(__file__).resolve().parents[1]
LUKS = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")


def raw(data: bytes, base: int) -> None:
    aes = algorithms.AES(os.urandom(32))
    for off in range(0, len(data), PAGE_SIZE):
        enc = Cipher(aes, modes.XTS((base + off).to_bytes(16, "little"))).encryptor()
        enc.update(data[off : off + PAGE_SIZE]) + enc.finalize()
    hashlib.sha256(data).digest()


def fresh_guest(machine: Machine, image: bytes) -> int:
    with SevDevice.open(machine) as dev:
        for vm in SevVm.all(dev):
            vm.decommission()
        vm = SevVm.create(dev, name="bench", memory_size=16 << 20, firmware_size=len(image),
                          policy=0)  # fmt: skip
        vm.load(vm.record.flash_gpa, image)
        return vm.record.handle


def update(machine: Machine, handle: int, size: int) -> None:
    with SevDevice.open(machine) as dev:
        vm = SevVm.get(dev, handle)
        vm.launch_update_data(vm.record.flash_gpa, size)


def floor(machine: Machine, spa: int, size: int) -> None:
    with machine.transaction() as txn:
        txn.physical_write(spa, txn.physical_read(spa, size))


def bench_update(machine: Machine, mib: int) -> None:
    image = os.urandom(mib << 20)
    baseline = best_of(3, lambda: raw(image, 0))
    times, floors = [], []
    for _ in range(3):
        handle = fresh_guest(machine, image)
        with SevDevice.open(machine) as dev:
            spa = SevVm.get(dev, handle).record.spa + (16 << 20)
        floors.append(best_of(1, functools.partial(floor, machine, spa, len(image))))
        times.append(best_of(1, functools.partial(update, machine, handle, len(image))))
    ours, persist = min(times), min(floors)
    above = ours - persist
    print(f"LAUNCH_UPDATE_DATA {mib} MiB: {ours:.3f} s; raw XTS + SHA-256 {baseline:.3f} s "
          f"(ratio {ours / baseline:.2f}x); state.db floor (plain read + write) "
          f"{persist:.3f} s; above it {above:.3f} s = {above / baseline:.2f}x raw")  # fmt: skip


def bench_example(machine: Machine) -> None:
    out = Path(tempfile.mkdtemp())
    subprocess.run(["make", "-s", "-C", str(REPO / "examples" / "sev-guest"), f"O={out}",
                    str(out / "guest.bin")], check=True)  # fmt: skip
    with SevDevice.open(machine) as dev:
        for vm in SevVm.all(dev):
            vm.decommission()
        pdh, _ = dev.pdh_cert_export()
    owner = build_session(pdh, 1)
    (out / "godh").write_bytes(owner.godh.pack())
    (out / "session").write_bytes(owner.session.pack())
    table = secret_table([(LUKS, (out / "disk.key").read_bytes())])

    def flow() -> bytes:
        guest.launch(machine, out / "guest.bin", policy=1, session=out / "session",
                     dh_cert=out / "godh")  # fmt: skip
        blob = guest.measure(machine).blob
        header, payload = seal_secret(owner.keys, table, blob[:32])
        (out / "hdr").write_bytes(header.pack())
        (out / "payload").write_bytes(payload)
        guest.inject_secret(machine, out / "hdr", out / "payload")
        guest.finish(machine)
        serial = guest.run(machine).serial
        guest.decommission(machine)
        return serial

    start = time.perf_counter()
    serial = flow()
    first = time.perf_counter() - start
    assert b"disk unlocked" in serial, serial
    best = best_of(3, flow)
    print(f"example guest, launch to serial output: {best:.3f} s (first in process {first:.3f} s)")


LOOPS = 1_000_000
# mov ecx, LOOPS; 1: dec ecx; jnz 1b; hlt  (2 * LOOPS + 2 instructions), then the reset
# vector's jump back to the start of the 4 KiB image.
LOOP = b"\xb9" + LOOPS.to_bytes(4, "little") + b"\xff\xc9\x75\xfc\xf4"


def loop_image() -> bytes:
    image = bytearray(PAGE_SIZE)
    image[: len(LOOP)] = LOOP
    rel = -(PAGE_SIZE - 16 + 5)
    image[PAGE_SIZE - 16 : PAGE_SIZE - 11] = b"\xe9" + (rel & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(image)


def _only_guest(dev: SevDevice, name: str, image: bytes, es: bool) -> SevVm:
    """``image`` launched as the machine's only guest (SEV-ES with one VMSA if ``es``)."""
    for old in SevVm.all(dev):
        old.decommission()
    vm = SevVm.create(dev, name=name, memory_size=16 << 20, firmware_size=len(image),
                      policy=4 if es else 0)  # fmt: skip
    vm.load(vm.record.flash_gpa, image)
    vm.launch_update_data(vm.record.flash_gpa, len(image))
    if es:
        vm.launch_update_vmsa([build_vmsa(0).pack()])
    vm.launch_measure()
    vm.launch_finish()
    return vm


def loop_run(machine: Machine, es: bool) -> float:
    """Seconds to run the loop guest to its HLT (launch excluded)."""
    with SevDevice.open(machine) as dev:
        vm = _only_guest(dev, "loop", loop_image(), es)
        start = time.perf_counter()
        run = run_guest(vm, 10 * LOOPS)
        took = time.perf_counter() - start
    assert run.stop == "halt", run
    return took


OUTS = 2000
OUT_LOOP = f"""
    mov ecx, {OUTS}
    mov dx, 0x80
1:  out dx, al
    dec ecx
    jnz 1b
    hlt
"""


def io_run(machine: Machine, es: bool) -> float:
    """Seconds per port exit of OUT_LOOP: plain SEV exits directly, SEV-ES via #VC."""
    # The #VC-handling test guest is assembled by the test suite's helpers: the bench
    # runs from bench/, so the repository root goes on the path for them.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.hwsim.sev.es_asm import es_program
    from tests.hwsim.sev.guests import flat_image

    image = flat_image(es_program(OUT_LOOP, machine.profile.cbit))
    with SevDevice.open(machine) as dev:
        vm = _only_guest(dev, "io", image, es)
        start = time.perf_counter()
        run = run_guest(vm, 100 * OUTS)
        took = time.perf_counter() - start
    assert run.stop == "halt" and run.io_exits == OUTS, run
    return took / OUTS


def bench_es(machine: Machine) -> None:
    plain = min(loop_run(machine, False) for _ in range(3))
    es = min(loop_run(machine, True) for _ in range(3))
    n = 2 * LOOPS + 2
    print(f"loop of {n} instructions: plain SEV {plain:.3f} s ({n / plain / 1e6:.1f} M/s), "
          f"SEV-ES {es:.3f} s ({n / es / 1e6:.2f} M/s): ratio {es / plain:.2f}x")  # fmt: skip
    plain_io = min(io_run(machine, False) for _ in range(3))
    es_io = min(io_run(machine, True) for _ in range(3))
    print(f"port exit: plain SEV {plain_io * 1e6:.1f} us, SEV-ES through #VC and the GHCB "
          f"{es_io * 1e6:.1f} us ({es_io / plain_io:.1f}x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--es-only", action="store_true", help="only item 3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        machine = Machine.init(Path(tmp) / "m", "sim")
        if not args.es_only:
            bench_update(machine, args.mib)
            bench_example(machine)
        bench_es(machine)


if __name__ == "__main__":
    main()
