"""The ``sevtool`` command: SEV platform keys, guest-owner sessions and SME.

Each command parses options, calls one library function (``sevtool.platform``,
``sevtool.chain``) and renders the result. Library modules are imported inside the
commands so that ``--help`` and ``--version`` load neither cryptography nor rich.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hwsim.climachine import cli_machine, machine_option
from memcrypt.cli import (
    console,
    emit_json,
    json_option,
    passphrase_options,
    resolve_passphrase,
    run_main,
)
from sevtool import __version__

if TYPE_CHECKING:
    from sevtool.chain import ChainReport
    from sevtool.platform import PlatformInfo

_path = click.Path(path_type=Path)
_in_file = click.Path(path_type=Path, exists=True, dir_okay=False)
_MAX_CERT = 64 * 1024


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sevtool")
@machine_option
def cli() -> None:
    """Manage AMD SEV platforms: keys, certificates, ownership and chain verification."""


def main(argv: Sequence[str] | None = None) -> None:
    run_main(cli, "sevtool", argv)


def _render_status(info: PlatformInfo, as_json: bool, action: str | None = None) -> None:
    if as_json:
        emit_json(info.as_json())
        return
    if action:
        click.echo(f"sevtool: {action}", err=True)
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    rows = [
        ("machine", escape(f"{info.machine} ({info.profile})")),  # a path, not markup
        ("state", info.state),
        ("owner", "externally owned" if info.externally_owned else "self-owned"),
        ("api", f"{info.api_major}.{info.api_minor} build {info.build}"),
        ("guests", str(info.guest_count)),
        (
            "flags",
            ", ".join(
                f for f, on in (("owned", info.externally_owned), ("es", info.es_initialized)) if on
            )
            or "-",
        ),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console().print(table)


@cli.command()
@machine_option
@json_option
def show(as_json: bool) -> None:
    """Platform state, owner, API version and build, guest count and flags."""
    from sevtool.platform import platform_status

    _render_status(platform_status(cli_machine()), as_json)


@cli.command()
@machine_option
@json_option
def reset(as_json: bool) -> None:
    """Reset the platform (PLATFORM_RESET): new PEK, PDH and OCA; ownership cleared.

    The CEK is fused into the chip and stays.
    """
    from sevtool.platform import factory_reset

    _render_status(factory_reset(cli_machine()), as_json, "platform reset")


@cli.command()
@machine_option
@click.option(
    "--pek", is_flag=True, help="Rotate the PEK too (PEK_GEN): new PEK and PDH, self-owned again."
)
@json_option
def rotate(pek: bool, as_json: bool) -> None:
    """Generate a new PDH (PDH_GEN), or with --pek a new PEK and PDH (PEK_GEN)."""
    from sevtool.platform import rotate as rotate_keys

    info = rotate_keys(cli_machine(), pek=pek)
    _render_status(info, as_json, "new PEK and PDH" if pek else "new PDH")


@cli.command()
@click.argument("cert", type=_path)
@click.argument("key", type=_path)
@click.option("--force", is_flag=True, help="Overwrite an existing KEY file.")
@passphrase_options
def generate(
    cert: Path,
    key: Path,
    force: bool,
    passphrase_env: str | None,
    passphrase_file: Path | None,
    ask_passphrase: bool,
) -> None:
    """Generate a platform owner's OCA: CERT (2084-byte SEV certificate) and KEY (PEM, 0600)."""
    from sevtool.errors import SevInputError
    from sevtool.platform import generate_oca

    if key.exists() and not force:
        raise SevInputError(f"{key} exists; not overwriting an owner key (use --force)")
    secret = resolve_passphrase(passphrase_env, passphrase_file, ask_passphrase, confirm=True)
    generate_oca().write(cert, key, secret)
    click.echo(f"sevtool: wrote OCA certificate {cert} and private key {key}", err=True)


@cli.command()
@machine_option
@click.argument("cert", type=_in_file)
@click.argument("key", type=_in_file)
@passphrase_options
@json_option
def provision(
    cert: Path,
    key: Path,
    passphrase_env: str | None,
    passphrase_file: Path | None,
    ask_passphrase: bool,
    as_json: bool,
) -> None:
    """Take ownership of the platform with the OCA CERT and its KEY.

    Runs PEK_CSR, signs the CSR with KEY and imports it (PEK_CERT_IMPORT).
    """
    from sevtool.platform import load_owner_key
    from sevtool.platform import provision as take_ownership

    secret = resolve_passphrase(passphrase_env, passphrase_file, ask_passphrase)
    info = take_ownership(cli_machine(), load_owner_key(cert, key, secret))
    _render_status(info, as_json, "platform is now externally owned")


