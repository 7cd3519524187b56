"""SEV certificate work, as ratios against baselines measured in this process.

1. Verify AMD's real Rome chain (ARK, ASK, CEK, PEK by CEK and OCA, OCA, PDH: 3 RSA-PSS and
   5 ECDSA verifications) with every check, from the files' bytes, against the bare
   cryptography verify calls on pre-built keys and signatures. Goal: at most 1.5x.
2. Derive the simulator's ARK and ASK (deterministic pure-Python prime search) against
   cryptography generating two RSA-2048 keys. No goal: it is paid once per process, and
   the machine caches the certificates; the figure says what that first use costs.

Run: PYTHONPATH=. python bench/bench_sev.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from _timing import best_of
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from hwsim.sev import vendor
from hwsim.sev.arch import EcdsaSig, SevCert, SevUsage, le_to_int
from hwsim.sev.certs import (
    amd_public_key,
    load_amd_cert,
    load_sev_cert,
    sev_public_key,
    verify_amd_cert,
    verify_sev_cert,
)

VEC = Path(__file__).resolve().parents[1] / ".." / "shared" / "vectors" / "sev" / "virtee-sev"


def _files() -> dict[str, bytes]:
    names = {"ark": "builtin-sev/rome/ark.cert", "ask": "builtin-sev/rome/ask.cert"}
    names.update({n: f"rome/{n}.cert" for n in ("cek", "pek", "oca", "pdh")})
    return {n: (VEC / p).read_bytes() for n, p in names.items()}


def ours(files: dict[str, bytes]) -> None:
    ark, ask = load_amd_cert(files["ark"]), load_amd_cert(files["ask"])
    cek, pek, oca, pdh = (load_sev_cert(files[n]) for n in ("cek", "pek", "oca", "pdh"))
    verify_amd_cert(ark, SevUsage.ARK, ark)
    verify_amd_cert(ask, SevUsage.ASK, ark)
    verify_sev_cert(cek, SevUsage.CEK, ask)
    verify_sev_cert(pek, SevUsage.PEK, cek)
    verify_sev_cert(pek, SevUsage.PEK, oca)
    verify_sev_cert(oca, SevUsage.OCA, oca)
    verify_sev_cert(pdh, SevUsage.PDH, pek)


def _ecdsa_der(cert: SevCert, slot: int) -> bytes:
    sig = EcdsaSig.unpack(cert.slots()[slot][2])
    return encode_dss_signature(le_to_int(sig.r), le_to_int(sig.s))


def baseline_calls(files: dict[str, bytes]) -> Callable[[], None]:
    """The same eight verifications as bare cryptography calls, everything pre-decoded."""
    ark, ask = load_amd_cert(files["ark"]), load_amd_cert(files["ask"])
    cek, pek, oca, pdh = (load_sev_cert(files[n]) for n in ("cek", "pek", "oca", "pdh"))
    ark_key, ask_key = amd_public_key(ark), amd_public_key(ask)
    keys = {n: sev_public_key(c) for n, c in (("cek", cek), ("oca", oca), ("pek", pek))}
    h384 = hashes.SHA384()
    pss = padding.PSS(mgf=padding.MGF1(h384), salt_length=48)
    rsa_jobs: list[tuple[rsa.RSAPublicKey, bytes, bytes]] = [
        (ark_key, (ark.signature or b"")[::-1], ark.signed_bytes()),
        (ark_key, (ask.signature or b"")[::-1], ask.signed_bytes()),
        (ask_key, cek.sig1[:512][::-1], cek.signed_bytes()),
    ]
    ec_jobs = [
        (keys["oca"], _ecdsa_der(pek, 0), pek.signed_bytes()),
        (keys["cek"], _ecdsa_der(pek, 1), pek.signed_bytes()),
        (keys["oca"], _ecdsa_der(oca, 0), oca.signed_bytes()),
        (keys["pek"], _ecdsa_der(pdh, 0), pdh.signed_bytes()),
    ]

    def run() -> None:
        for key, sig, data in rsa_jobs:
            key.verify(sig, data, pss, h384)
        for pub, der, data in ec_jobs:
            assert isinstance(pub, ec.EllipticCurvePublicKey)
            pub.verify(der, data, ec.ECDSA(hashes.SHA256()))

    return run


def main() -> None:
    files = _files()
    base = best_of(20, baseline_calls(files))
    mine = best_of(20, lambda: ours(files))
    print(
        f"verify rome chain: baseline {base * 1e3:.2f} ms, sevtool {mine * 1e3:.2f} ms, "
        f"ratio {mine / base:.2f}x (goal <= 1.5x)"
    )
    start = time.perf_counter()
    vendor.sim_ark_cert()
    vendor.sim_ask_cert()
    derive = time.perf_counter() - start
    keygen = best_of(3, lambda: [rsa.generate_private_key(65537, 2048) for _ in range(2)])
    print(
        f"simulator ARK+ASK: cryptography keygen {keygen:.3f} s, deterministic derivation "
        f"{derive:.3f} s, ratio {derive / keygen:.1f}x (once per process)"
    )


if __name__ == "__main__":
    main()
