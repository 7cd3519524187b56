"""SEV certificate chains: load them from files, verify them link by link.

The chain of a SEV platform (SEV API chapter 2.1; ``shared/reference/sev.md`` 2.1-2.2):
ARK signs itself and the ASK; the ASK signs the CEK; the CEK and the owner's OCA both sign
the PEK; the OCA signs itself; the PEK signs the PDH. Any ARK/ASK can be given: AMD's real
ones, or the simulator's (``sevtool export --full``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwsim.sev.arch import SEV_CERT_SIZE, AmdCert, SevCert, SevUsage
from hwsim.sev.certs import (
    CertificateError,
    check_amd_cert,
    check_sev_cert,
    load_amd_cert,
    load_sev_cert,
    verify_amd_cert,
    verify_sev_cert,
)
from memcrypt.files import read_file
from sevtool.errors import SevFormatError, SevInputError, SevToolError

__all__ = [
    "CERT_NAMES",
    "Chain",
    "ChainReport",
    "ChainVerificationError",
    "LinkResult",
    "load_chain",
    "read_chain_file",
    "verify_chain",
]

CERT_NAMES = ("ark", "ask", "cek", "pek", "oca", "pdh")
_MAX_CERT_FILE = 64 * 1024
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


@dataclass
class Chain:
    """Whichever certificates of one platform's chain are at hand."""

    ark: AmdCert | None = None
    ask: AmdCert | None = None
    cek: SevCert | None = None
    pek: SevCert | None = None
    oca: SevCert | None = None
    pdh: SevCert | None = None

    def get(self, name: str) -> AmdCert | SevCert | None:
        value: AmdCert | SevCert | None = getattr(self, name)
        return value

    def present(self) -> list[str]:
        return [n for n in CERT_NAMES if self.get(n) is not None]

    def files(self) -> dict[str, bytes]:
        """``<name>.cert`` file contents, as ``sevtool export`` writes them."""
        out: dict[str, bytes] = {}
        for name in self.present():
            cert = self.get(name)
            assert cert is not None
            out[f"{name}.cert"] = cert.pack()
        return out


def load_chain(
    source: Path | None = None,
    files: Mapping[str, Path | None] | None = None,
    *,
    ark_signature: Path | None = None,
) -> Chain:
    """Read a chain from ``source`` (a directory of ``<name>.cert`` files, or one chain
    file, see :func:`read_chain_file`), overridden by explicitly named files.

    An ARK without its signature (the Naples ARK as AMD published it) takes the signature
    from ``ark_signature``, or from ``ark.cert.sig`` next to the ARK file.
    """
    chain, paths = Chain(), {}
    if source is not None and source.is_dir():
        paths = {n: source / f"{n}.cert" for n in CERT_NAMES if (source / f"{n}.cert").is_file()}
    elif source is not None:
        chain = read_chain_file(source)
    paths.update({n: p for n, p in (files or {}).items() if p is not None})
    for name, path in paths.items():
        data = read_file(path, f"{name.upper()} certificate", max_size=_MAX_CERT_FILE)
        what = f"{name.upper()} certificate {path}"
        if name in ("ark", "ask"):
            sig_path = (ark_signature or _beside(path)) if name == "ark" else None
            sig = (
                read_file(sig_path, "ARK signature", max_size=_MAX_CERT_FILE) if sig_path else None
            )
            setattr(chain, name, load_amd_cert(data, what, sig))
        else:
            setattr(chain, name, load_sev_cert(data, what))
    return chain


def read_chain_file(path: Path) -> Chain:
    """One file holding several certificates, in the layouts the tools write:
    sevctl ``export`` (PDH, PEK, OCA, CEK, and with ``--full`` ASK, ARK), sev-tool
    ``cert_chain.cert`` (PEK, OCA, CEK) and AMD's ``ask_ark_<generation>.cert`` (ASK, ARK).
    """
    data = read_file(path, "certificate chain file", max_size=_MAX_CERT_FILE)
    names: tuple[str, ...] = ()
    if len(data) >= 4 * SEV_CERT_SIZE:
        names = ("pdh", "pek", "oca", "cek")
    elif len(data) == 3 * SEV_CERT_SIZE:
        names = ("pek", "oca", "cek")
    rest = data[len(names) * SEV_CERT_SIZE :]
    if len(rest) not in (0, 2 * 832, 2 * 1600) or not data:
        raise SevFormatError(
            f"{path}: {len(data)} bytes is not a chain file (PDH+PEK+OCA+CEK [+ASK+ARK], "
            "PEK+OCA+CEK, or ASK+ARK)"
        )
    chain = Chain()
    for index, name in enumerate(names):
        cert = data[index * SEV_CERT_SIZE : (index + 1) * SEV_CERT_SIZE]
        setattr(chain, name, load_sev_cert(cert, f"{name.upper()} in {path}"))
    if rest:
        half = len(rest) // 2
        chain.ask = load_amd_cert(rest[:half], f"ASK in {path}")
        chain.ark = load_amd_cert(rest[half:], f"ARK in {path}")
    return chain


def _beside(ark: Path) -> Path | None:
    """A separately published ARK signature next to the ARK file (``ark.cert.sig``)."""
    for candidate in (ark.with_name(ark.name + ".sig"), ark.with_suffix(".sig")):
        if candidate.is_file():
            return candidate
    return None


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
    links: tuple[LinkResult, ...]
    complete: bool
    key_ids: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(link.ok for link in self.links)

    def as_json(self) -> dict[str, Any]:
        return {
            "verified": self.ok,
            "complete": self.complete,
            "key_ids": self.key_ids,
            "links": [link.as_json() for link in self.links],
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


def verify_chain(chain: Chain, *, partial: bool = False) -> ChainReport:
    """Verify every link present; raise :class:`ChainVerificationError` if any fails.

    Unless ``partial``, all six certificates must be given: a chain that does not reach
    an ARK proves nothing about the platform.
    """
    missing = [n for n in CERT_NAMES if chain.get(n) is None]
    if not chain.present():
        raise SevInputError("nothing to verify: give a directory or certificate files")
    if missing and not partial:
        raise SevInputError(
            f"incomplete chain: no {', '.join(m.upper() for m in missing)} certificate",
            hint="give them (e.g. --ark/--ask; `sevtool export --full` includes the "
            "simulator's), or verify only what is there with --partial",
        )
    results = []
    for subject, signer in _plan(chain):
        try:
            _check_link(chain, subject, signer)
        except CertificateError as exc:
            results.append(LinkResult(subject, signer, False, exc.check, str(exc), exc.hint))
        else:
            results.append(LinkResult(subject, signer, True))
    key_ids = {
        n: c.header.key_id.hex() for n in ("ark", "ask") if isinstance(c := chain.get(n), AmdCert)
    }
    report = ChainReport(tuple(results), complete=not missing, key_ids=key_ids)
    if not report.ok:
        raise ChainVerificationError(report)
    return report
