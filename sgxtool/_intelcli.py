"""``sgxtool sign|gendata|catsig`` on an Intel SGX SDK enclave (``.so``): the same commands
and options as for memcrypt-SDK images, with ``-c`` naming ``Enclave.config.xml``."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hwsim.sgx.arch import Sigstruct
from memcrypt.files import read_file
from sgxtool.errors import UsageError
from sgxtool.intelso import is_intel_so
from sgxtool.keys import load_public_key
from sgxtool.layout import EnclaveLayout
from sgxtool.measure import Progress
from sgxtool.sign import Signer, signing_date

if TYPE_CHECKING:
    from sgxtool.intelsign import Measuring

# The signing modules (layout, templates, the XML reader) load only for an Intel enclave:
# every `sgxtool sign` asks is_intel first, and most signs are of memcrypt-SDK images.

__all__ = ["catsig", "gendata", "is_intel", "sign"]


def is_intel(enclave: Path, config: Path | None) -> bool:
    """Whether ENCLAVE is an Intel SDK enclave; an XML config for anything else is refused
    here, with the reason, rather than failing later as bad TOML."""
    if is_intel_so(enclave):
        return True
    if config is not None and _is_xml(config):
        raise UsageError(
            f"{enclave}: not an Intel SGX SDK enclave (no .note.sgxmeta section); "
            f"{config} is XML, which configures only those",
            hint="memcrypt-SDK ELFs take an enclave.toml (`sgxtool import-config` converts XML)",
        )
    return False


def _is_xml(config: Path) -> bool:
    try:
        with config.open("rb") as f:
            head = f.read(256)
    except OSError:
        return False  # the reader of enclave.toml says why
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<"


def _usage(enclave_hash: str | None, out: Path | None, command: str) -> Path:
    if enclave_hash is not None:
        raise click.UsageError("--enclave-hash is for memcrypt-SDK images; an Intel SDK "
                               "enclave is measured from its .so")  # fmt: skip
    if out is None:
        raise click.UsageError(f"{command} of an Intel SDK enclave writes a file: give --out")
    return out


def sign(
    enclave: Path,
    xml: Path | None,
    enclave_hash: str | None,
    out: Path | None,
    sig_out: Path | None,
    date: str | None,
    signer: Callable[[], Signer],
) -> Sigstruct:
    """Usage is checked before ``signer`` is made (it may ask for a passphrase or PIN)."""
    from sgxtool.intelsign import sign_so

    target = _usage(enclave_hash, out, "signing")
    when = signing_date(date)
    return sign_so(enclave, xml, signer(), when, out=target, sig_out=sig_out,
                   measuring=_policy(enclave))  # fmt: skip


def gendata(
    enclave: Path, xml: Path | None, enclave_hash: str | None, out: Path, date: str | None
) -> None:
    from sgxtool.intelsign import gendata_so

    target = _usage(enclave_hash, out, "gendata")
    gendata_so(enclave, xml, signing_date(date), target, measuring=_policy(enclave))


def catsig(
    enclave: Path,
    xml: Path | None,
    enclave_hash: str | None,
    data_path: Path,
    signature_path: Path,
    public_key_path: Path,
    out: Path | None,
    sig_out: Path | None,
) -> Sigstruct:
    from sgxtool.intelsign import catsig_so

    target = _usage(enclave_hash, out, "catsig")
    public = load_public_key(public_key_path)
    signature = read_file(signature_path, "signature", max_size=1 << 16)
    return catsig_so(enclave, xml, data_path, signature, public, out=target, sig_out=sig_out,
                     measuring=_policy(enclave))  # fmt: skip


def _policy(enclave: Path) -> Measuring:
    """Measuring under memcrypt.work's policy, as for every other input."""
    from memcrypt.work import large_work
    from sgxtool.measure import layout_work

    def measuring(layout: EnclaveLayout) -> AbstractContextManager[Progress]:
        return large_work(layout_work(f"measure {enclave}", layout), prog="sgxtool")

    return measuring
