"""Verifying a SEV chain link by link, with the roots it really ends in.

Reading chain files is :mod:`sevtool.chainfiles`; ``Chain`` and ``load_chain`` are
re-exported here.

When the chain brings no ARK/ASK, the roots come from :mod:`sevtool.roots`: the AMD
generation whose ASK signs the CEK, or the simulator's for a simulated machine's chain, and
the report says which were used. A failed link is explained where the cause is known: a
CEK of another generation than the ASK, the simulator's chain checked against AMD's roots
(or the reverse), a CEK still unsigned as PDH_CERT_EXPORT returns it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from hwsim.sev.arch import AmdCert, SevAlgo, SevCert, SevUsage
from hwsim.sev.certs import (
    CertificateError,
    check_amd_cert,
    check_sev_cert,
    verify_amd_cert,
    verify_sev_cert,
)
from sevtool.chainfiles import CERT_NAMES, Chain, load_chain
from sevtool.errors import SevInputError, SevToolError
from sevtool.roots import Roots, cek_signer, identify

# Chain and load_chain are re-exported: callers verify what they load from one module.
__all__ = [
    "Chain",
    "ChainReport",
    "ChainVerificationError",
    "LinkResult",
    "load_chain",
    "verify_chain",
]

# (subject, signer) in the order a reader follows the chain from the root down.
_LINKS = (
    ("ark", "ark"),
    ("ask", "ark"),
    ("cek", "ask"),
    ("pek", "cek"),
    ("oca", "oca"),
    ("pek", "oca"),
    ("pdh", "pek"),
)
_KDS_HINT = (
    "AMD's key server has the signed CEK: https://kdsintf.amd.com/cek/id/<chip id> "
    "(`sevtool get-id` prints the id; sevctl export and sev-tool --generate_cek_ask fetch it)"
)


@dataclass(frozen=True)
class LinkResult:
    """One checked link: ``signer`` is None when only the certificate's fields were checked."""

    subject: str
    signer: str | None
    ok: bool
    check: str | None = None
    error: str | None = None
    hint: str | None = None

    @property
    def title(self) -> str:
        subject = self.subject.upper()
        if self.signer is None:
            return f"{subject} (fields only: its signer was not given)"
        if self.signer == self.subject:
            return f"{subject} signed by itself"
        return f"{subject} signed by {self.signer.upper()}"

    def as_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "signer": self.signer,
            "ok": self.ok,
            "check": self.check,
            "error": self.error,
        }


@dataclass(frozen=True)
class ChainReport:
    """Every link's result, which roots were used (and where they came from), and the
    quirks that were tolerated."""

    links: tuple[LinkResult, ...]
    complete: bool
    key_ids: dict[str, str] = field(default_factory=dict)
    roots: str | None = None
    generation: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(link.ok for link in self.links)

    def as_json(self) -> dict[str, Any]:
        return {
            "verified": self.ok,
            "complete": self.complete,
            "roots": self.roots,
            "generation": self.generation,
            "key_ids": self.key_ids,
            "links": [link.as_json() for link in self.links],
            "warnings": list(self.warnings),
        }


class ChainVerificationError(SevToolError):
    """A chain failed; ``report`` holds every link's result."""

    def __init__(self, report: ChainReport) -> None:
        failed = [link for link in report.links if not link.ok]
        first = failed[0]
        more = f" (and {len(failed) - 1} more failed links)" if len(failed) > 1 else ""
        super().__init__(
            f"chain does not verify: {first.error} [check: {first.check}]{more}", hint=first.hint
        )
        self.report = report


def _check_link(chain: Chain, subject: str, signer: str | None) -> None:
    usage = SevUsage[subject.upper()]
    cert = chain.get(subject)
    issuer = chain.get(signer) if signer else None
    if isinstance(cert, AmdCert):
        if isinstance(issuer, AmdCert):
            verify_amd_cert(cert, usage, issuer)
        else:
            check_amd_cert(cert, usage)
    elif isinstance(cert, SevCert):
        if issuer is None:
            check_sev_cert(cert, usage)
        else:
            verify_sev_cert(cert, usage, issuer)


def _plan(chain: Chain) -> list[tuple[str, str | None]]:
    """Links to check: every link with both ends, plus field checks for orphans."""
    have = set(chain.present())
    links: list[tuple[str, str | None]] = [(s, i) for s, i in _LINKS if s in have and i in have]
    covered = {s for s, _ in links}
    links += [(n, None) for n in CERT_NAMES if n in have and n not in covered]
    return links


def _unsigned(cek: SevCert) -> bool:
    return all(usage != SevUsage.ASK for usage, _, _ in cek.slots())


def _generation_of(roots: Roots | None, algo: int) -> str:
    """``Rome-generation (RSA_SHA384)``, ``the simulator's``, or what the algorithm says."""
    name = SevAlgo(algo).name if algo in SevAlgo._value2member_map_ else f"algo {algo:#x}"
    if roots is None:
        era = "Naples" if algo == SevAlgo.RSA_SHA256 else "Rome or later"
        return f"of no known generation ({name}: {era})"
    if roots.generation is None:
        return f"the simulator's ({name})"
    return f"{roots.generation.capitalize()}-generation ({name})"


