"""The ``sgxtool`` command: each command parses options, calls one library function and
renders the result. Library modules are imported inside the commands so that ``--help``
and ``--version`` load neither cryptography, unicorn nor rich.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hwsim.climachine import machine_option
from memcrypt.cli import (
    CommandSource,
    LazyGroup,
    emit_json,
    is_plain,
    json_option,
    lazy_help,
    names_token_key,
    passphrase_options,
    print_fields,
    print_records,
    resolve_passphrase,
    run_main,
    secret_prompt,
)
from memcrypt.work import work_options
from sgxtool import __version__
from sgxtool._largework import large_work
from sgxtool.errors import VerificationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from hwsim.sgx.arch import Sigstruct
    from sgxtool.build import Target
    from sgxtool.config import EnclaveConfig
    from sgxtool.sign import Signer

_path = click.Path(path_type=Path)
_in_file = click.Path(path_type=Path, exists=True, dir_okay=False)


# The manual pages, and running enclaves on the simulated machine (sgxtool/_enclave_cli.py),
# are loaded only when asked for.
_ELSEWHERE: dict[str, tuple[CommandSource, str]] = {
    "help": lazy_help("sgxtool"),
    "token": ("sgxtool._enclave_cli:token",
              "Get an EINITTOKEN for IMAGE (signed image or SIGSTRUCT) from the Launch Enclave."),
    "run": ("sgxtool._enclave_cli:run",
            "Load IMAGE (a signed image), call its ECALL ENTRY, print what it returns."),
    "debug": ("sgxtool._enclave_cli:debug",
              "Debug a debug enclave: run COMMANDs (call, read, write, break, continue, step, "
              "regs) with EDBGRD/EDBGWR."),
}  # fmt: skip


@click.group(cls=LazyGroup, lazy=_ELSEWHERE,
             context_settings={"help_option_names": ["-h", "--help"]})  # fmt: skip
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
        secret = resolve_passphrase(
            passphrase_env, passphrase_file, ask_passphrase, prompt=secret_prompt(key_path)
        )
        return make_signer(key_path, secret, sign_command, public_key_path)

    if enclave is not None and _intelcli.is_intel(enclave, config_path):
        sig = _intelcli.sign(enclave, config_path, enclave_hash, out, sig_out, date, intel_signer)
        show_identity(sig, out, sig_out, as_json)
        return
    target = make_target(enclave, config_path, enclave_hash)
    secret = resolve_passphrase(
        passphrase_env, passphrase_file, ask_passphrase, prompt=secret_prompt(key_path)
    )
    signer = make_signer(key_path, secret, sign_command, public_key_path)
    with large_work("measure", target.path, target.config) as progress:
        sig = sign_enclave(
            target, signer, signing_date(date), out=out, sig_out=sig_out, progress=progress
        )
    show_identity(sig, out, sig_out, as_json)


def make_signer(key: str | None, secret: bytes | None, sign_command: str | None,
                public_key_path: Path | None) -> Signer:  # fmt: skip
    """A key-file or PKCS#11 signer, or an external command checked against a public key."""
    from sgxtool.keys import load_private_key, load_public_key
    from sgxtool.sign import CommandSigner, KeySigner

    if (key is None) == (sign_command is None):
        raise click.UsageError("give either --key or --sign-command")
    if key is not None:
        if names_token_key(key):
            from memcrypt.pkcs11 import Pkcs11Signer

            return Pkcs11Signer.open(key, secret)
        return KeySigner(load_private_key(_existing(key, "--key"), secret))
    if public_key_path is None:
        raise click.UsageError("--sign-command needs --public-key to check its signatures")
    import shlex

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
