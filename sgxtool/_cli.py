"""The ``sgxtool`` command: each command parses options, calls one library function and
renders the result. Library modules are imported inside the commands so that ``--help``
and ``--version`` load neither cryptography, unicorn nor rich.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
from sgxtool import __version__

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from hwsim.sgx.arch import Sigstruct
    from sgxtool.build import Target
    from sgxtool.config import EnclaveConfig
    from sgxtool.sign import Signer

_PROGRESS_MIN_PAGES = 16384  # 64 MiB: below this a measurement is over before a bar shows

_path = click.Path(path_type=Path)
_in_file = click.Path(path_type=Path, exists=True, dir_okay=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sgxtool")
@machine_option
def cli() -> None:
    """Build, measure, sign, inspect and run Intel SGX enclaves."""


def main(argv: Sequence[str] | None = None) -> None:
    run_main(cli, "sgxtool", argv)


# -- shared options -------------------------------------------------------------------------


def target_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--enclave-hash", metavar="HEX", help="Sign this MRENCLAVE instead of measuring an input."
    )(f)
    f = click.option(
        "-c",
        "--config",
        "config_path",
        type=_in_file,
        help="enclave.toml (default: enclave.toml in the input file's directory).",
    )(f)
    f = click.argument("enclave", type=_in_file, required=False)(f)
    return f


def make_target(enclave: Path | None, config_path: Path | None, enclave_hash: str | None) -> Target:
    from sgxtool.build import Target

    if (enclave is None) == (enclave_hash is None):
        raise click.UsageError("give either an ENCLAVE file or --enclave-hash")
    digest = None
    if enclave_hash is not None:
        try:
            digest = bytes.fromhex(enclave_hash)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise click.BadParameter("must be 64 hex digits", param_hint="--enclave-hash")
    return Target(load_cfg(config_path, enclave), enclave, digest)


def load_cfg(config_path: Path | None, enclave: Path | None) -> EnclaveConfig:
    from sgxtool.config import EnclaveConfig, load_config

    if config_path is not None:
        return load_config(config_path)
    if enclave is not None:
        beside = enclave.parent / "enclave.toml"
        if beside.is_file():
            return load_config(beside)
    return EnclaveConfig()


def date_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--date",
        metavar="YYYY-MM-DD",
        help="SIGSTRUCT DATE (default: $SOURCE_DATE_EPOCH, else today UTC).",
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr for long work, when stderr is a terminal."""
    if total < _PROGRESS_MIN_PAGES or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def pages_of(target: Target) -> int:
    """Page count of what is measured, for sizing a progress bar (0 when cheap to skip)."""
    from sgxtool.build import layout_of
    from sgxtool.image import ImageKind, detect

    if target.path is None or detect(target.path) not in (ImageKind.ELF, ImageKind.SIGNED_ELF):
        return 0
    return layout_of(target.path, target.config).page_count


# -- keys and signing -----------------------------------------------------------------------


@cli.command()
@click.argument("keyfile", type=_path)
@click.option("--public", "public_out", type=_path, help="Also write the public key here.")
@click.option("--force", is_flag=True, help="Replace an existing KEYFILE.")
@passphrase_options
def keygen(
    keyfile: Path,
    public_out: Path | None,
    force: bool,
    passphrase_env: str | None,
    passphrase_file: Path | None,
    ask_passphrase: bool,
) -> None:
    """Make an RSA-3072 (e=3) signing key; KEYFILE is written with mode 0600."""
    from memcrypt.files import write_atomic
    from sgxtool.keys import generate_key, public_pem, save_private_key

    if keyfile.exists() and not force:
        raise click.UsageError(f"{keyfile} exists; use --force to replace it")
    secret = resolve_passphrase(passphrase_env, passphrase_file, ask_passphrase, confirm=True)
    key = generate_key()
    save_private_key(key, keyfile, secret)
    if public_out is not None:
        write_atomic(public_out, public_pem(key.public_key()))
    click.echo(f"wrote {keyfile}" + (" (encrypted)" if secret else ""), err=True)


