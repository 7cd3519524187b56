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

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _proc import REPO, interleaved, load_average, min_median, ratio_line
from _timing import best_of, figure
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


# The whole-process baseline: a fresh Python reading the six files and making the same
# eight verifications with cryptography, decoding only the fields they need.
BARE_VERIFY = """
import struct, sys
from pathlib import Path
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
roots, chain = Path(sys.argv[1]), Path(sys.argv[2])
le = lambda b: int.from_bytes(b, "little")
def amd(name):
    d = (roots / name).read_bytes()
    e, m = (v // 8 for v in struct.unpack_from("<II", d, 0x38))
    key = rsa.RSAPublicNumbers(le(d[64:64 + e]), le(d[64 + e:64 + e + m])).public_key()
    return key, d[:64 + e + m], d[64 + e + m:][::-1]
def sev(name):
    d = (chain / name).read_bytes()
    return d, d[:0x414]
def ec_key(d):
    x, y = le(d[0x14:0x5C]), le(d[0x5C:0xA4])
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
def ec_sig(d, at):
    return encode_dss_signature(le(d[at:at + 72]), le(d[at + 72:at + 144]))
h = hashes.SHA384()
pss = padding.PSS(mgf=padding.MGF1(h), salt_length=48)
ark, ark_signed, ark_sig = amd("ark.cert")
ask, ask_signed, ask_sig = amd("ask.cert")
ark.verify(ark_sig, ark_signed, pss, h)
ark.verify(ask_sig, ask_signed, pss, h)
(cek, cek_s), (pek, pek_s), (oca, oca_s), (pdh, pdh_s) = map(sev, ("cek.cert", "pek.cert",
                                                               "oca.cert", "pdh.cert"))
ask.verify(cek[0x41C:0x61C][::-1], cek_s, pss, h)
sha = ec.ECDSA(hashes.SHA256())
ec_key(oca).verify(ec_sig(pek, 0x41C), pek_s, sha)
ec_key(cek).verify(ec_sig(pek, 0x624), pek_s, sha)
ec_key(oca).verify(ec_sig(oca, 0x41C), oca_s, sha)
ec_key(pek).verify(ec_sig(pdh, 0x41C), pdh_s, sha)
print("chain verified")
"""
SEVTOOL = "import sys; sys.path.insert(0, sys.argv.pop(1)); from sevtool._cli import main; main()"


def whole_process(rounds: int, before: Path | None) -> None:
    """``sevtool verify`` of the Rome chain against BARE_VERIFY, fresh interpreters."""
    chain = VEC / "rome"
    commands = {
        "bare cryptography script": [sys.executable, "-c", BARE_VERIFY,
                                     str(VEC / "builtin-sev" / "rome"), str(chain)],
        # The floor of any click command: the same script after importing click, which
        # every sevtool command pays before its own work.
        "bare script + import click": [sys.executable, "-c", "import click\n" + BARE_VERIFY,
                                       str(VEC / "builtin-sev" / "rome"), str(chain)],
        "sevtool verify": [sys.executable, "-c", SEVTOOL, str(REPO), "verify", str(chain)],
    }  # fmt: skip
    if before is not None:
        commands["before: sevtool verify"] = [sys.executable, "-c", SEVTOOL, str(before),
                                              "verify", str(chain)]  # fmt: skip
    results = interleaved(commands, rounds)
    print(f"sevtool verify, whole process, {rounds} rounds, {load_average()} (goal <= 1.3x)")
    base = results["bare cryptography script"]
    for name, t in results.items():
        print(ratio_line(name, t, base))
    t = results["sevtool verify"]
    figure("sevtool verify Rome chain, whole process", min_median(t),
           f"bare cryptography script {min_median(base)}", t.min / base.min, "<= 1.3x")  # fmt: skip
    floor = results["bare script + import click"]
    figure("  floor: that script + import click", min_median(floor),
           f"bare cryptography script {min_median(base)}", floor.min / base.min, "")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--before", type=Path, help="Also time sevtool from this checkout.")
    args = ap.parse_args()
    files = _files()
    # Calls of a few milliseconds: best of 50, as single runs move by 30% on a shared machine.
    base = best_of(50, baseline_calls(files))
    mine = best_of(50, lambda: ours(files))
    print(
        f"verify rome chain: baseline {base * 1e3:.2f} ms, sevtool {mine * 1e3:.2f} ms, "
        f"ratio {mine / base:.2f}x (goal <= 1.5x)"
    )
    figure("Rome chain checks, in process", f"{mine * 1e3:.2f} ms",
           f"8 cryptography verify calls {base * 1e3:.2f} ms", mine / base, "<= 1.5x")  # fmt: skip
    whole_process(args.rounds, args.before)
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
