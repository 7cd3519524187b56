"""Signing operations: one-step signing, and two-step signing for offline keys and HSMs.

What is signed can be an ELF plus its enclave.toml (the usual case), an SGXS stream, or a
bare MRENCLAVE (for a measurement made elsewhere, like ``sgxs-sign --in-hash``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from hwsim.sgx.arch import Sigstruct
from memcrypt.files import check_distinct, read_file, write_atomic
from sgxtool.config import EnclaveConfig
from sgxtool.errors import UsageError, VerificationError
from sgxtool.image import ImageKind, detect, layout_of, write_image, write_sig
from sgxtool.measure import Progress, mrenclave
from sgxtool.sgxs import sgxs_mrenclave
from sgxtool.sign import ExternalSignature, Signer, sign_sigstruct, unsigned_sigstruct

__all__ = ["Target", "catsig", "gendata", "layout_of", "sign_enclave", "target_mrenclave"]

_SIGNED_DATA_SIZE = 256


@dataclass(frozen=True)
class Target:
    """What a SIGSTRUCT is made for: an ELF or SGXS ``path``, or a bare ``enclave_hash``."""

    config: EnclaveConfig
    path: Path | None = None
    enclave_hash: bytes | None = None


def target_mrenclave(target: Target, progress: Progress | None = None) -> bytes:
    """MRENCLAVE of what is being signed."""
    if target.enclave_hash is not None:
        return target.enclave_hash
    if target.path is None:
        raise UsageError("nothing to sign: give an ELF, an SGXS stream or --enclave-hash")
    kind = detect(target.path)
    if kind is ImageKind.SGXS:
        return sgxs_mrenclave(target.path)
    if kind is ImageKind.SIGSTRUCT:
        raise UsageError(f"{target.path} is a SIGSTRUCT, not an enclave")
    return mrenclave(layout_of(target.path, target.config), progress)


def sign_enclave(
    target: Target,
    signer: Signer,
    date: int,
    *,
    out: Path | None = None,
    sig_out: Path | None = None,
    progress: Progress | None = None,
) -> Sigstruct:
    """Measure and sign; write the signed image to ``out`` and/or the raw SIGSTRUCT to
    ``sig_out``. Nothing is written unless signing succeeded."""
    _check_outputs(target, out, sig_out)
    sig = unsigned_sigstruct(target.config, target_mrenclave(target, progress), date)
    sig = sign_sigstruct(sig, signer)
    _write_outputs(target, sig, out, sig_out)
    return sig


def gendata(target: Target, date: int, out: Path, progress: Progress | None = None) -> bytes:
    """Write the 256 bytes an external signer must sign (SIGSTRUCT bytes 0-127, 900-1027)."""
    sig = unsigned_sigstruct(target.config, target_mrenclave(target, progress), date)
    data = sig.signed_bytes()
    write_atomic(out, data)
    return data


def catsig(
    target: Target,
    signing_data: Path,
    signature: bytes,
    public_key: rsa.RSAPublicKey,
    *,
    out: Path | None = None,
    sig_out: Path | None = None,
    progress: Progress | None = None,
) -> Sigstruct:
    """Assemble a SIGSTRUCT from a signature made elsewhere over ``signing_data``.

    The data is re-derived from the enclave and config (its DATE is taken from the file)
    and must match byte for byte; the signature must verify; only then is output written.
    """
    _check_outputs(target, out, sig_out)
    data = read_file(signing_data, "signing data", max_size=4096)
    if len(data) != _SIGNED_DATA_SIZE:
        raise UsageError(f"{signing_data}: {len(data)} bytes; `sgxtool gendata` writes 256")
    date = int.from_bytes(data[20:24], "little")
    expected = unsigned_sigstruct(target.config, target_mrenclave(target, progress), date)
    _compare_signing_data(expected, data, signing_data)
    try:
        sig = sign_sigstruct(expected, ExternalSignature(public_key, signature))
    except VerificationError as exc:
        raise VerificationError(
            str(exc),
            hint="sign exactly the bytes `sgxtool gendata` wrote, with SHA-256 and PKCS#1 v1.5 "
            "(`openssl dgst -sha256 -sign KEY` writes the raw form), using the key that "
            "matches --public-key",
        ) from exc
    _write_outputs(target, sig, out, sig_out)
    return sig


def _compare_signing_data(expected: Sigstruct, data: bytes, source: Path) -> None:
    want = expected.signed_bytes()
    if want == data:
        return
    first = next(i for i in range(len(want)) if want[i] != data[i])
    offset = first if first < 128 else first - 128 + 900
    name = next(
        (n for off, n, st in reversed(Sigstruct.LAYOUT.fields) if off <= offset), "reserved"
    )
    raise VerificationError(
        f"{source} does not match this enclave and configuration: {name.upper()} differs",
        hint="run catsig with the same enclave, enclave.toml and options as gendata",
    )


def _check_outputs(target: Target, out: Path | None, sig_out: Path | None) -> None:
    if out is None and sig_out is None:
        raise UsageError("no output: give --out (signed image) and/or --sig (SIGSTRUCT)")
    check_distinct([("--out", out), ("--sig", sig_out)])
    if out is not None and (
        target.path is None or detect(target.path) not in (ImageKind.ELF, ImageKind.SIGNED_ELF)
    ):
        raise UsageError(
            "--out writes a signed ELF image, so the input must be an ELF; "
            "use --sig for SGXS streams and --enclave-hash"
        )


def _write_outputs(target: Target, sig: Sigstruct, out: Path | None, sig_out: Path | None) -> None:
    if out is not None:
        assert target.path is not None  # _check_outputs guarantees it
        write_image(target.path, out, sig, target.config)
    if sig_out is not None:
        write_sig(sig_out, sig)
