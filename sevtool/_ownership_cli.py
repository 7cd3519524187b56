"""The platform owner's commands: ``generate``, ``provision``, ``pek csr|sign|import``.

Wherever they take the owner's (OCA) private key, it is a key file or a key in a PKCS#11
token named by an RFC 7512 URI (``pkcs11:token=...;object=...``), as ``sgxtool sign -k``
takes it; the passphrase options give the file's passphrase or the token's PIN. Library
modules are imported inside the commands, to keep ``--help`` fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem

from hwsim.climachine import cli_machine, machine_option
from memcrypt.cli import (
    emit_json,
    json_option,
    names_token_key,
    passphrase_options,
    print_fields,
    resolve_passphrase,
    secret_prompt,
)

if TYPE_CHECKING:
    from sevtool.owner import OwnerKey
    from sevtool.platform import PlatformInfo

__all__ = ["generate", "pek", "provision", "render_status"]

_path = click.Path(path_type=Path)
_in_file = click.Path(path_type=Path, exists=True, dir_okay=False)
_MAX_CERT = 64 * 1024

# click's ParamType is generic (subscriptable) only in releases after 8.2, the oldest this
# project allows: subscript it for the type checker alone.
if TYPE_CHECKING:
    _StrParamType = click.ParamType[str]
else:
    _StrParamType = click.ParamType


class _OwnerKeyType(_StrParamType):
    """An owner key: a file that exists, or a PKCS#11 URI (kept as typed: a path type
    would fold the URI's slashes)."""

    name = "KEY|pkcs11:URI"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not names_token_key(text) and not Path(text).is_file():
            self.fail(f"{text!r}: no such file (nor a pkcs11: URI)", param, ctx)
        return text

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        return [CompletionItem(incomplete, type="file")]


OWNER_KEY = _OwnerKeyType()
_KEY_HELP = "a key file (PEM or DER) or a token's key ('pkcs11:token=...;object=...')"


def render_status(info: PlatformInfo, as_json: bool, action: str | None = None) -> None:
    """PLATFORM_STATUS as every platform command reports it."""
    if as_json:
        emit_json(info.as_json())
        return
    if action:
        click.echo(f"sevtool: {action}", err=True)
    flags = (("owned", info.externally_owned), ("es", info.es_initialized))
    print_fields(
        [
            ("machine", f"{info.machine} ({info.profile})"),
            ("state", info.state),
            ("owner", "externally owned" if info.externally_owned else "self-owned"),
            ("api", f"{info.api_major}.{info.api_minor} build {info.build}"),
            ("guests", str(info.guest_count)),
            ("flags", ", ".join(f for f, on in flags if on) or "-"),
        ]
    )


@click.command()
@click.argument("cert", type=_path)
@click.argument("key", type=_path, required=False)
@click.option(
    "--key",
    "existing",
    type=OWNER_KEY,
    metavar="EXISTING",
    help=f"Make the OCA certificate of this existing key, {_KEY_HELP}, instead of a new one.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing KEY file.")
@passphrase_options
def generate(
    cert: Path,
    key: Path | None,
    existing: str | None,
    force: bool,
    passphrase_env: str | None,
    passphrase_file: Path | None,
    ask_passphrase: bool,
) -> None:
    """Generate a platform owner's OCA: CERT (2084-byte SEV certificate) and KEY (PEM, 0600).

    With --key EXISTING (a key file or a pkcs11: URI), only CERT is written: the
    self-signed OCA of that key; the passphrase options give its passphrase or PIN.
    """
    from memcrypt.files import check_distinct, write_atomic
    from sevtool.errors import SevInputError
    from sevtool.owner import generate_oca, key_name, open_owner_signer, self_signed_oca

    if key is not None and names_token_key(str(key)):
        raise click.UsageError(
            "KEY is the file for a new key; to use a key in a token, make it with the token's "
            "tools (an EC secp384r1 key pair) and give --key 'pkcs11:...'"
        )
    check_distinct([("CERT", cert), ("KEY", key)])
    if existing is not None:
        if key is not None:
            raise click.UsageError("give KEY (a new key) or --key EXISTING, not both")
        secret = resolve_passphrase(passphrase_env, passphrase_file, ask_passphrase,
                                    prompt=secret_prompt(existing))  # fmt: skip
        write_atomic(cert, self_signed_oca(open_owner_signer(existing, secret)).cert.pack())
        click.echo(f"sevtool: wrote OCA certificate {cert} for key {key_name(existing)}", err=True)
        return
    if key is None:
        raise click.UsageError("give KEY, the file for the new private key (or --key EXISTING)")
    if key.exists() and not force:
        raise SevInputError(f"{key} exists; not overwriting an owner key (use --force)")
    secret = resolve_passphrase(passphrase_env, passphrase_file, ask_passphrase, confirm=True)
    generate_oca().write(cert, key, secret)
    click.echo(f"sevtool: wrote OCA certificate {cert} and private key {key}", err=True)