@cli.command()
@target_options
@click.option(
    "-k", "--key", "key_path", type=_in_file, help="Private key (PEM), RSA-3072 with e=3."
)
@click.option(
    "--sign-command", metavar="CMD",
    help="Sign with an external program (HSM, KMS): it reads the 256 bytes on stdin and "
    "writes the raw 384-byte big-endian signature on stdout. Needs --public-key.",
)  # fmt: skip
@click.option(
    "--public-key", "public_key_path", type=_in_file, help="The signer's public key (PEM)."
)
@click.option("-o", "--out", type=_path, help="Write the signed image (ELF inputs).")
@click.option("-s", "--sig", "sig_out", type=_path, help="Write the raw SIGSTRUCT.")
@date_option
@passphrase_options
@json_option
def sign(
    enclave: Path | None,
    config_path: Path | None,
    enclave_hash: str | None,
    key_path: Path | None,
    sign_command: str | None,
    public_key_path: Path | None,
    out: Path | None,
    sig_out: Path | None,
    date: str | None,
    passphrase_env: str | None,
    passphrase_file: Path | None,
    ask_passphrase: bool,
    as_json: bool,
) -> None:
    """Measure ENCLAVE (an ELF or SGXS stream) and sign it."""
    from sgxtool.build import sign_enclave
    from sgxtool.sign import signing_date

    target = make_target(enclave, config_path, enclave_hash)
    secret = resolve_passphrase(passphrase_env, passphrase_file, ask_passphrase)
    signer = make_signer(key_path, secret, sign_command, public_key_path)
    with progress_bar("measuring", pages_of(target)) as progress:
        sig = sign_enclave(
            target, signer, signing_date(date), out=out, sig_out=sig_out, progress=progress
        )
    show_identity(sig, out, sig_out, as_json)


def make_signer(key_path: Path | None, secret: bytes | None, sign_command: str | None,
                public_key_path: Path | None) -> Signer:  # fmt: skip
    """A key-file signer, or an external command checked against a public key."""
    import shlex

    from sgxtool.keys import load_private_key, load_public_key
    from sgxtool.sign import CommandSigner, KeySigner

    if (key_path is None) == (sign_command is None):
        raise click.UsageError("give either --key or --sign-command")
    if key_path is not None:
        return KeySigner(load_private_key(key_path, secret))
    if public_key_path is None:
        raise click.UsageError("--sign-command needs --public-key to check its signatures")
    try:
        argv = tuple(shlex.split(sign_command or ""))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sign-command") from exc
    if not argv:
        raise click.BadParameter("empty command", param_hint="--sign-command")
    return CommandSigner(load_public_key(public_key_path), argv)


def show_identity(sig: Sigstruct, out: Path | None, sig_out: Path | None, as_json: bool) -> None:
    """What sign and catsig print: the identity signed and the files written."""
    result = {
        "mrenclave": sig.enclavehash.hex(),
        "mrsigner": sig.mrsigner.hex(),
        "out": str(out) if out else None,
        "sig": str(sig_out) if sig_out else None,
    }
    if as_json:
        emit_json(result)
        return
    click.echo(f"MRENCLAVE: {result['mrenclave']}")
    click.echo(f"MRSIGNER: {result['mrsigner']}")
    for written in (out, sig_out):
        if written:
            click.echo(f"wrote {written}", err=True)


@cli.command()
@target_options
@click.option("-o", "--out", type=_path, required=True, help="Where to write the 256 bytes.")
@date_option
def gendata(
    enclave: Path | None,
    config_path: Path | None,
    enclave_hash: str | None,
    out: Path,
    date: str | None,
) -> None:
    """Write the 256 bytes to sign elsewhere (two-step signing, step 1).

    Sign them with SHA-256 and PKCS#1 v1.5, e.g.
    `openssl dgst -sha256 -sign key.pem -out sig data`.
    """
    from sgxtool.build import gendata as gendata_
    from sgxtool.sign import signing_date

    target = make_target(enclave, config_path, enclave_hash)
    with progress_bar("measuring", pages_of(target)) as progress:
        gendata_(target, signing_date(date), out, progress)
    click.echo(f"wrote {out}", err=True)


