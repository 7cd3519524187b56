"""Intel SDK enclaves: the cost of one ECALL round trip with Intel's calling convention.

Baseline: an empty ECALL of a memcrypt SDK enclave through ``Enclave.call`` in the same
process (one EENTER/EEXIT, the host buffers copied). Measured: testEnclaveSO's ``calcu``
(no OCALL: the ms structure marshalled, EENTER with the ECALL index, the tRTS's
dispatch and the edger8r bridge, EEXIT with OCMD_ERET, the ms read back) and
test_hash_SGX's ``ecall_test`` (an [in] buffer, SHA-256 in IPP, one OCALL round trip with
ECMD_ORET). Best of several rounds of wall-clock time per call.

    PYTHONPATH=. python bench/bench_intel.py
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _enclave import signed_image  # noqa: E402
from _timing import best_of, figure  # noqa: E402
from bench_ecall import CONFIG, SOURCE  # noqa: E402

from hwsim.machine import Machine  # noqa: E402
from sgxtool.intelrt import IntelEnclave  # noqa: E402
from sgxtool.runtime import Enclave  # noqa: E402

VECTORS = REPO.parent / "shared" / "vectors" / "sgx" / "intel-sdk-enclaves"
CALLS = 200
ROUNDS = 5


def per_call(fn: object) -> float:
    def many() -> None:
        for _ in range(CALLS):
            fn()  # type: ignore[operator]

    return best_of(ROUNDS, many) / CALLS


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        machine = Machine.init(Path(tmp) / "m", "sim")
        image = signed_image(Path(tmp), "b", SOURCE, CONFIG)
        with Enclave.load(image, machine=machine) as sdk:
            base = per_call(lambda: sdk.call("empty"))
        rsa, sha = VECTORS / "njuyuanrui+testEnclaveSO", VECTORS / "ShuntaIshihara+test_hash_SGX"
        args = dict(a_enc=23299030, b_enc=34996265, c_enc=74534944, d_enc=84141560,
                    pubkey_n=100761443, pubkey_e=257)  # fmt: skip
        with IntelEnclave.load(rsa / "enclave.signed.so", edl=rsa / "Enclave.edl",
                               typedefs={"buffer_t": "void *"}, machine=machine) as e:  # fmt: skip
            calcu = per_call(lambda: e.ecall("calcu", **args))
        with IntelEnclave.load(sha / "enclave.signed.so", edl=sha / "Enclave.edl",
                               machine=machine, console=io.StringIO()) as e:  # fmt: skip
            test = per_call(lambda: e.ecall("ecall_test", message="Hello Enclave.",
                                            message_len=14))  # fmt: skip
    print(f"memcrypt SDK empty ECALL      {base * 1e6:8.1f} us  1.00x")
    print(f"Intel calcu (no OCALL)        {calcu * 1e6:8.1f} us  {calcu / base:.2f}x")
    print(f"Intel ecall_test (+1 OCALL)   {test * 1e6:8.1f} us  {test / base:.2f}x")
    empty = f"memcrypt SDK empty ECALL {base * 1e6:.0f} us"
    figure("Intel calcu ECALL (no OCALL)", f"{calcu * 1e6:.0f} us", empty, calcu / base)
    figure("Intel ecall_test ECALL (+1 OCALL)", f"{test * 1e6:.0f} us", empty, test / base)


if __name__ == "__main__":
    main()
