"""Root certificates a SEV chain can end in: AMD's, built in per generation, or the simulator's.

AMD signs every CEK with the ASK of the part's generation, under that generation's ARK
(``sevtool/data/amd/README.md`` says where the files come from). As sevctl's ``verify`` does
(virtee/sev ``Generation::try_from(&sev::Chain)``), the generation is found from the chain
itself: the one ASK that signs the CEK. The simulator's roots are tried only after AMD's,
so a chain is never taken for the simulator's when AMD signed it, and they are named as
what they are.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from hwsim.sev.arch import AmdCert, SevAlgo, SevCert, SevUsage
from hwsim.sev.certs import CertificateError, load_amd_cert, verify_sev_cert

__all__ = [
    "AMD_GENERATIONS",
    "Roots",
    "amd_roots",
    "cek_signer",
    "identify",
    "simulator_roots",
]

AMD_GENERATIONS = ("naples", "rome", "milan", "genoa", "turin")
# Installed as files beside the package, as sgxtool's SDK is (read as plain files: the
# importlib.resources machinery cost every `sevtool verify` ~5 ms to start).
_AMD_DATA = Path(__file__).resolve().parent / "data" / "amd"


@dataclass(frozen=True)
class Roots:
    """An ARK and its ASK. ``generation`` is None for the simulator's."""

    ark: AmdCert
    ask: AmdCert
    generation: str | None

    @property
    def is_amd(self) -> bool:
        return self.generation is not None

    @property
    def name(self) -> str:
        if self.generation is None:
            return "the simulator's (hwsim), not AMD's"
        return f"AMD {self.generation.capitalize()}"

    @property
    def era(self) -> str:
        """``Naples`` ... ``Turin``, or ``the simulator's``."""
        return self.generation.capitalize() if self.generation else "the simulator's"

    @property
    def cek_algo(self) -> SevAlgo:
        """How this ASK signs CEKs: RSA_SHA256 with 2048-bit keys, RSA_SHA384 with 4096."""
        return SevAlgo.RSA_SHA384 if self.ask.header.modulus_size == 4096 else SevAlgo.RSA_SHA256


@functools.cache
def amd_roots() -> tuple[Roots, ...]:
    """AMD's published ARK/ASK pairs, oldest generation first."""
    return tuple(Roots(_builtin(gen, "ark"), _builtin(gen, "ask"), gen) for gen in AMD_GENERATIONS)


def _builtin(gen: str, role: str) -> AmdCert:
    data = (_AMD_DATA / gen / f"{role}.cert").read_bytes()
    return load_amd_cert(data, f"AMD {gen} {role.upper()} (built in)")


@functools.cache
def simulator_roots() -> Roots:
    """The simulator's ARK/ASK (derived once per process, about half a second)."""
    from hwsim.sev.vendor import sim_ark_cert, sim_ask_cert  # only for simulated chains

    return Roots(sim_ark_cert(), sim_ask_cert(), None)


def _signs(roots: Roots, cek: SevCert) -> bool:
    try:
        verify_sev_cert(cek, SevUsage.CEK, roots.ask)
    except CertificateError:
        return False
    return True


def _ask_slot_algo(cek: SevCert) -> int | None:
    return next((algo for usage, algo, _ in cek.slots() if usage == SevUsage.ASK), None)


def cek_signer(cek: SevCert) -> Roots | None:
    """The known roots whose ASK signed ``cek``: AMD's generations first, then the
    simulator's; None when none does (or the CEK is unsigned)."""
    algo = _ask_slot_algo(cek)
    if algo is None:
        return None
    for roots in amd_roots():
        if roots.cek_algo == algo and _signs(roots, cek):
            return roots
    sim = simulator_roots()
    return sim if _signs(sim, cek) else None


def identify(cert: AmdCert) -> Roots | None:
    """The known roots ``cert`` (an ARK or ASK) belongs to, by key id and key."""
    candidates = [*amd_roots()]
    if not any(_same_key(cert, r.ark) or _same_key(cert, r.ask) for r in candidates):
        candidates = [simulator_roots()]
    for roots in candidates:
        if _same_key(cert, roots.ark) or _same_key(cert, roots.ask):
            return roots
    return None


def _same_key(a: AmdCert, b: AmdCert) -> bool:
    return a.header.key_id == b.header.key_id and a.modulus == b.modulus