@cli.group()
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
@click.argument("csr", type=_in_file)
@click.argument("cert", type=_in_file)
@click.argument("key", type=_in_file)
@click.argument("out", type=_path)
@passphrase_options
def pek_sign_cmd(
    csr: Path,
    cert: Path,
    key: Path,
    out: Path,
    passphrase_env: str | None,
    passphrase_file: Path | None,
    ask_passphrase: bool,
) -> None:
    """Sign the PEK CSR with the OCA CERT's KEY; write the signed PEK to OUT."""
    from hwsim.sev.certs import load_sev_cert
    from memcrypt.files import read_file, write_atomic
    from sevtool.platform import load_owner_key, sign_pek_csr

    request = load_sev_cert(read_file(csr, "PEK CSR", max_size=_MAX_CERT), f"PEK CSR {csr}")
    secret = resolve_passphrase(passphrase_env, passphrase_file, ask_passphrase)
    write_atomic(out, sign_pek_csr(request, load_owner_key(cert, key, secret)).pack())
    click.echo(f"sevtool: wrote signed PEK {out}", err=True)


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
    _render_status(info, as_json, "platform is now externally owned")


@cli.command()
@machine_option
@click.option("--full", is_flag=True, help="Also write the ASK and ARK the CEK chains to.")
@click.argument("directory", metavar="DIR", type=_path)
def export(full: bool, directory: Path) -> None:
    """Write the certificate chain to DIR: pdh.cert pek.cert oca.cert cek.cert [ask ark].

    The CEK comes signed by the AMD key server, which for a simulated machine is the
    simulator's own ASK and ARK (not AMD's).
    """
    from sevtool.platform import export_chain, write_chain

    for path in write_chain(export_chain(cli_machine(), full=full), directory):
        click.echo(str(path))


@cli.command("get-id")
@machine_option
@json_option
def get_id_cmd(as_json: bool) -> None:
    """Print the chip id (GET_ID) in hex, as AMD's key server URLs use it."""
    from sevtool.platform import get_id

    chip_id = get_id(cli_machine()).hex()
    if as_json:
        emit_json({"id": chip_id})
    else:
        click.echo(chip_id)


def _cert_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for name in reversed(("ark", "ask", "cek", "pek", "oca", "pdh")):
        f = click.option(
            f"--{name}",
            type=_in_file,
            metavar="FILE",
            help=f"The {name.upper()} certificate (overrides DIR or FILE).",
        )(f)
    return f


@cli.command()
@click.argument(
    "source", metavar="[DIR|FILE]", required=False, type=click.Path(path_type=Path, exists=True)
)
@_cert_options
@click.option(
    "--ark-sig",
    type=_in_file,
    metavar="FILE",
    help="Signature of an ARK published without one (default: ARK file + .sig).",
)
@click.option("--partial", is_flag=True, help="Verify only the links present.")
@json_option
def verify(
    source: Path | None, ark_sig: Path | None, partial: bool, as_json: bool, **files: Path | None
) -> None:
    """Verify a certificate chain: ARK -> ASK -> CEK -> PEK <- OCA, PEK -> PDH.

    Certificates come from DIR (ark.cert, ask.cert, cek.cert, pek.cert, oca.cert,
    pdh.cert) or a chain FILE (sevctl export, sev-tool cert_chain.cert, AMD ask_ark), and
    the options, which override them; AMD's real ARK/ASK or the simulator's may be given.
    Exit 1 names the first failed link and check; exit 2 for unreadable input.
    """
    from sevtool.chain import ChainVerificationError, load_chain, verify_chain

    chain = load_chain(source, files, ark_signature=ark_sig)
    try:
        report = verify_chain(chain, partial=partial)
    except ChainVerificationError as exc:
        _render_report(exc.report, as_json)
        raise
    _render_report(report, as_json)


def _render_report(report: ChainReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.as_json())
        return
    from rich.markup import escape

    out = console()
    for link in report.links:
        mark = "[green]    ok[/]" if link.ok else "[red]FAILED[/]"
        text = f"{link.error} [check: {link.check}]" if link.error else link.title
        out.print(f"{mark} {escape(text)}")
    for name, key_id in report.key_ids.items():
        out.print(f"{name.upper()} key id {key_id}")
    if report.ok:
        out.print("chain verified" if report.complete else "present links verified (partial)")
