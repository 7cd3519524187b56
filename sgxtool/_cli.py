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
    emit_json,
    is_plain,
    json_option,
    passphrase_options,
    print_fields,
    print_records,
    read_input,
    resolve_passphrase,
    run_main,
    write_output,
)
from memcrypt.manual import help_command
from memcrypt.work import work_options
from sgxtool import __version__
from sgxtool.errors import VerificationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from hwsim.sgx.arch import Sigstruct
    from memcrypt.work import Progress, Work
    from sgxtool.build import Target
    from sgxtool.config import EnclaveConfig
    from sgxtool.sign import Signer

_path = click.Path(path_type=Path)
_in_file = click.Path(path_type=Path, exists=True, dir_okay=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sgxtool")
@machine_option
def cli() -> None:
    """Build, measure, sign, inspect and run Intel SGX enclaves."""


cli.add_command(help_command("sgxtool"))


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
        help="enclave.toml (default: enclave.toml in the input file's directory); "
        "Enclave.config.xml for an Intel SDK enclave (default: sgx_sign's defaults).",
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


@contextmanager
def large_work(action: str, path: Path | None, cfg: EnclaveConfig | None) -> Iterator[Progress]:
    """Measuring ``path`` under memcrypt.work's policy: cost said, limit, progress."""
    from memcrypt.work import large_work as policy
    from sgxtool.image import one_layout_per_file

    with one_layout_per_file(), policy(enclave_work(action, path, cfg), prog="sgxtool") as progress:
        yield progress


def enclave_work(action: str, path: Path | None, cfg: EnclaveConfig | None) -> Work:
    """Pages to add and bytes to hash for ``path``, from its layout (not by doing it)."""
    from memcrypt.work import Work
    from sgxtool.image import ImageKind, detect, layout_of, read_image

    kind = None if path is None else detect(path)
    if path is None or kind is ImageKind.SGXS:  # an SGXS stream is hashed as it is
        return Work(f"{action} {path}", 0, 0 if path is None else path.stat().st_size)
    if kind is ImageKind.SIGNED_ELF and cfg is None:
        cfg = read_image(path).config
    if kind not in (ImageKind.ELF, ImageKind.SIGNED_ELF) or cfg is None:
        return Work(f"{action} {path}", 0, 0)
    from sgxtool.measure import layout_work

    return layout_work(f"{action} {path}", layout_of(path, cfg))


# -- keys and signing -----------------------------------------------------------------------


@cli.command()
@click.argument("keyfile", type=_path)
@click.option("--public", "public_out", type=_path, help="Also write the public key here.")
@click.option("--force", is_flag=True, help="Replace an existing KEYFILE or public key.")
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
    from memcrypt.files import check_distinct
    from sgxtool.keys import generate_key, save_key_pair

    check_distinct([("KEYFILE", keyfile), ("--public", public_out)])
    for existing in (keyfile, public_out):
        if existing is not None and existing.exists() and not force:
            raise click.UsageError(f"{existing} exists; use --force to replace it")
    secret = resolve_passphrase(passphrase_env, passphrase_file, ask_passphrase, confirm=True)
    save_key_pair(generate_key(), keyfile, public_out, secret)
    click.echo(f"wrote {keyfile}" + (" (encrypted)" if secret else ""), err=True)


@cli.command()
@target_options
@click.option(
    "-k", "--key", "key_path", metavar="KEY",
    help="Private key: a PEM file (RSA-3072, e=3), or a key in an HSM as an RFC 7512 URI "
    "'pkcs11:token=...;object=...' (the passphrase options then give the PIN).",
)  # fmt: skip
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
@work_options
def sign(
    enclave: Path | None,
    config_path: Path | None,
    enclave_hash: str | None,
    key_path: str | None,
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
    """Measure ENCLAVE (an ELF, SGXS stream or Intel SDK .so) and sign it."""
    from sgxtool import _intelcli
    from sgxtool.build import sign_enclave
    from sgxtool.sign import signing_date

    def intel_signer() -> Signer:
        secret = resolve_passphrase(passphrase_env, passphrase_file, ask_passphrase)
        return make_signer(key_path, secret, sign_command, public_key_path)

    if enclave is not None and _intelcli.is_intel(enclave, config_path):
        sig = _intelcli.sign(enclave, config_path, enclave_hash, out, sig_out, date, intel_signer)
        show_identity(sig, out, sig_out, as_json)
        return
    target = make_target(enclave, config_path, enclave_hash)
    secret = resolve_passphrase(passphrase_env, passphrase_file, ask_passphrase)
    signer = make_signer(key_path, secret, sign_command, public_key_path)
    with large_work("measure", target.path, target.config) as progress:
        sig = sign_enclave(
            target, signer, signing_date(date), out=out, sig_out=sig_out, progress=progress
        )
    show_identity(sig, out, sig_out, as_json)


def make_signer(key: str | None, secret: bytes | None, sign_command: str | None,
                public_key_path: Path | None) -> Signer:  # fmt: skip
    """A key-file or PKCS#11 signer, or an external command checked against a public key."""
    import shlex

    from sgxtool.keys import load_private_key, load_public_key
    from sgxtool.sign import CommandSigner, KeySigner

    if (key is None) == (sign_command is None):
        raise click.UsageError("give either --key or --sign-command")
    if key is not None:
        from memcrypt.pkcs11 import Pkcs11Signer, is_pkcs11_uri

        if is_pkcs11_uri(key):
            return Pkcs11Signer.open(key, secret)
        return KeySigner(load_private_key(_existing(key, "--key"), secret))
    if public_key_path is None:
        raise click.UsageError("--sign-command needs --public-key to check its signatures")
    try:
        argv = tuple(shlex.split(sign_command or ""))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sign-command") from exc
    if not argv:
        raise click.BadParameter("empty command", param_hint="--sign-command")
    return CommandSigner(load_public_key(public_key_path), argv)


def _existing(path: str, option: str) -> Path:
    """``path`` as a file that exists, or the usage error click would give."""
    if not Path(path).exists() or Path(path).is_dir():
        raise click.BadParameter(f"file {path!r} does not exist", param_hint=option)
    return Path(path)


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
    to_stderr = "-" in (str(out), str(sig_out))  # stdout carries the image or SIGSTRUCT
    click.echo(f"MRENCLAVE: {result['mrenclave']}", err=to_stderr)
    click.echo(f"MRSIGNER: {result['mrsigner']}", err=to_stderr)
    for written in (out, sig_out):
        if written:
            click.echo(f"wrote {written}", err=True)


@cli.command()
@target_options
@click.option("-o", "--out", type=_path, required=True, help="Where to write the 256 bytes.")
@date_option
@work_options
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
    from sgxtool import _intelcli
    from sgxtool.build import gendata as gendata_
    from sgxtool.sign import signing_date

    if enclave is not None and _intelcli.is_intel(enclave, config_path):
        _intelcli.gendata(enclave, config_path, enclave_hash, out, date)
        click.echo(f"wrote {out}", err=True)
        return
    target = make_target(enclave, config_path, enclave_hash)
    with large_work("measure", target.path, target.config) as progress:
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
@work_options
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
    from sgxtool import _intelcli
    from sgxtool.build import catsig as catsig_
    from sgxtool.keys import load_public_key

    if enclave is not None and _intelcli.is_intel(enclave, config_path):
        sig = _intelcli.catsig(enclave, config_path, enclave_hash, data_path, signature_path,
                               public_key_path, out, sig_out)  # fmt: skip
        show_identity(sig, out, sig_out, as_json)
        return
    target = make_target(enclave, config_path, enclave_hash)
    public: rsa.RSAPublicKey = load_public_key(public_key_path)
    signature = read_file(signature_path, "signature", max_size=1 << 16)
    with large_work("measure", target.path, target.config) as progress:
        sig = catsig_(
            target, data_path, signature, public, out=out, sig_out=sig_out, progress=progress
        )
    show_identity(sig, out, sig_out, as_json)


# -- inspection -----------------------------------------------------------------------------


@cli.command()
@click.argument("file", type=_in_file)
@json_option
def dump(file: Path, as_json: bool) -> None:
    """Decode the SIGSTRUCT of a signed image or raw SIGSTRUCT (or measure an SGXS).

    Bytes whose fixed fields (HEADER, HEADER2, VENDOR, DATE) are not a SIGSTRUCT's are
    still decoded, then refused: one error line naming each, exit status 1.
    """
    from sgxtool.info import describe

    info = describe(file).as_json()
    if as_json:
        emit_json(info)
    else:
        whole = is_plain()
        head = [("file", str(info["file"])), ("kind", str(info["kind"]))] if whole else []
        print_fields([*head, *_dump_rows(info, whole)], title=f"{info['file']} ({info['kind']})")
    if info.get("warnings"):
        raise VerificationError(
            f"{file}: not a plausible SIGSTRUCT: {'; '.join(info['warnings'])}",
            hint="the fields shown are these bytes decoded as if they were one",
        )


def _dump_rows(info: dict[str, Any], whole: bool) -> Iterator[tuple[str, str]]:
    sig = info.get("sigstruct")
    if sig is None:
        yield "MRENCLAVE", info["mrenclave"]
        return
    for key, value in sig.items():
        if key in _LONG_FIELDS and not whole:
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
@work_options
def measure(file: Path, config_path: Path | None, as_json: bool) -> None:
    """Print the MRENCLAVE of an ELF (with its enclave.toml), signed image or SGXS stream."""
    from sgxtool.image import ImageKind, detect
    from sgxtool.info import measure as measure_

    cfg = None
    if config_path is not None or detect(file) is ImageKind.ELF:
        cfg = load_cfg(config_path, file)
    with large_work("measure", file, cfg) as progress:
        result = measure_(file, cfg, progress)
    if as_json:
        emit_json(result.as_json())
    else:
        click.echo(result.mrenclave.hex())


@cli.command()
@click.argument("file", type=_in_file)
@click.option(
    "--enclave", type=_in_file, help="For a raw SIGSTRUCT: the ELF or SGXS stream it was made for."
)
@click.option("-c", "--config", "config_path", type=_in_file, help="enclave.toml for --enclave.")
@json_option
@work_options
def verify(file: Path, enclave: Path | None, config_path: Path | None, as_json: bool) -> None:
    """Check signature, exponent, Q1/Q2 and MRENCLAVE; exit 1 naming a failed check."""
    from sgxtool.info import verify as verify_

    cfg = load_cfg(config_path, enclave) if config_path or enclave else None
    with large_work("measure", enclave or file, cfg) as progress:
        report = verify_(file, config=cfg, enclave=enclave, progress=progress)
    if as_json:
        emit_json(report.as_json())
        return
    for check in report.checks:
        click.echo(f"ok  {check}")
    if not report.measured:
        click.echo("--  MRENCLAVE not recomputed (give --enclave to check it)")
    click.echo(f"MRENCLAVE: {report.mrenclave.hex()}")
    click.echo(f"MRSIGNER:  {report.mrsigner.hex()}")


@cli.command()
@click.argument("elf", type=_in_file)
@click.option("-c", "--config", "config_path", type=_in_file, help="enclave.toml.")
@json_option
def layout(elf: Path, config_path: Path | None, as_json: bool) -> None:
    """Show where every page of the enclave goes."""
    from sgxtool.image import layout_of
    from sgxtool.info import LayoutSummary

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
        emit_json({**LayoutSummary.of(plan).as_json(), "regions": rows})
        return
    print_records(
        ("offset", "pages", "type/perms", "measured", "region"),
        [
            (f"{r.offset:#x}", str(r.pages), _flags_text(r.flags), "yes" if r.mrmask else "no",
             r.label)
            for r in plan.regions
        ],
        title=f"{elf}: SIZE {plan.size:#x}, entry {plan.entry:#x}",
    )  # fmt: skip


def _flags_text(flags: int) -> str:
    from hwsim.sgx.arch import PageType, Secinfo

    perms = "".join(c if flags & bit else "-" for c, bit in (("r", 1), ("w", 2), ("x", 4)))
    return f"{PageType(Secinfo(flags).page_type).name} {perms}"


@cli.command("sgxs")
@click.argument("elf", type=_in_file)
@click.option("-c", "--config", "config_path", type=_in_file, help="enclave.toml.")
@click.option("-o", "--out", type=_path, required=True, help="The SGXS file to write.")
@work_options
def sgxs_export(elf: Path, config_path: Path | None, out: Path) -> None:
    """Export the enclave as an SGXS stream (whose SHA-256 is MRENCLAVE)."""
    from sgxtool.image import layout_of
    from sgxtool.sgxs import write_sgxs

    cfg = load_cfg(config_path, elf)
    with large_work("export", elf, cfg) as progress:
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
@click.argument("entry", required=False)
@click.option(
    "--in", "in_file", metavar="FILE", help="Input bytes: the contents of FILE (- for stdin)."
)
@click.option("--in-hex", metavar="HEX", help="Input bytes in hex.")
@click.option("--in-text", metavar="TEXT", help="Input bytes: TEXT as UTF-8.")
@click.option(
    "--out", "out_file", metavar="FILE", help="Write the output bytes to FILE (- for stdout)."
)
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
    "--thread", "threads", multiple=True, metavar="'ENTRY [NAME=VALUE]...'",
    help="Intel SDK enclaves: run ENTRY (with its parameters) as one of several concurrent "
    "ECALLs, each on its own TCS; repeat once per thread, instead of ENTRY and --arg.",
)  # fmt: skip
@click.option(
    "--typedef", "typedefs", multiple=True, metavar="NAME=C-TYPE",
    help="A type the EDL's included headers define, e.g. buffer_t='void *'.",
)  # fmt: skip
@click.option(
    "--edl-path", "edl_path", multiple=True, type=click.Path(path_type=Path, file_okay=False),
    help="A directory holding EDL files the EDL imports.",
)  # fmt: skip
@click.option(
    "--show-memory", "show", metavar="ADDRESS[:LEN]",
    help="After the call, print enclave offset ADDRESS (LEN bytes, default 64) as the DIMM "
    "holds it (ciphertext) and as the host sees it (the abort page).",
)  # fmt: skip
@click.option("--epc-stats", is_flag=True, help="Print the EPC pages added, evicted and reloaded.")
@machine_option
@json_option
@work_options
def run(
    image: Path,
    entry: str | None,
    in_file: str | None,
    in_hex: str | None,
    in_text: str | None,
    out_file: str | None,
    out_size: int,
    budget: int | None,
    timeout: float,
    sig_file: Path | None,
    token_file: Path | None,
    edl: Path | None,
    args: tuple[str, ...],
    threads: tuple[str, ...],
    typedefs: tuple[str, ...],
    edl_path: tuple[Path, ...],
    show: str | None,
    epc_stats: bool,
    as_json: bool,
) -> None:
    """Load IMAGE (a signed image), call its ECALL ENTRY, print what it returns.

    Output that is UTF-8 text is printed as text, other output as hex. What the enclave
    prints through its console OCALL goes to stderr. An enclave signed by Intel's
    sgx_sign runs with Intel's calling convention: give its --edl and its parameters
    with --arg; the return value and [out] buffers are printed. With --thread (instead of
    ENTRY), several ECALLs run at once, each on its own TCS, and each one's result is printed.
    """
    from memcrypt.files import read_file
    from sgxtool.intelso import has_metadata
    from sgxtool.runtime import run_ecall
    from sgxtool.views import parse_span

    if threads and (entry is not None or args):
        raise click.UsageError("give either ENTRY (with --arg) or --thread, not both")
    if entry is None and not threads:
        raise click.UsageError("missing argument ENTRY (or, for Intel SDK enclaves, --thread)")
    token = None if token_file is None else read_file(token_file, "EINITTOKEN", max_size=4096)
    if has_metadata(image):
        work = (image, edl, typedefs, edl_path, token, budget, timeout, as_json)
        with large_work("load", image, None):
            if threads:
                _run_intel_threads(list(threads), *work)
            else:
                _run_intel(image, entry or "", edl, list(args), typedefs, edl_path, token,
                           budget, timeout, as_json)  # fmt: skip
        return
    if edl is not None or args or threads:
        raise click.UsageError(
            "--edl, --arg and --thread are for enclaves signed by Intel's sgx_sign"
        )
    assert entry is not None
    data = _ecall_input(in_file, in_hex, in_text)
    span = None if show is None else parse_span(show)
    seen: dict[str, Any] = {}
    with large_work("load", image, None):
        result = run_ecall(
            image, entry, data, machine=cli_machine(), console=sys.stderr,
            out_size=out_size, budget=budget, timeout=timeout, token=token, sig=sig_file,
            after=lambda enclave: _look(enclave, span, epc_stats, seen),
        )  # fmt: skip
    if out_file is not None:
        write_output(out_file, result.output)
    if as_json:
        doc = result.as_json()
        if out_file is not None:  # the output went where it was sent, not to stdout too
            doc = {k: v for k, v in doc.items() if not k.startswith("output")} | {
                "out": str(out_file)
            }
        emit_json(doc | {k: v.as_json() for k, v in seen.items()})
        return
    if out_file is None and result.output:
        text = result.as_json()["output_text"]
        click.echo(text if isinstance(text, str) and text.isprintable() else result.output.hex())
    _render_look(seen)


def _look(enclave: Any, span: tuple[int, int] | None, stats: bool, seen: dict[str, Any]) -> None:
    """After the call, before the teardown: the memory views and the EPC counters."""
    from sgxtool.views import enclave_memory

    if span is not None:
        seen["memory"] = enclave_memory(enclave, *span)
    if stats:
        seen["epc_stats"] = enclave.device.stats


def _render_look(seen: dict[str, Any]) -> None:
    from hwsim.memview import hex_lines

    memory = seen.get("memory")
    if memory is not None:
        click.echo(f"enclave offset {memory.offset:#x} (linear {memory.linear:#x}), "
                   f"EPC at {', '.join(memory.physical)}")  # fmt: skip
        for title, data in (("DIMM (ciphertext)", memory.dimm), ("host (abort page)", memory.host)):
            click.echo(f"{title}:")
            for line in hex_lines(data, memory.offset):
                click.echo(f"  {line}".rstrip())
    stats = seen.get("epc_stats")
    if stats is not None:
        click.echo(f"EPC pages: {stats.added} added, {stats.evicted} evicted, "
                   f"{stats.reloaded} reloaded")  # fmt: skip


@cli.command()
@click.argument("image", type=_in_file)
@click.argument("commands", nargs=-1, metavar="[COMMAND]...")
@click.option("--script", metavar="FILE", help="Read commands from FILE, one a line (- for stdin).")
@machine_option
@json_option
def debug(image: Path, commands: tuple[str, ...], script: str | None, as_json: bool) -> None:
    """Debug a debug enclave: run COMMANDs (call, read, write, break, continue, step,
    regs) with EDBGRD/EDBGWR.

    Each COMMAND is one quoted line: "call ENTRY [--in-text T|--in-hex H]", "read ADDRESS
    LEN", "write ADDRESS HEX", "break ADDRESS", "continue" (resume the call stopped at a
    breakpoint), "step" (one instruction), "regs" (its saved registers). Production
    enclaves are refused.
    """
    from sgxtool.debug import DebugSession, read_script

    lines = list(commands) + (read_script(script) if script is not None else [])
    if not lines:
        raise click.UsageError("give commands, or a script with --script")
    with DebugSession.open(image, machine=cli_machine(), console=sys.stderr) as session:
        steps: list[dict[str, Any]] | None = [] if as_json else None
        for line in lines:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            step = session.command(line)
            if steps is not None:
                steps.append(step.as_json())
            else:
                _render_step(step)
    if steps is not None:
        emit_json(steps)


def _render_step(step: Any) -> None:
    from hwsim.memview import hex_lines

    if step.kind == "read":
        click.echo(f"{step.command}:")
        for line in hex_lines(step.data, step.address):
            click.echo(f"  {line}".rstrip())
    elif step.kind == "regs":
        click.echo(f"{step.command}:")
        for name, value in step.registers().items():
            click.echo(f"  {name} {value:#x}")
    elif step.kind == "call" and not step.detail:
        text = step.data.decode("utf-8", "replace")
        shown = text if text.isprintable() and "\ufffd" not in text else step.data.hex()
        click.echo(f"{step.command}: {shown}".rstrip())
    else:
        at = "" if step.address is None else f" at {step.address:#x}"
        click.echo(f"{step.command}: {step.detail or step.kind}{at}")


def _run_intel(
    image: Path, entry: str, edl: Path | None, args: list[str], typedefs: tuple[str, ...],
    edl_path: tuple[Path, ...], token: bytes | None, budget: int | None, timeout: float,
    as_json: bool,
) -> None:  # fmt: skip
    """``run`` for an Intel SDK enclave: ECALL by EDL name, values by parameter name."""
    from sgxtool.intelrun import run_intel_ecall

    result = run_intel_ecall(
        image, entry, args, edl=_intel_edl(image, edl), typedefs=_typedefs(typedefs),
        edl_path=edl_path, machine=cli_machine(), token=token, console=sys.stderr,
        budget=budget, timeout=timeout,
    )  # fmt: skip
    if as_json:
        emit_json(result.as_json())
        return
    for line in _result_lines(result.as_json()):
        click.echo(line)


def _run_intel_threads(
    specs: list[str], image: Path, edl: Path | None, typedefs: tuple[str, ...],
    edl_path: tuple[Path, ...], token: bytes | None, budget: int | None, timeout: float,
    as_json: bool,
) -> None:  # fmt: skip
    """``run --thread``: concurrent ECALLs, each thread's result; exit 1 if one failed."""
    from sgxtool.errors import SgxToolError
    from sgxtool.intelrun import run_intel_threads

    run = run_intel_threads(
        image, specs, edl=_intel_edl(image, edl), typedefs=_typedefs(typedefs),
        edl_path=edl_path, machine=cli_machine(), token=token, console=sys.stderr,
        budget=budget, timeout=timeout,
    )  # fmt: skip
    if as_json:
        emit_json(run.as_json())
    for number, thread in enumerate(run.threads, 1):
        at = "" if thread.tcs is None else f" (TCS {thread.tcs:#x})"
        lines = ["failed"] if thread.error is not None else _result_lines(thread.as_json())
        for line in [] if as_json else lines or ["ok"]:
            click.echo(f"thread {number} {thread.call.entry}{at}: {line}")
    failure = run.first_failure()
    if failure is not None:
        number, thread = failure
        raise SgxToolError(f"thread {number} {thread.call.entry}: {thread.error}",
                           hint=thread.error.hint if thread.error else None)  # fmt: skip


def _intel_edl(image: Path, edl: Path | None) -> Path:
    if edl is None:
        raise click.UsageError(f"{image} is an Intel SDK enclave: give its EDL with --edl")
    return edl


def _typedefs(typedefs: tuple[str, ...]) -> dict[str, str]:
    defs = {}
    for text in typedefs:
        name, sep, ctype = text.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{text!r}: expected NAME=C-TYPE", param_hint="--typedef")
        defs[name] = ctype
    return defs


def _result_lines(shown: dict[str, Any]) -> list[str]:
    """``retval V`` and one ``NAME V`` per [out] buffer, as whole values."""
    lines = [] if shown.get("retval") is None else [f"retval {_value_text(shown['retval'])}"]
    return lines + [f"{k} {_value_text(v)}" for k, v in dict(shown.get("outputs", {})).items()]


def _value_text(value: object) -> str:
    if isinstance(value, dict):
        return str(value["hex"])
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _ecall_input(in_file: str | None, in_hex: str | None, in_text: str | None) -> bytes:
    """The ECALL's input bytes from at most one of --in, --in-hex, --in-text."""
    if sum(x is not None for x in (in_file, in_hex, in_text)) > 1:
        raise click.UsageError("give at most one of --in, --in-hex and --in-text")
    if in_file is not None:
        return read_input(in_file, "ECALL input", max_size=8 << 20)
    if in_hex is not None:
        try:
            return bytes.fromhex(in_hex)
        except ValueError as exc:
            raise click.BadParameter("not hex digits", param_hint="--in-hex") from exc
    return b"" if in_text is None else in_text.encode()


def _hex_masks(toml_text: str) -> str:
    """Bit masks in hex, as enclave.toml(5) and every dump show them (TOML allows 0x)."""
    import re

    keys = "miscselect|miscmask|attributes_mask|xfrm|xfrm_mask"
    return re.sub(
        rf"^({keys}) = (\d+)$",
        lambda m: f"{m[1]} = {int(m[2]):#x}",
        toml_text,
        flags=re.M,
    )


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
    write_atomic(out, (header + _hex_masks(tomli_w.dumps(cfg.to_toml_dict()))).encode())
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {out}", err=True)
