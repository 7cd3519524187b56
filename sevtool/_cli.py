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
    passphrase_options,
    resolve_passphrase,
    run_main,
)
from sevtool import __version__
from sevtool._owner_cli import measurement, secret, session

if TYPE_CHECKING:
    from sevtool.chain import ChainReport
    from sevtool.guest import GuestInfo
    from sevtool.platform import PlatformInfo

_path = click.Path(path_type=Path)
_in_file = click.Path(path_type=Path, exists=True, dir_okay=False)
_MAX_CERT = 64 * 1024


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sevtool")
@machine_option
def cli() -> None:
    """Manage AMD SEV platforms: keys, certificates, ownership and chain verification."""


# The guest owner's commands need no machine; they live in their own module.
for _owner_command in (session, measurement, secret):
    cli.add_command(_owner_command)


def main(argv: Sequence[str] | None = None) -> None:
    run_main(cli, "sevtool", argv)


def _json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


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
@_json_option
def show(as_json: bool) -> None:
    """Platform state, owner, API version and build, guest count and flags."""
    from sevtool.platform import platform_status

    _render_status(platform_status(cli_machine()), as_json)


@cli.command()
@machine_option
@_json_option
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
@_json_option
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
@_json_option
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
@_json_option
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
@_json_option
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
@_json_option
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


# -- guests (the hypervisor's side; sevtool.guest) -------------------------------------


