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
    CommandSource,
    LazyGroup,
    emit_json,
    json_option,
    lazy_help,
    print_status_line,
    run_main,
)
from sevtool import __version__

if TYPE_CHECKING:
    from hwsim.sev.arch import Vmsa
    from sevtool.chain import ChainReport
    from sevtool.checks import CheckResult

_path = click.Path(path_type=Path)
_in_file = click.Path(path_type=Path, exists=True, dir_okay=False)


# The manual pages, the platform owner's key commands, the guest owner's (which need no
# machine) and the hypervisor's over the guests of a machine live in modules of their own.
_ELSEWHERE: dict[str, tuple[CommandSource, str]] = {
    "help": lazy_help("sevtool"),
    "generate": ("sevtool._ownership_cli:generate",
                 "Generate a platform owner's OCA: CERT (2084-byte SEV certificate) and KEY "
                 "(PEM, 0600)."),
    "provision": ("sevtool._ownership_cli:provision",
                  "Take ownership of the platform with the OCA CERT and its KEY (a file or a "
                  "pkcs11: URI)."),
    "pek": ("sevtool._ownership_cli:pek",
            "The PEK signing request, for owners who sign away from the platform host."),
    "session": ("sevtool._owner_cli:session",
                "Make a launch session for the platform whose PDH is in PDH_OR_CHAIN."),
    "measurement": ("sevtool._owner_cli:measurement",
                    "Compute or check a launch measurement (LAUNCH_MEASURE), offline."),
    "secret": ("sevtool._owner_cli:secret",
               "Package a launch secret (LAUNCH_SECRET) for a measured guest, or check a "
               "packet."),
    "guest": ("sevtool._guest_cli:guest",
              "SEV guests on the machine: launch, measure, inject a secret, run, inspect, end."),
    "sme": ("sevtool._sme_cli:sme",
            "SME boot configuration: BIOS setting, kernel command line, what the kernel maps."),
}  # fmt: skip


@click.group(cls=LazyGroup, lazy=_ELSEWHERE,
             context_settings={"help_option_names": ["-h", "--help"]})  # fmt: skip
@click.version_option(__version__, prog_name="sevtool")
@machine_option
def cli() -> None:
    """Manage AMD SEV platforms: keys, certificates, ownership and chain verification."""


def main(argv: Sequence[str] | None = None) -> None:
    run_main(cli, "sevtool", argv)


@cli.command()
@machine_option
@json_option
def show(as_json: bool) -> None:
    """Platform state, owner, API version and build, guest count and flags."""
    from sevtool._ownership_cli import render_status
    from sevtool.platform import platform_status

    render_status(platform_status(cli_machine()), as_json)


@cli.command()
@machine_option
@json_option
def reset(as_json: bool) -> None:
    """Reset the platform (PLATFORM_RESET): new PEK, PDH and OCA; ownership cleared.

    The CEK is fused into the chip and stays.
    """
    from sevtool._ownership_cli import render_status
    from sevtool.platform import factory_reset

    render_status(factory_reset(cli_machine()), as_json, "platform reset")


@cli.command()
@machine_option
@click.option(
    "--pek", is_flag=True, help="Rotate the PEK too (PEK_GEN): new PEK and PDH, self-owned again."
)
@json_option
def rotate(pek: bool, as_json: bool) -> None:
    """Generate a new PDH (PDH_GEN), or with --pek a new PEK and PDH (PEK_GEN)."""
    from sevtool._ownership_cli import render_status
    from sevtool.platform import rotate as rotate_keys

    info = rotate_keys(cli_machine(), pek=pek)
    render_status(info, as_json, "new PEK and PDH" if pek else "new PDH")