def _explain_cek(cek: SevCert, ask: AmdCert, failure: CertificateError) -> LinkResult:
    """Why the given ASK does not sign this CEK, in terms a user can act on."""
    if _unsigned(cek):
        unsigned = "the CEK is unsigned (as PDH_CERT_EXPORT returns it)"
        return LinkResult("cek", "ask", False, "signature", unsigned, _KDS_HINT)
    actual, given = cek_signer(cek), identify(ask)
    algo = next(a for u, a, _ in cek.slots() if u == SevUsage.ASK)
    if actual is None or given is None or actual == given:
        return LinkResult("cek", "ask", False, failure.check, str(failure), failure.hint)
    if not actual.is_amd:
        message = (
            f"this chain is the simulator's, not AMD's: its CEK is signed by the simulator's "
            f"ASK, and the ASK given is {given.name}'s"
        )
        hint = "leave out --ca/--ask/--ark: the simulator's roots are used for its chains"
    elif not given.is_amd:
        message = (
            f"this CEK is AMD's, {_generation_of(actual, algo)}; the ASK given is the simulator's"
        )
        hint = "leave out --ca/--ask/--ark: AMD's roots are built in"
    else:
        message = f"this CEK is {_generation_of(actual, algo)}, the ASK is {given.era}"
        hint = (
            f"leave out --ca/--ask/--ark to use the built-in {actual.name} roots, or give "
            f"ask_ark_{actual.generation}.cert"
        )
    return LinkResult("cek", "ask", False, "generation", message, hint)


def _find_roots(chain: Chain, partial: bool) -> tuple[str | None, str | None, list[str]]:
    """Fill in a missing ARK/ASK from the known roots; return (roots, generation, warnings)."""
    given = chain.ark or chain.ask
    if given is not None:
        known = identify(given)
        if known is None:
            return "given (not AMD's published roots, nor the simulator's)", None, [
                f"the {'ARK' if chain.ark else 'ASK'} given (key id {given.header.key_id.hex()}) "
                "is neither one of AMD's published roots nor the simulator's: the chain is "
                "only as good as your trust in it"
            ]  # fmt: skip
        return f"{known.name} (given)", known.generation, []
    if chain.cek is None:
        return None, None, []
    roots = cek_signer(chain.cek)
    if roots is None:
        if partial:
            return None, None, []
        _no_roots(chain.cek)
    assert roots is not None
    chain.ark, chain.ask = roots.ark, roots.ask
    return f"{roots.name} (built in)", roots.generation, []


def _no_roots(cek: SevCert) -> None:
    if _unsigned(cek):
        raise SevToolError(
            "the CEK is unsigned (as PDH_CERT_EXPORT returns it), so nothing links it to AMD",
            hint=_KDS_HINT,
        )
    algo = next(a for u, a, _ in cek.slots() if u == SevUsage.ASK)
    raise SevToolError(
        f"no built-in root signs this CEK: it is {_generation_of(None, algo)}, not from an "
        "AMD Naples, Rome, Milan, Genoa or Turin part, nor from the simulator",
        hint="give its roots with --ca ask_ark_<generation>.cert",
    )


def _results(chain: Chain) -> list[LinkResult]:
    results = []
    for subject, signer in _plan(chain):
        try:
            _check_link(chain, subject, signer)
        except CertificateError as exc:
            result = LinkResult(subject, signer, False, exc.check, str(exc), exc.hint)
            if (subject, signer) == ("cek", "ask") and chain.cek and chain.ask:
                result = _explain_cek(chain.cek, chain.ask, exc)
            results.append(result)
        else:
            results.append(LinkResult(subject, signer, True))
    return results


def verify_chain(chain: Chain, *, partial: bool = False) -> ChainReport:
    """Verify every link present; raise :class:`ChainVerificationError` if any fails.

    A chain without its ARK and ASK is completed from the built-in roots its CEK names.
    Unless ``partial``, all six certificates must then be there: a chain that does not reach
    an ARK proves nothing about the platform.
    """
    if not chain.present():
        raise SevInputError("nothing to verify: give a directory or certificate files")
    chain = replace(chain, notes=list(chain.notes))
    roots, generation, warnings = _find_roots(chain, partial)
    missing = [n for n in CERT_NAMES if chain.get(n) is None]
    if missing and not partial:
        raise SevInputError(
            f"incomplete chain: no {', '.join(m.upper() for m in missing)} certificate",
            hint="give them (a sevctl export file, a directory, or --pdh/--pek/--oca/--cek), "
            "or verify only what is there with --partial",
        )
    key_ids = {
        n: c.header.key_id.hex() for n in ("ark", "ask") if isinstance(c := chain.get(n), AmdCert)
    }
    report = ChainReport(
        tuple(_results(chain)),
        complete=not missing,
        key_ids=key_ids,
        roots=roots,
        generation=generation,
        warnings=tuple(chain.notes + warnings),
    )
    if not report.ok:
        raise ChainVerificationError(report)
    return report