@cli.command()
@target_options
@click.option(
    "--data", "data_path", type=_in_file, required=True, help="The file `sgxtool gendata` wrote."
)
@click.option(
    "--signature",
    "signature_path",
    type=_in_file,
    required=True,
    help="Raw 384-byte big-endian RSA signature over the data.",
)
@click.option(
    "--public-key",
    "public_key_path",
    type=_in_file,
    required=True,
    help="The signer's public key (PEM).",
)
@click.option("-o", "--out", type=_path, help="Write the signed image (ELF inputs).")
@click.option("-s", "--sig", "sig_out", type=_path, help="Write the raw SIGSTRUCT.")
@json_option
def catsig(
    enclave: Path | None,
    config_path: Path | None,
    enclave_hash: str | None,
    data_path: Path,
    signature_path: Path,
    public_key_path: Path,
    out: Path | None,
    sig_out: Path | None,
    as_json: bool,
) -> None:
    """Assemble a SIGSTRUCT from an external signature (two-step signing, step 2)."""
    from memcrypt.files import read_file
    from sgxtool.build import catsig as catsig_
    from sgxtool.keys import load_public_key

    target = make_target(enclave, config_path, enclave_hash)
    public: rsa.RSAPublicKey = load_public_key(public_key_path)
    signature = read_file(signature_path, "signature", max_size=1 << 16)
    with progress_bar("measuring", pages_of(target)) as progress:
        sig = catsig_(
            target, data_path, signature, public, out=out, sig_out=sig_out, progress=progress
        )
    show_identity(sig, out, sig_out, as_json)


# -- inspection -----------------------------------------------------------------------------