@cli.command()
@machine_option
@click.option("--full", is_flag=True, help="Also write the ASK and ARK the CEK chains to.")
@click.option(
    "--dir",
    "directory",
    metavar="DIR",
    type=_path,
    help="Write one file per certificate into DIR (pdh.cert, pek.cert, ...) instead.",
)
@click.argument("file", metavar="FILE", required=False, type=_path)
@json_option
def export(full: bool, directory: Path | None, file: Path | None, as_json: bool) -> None:
    """Write the platform's certificate chain to FILE, as sevctl export does:
    PDH||PEK||OCA||CEK, and ASK||ARK after them with --full.

    With --dir DIR, one file per certificate (pdh.cert pek.cert oca.cert cek.cert [ask.cert
    ark.cert]). The CEK comes signed by the AMD key server, which for a simulated machine is
    the simulator's own ASK and ARK (not AMD's).
    """
    from sevtool.chainfiles import write_chain, write_chain_dir
    from sevtool.platform import export_chain

    if (file is None) == (directory is None):
        raise click.UsageError("give FILE (one chain file) or --dir DIR (one file per certificate)")
    if file is not None and file.is_dir():
        click.echo(
            f"sevtool: note: {file} is a directory: writing one file per certificate into it "
            "(say --dir to mean that; a FILE gets sevctl's one-file chain)",
            err=True,
        )
        file, directory = None, file
    chain = export_chain(cli_machine(), full=full)
    if directory is not None:
        paths = write_chain_dir(chain, directory)
    else:
        assert file is not None
        paths = [write_chain(chain, file)]
    if as_json:
        emit_json({"format": "dir" if directory else "sevctl", "files": [str(p) for p in paths]})
        return
    for path in paths:
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
@click.option(
    "--sev",
    type=_in_file,
    metavar="FILE",
    help="A chain file as sevctl export writes it: PDH||PEK||OCA||CEK [||ASK||ARK].",
)
@click.option(
    "--ca",
    type=_in_file,
    metavar="FILE",
    help="The CA chain ASK||ARK, as AMD's key server serves ask_ark_<generation>.cert.",
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
    source: Path | None,
    sev: Path | None,
    ca: Path | None,
    ark_sig: Path | None,
    partial: bool,
    as_json: bool,
    **files: Path | None,
) -> None:
    """Verify a certificate chain: ARK -> ASK -> CEK -> PEK <- OCA, PEK -> PDH.

    Certificates come from DIR (ark.cert, ask.cert, cek.cert, pek.cert, oca.cert,
    pdh.cert), a chain FILE or --sev FILE (sevctl export, sev-tool cert_chain.cert), --ca
    FILE (ASK||ARK, AMD's ask_ark_<generation>.cert), and the per-certificate options, which
    override them; binary or hex text. Without an ARK and ASK, AMD's built-in roots of the
    generation that signed the CEK are used (the simulator's for a simulated machine's
    chain), and the output says which. Exit 1 names the first failed link and check; exit 2
    for unreadable input.
    """
    from sevtool.chain import ChainVerificationError, load_chain, verify_chain

    if source is not None and sev is not None:
        raise click.UsageError("give the chain as FILE or as --sev FILE, not both")
    chain = load_chain(source, files, ark_signature=ark_sig, sev=sev, ca=ca)
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
    for link in report.links:
        print_status_line(
            link.ok, f"{link.error} [check: {link.check}]" if link.error else link.title
        )
    if report.roots:
        click.echo(f"roots: {report.roots}")
    for name, key_id in report.key_ids.items():
        click.echo(f"{name.upper()} key id {key_id}")
    for warning in report.warnings:
        click.echo(f"warning: {warning}")
    if report.ok:
        click.echo("chain verified" if report.complete else "present links verified (partial)")


@cli.command()
@machine_option
@click.argument("features", metavar="[sme|sev|es]...", nargs=-1,
                type=click.Choice(["sme", "sev", "es"]))  # fmt: skip
@json_option
def ok(features: tuple[str, ...], as_json: bool) -> None:
    """Check that the machine can run what SME, SEV and SEV-ES need, as sevctl ok does.

    Each requirement (CPUID bits, SYSCFG, BIOS settings, firmware state and version, ASIDs)
    passes or fails, with what was seen and what to change. Exit 1 if any fails.
    """
    from sevtool.checks import FEATURES, gather, run_checks

    results = run_checks(gather(cli_machine()), features or FEATURES)
    failed = [r for r in results if r.status == "fail"]
    if as_json:
        emit_json({"ok": not failed, "checks": [r.as_json() for r in results]})
    else:
        _render_checks(results)
    if failed:
        from sevtool.errors import SevToolError

        raise SevToolError(f"{len(failed)} requirement(s) not met; first: {failed[0].name}",
                           hint=failed[0].change)  # fmt: skip


