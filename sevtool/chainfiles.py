"""SEV certificate chains: the chain of one platform, and the files it travels in.

The chain of a SEV platform (SEV API chapter 2.1; ``shared/reference/sev.md`` 2.1-2.2):
ARK signs itself and the ASK; the ASK signs the CEK; the CEK and the owner's OCA both sign
the PEK; the OCA signs itself; the PEK signs the PDH.

Files, binary or hex text, in every layout the tools write: one certificate per file
(``sevtool export --dir``, sev-tool's ``pdh.cert``...), sevctl's ``export`` file
(PDH||PEK||OCA||CEK, and ASK||ARK after them with ``--full``; virtee/sev
``certs/sev/chain.rs``), sev-tool's ``cert_chain.cert`` (PEK||OCA||CEK) and AMD's
``ask_ark_<generation>.cert`` (ASK||ARK). Verification is in :mod:`sevtool.chain`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hwsim.sev.arch import SEV_CERT_SIZE, AmdCert, SevCert, SevUsage
from hwsim.sev.certs import cert_bytes, load_amd_cert, load_sev_cert, slot_quirks
from memcrypt.files import read_file, write_atomic
from sevtool.errors import SevFormatError, SevInputError

__all__ = [
    "CERT_NAMES",
    "SEVCTL_ORDER",
    "Chain",
    "load_chain",
    "read_chain_file",
    "split_certs",
    "write_chain",
    "write_chain_dir",
]

CERT_NAMES = ("ark", "ask", "cek", "pek", "oca", "pdh")
# sevctl `export` writes the platform's certificates, then with --full the CA's.
SEVCTL_ORDER = ("pdh", "pek", "oca", "cek", "ask", "ark")
_MAX_CERT_FILE = 64 * 1024
# AMD certificates after the SEV ones: none, ASK||ARK (Naples 832 B each, later 1600 B),
# one certificate, or the Naples ARK as first published (576 B, no signature).
_AMD_TAILS = (0, 2 * 832, 2 * 1600, 832, 1600, 576)
_ROLES = {SevUsage.ARK: "ark", SevUsage.ASK: "ask", SevUsage.CEK: "cek"}
_ROLES |= {SevUsage.PEK: "pek", SevUsage.OCA: "oca", SevUsage.PDH: "pdh"}


@dataclass
class Chain:
    """Whichever certificates of one platform's chain are at hand, and the quirks that
    reading them tolerated (``notes``: one sentence each, reported as warnings)."""

    ark: AmdCert | None = None
    ask: AmdCert | None = None
    cek: SevCert | None = None
    pek: SevCert | None = None
    oca: SevCert | None = None
    pdh: SevCert | None = None
    notes: list[str] = field(default_factory=list)

    def get(self, name: str) -> AmdCert | SevCert | None:
        value: AmdCert | SevCert | None = getattr(self, name)
        return value

    def present(self) -> list[str]:
        return [n for n in CERT_NAMES if self.get(n) is not None]

    def files(self) -> dict[str, bytes]:
        """``<name>.cert`` file contents, as ``sevtool export --dir`` writes them."""
        return {f"{n}.cert": self._bytes(n) for n in self.present()}

    def sevctl_bytes(self) -> bytes:
        """The one-file chain of sevctl ``export``: PDH||PEK||OCA||CEK, then ASK||ARK."""
        missing = [n.upper() for n in SEVCTL_ORDER[:4] if self.get(n) is None]
        if missing:
            raise SevInputError(f"a chain file needs the {', '.join(missing)} certificate")
        names = SEVCTL_ORDER if self.ask and self.ark else SEVCTL_ORDER[:4]
        return b"".join(self._bytes(n) for n in names)

    def _bytes(self, name: str) -> bytes:
        cert = self.get(name)
        assert cert is not None
        return cert.pack()

    def take(self, name: str, cert: AmdCert | SevCert, where: str) -> None:
        """Set one certificate, noting the slot quirks it carries; ARK and ASK are AMD key
        certificates, the others SEV certificates, and a file of the other kind is refused."""
        amd_role = name in ("ark", "ask")
        if amd_role != isinstance(cert, AmdCert):
            held = "an AMD key certificate" if isinstance(cert, AmdCert) else "a SEV certificate"
            want = "an AMD key certificate" if amd_role else "a SEV certificate"
            raise SevInputError(
                f"{where} holds {held} (key usage {_usage_of(cert)}); the {name.upper()} is {want}"
            )
        setattr(self, name, cert)
        if isinstance(cert, SevCert):
            self.notes += slot_quirks(cert, f"{name.upper()} ({where})")


def _tail_size(total: int) -> int:
    for tail in _AMD_TAILS:
        head = total - tail
        if head >= 0 and head % SEV_CERT_SIZE == 0 and head // SEV_CERT_SIZE <= 4:
            return tail
    raise SevFormatError(
        f"{total} bytes is not a certificate or chain file (one certificate, PDH+PEK+OCA+CEK "
        "[+ASK+ARK], PEK+OCA+CEK, or ASK+ARK)"
    )


def split_certs(
    data: bytes, what: str, ark_signature: bytes | None = None
) -> tuple[list[AmdCert | SevCert], list[str]]:
    """Every certificate in one file's bytes (binary or hex text), in file order, and notes
    on what was tolerated: an ARK without its signature takes ``ark_signature``."""
    raw = cert_bytes(data, what)
    if not raw:
        raise SevFormatError(f"{what} is empty")
    try:
        tail = _tail_size(len(raw))
    except SevFormatError as exc:
        if len(raw) < SEV_CERT_SIZE:  # meant as one certificate: say what one must be
            raise SevFormatError(
                f"{what} must be {SEV_CERT_SIZE} bytes, got {len(raw)} (AMD's ARK and ASK "
                "certificates are 832 or 1600)"
            ) from None
        raise SevFormatError(f"{what}: {exc}") from None
    count = (len(raw) - tail) // SEV_CERT_SIZE
    certs: list[AmdCert | SevCert] = []
    for i in range(count):
        part = raw[i * SEV_CERT_SIZE : (i + 1) * SEV_CERT_SIZE]
        certs.append(load_sev_cert(part, what if count == 1 else f"certificate {i + 1} of {what}"))
    amd = raw[len(raw) - tail :]
    halves = [amd[: tail // 2], amd[tail // 2 :]] if tail in (2 * 832, 2 * 1600) else [amd]
    notes = []
    for half in filter(None, halves):
        cert = load_amd_cert(half, what)
        if cert.signature is None and ark_signature is not None:
            cert = load_amd_cert(half, what, ark_signature)
            notes.append(f"{what} has no signature (as AMD first published the Naples ARK); "
                         "its signature was read from a separate file")  # fmt: skip
        certs.append(cert)
    return certs, notes


def _usage_of(cert: AmdCert | SevCert) -> str:
    usage = cert.header.key_usage if isinstance(cert, AmdCert) else cert.pub_key_usage
    return SevUsage(usage).name if usage in SevUsage._value2member_map_ else f"{usage:#x}"


def _role(cert: AmdCert | SevCert, what: str) -> str:
    usage = cert.header.key_usage if isinstance(cert, AmdCert) else cert.pub_key_usage
    try:
        return _ROLES[SevUsage(usage)]
    except (ValueError, KeyError):
        raise SevFormatError(f"{what}: key usage {usage:#x} names no certificate role") from None


def _add_file(chain: Chain, certs: list[AmdCert | SevCert], what: str, name: str | None) -> None:
    """Certificates of one file into ``chain``: a lone certificate given for a role takes
    that role (verification then checks its usage); several are placed by their usage."""
    if name is not None and len(certs) == 1:
        chain.take(name, certs[0], what)
        return
    seen: set[str] = set()
    for cert in certs:
        role = _role(cert, what)
        if role in seen:
            raise SevFormatError(f"{what} holds two {role.upper()} certificates")
        seen.add(role)
        if name is None or role == name or chain.get(role) is None:
            chain.take(role, cert, what)
    if name is not None and name not in seen:
        held = ", ".join(r.upper() for r in seen)
        raise SevInputError(f"{what} holds no {name.upper()} certificate (it holds {held})")


def read_chain_file(path: Path, name: str | None = None, ark_sig: Path | None = None) -> Chain:
    """The certificates in one file, placed by their usage (see the module's layouts)."""
    chain = Chain()
    _read_into(chain, path, name, ark_sig)
    return chain


def _read_into(chain: Chain, path: Path, name: str | None, ark_sig: Path | None) -> None:
    data = read_file(path, "certificate file", max_size=_MAX_CERT_FILE)
    sig_path = (ark_sig or _beside(path)) if name in (None, "ark") else None
    signature = read_file(sig_path, "ARK signature", max_size=_MAX_CERT_FILE) if sig_path else None
    what = f"{name.upper()} certificate {path}" if name else str(path)
    certs, notes = split_certs(data, what, signature)
    _add_file(chain, certs, what, name)
    chain.notes += notes


def load_chain(
    source: Path | None = None,
    files: Mapping[str, Path | None] | None = None,
    *,
    ark_signature: Path | None = None,
    sev: Path | None = None,
    ca: Path | None = None,
) -> Chain:
    """Read a chain from ``source`` (a directory of ``<name>.cert`` files, or one chain
    file), sevctl's ``sev`` chain file and ``ca`` file (ASK||ARK), and the files named per
    certificate, which win over the others.

    An ARK without its signature (the Naples ARK as AMD published it) takes the signature
    from ``ark_signature``, or from ``ark.cert.sig`` next to the ARK file.
    """
    chain = Chain()
    if source is not None and source.is_dir():
        for name in CERT_NAMES:
            if (source / f"{name}.cert").is_file():
                _read_into(chain, source / f"{name}.cert", name, ark_signature)
    for whole in (source if source and not source.is_dir() else None, sev, ca):
        if whole is not None:
            _read_into(chain, whole, None, ark_signature)
    for name, path in (files or {}).items():
        if path is not None:
            _read_into(chain, path, name, ark_signature if name == "ark" else None)
    return chain


def _beside(ark: Path) -> Path | None:
    """A separately published ARK signature next to the ARK file (``ark.cert.sig``)."""
    for candidate in (ark.with_name(ark.name + ".sig"), ark.with_suffix(".sig")):
        if candidate.is_file() and candidate != ark:
            return candidate
    return None


def write_chain(chain: Chain, path: Path) -> Path:
    """One file in sevctl ``export``'s order: PDH||PEK||OCA||CEK [||ASK||ARK]."""
    write_atomic(path, chain.sevctl_bytes())
    return path


def write_chain_dir(chain: Chain, directory: Path) -> list[Path]:
    """Write ``<name>.cert`` files into ``directory`` (made if missing)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SevInputError(f"cannot create directory {directory}: {exc.strerror}") from exc
    written = []
    for name, data in chain.files().items():
        write_atomic(directory / name, data)
        written.append(directory / name)
    return written