@cli.command()
@click.argument("file", type=_in_file)
@json_option
def dump(file: Path, as_json: bool) -> None:
    """Decode the SIGSTRUCT of a signed image or raw SIGSTRUCT (or measure an SGXS)."""
    from sgxtool.info import describe

    info = describe(file)
    if as_json:
        emit_json(info)
        return
    from rich.markup import escape
    from rich.table import Table

    # A path is data, not rich markup: "[/]" in a file name must not be parsed.
    table = Table(title=escape(f"{info['file']} ({info['kind']})"), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in _dump_rows(info):
        table.add_row(key, value)
    console().print(table)


def _dump_rows(info: dict[str, Any]) -> Iterator[tuple[str, str]]:
    sig = info.get("sigstruct")
    if sig is None:
        yield "MRENCLAVE", info["mrenclave"]
        return
    for key, value in sig.items():
        if key in _LONG_FIELDS:
            yield key.upper(), f"{value[:32]}... ({len(value) // 2} bytes; --json has all)"
        elif isinstance(value, dict):
            named = key == "attributes"
            names = f" ({' '.join(value['flag_names']) or '-'})" if named else ""
            xnames = f" ({' '.join(value['xfrm_names']) or '-'})" if named else ""
            yield key.upper(), f"flags {value['flags']}{names}"
            yield "", f"xfrm  {value['xfrm']}{xnames}"
        else:
            yield key.upper(), str(value)


_LONG_FIELDS = ("modulus", "signature", "q1", "q2")


@cli.command()
@click.argument("file", type=_in_file)
@click.option("-c", "--config", "config_path", type=_in_file, help="enclave.toml for an ELF.")
@json_option
def measure(file: Path, config_path: Path | None, as_json: bool) -> None:
    """Print the MRENCLAVE of an ELF (with its enclave.toml), signed image or SGXS stream."""
    from sgxtool.build import Target
    from sgxtool.image import ImageKind, detect
    from sgxtool.info import measure as measure_

    cfg = None
    if config_path is not None or detect(file) is ImageKind.ELF:
        cfg = load_cfg(config_path, file)
    with progress_bar("measuring", pages_of(Target(cfg, file)) if cfg else 0) as progress:
        info = measure_(file, cfg, progress)
    if as_json:
        emit_json(info)
    else:
        click.echo(info["mrenclave"])


@cli.command()
@click.argument("file", type=_in_file)
@click.option(
    "--enclave", type=_in_file, help="For a raw SIGSTRUCT: the ELF or SGXS stream it was made for."
)
@click.option("-c", "--config", "config_path", type=_in_file, help="enclave.toml for --enclave.")
@json_option
def verify(file: Path, enclave: Path | None, config_path: Path | None, as_json: bool) -> None:
    """Check signature, exponent, Q1/Q2 and MRENCLAVE; exit 1 naming a failed check."""
    from sgxtool.info import verify as verify_

    cfg = load_cfg(config_path, enclave) if config_path or enclave else None
    report = verify_(file, config=cfg, enclave=enclave)
    if as_json:
        emit_json(report)
        return
    for check in report["checks"]:
        click.echo(f"ok  {check}")
    if not report["measured"]:
        click.echo("--  MRENCLAVE not recomputed (give --enclave to check it)")
    click.echo(f"MRENCLAVE: {report['mrenclave']}")
    click.echo(f"MRSIGNER:  {report['mrsigner']}")


@cli.command()
@click.argument("elf", type=_in_file)
@click.option("-c", "--config", "config_path", type=_in_file, help="enclave.toml.")
@json_option
def layout(elf: Path, config_path: Path | None, as_json: bool) -> None:
    """Show where every page of the enclave goes."""
    from sgxtool.build import layout_of
    from sgxtool.info import layout_summary

    plan = layout_of(elf, load_cfg(config_path, elf))
    rows = [
        {
            "offset": r.offset,
            "pages": r.pages,
            "flags": r.flags,
            "kind": r.kind,
            "label": r.label,
            "measured": r.mrmask != 0,
        }
        for r in plan.regions
    ]
    if as_json:
        emit_json({**layout_summary(plan), "regions": rows})
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{elf}: SIZE {plan.size:#x}, entry {plan.entry:#x}"))
    for col in ("offset", "pages", "type/perms", "measured", "region"):
        table.add_column(col)
    for r in plan.regions:
        table.add_row(
            f"{r.offset:#x}",
            str(r.pages),
            _flags_text(r.flags),
            "yes" if r.mrmask else "no",
            r.label,
        )
    console().print(table)


def _flags_text(flags: int) -> str:
    from hwsim.sgx.arch import PageType

    perms = "".join(c if flags & bit else "-" for c, bit in (("r", 1), ("w", 2), ("x", 4)))
    return f"{PageType((flags >> 8) & 0xFF).name} {perms}"


@cli.command("sgxs")
@click.argument("elf", type=_in_file)
@click.option("-c", "--config", "config_path", type=_in_file, help="enclave.toml.")
@click.option("-o", "--out", type=_path, required=True, help="The SGXS file to write.")
def sgxs_export(elf: Path, config_path: Path | None, out: Path) -> None:
    """Export the enclave as an SGXS stream (whose SHA-256 is MRENCLAVE)."""
    from sgxtool.build import Target, layout_of
    from sgxtool.sgxs import write_sgxs

    cfg = load_cfg(config_path, elf)
    with progress_bar("writing", pages_of(Target(cfg, elf))) as progress:
        digest = write_sgxs(layout_of(elf, cfg), out, progress)
    click.echo(digest.hex())


@cli.command()
@click.option("--cflags", "what", flag_value="cflags", help="Compiler flags for enclave code.")
@click.option("--ldflags", "what", flag_value="ldflags", help="SDK sources and link flags.")
@click.option("--path", "what", flag_value="path", help="The SDK directory.")
def sdk(what: str | None) -> None:
    """Print what `cc` needs to build an enclave with the bundled SDK.

    cc $(sgxtool sdk --cflags) enclave.c $(sgxtool sdk --ldflags) -o enclave.elf
    """
    from sgxtool import sdkinfo

    if what is None:
        raise click.UsageError("give --cflags, --ldflags or --path")
    if what == "path":
        click.echo(str(sdkinfo.SDK_DIR))
        return
    click.echo(sdkinfo.render(sdkinfo.cflags() if what == "cflags" else sdkinfo.ldflags()))


@cli.command()
@click.argument("image", type=_in_file)
@click.option("-o", "--out", type=_path, help="Write the 304-byte EINITTOKEN here.")
@click.option("--le", "le", type=_in_file, help="Run this Launch Enclave (signed .so, or SGXS).")
@click.option("--le-sig", type=_in_file, help="The SIGSTRUCT of an SGXS --le.")
@click.option(
    "--white-list", type=_in_file, help="A signed white list to give the --le first."
)  # fmt: skip
@machine_option
@json_option
def token(
    image: Path, out: Path | None, le: Path | None, le_sig: Path | None,
    white_list: Path | None, as_json: bool,
) -> None:  # fmt: skip
    """Get an EINITTOKEN for IMAGE (signed image or SIGSTRUCT) from the Launch Enclave.

    With --le, that Launch Enclave (Intel's, say) runs in the simulator and grants it.
    """
    from memcrypt.files import read_file, write_atomic
    from sgxtool.token import get_token, le_token, load_sigstruct

    sigstruct = load_sigstruct(image)  # before the machine: a bad input creates nothing
    if le is None:
        if le_sig is not None or white_list is not None:
            raise click.UsageError("--le-sig and --white-list go with --le")
        grant = get_token(sigstruct, cli_machine())
    else:
        wl = None if white_list is None else read_file(white_list, "white list", max_size=1 << 20)
        grant = le_token(image, cli_machine(), le, le_sig=le_sig, white_list=wl)
    if out is not None:
        write_atomic(out, grant.token.pack())
    if as_json:
        emit_json(grant.as_json())
        return
    info = grant.as_json()
    kind = "debug" if info["debug"] else "production"
    click.echo(f"token granted by the Launch Enclave for a {kind} enclave")
    click.echo(f"  MRENCLAVE {info['mrenclave']}")
    click.echo(f"  MRSIGNER  {info['mrsigner']}")
    if out is not None:
        click.echo(f"  written to {out}")


@cli.command()
@click.argument("image", type=_in_file)
@click.argument("entry")
@click.option("--in", "in_file", type=_in_file, help="Input bytes: the contents of FILE.")
@click.option("--in-hex", metavar="HEX", help="Input bytes in hex.")
@click.option("--in-text", metavar="TEXT", help="Input bytes: TEXT as UTF-8.")
@click.option("--out", "out_file", type=_path, help="Write the output bytes to FILE.")
@click.option(
    "--out-size", type=click.IntRange(0, 8 << 20), default=64 << 10, show_default=True,
    help="Largest output accepted, in bytes.",
)  # fmt: skip
@click.option(
    "--budget", type=click.IntRange(1), metavar="N",
    help="Instructions the enclave may run in the whole call (all entries and OCALL round "
    "trips); counted in slices, see sgxtool(1). Default: not counted (counting is slower).",
)  # fmt: skip
@click.option(
    "--timeout", type=click.FloatRange(0, min_open=True), default=60.0, show_default=True,
    metavar="SECONDS", help="Wall-clock limit for the whole call, inside and outside the enclave.",
)  # fmt: skip
@click.option("--sig", "sig_file", type=_in_file, help="IMAGE is an SGXS stream; its SIGSTRUCT.")
@click.option("--token", "token_file", type=_in_file, help="An EINITTOKEN (sgxtool token -o).")
@click.option("--edl", type=_in_file, help="Intel SDK enclaves: the enclave's EDL file.")
@click.option(
    "--arg", "args", multiple=True, metavar="NAME=VALUE",
    help="Intel SDK enclaves: an ECALL parameter (number, text, hex:BYTES, or 1,2,3).",
)  # fmt: skip
@click.option(
    "--typedef", "typedefs", multiple=True, metavar="NAME=C-TYPE",
    help="A type the EDL's included headers define, e.g. buffer_t='void *'.",
)  # fmt: skip
@click.option(
    "--edl-path", "edl_path", multiple=True, type=click.Path(path_type=Path, file_okay=False),
    help="A directory holding EDL files the EDL imports.",
)  # fmt: skip
@machine_option
@json_option
def run(
    image: Path,
    entry: str,
    in_file: Path | None,
    in_hex: str | None,
    in_text: str | None,
    out_file: Path | None,
    out_size: int,
    budget: int | None,
    timeout: float,
    sig_file: Path | None,
    token_file: Path | None,
    edl: Path | None,
    args: tuple[str, ...],
    typedefs: tuple[str, ...],
    edl_path: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Load IMAGE (a signed image), call its ECALL ENTRY, print what it returns.

    Output that is UTF-8 text is printed as text, other output as hex. What the enclave
    prints through its console OCALL goes to stderr. An enclave signed by Intel's
    sgx_sign runs with Intel's calling convention: give its --edl and its parameters
    with --arg; the return value and [out] buffers are printed.
    """
    from memcrypt.files import read_file, write_atomic
    from sgxtool.intelso import has_metadata
    from sgxtool.runtime import run_ecall

    token = None if token_file is None else read_file(token_file, "EINITTOKEN", max_size=4096)
    if has_metadata(image):
        _run_intel(image, entry, edl, list(args), typedefs, edl_path, token, budget, timeout,
                   as_json)  # fmt: skip
        return
    if edl is not None or args:
        raise click.UsageError("--edl and --arg are for enclaves signed by Intel's sgx_sign")
    data = _ecall_input(in_file, in_hex, in_text)
    result = run_ecall(
        image, entry, data, machine=cli_machine(), console=sys.stderr,
        out_size=out_size, budget=budget, timeout=timeout, token=token, sig=sig_file,
    )  # fmt: skip
    if out_file is not None:
        write_atomic(out_file, result.output)
    if as_json:
        emit_json(result.as_json())
    elif out_file is None and result.output:
        text = result.as_json()["output_text"]
        click.echo(text if isinstance(text, str) and text.isprintable() else result.output.hex())


def _run_intel(
    image: Path, entry: str, edl: Path | None, args: list[str], typedefs: tuple[str, ...],
    edl_path: tuple[Path, ...], token: bytes | None, budget: int | None, timeout: float,
    as_json: bool,
) -> None:  # fmt: skip
    """``run`` for an Intel SDK enclave: ECALL by EDL name, values by parameter name."""
    from sgxtool.intelrt import run_intel_ecall

    if edl is None:
        raise click.UsageError(f"{image} is an Intel SDK enclave: give its EDL with --edl")
    defs = {}
    for text in typedefs:
        name, sep, ctype = text.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{text!r}: expected NAME=C-TYPE", param_hint="--typedef")
        defs[name] = ctype
    result = run_intel_ecall(
        image, entry, args, edl=edl, typedefs=defs, edl_path=edl_path, machine=cli_machine(),
        token=token, console=sys.stderr, budget=budget, timeout=timeout,
    )  # fmt: skip
    if as_json:
        emit_json(result.as_json())
        return
    shown = result.as_json()
    if result.retval is not None:
        click.echo(f"retval {_value_text(shown['retval'])}")
    for name, value in dict(shown["outputs"]).items():  # type: ignore[call-overload]
        click.echo(f"{name} {_value_text(value)}")


def _value_text(value: object) -> str:
    if isinstance(value, dict):
        return str(value["hex"])
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _ecall_input(in_file: Path | None, in_hex: str | None, in_text: str | None) -> bytes:
    """The ECALL's input bytes from at most one of --in, --in-hex, --in-text."""
    from memcrypt.files import read_file

    if sum(x is not None for x in (in_file, in_hex, in_text)) > 1:
        raise click.UsageError("give at most one of --in, --in-hex and --in-text")
    if in_file is not None:
        return read_file(in_file, "ECALL input", max_size=8 << 20)
    if in_hex is not None:
        try:
            return bytes.fromhex(in_hex)
        except ValueError as exc:
            raise click.BadParameter("not hex digits", param_hint="--in-hex") from exc
    return b"" if in_text is None else in_text.encode()


@cli.command("import-config")
@click.argument("xml", type=_in_file)
@click.option("-o", "--out", type=_path, required=True, help="The enclave.toml to write.")
def import_config(xml: Path, out: Path) -> None:
    """Convert Intel's sgx_sign Enclave.config.xml into enclave.toml."""
    import tomli_w

    from memcrypt.files import write_atomic
    from sgxtool.intelxml import import_intel_config

    cfg, notes = import_intel_config(xml)
    header = f"# Imported from {xml.name} by sgxtool import-config.\n"
    write_atomic(out, (header + tomli_w.dumps(cfg.to_toml_dict())).encode())
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {out}", err=True)