def _int(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """An integer in decimal or with a 0x/0o/0b prefix (policies, addresses)."""
    if value is None:
        return None
    try:
        number = int(value, 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an integer (decimal or 0x hex)") from None
    if number < 0:
        raise click.BadParameter(f"{value!r} is negative")
    return number


_INT: dict[str, Any] = {"callback": _int, "metavar": "N"}


def _guest_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--guest", metavar="HANDLE|NAME", help="The guest (default: the only one)."
    )(f)


@cli.group()
def guest() -> None:
    """SEV guests on the machine: launch, measure, inject a secret, run, inspect, end."""


def _render_guest(info: GuestInfo, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    if as_json:
        emit_json({**info.as_json(), **(extra or {})})
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    rows = [
        ("handle", str(info.handle)),
        ("name", escape(info.name)),
        ("state", info.state),
        ("asid", str(info.asid or "-")),
        ("policy", f"{info.policy:#x}"),
        ("vm", info.status),
        ("memory", f"{info.memory >> 20} MiB"),
        ("secret area", f"{info.secret_gpa:#x}+{info.secret_size:#x}" if info.secret_size else "-"),
    ]
    for key, value in [*rows, *((k, str(v)) for k, v in (extra or {}).items())]:
        table.add_row(key, value)
    console().print(table)


@guest.command("launch")
@machine_option
@click.argument("firmware", type=_in_file)
@click.option("--policy", **_INT, required=True, help="Guest policy (as in the session).")
@click.option("--session", type=_in_file, help="The owner's session file (base64 or binary).")
@click.option("--dh-cert", type=_in_file, help="The owner's GODH certificate (base64 or binary).")
@click.option("--kernel", type=_in_file, help="Kernel measured through the hashes table.")
@click.option("--initrd", type=_in_file, help="Initrd measured through the hashes table.")
@click.option("--cmdline", help="Kernel command line measured through the hashes table.")
@click.option("--name", help="A name for the guest (default guestN).")
@click.option("--memory", **_INT, default="64", show_default=True, help="Guest RAM in MiB.")
@_json_option
def guest_launch(
    firmware: Path,
    policy: int,
    session: Path | None,
    dh_cert: Path | None,
    kernel: Path | None,
    initrd: Path | None,
    cmdline: str | None,
    name: str | None,
    memory: int,
    as_json: bool,
) -> None:
    """Launch FIRMWARE as an SEV guest: LAUNCH_START, ACTIVATE, LAUNCH_UPDATE_DATA.

    The launch digest printed is what the firmware measured: SHA-256 of FIRMWARE (and
    of the kernel-hashes table with --kernel), as `sevtool measurement build` computes it.
    """
    from sevtool.guest import launch

    info = launch(cli_machine(), firmware, policy=policy, session=session, dh_cert=dh_cert,
                  kernel=kernel, initrd=initrd, cmdline=cmdline, name=name,
                  memory=memory << 20)  # fmt: skip
    if as_json:
        emit_json(info.as_json())
        return
    click.echo(f"sevtool: launched guest {info.guest.handle} on ASID {info.guest.asid}", err=True)
    _render_guest(info.guest, False, {"launch digest": info.launch_digest.hex()})


@guest.command("measure")
@machine_option
@_guest_option
@click.option("-o", "--outfile", type=_path, help="Also write the base64 blob to this file.")
@_json_option
def guest_measure(guest: str | None, outfile: Path | None, as_json: bool) -> None:
    """LAUNCH_MEASURE: print the base64 measurement || nonce for the guest owner."""
    from memcrypt.files import write_atomic
    from sevtool.guest import measure

    info = measure(cli_machine(), guest)
    text = info.as_json()["measurement"]
    if outfile is not None:
        write_atomic(outfile, text.encode() + b"\n")
    if as_json:
        emit_json(info.as_json())
        return
    click.echo(text)
    click.echo(
        f"sevtool: api {info.api_major}.{info.api_minor} build {info.build} "
        f"policy {info.policy:#x}",
        err=True,
    )


@guest.command("inject-secret")
@machine_option
@_guest_option
@click.argument("header", type=_in_file)
@click.argument("payload", type=_in_file)
@click.option("--gpa", **_INT, help="Guest address (default: the firmware's secret area).")
@_json_option
def guest_inject_secret(
    guest: str | None, header: Path, payload: Path, gpa: int | None, as_json: bool
) -> None:
    """LAUNCH_SECRET: inject the owner's packet (HEADER and PAYLOAD, binary or base64)."""
    from sevtool.guest import inject_secret

    used = inject_secret(cli_machine(), header, payload, gpa=gpa, guest=guest)
    if as_json:
        emit_json({"gpa": f"{used:#x}"})
    else:
        click.echo(f"sevtool: secret injected at guest address {used:#x}", err=True)


@guest.command("finish")
@machine_option
@_guest_option
@_json_option
def guest_finish(guest: str | None, as_json: bool) -> None:
    """LAUNCH_FINISH: the launch is over and the guest can run."""
    from sevtool.guest import finish

    _render_guest(finish(cli_machine(), guest), as_json)


@guest.command("run")
@machine_option
@_guest_option
@click.option("--budget", **_INT, default="100000000", show_default=True,
              help="Instructions to run at most.")  # fmt: skip
@_json_option
def guest_run(guest: str | None, budget: int, as_json: bool) -> None:
    """Run the guest's code; print what it writes to its serial port.

    Exit 1 when the guest crashes (a fault) or powers off with a non-zero code.
    """
    from sevtool.errors import SevToolError
    from sevtool.guest import run

    info = run(cli_machine(), guest, budget=budget)
    if as_json:
        emit_json(info.as_json())
    else:
        click.echo(info.serial, nl=False)
        code = f" (exit code {info.exit_code})" if info.exit_code is not None else ""
        click.echo(f"sevtool: guest {info.handle}: {info.stop}{code}", err=True)
    if info.stop == "fault":
        raise SevToolError(f"guest {info.handle} crashed: {info.detail}")
    if info.exit_code:
        raise SevToolError(f"guest {info.handle} powered off with exit code {info.exit_code}")


@guest.command("list")
@machine_option
@_json_option
def guest_list(as_json: bool) -> None:
    """The SEV guests on the machine."""
    from rich.markup import escape
    from rich.table import Table

    from sevtool.guest import list_guests

    guests = list_guests(cli_machine())
    if as_json:
        emit_json([g.as_json() for g in guests])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("handle", "name", "state", "asid", "policy", "vm"):
        table.add_column(column)
    for g in guests:
        table.add_row(str(g.handle), escape(g.name), g.state, str(g.asid or "-"),
                      f"{g.policy:#x}", g.status)  # fmt: skip
    console().print(table)


@guest.command("status")
@machine_option
@_guest_option
@_json_option
def guest_status(guest: str | None, as_json: bool) -> None:
    """GUEST_STATUS: state, ASID and policy, and the VM's run status."""
    from sevtool.guest import status

    _render_guest(status(cli_machine(), guest), as_json)


def _memory_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("-o", "--outfile", type=_path, help="Write the raw bytes to this file.")(f)
    f = click.option("--length", **_INT, default="256", show_default=True, help="Bytes.")(f)
    return click.option("--gpa", **_INT, required=True, help="Guest physical address.")(f)


def _render_bytes(data: bytes, gpa: int, outfile: Path | None, as_json: bool) -> None:
    if outfile is not None:
        from memcrypt.files import write_atomic

        write_atomic(outfile, data)
    if as_json:
        emit_json({"gpa": f"{gpa:#x}", "length": len(data), "hex": data.hex()})
    elif outfile is None:
        for at in range(0, len(data), 16):
            row = data[at : at + 16]
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
            click.echo(f"{gpa + at:012x}  {row.hex(' '):<47}  {text}")


@guest.command("dump")
@machine_option
@_guest_option
@_memory_options
@_json_option
def guest_dump(
    guest: str | None, gpa: int, length: int, outfile: Path | None, as_json: bool
) -> None:
    """Guest memory as the hypervisor reads it: ciphertext in private pages."""
    from sevtool.guest import dump

    _render_bytes(dump(cli_machine(), gpa, length, guest), gpa, outfile, as_json)


@guest.command("debug-decrypt")
@machine_option
@_guest_option
@_memory_options
@_json_option
def guest_debug_decrypt(
    guest: str | None, gpa: int, length: int, outfile: Path | None, as_json: bool
) -> None:
    """DBG_DECRYPT: guest memory through the guest's key (refused under NODBG)."""
    from sevtool.guest import debug_decrypt

    _render_bytes(debug_decrypt(cli_machine(), gpa, length, guest), gpa, outfile, as_json)


@guest.command("decommission")
@machine_option
@_guest_option
@_json_option
def guest_decommission(guest: str | None, as_json: bool) -> None:
    """DEACTIVATE and DECOMMISSION the guest; its memory is freed."""
    from sevtool.guest import decommission

    handle = decommission(cli_machine(), guest)
    if as_json:
        emit_json({"handle": handle, "decommissioned": True})
    else:
        click.echo(f"sevtool: guest {handle} decommissioned", err=True)
