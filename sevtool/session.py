"""The guest owner's launch session, and the owner's files every later step reads.

``create_session`` verifies the platform's chain, makes a GODH key and certificate and
fresh TEK/TIK, and writes the files the way sevctl ``session`` names them:
``NAME_godh.b64`` and ``NAME_session.b64`` (base64, what QEMU's ``sev-guest``
``dh-cert-file=`` and ``session-file=`` read), ``NAME_tek.bin`` and ``NAME_tik.bin`` (16
raw bytes each, 0600), and on request ``NAME_tk.bin`` (TEK || TIK, libvirt's ``--tk``).

The readers accept each blob as raw bytes or base64, whichever it is, and say what a
file is when it is not what was asked for: most launch failures users report are a
base64 file where binary was wanted or the other way round, or two files swapped.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsim.sev.arch import (
    GUEST_POLICY_RESERVED,
    MEASURE_SIZE,
    SECRET_HEADER_SIZE,
    SESSION_SIZE,
    SEV_CERT_SIZE,
    SevCert,
    SevStatus,
    SevUsage,
)
from hwsim.sev.certs import CertificateError, check_sev_cert, load_sev_cert
from hwsim.sev.errors import PspError
from hwsim.sev.session import KEY_SIZE, OwnerSession, TransportKeys, build_session
from memcrypt.files import read_file, write_atomic
from sevtool.chain import Chain, ChainReport, load_chain, verify_chain
from sevtool.errors import SevInputError, SevToolError

__all__ = [
    "MAX_BLOB_FILE",
    "SessionResult",
    "check_policy",
    "create_session",
    "describe_blob",
    "explain_launch_start",
    "load_platform_pdh",
    "read_blob",
    "read_key",
    "read_session_files",
    "read_transport_keys",
    "read_value",
]

# Owner files are small: the largest, a GODH certificate in base64, is 2780 bytes.
MAX_BLOB_FILE = 8 * 1024
_MAX_CHAIN_FILE = 64 * 1024
# What a blob of each size is, to name a file given in the wrong place.
_KINDS = {
    KEY_SIZE: "a 16-byte key (TEK or TIK)",
    2 * KEY_SIZE: "TEK || TIK (libvirt's --tk file)",
    MEASURE_SIZE: "a launch measurement blob (measure || nonce)",
    SECRET_HEADER_SIZE: "a secret packet header",
    SESSION_SIZE: "a session blob (NAME_session)",
    SEV_CERT_SIZE: "a SEV certificate (NAME_godh or a PDH)",
}


def _decode_base64(data: bytes) -> bytes | None:
    text = b"".join(data.split())
    if not text:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def describe_blob(data: bytes) -> str:
    """What ``data`` looks like, by size, as raw bytes or as base64 text."""
    raw_kind = _KINDS.get(len(data))
    if raw_kind:
        return f"{raw_kind}, binary"
    decoded = _decode_base64(data)
    if decoded is not None and len(decoded) in _KINDS:
        return f"{_KINDS[len(decoded)]}, base64"
    if decoded is not None:
        return f"base64 of {len(decoded)} bytes"
    return f"{len(data)} bytes of binary"


def read_blob(path: Path, what: str, size: int) -> bytes:
    """A ``size``-byte blob from ``path``, stored raw or as base64 text."""
    data = read_file(path, what, max_size=MAX_BLOB_FILE)
    if len(data) == size:
        return data
    decoded = _decode_base64(data)
    if decoded is not None and len(decoded) == size:
        return decoded
    raise SevInputError(
        f"{what} {path}: expected {size} bytes (raw or base64), found {describe_blob(data)}",
        hint=_swap_hint(what, data),
    )


def _swap_hint(what: str, data: bytes) -> str | None:
    decoded = _decode_base64(data)
    size = len(decoded) if decoded is not None and len(data) not in _KINDS else len(data)
    if size == 2 * KEY_SIZE and ("TIK" in what or "TEK" in what):
        return "a 32-byte file is TEK || TIK: give it with --tk"
    if size == SEV_CERT_SIZE and "session" in what:
        return "this looks like the GODH certificate: are --session and --dh-cert swapped?"
    if size == SESSION_SIZE and "GODH" in what:
        return "this looks like the session blob: are --session and --dh-cert swapped?"
    return None


def read_value(value: str, what: str, size: int) -> bytes:
    """``size`` bytes given as a file (raw or base64) or as base64 text (sevctl's forms).

    The value itself is never echoed back: it may be a key.
    """
    path = Path(value)
    if path.exists():
        return read_blob(path, what, size)
    decoded = _decode_base64(value.encode())
    if decoded is None or len(decoded) != size:
        got = "no file of that name" if decoded is None else f"base64 of {len(decoded)} bytes"
        raise SevInputError(f"{what}: expected a file or base64 of {size} bytes, got {got}")
    return decoded


def read_key(value: str, what: str) -> bytes:
    """A 16-byte TEK or TIK (see :func:`read_value`)."""
    return read_value(value, what, KEY_SIZE)


def read_transport_keys(
    tik: str | None, tek: str | None, tk: Path | None, *, need_tek: bool
) -> TransportKeys:
    """TEK and TIK from ``--tik``/``--tek`` or libvirt's 32-byte ``--tk`` file."""
    if tk is not None:
        if tik is not None or tek is not None:
            raise SevInputError("give either --tk or --tik/--tek, not both")
        return TransportKeys.unpack(read_blob(tk, "TEK || TIK file", 2 * KEY_SIZE))
    if tik is None or (need_tek and tek is None):
        needed = "--tik and --tek" if need_tek else "--tik"
        raise SevInputError(f"the session's keys are needed: give {needed}, or --tk")
    tik_key = read_key(tik, "TIK")
    tek_key = read_key(tek, "TEK") if tek is not None else bytes(KEY_SIZE)
    if need_tek and tek_key == tik_key:
        raise SevInputError("--tek and --tik are the same key: one of them is the wrong file")
    return TransportKeys(tek_key, tik_key)


# -- the platform's PDH -----------------------------------------------------------------


_HEX_TEXT = frozenset(b"0123456789abcdefABCDEF \t\r\n")


def _load_pdh_chain(
    source: Path, files: Mapping[str, Path | None], ark_signature: Path | None
) -> Chain:
    """A directory or chain file (as ``verify`` reads them), or a lone PDH certificate
    (binary or hex text) with the rest of the chain in ``files``."""
    if source.is_file():
        data = read_file(source, "PDH or chain file", max_size=_MAX_CHAIN_FILE)
        if len(data) == SEV_CERT_SIZE or _HEX_TEXT.issuperset(data):
            chain = load_chain(None, files, ark_signature=ark_signature)
            chain.pdh = load_sev_cert(data, f"PDH certificate {source}")
            return chain
    return load_chain(source, files, ark_signature=ark_signature)


def load_platform_pdh(
    source: Path,
    files: Mapping[str, Path | None] | None = None,
    *,
    ark_signature: Path | None = None,
    insecure_skip_verify: bool = False,
) -> tuple[SevCert, ChainReport | None]:
    """The platform's PDH, its chain verified up to an ARK unless ``insecure_skip_verify``.

    ``source`` is what ``sevtool export`` writes (a directory), a sevctl ``export`` chain
    file, or a lone ``pdh.cert`` with the rest of the chain in ``files``.
    """
    chain = _load_pdh_chain(source, files or {}, ark_signature)
    if chain.pdh is None:
        raise SevInputError(f"{source}: holds no PDH certificate")
    report = None
    if not insecure_skip_verify:
        try:
            report = verify_chain(chain)
        except SevInputError as exc:  # an incomplete chain
            raise SevInputError(
                f"cannot verify the platform: {exc}",
                hint="give its whole chain (`sevtool export --full DIR` on the platform, or "
                "--pek/--oca/--cek/--ask/--ark), or --insecure-skip-verify for a test",
            ) from exc
    try:
        check_sev_cert(chain.pdh, SevUsage.PDH)
    except CertificateError as exc:
        raise SevInputError(f"{source}: {exc}") from exc
    return chain.pdh, report


# -- writing a session -------------------------------------------------------------------


@dataclass(frozen=True)
class SessionResult:
    """The files one ``create_session`` wrote, and what they hold (never the keys)."""

    policy: int
    files: dict[str, Path]
    verified: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": f"{self.policy:#x}",
            "chain_verified": self.verified,
            "files": {kind: str(path) for kind, path in self.files.items()},
        }


def check_policy(policy: int) -> None:
    """A policy the owner can ask for: 32 bits, reserved bits 6-15 clear."""
    if not 0 <= policy <= 0xFFFFFFFF:
        raise SevInputError(f"policy {policy:#x} does not fit 32 bits")
    if policy & GUEST_POLICY_RESERVED:
        raise SevInputError(
            f"policy {policy:#x} sets reserved bits 6-15 ({policy & GUEST_POLICY_RESERVED:#x})"
        )


def _session_files(made: OwnerSession, tk: bool) -> dict[str, tuple[str, bytes, int]]:
    files = {
        "godh": ("_godh.b64", base64.b64encode(made.godh.pack()), 0o644),
        "session": ("_session.b64", base64.b64encode(made.session.pack()), 0o644),
        "tek": ("_tek.bin", made.keys.tek, 0o600),
        "tik": ("_tik.bin", made.keys.tik, 0o600),
    }
    if tk:
        files["tk"] = ("_tk.bin", made.keys.pack(), 0o600)
    return files


def create_session(
    pdh: SevCert,
    policy: int,
    directory: Path,
    name: str = "vm",
    *,
    tk: bool = False,
    force: bool = False,
    verified: bool,
) -> SessionResult:
    """Make a session for ``pdh`` and write its files into ``directory``.

    Existing files are kept unless ``force`` (their keys may be a running guest's only
    way in); when one write fails, the files already written are removed again.
    """
    check_policy(policy)
    if not name or "/" in name:
        raise SevInputError(f"--name {name!r} must be a plain file name prefix")
    made = build_session(pdh, policy)
    plan = {
        kind: (directory / f"{name}{suffix}", data, mode)
        for kind, (suffix, data, mode) in _session_files(made, tk).items()
    }
    existing = [str(path) for path, _, _ in plan.values() if path.exists()]
    if existing and not force:
        raise SevToolError(
            f"not overwriting {', '.join(existing)}", hint="another --name, or --force"
        )
    written: list[Path] = []
    try:
        for path, data, mode in plan.values():
            write_atomic(path, data, mode=mode)
            written.append(path)
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    return SessionResult(policy, {kind: path for kind, (path, _, _) in plan.items()}, verified)


# -- what a host reads, and what it says when LAUNCH_START refuses -----------------------


def read_session_files(godh: Path, session: Path) -> tuple[bytes, bytes]:
    """GODH certificate and session blob, each raw or base64 (QEMU takes base64 only)."""
    return (
        read_blob(godh, "GODH certificate (--dh-cert)", SEV_CERT_SIZE),
        read_blob(session, "session (--session)", SESSION_SIZE),
    )


def explain_launch_start(exc: PspError, godh: Path, session: Path, policy: int) -> SevToolError:
    """LAUNCH_START's refusal as one line naming the files and both possible causes.

    The firmware sees only a MAC that does not verify; the owner needs to hear what can
    make that happen (QEMU reports just "fw_error=11 'Bad measurement'").
    """
    if exc.status != SevStatus.BAD_MEASUREMENT:
        return SevToolError(f"{session}: {exc}", hint=exc.hint)
    if "policy" in str(exc):
        return SevToolError(
            f"{session}: the session was made for a policy other than {policy:#x} "
            f"(LAUNCH_START: BAD_MEASUREMENT)",
            hint="launch with the policy given to `sevtool session --policy`",
        )
    return SevToolError(
        f"{session} with {godh} does not open on this platform (LAUNCH_START: "
        "BAD_MEASUREMENT): it was made for another platform's PDH, or the two files are "
        "not from the same `sevtool session` run",
        hint="make the session from this platform's current chain (`sevtool export`; "
        "`sevtool rotate` makes a new PDH), and give the GODH and session of one run",
    )