@click.command()
@machine_option
@click.argument("cert", type=_in_file)
@click.argument("key", type=OWNER_KEY)
@passphrase_options
@json_option
def provision(
    cert: Path,
    key: str,
    passphrase_env: str | None,
    passphrase_file: Path | None,
    ask_passphrase: bool,
    as_json: bool,
) -> None:
    """Take ownership of the platform with the OCA CERT and its KEY (a file or a pkcs11: URI).

    Runs PEK_CSR, signs the CSR with KEY and imports it (PEK_CERT_IMPORT).
    """
    from sevtool.owner import load_owner_key
    from sevtool.platform import provision as take_ownership

    secret = resolve_passphrase(passphrase_env, passphrase_file, ask_passphrase,
                                prompt=secret_prompt(key))  # fmt: skip
    info = take_ownership(cli_machine(), load_owner_key(cert, key, secret))
    render_status(info, as_json, "platform is now externally owned")


@click.group()
def pek() -> None:
    """The PEK signing request, for owners who sign away from the platform host."""


@pek.command("csr")
@machine_option
@click.argument("out", type=_path)
def pek_csr_cmd(out: Path) -> None:
    """Write the platform's PEK certificate signing request (PEK_CSR) to OUT."""
    from memcrypt.files import write_atomic
    from sevtool.platform import pek_csr

    write_atomic(out, pek_csr(cli_machine()).pack())
    click.echo(f"sevtool: wrote PEK CSR {out}", err=True)


@pek.command("sign")
@click.argument("files", metavar="CSR [CERT] KEY OUT", nargs=-1, required=True)
@click.option(
    "--oca-out",
    type=_path,
    metavar="FILE",
    help="Without CERT: where to write the OCA certificate made from KEY "
    "(default: oca.cert beside OUT).",
)
@passphrase_options
def pek_sign_cmd(
    files: tuple[str, ...],
    oca_out: Path | None,
    passphrase_env: str | None,
    passphrase_file: Path | None,
    ask_passphrase: bool,
) -> None:
    """Sign the PEK CSR with the OCA CERT's KEY (a file or a pkcs11: URI); write the
    signed PEK to OUT.

    Without CERT, the OCA certificate is made from KEY as sev-tool's sign_pek_csr does, and
    written to --oca-out (default oca.cert beside OUT).
    """
    from hwsim.sev.certs import load_sev_cert
    from memcrypt.files import read_file, write_atomic
    from sevtool.owner import load_owner_key, open_owner_signer, self_signed_oca, sign_pek_csr

    if len(files) not in (3, 4):
        raise click.UsageError("give CSR CERT KEY OUT, or CSR KEY OUT to make the OCA from KEY")
    for text in files[:-2]:
        if not Path(text).is_file():
            raise click.BadParameter(f"{text}: no such file", param_hint="CSR/CERT")
    csr, key, out = Path(files[0]), OWNER_KEY.convert(files[-2], None, None), Path(files[-1])
    request = load_sev_cert(read_file(csr, "PEK CSR", max_size=_MAX_CERT), f"PEK CSR {csr}")
    secret = resolve_passphrase(passphrase_env, passphrase_file, ask_passphrase,
                                prompt=secret_prompt(key))  # fmt: skip
    if len(files) == 4:
        owner = load_owner_key(Path(files[1]), key, secret)
    else:
        owner = self_signed_oca(open_owner_signer(key, secret))
        _write_oca(oca_out or out.with_name("oca.cert"), owner)
    write_atomic(out, sign_pek_csr(request, owner).pack())
    click.echo(f"sevtool: wrote signed PEK {out}", err=True)


def _write_oca(path: Path, owner: OwnerKey) -> None:
    """The OCA made for ``pek sign CSR KEY OUT``; another key's OCA there stays."""
    from hwsim.sev.certs import load_sev_cert, sev_public_key
    from memcrypt.files import read_file, write_atomic
    from sevtool.errors import SevInputError

    if path.exists():
        existing = load_sev_cert(read_file(path, "OCA", max_size=_MAX_CERT), f"OCA {path}")
        if sev_public_key(existing) != owner.public_key:
            raise SevInputError(
                f"{path} exists and is another key's OCA; not overwriting it "
                "(name another file with --oca-out)"
            )
    write_atomic(path, owner.cert.pack())
    click.echo(f"sevtool: wrote OCA certificate {path}", err=True)


@pek.command("import")
@machine_option
@click.argument("pek_cert", metavar="PEK", type=_in_file)
@click.argument("oca", type=_in_file)
@json_option
def pek_import_cmd(pek_cert: Path, oca: Path, as_json: bool) -> None:
    """Import the owner-signed PEK and the owner's OCA (PEK_CERT_IMPORT)."""
    from hwsim.sev.certs import load_sev_cert
    from memcrypt.files import read_file
    from sevtool.platform import pek_cert_import

    signed = load_sev_cert(read_file(pek_cert, "PEK", max_size=_MAX_CERT), f"PEK {pek_cert}")
    owner = load_sev_cert(read_file(oca, "OCA", max_size=_MAX_CERT), f"OCA {oca}")
    info = pek_cert_import(cli_machine(), signed, owner)
    render_status(info, as_json, "platform is now externally owned")