def _render_checks(results: Sequence[CheckResult]) -> None:
    for r in results:
        indent = "  " * r.level
        seen = f": {r.seen}" if r.seen else ""
        if r.status == "skip":
            click.echo(f"SKIP {indent}- {r.name}{seen}")
        else:
            print_status_line(r.status == "pass", f"{indent}- {r.name}{seen}", good="PASS",
                              bad="FAIL")  # fmt: skip
        if r.change:
            click.echo(f"     {indent}  change: {r.change}")


@cli.group()
def vmsa() -> None:
    """SEV-ES VMSAs (vCPU register state) for measuring a launch offline, as sevctl vmsa."""


def _vmsa_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option("--cpu", type=click.IntRange(min=0), required=True, help="vCPU index."),
        click.option("--family", type=click.IntRange(min=0), default=0, help="CPU family."),
        click.option("--model", type=click.IntRange(min=0), default=0, help="CPU model."),
        click.option("--stepping", type=click.IntRange(min=0), default=0, help="CPU stepping."),
        click.option("--userspace", type=click.Choice(["qemu", "krun"]), default="qemu",
                     show_default=True, help="The VMM whose vCPU setup to follow."),
        click.option("--firmware", type=_in_file, help="OVMF image: APs start at its reset block."),
        json_option,
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _vmsa_written(path: Path, data: bytes, as_json: bool) -> None:
    import hashlib

    from memcrypt.files import write_atomic

    write_atomic(path, data)
    if as_json:
        emit_json({"file": str(path), "sha256": hashlib.sha256(data).hexdigest()})
    else:
        click.echo(f"sevtool: wrote VMSA {path}", err=True)


@vmsa.command("build")
@click.argument("file", type=_path)
@_vmsa_options
@click.option("--fpu", type=click.Choice(["zero", "reset"]), default="zero", show_default=True,
              help="x87/SSE state: zero (sevctl, libvirt 9, KVM_SEV_ES_INIT) or reset "
              "(MXCSR 0x1f80, FCW 0x37f: KVM_SEV_INIT2, sev-snp-measure).")  # fmt: skip
def vmsa_build(
    file: Path,
    cpu: int,
    family: int,
    model: int,
    stepping: int,
    userspace: str,
    firmware: Path | None,
    as_json: bool,
    fpu: str,
) -> None:
    """Write the VMSA of vCPU --cpu to FILE (4096 bytes), as sevctl vmsa build does."""
    from sevtool.vmsa import build_vmsa

    built = build_vmsa(cpu, userspace=userspace, sku=(family, model, stepping),
                       firmware=firmware, fpu=fpu)  # fmt: skip
    _vmsa_written(file, built.pack(), as_json)


@vmsa.command("update")
@click.argument("file", type=_in_file)
@_vmsa_options
def vmsa_update(
    file: Path,
    cpu: int,
    family: int,
    model: int,
    stepping: int,
    userspace: str,
    firmware: Path | None,
    as_json: bool,
) -> None:
    """Set the CPU signature and, for an AP, OVMF's reset address in the VMSA FILE."""
    from sevtool.vmsa import update_vmsa

    updated = update_vmsa(_read_vmsa(file), cpu, userspace=userspace,
                          sku=(family, model, stepping), firmware=firmware)  # fmt: skip
    _vmsa_written(file, updated.pack(), as_json)


@vmsa.command("show")
@click.argument("file", type=_in_file)
def vmsa_show(file: Path) -> None:
    """Print the VMSA FILE as JSON, as sevctl vmsa show does."""
    from sevtool.vmsa import show_json

    click.echo(show_json(_read_vmsa(file)))


def _read_vmsa(path: Path) -> Vmsa:
    from hwsim.sev.arch import VMSA_SIZE, Vmsa
    from memcrypt.errors import FormatError
    from memcrypt.files import read_file
    from sevtool.errors import SevFormatError

    try:
        return Vmsa.unpack(read_file(path, "VMSA", max_size=VMSA_SIZE + 1))
    except FormatError as exc:
        raise SevFormatError(f"{path}: {exc}") from exc
