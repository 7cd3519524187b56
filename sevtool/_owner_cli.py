"""The guest owner's commands: ``session``, ``measurement build|verify``, ``secret build|verify``.

They need no machine: a guest owner runs them on a trusted system of their own, with the
platform's certificate chain and what the host reports. Options and their spelling follow
sevctl's, so that scripts written for it carry over. Library modules are imported inside
the commands, to keep ``--help`` fast.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hwsim.sev.arch import MEASURE_SIZE
from memcrypt.cli import emit_json, json_option

if TYPE_CHECKING:
    from hwsim.sev.session import TransportKeys
    from sevtool.measurement import GuestImage, PlatformVersion

__all__ = ["measurement", "secret", "session"]

_in_file = click.Path(path_type=Path, exists=True, dir_okay=False)
_out_file = click.Path(path_type=Path, dir_okay=False)


# click's ParamType is generic (subscriptable) only in releases after 8.2, the oldest this
# project allows: subscript it for the type checker alone.
if TYPE_CHECKING:
    _IntParamType = click.ParamType[int]
else:
    _IntParamType = click.ParamType


class _IntOrHex(_IntParamType):
    """sevctl's number syntax: decimal, or hex with 0x."""

    name = "INT|0xHEX"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        try:
            number = int(text[2:], 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            self.fail(f"{value!r} is not an integer (decimal, or hex with 0x)", param, ctx)
        if not 0 <= number <= 0xFFFFFFFF:
            self.fail(f"{value!r} does not fit 32 bits", param, ctx)
        return number


_NUMBER = _IntOrHex()


# -- session ------------------------------------------------------------------------------


def _chain_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for name in reversed(("ark", "ask", "cek", "pek", "oca")):
        f = click.option(
            f"--{name}",
            type=_in_file,
            metavar="FILE",
            help=f"The platform's {name.upper()} certificate (overrides PDH_OR_CHAIN).",
        )(f)
    return click.option(
        "--ark-sig", type=_in_file, metavar="FILE", help="Signature of an ARK published without."
    )(f)


@click.command()
@click.argument("source", metavar="PDH_OR_CHAIN", type=click.Path(path_type=Path, exists=True))
@click.option("--policy", type=_NUMBER, required=True, help="Guest policy (int or 0xHEX).")
@click.option("--name", default="vm", show_default=True, help="Prefix of the files written.")
@click.option(
    "-o",
    "--output-dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=Path("."),
    help="Directory to write the files into (default: the current one).",
)
@_chain_options
@click.option(
    "--insecure-skip-verify",
    is_flag=True,
    help="Do not verify the platform's chain (tests only: the PDH may be anyone's).",
)
@click.option("--tk", is_flag=True, help="Also write NAME_tk.bin: TEK || TIK, libvirt's --tk.")
@click.option("--force", is_flag=True, help="Overwrite existing session files.")
@json_option
def session(
    source: Path,
    policy: int,
    name: str,
    directory: Path,
    ark_sig: Path | None,
    insecure_skip_verify: bool,
    tk: bool,
    force: bool,
    as_json: bool,
    **files: Path | None,
) -> None:
    """Make a launch session for the platform whose PDH is in PDH_OR_CHAIN.

    PDH_OR_CHAIN is a directory from `sevtool export --full`, a chain file (sevctl export),
    or a lone pdh.cert with the rest given by option. The chain is verified up to the ARK
    first. Writes NAME_godh.b64 and NAME_session.b64 (QEMU's dh-cert-file= and
    session-file=), NAME_tek.bin and NAME_tik.bin (0600; keep them: the measurement and the
    secret need them).
    """
    from sevtool.session import create_session, load_platform_pdh

    pdh, report = load_platform_pdh(
        source, files, ark_signature=ark_sig, insecure_skip_verify=insecure_skip_verify
    )
    if report is None:
        click.echo(
            "sevtool: warning: the platform's chain was NOT verified "
            "(--insecure-skip-verify): the session may be for anyone's PDH",
            err=True,
        )
    result = create_session(
        pdh, policy, directory, name, tk=tk, force=force, verified=report is not None
    )
    if as_json:
        emit_json(result.as_json())
        return
    if report is not None:
        roots = ", ".join(f"{n.upper()} {k}" for n, k in report.key_ids.items())
        click.echo(f"sevtool: platform chain verified ({roots})", err=True)
    for path in result.files.values():
        click.echo(str(path))


# -- measurement ----------------------------------------------------------------------------


@click.group()
def measurement() -> None:
    """Compute or check a launch measurement (LAUNCH_MEASURE), offline."""


def _measurement_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--api-major", type=_NUMBER, required=True, help="Platform API major."),
        click.option("--api-minor", type=_NUMBER, required=True, help="Platform API minor."),
        click.option("--build-id", type=_NUMBER, required=True, help="Platform build id."),
        click.option("--policy", type=_NUMBER, required=True, help="Guest policy."),
        click.option("--tik", metavar="FILE|BASE64", help="The session's TIK."),
        click.option("--tk", type=_in_file, help="TEK || TIK file (libvirt), instead of --tik."),
        click.option("--launch-digest", metavar="BASE64", help="Launch digest, if known."),
        click.option("--firmware", type=_in_file, help="OVMF image the guest boots."),
        click.option("--kernel", type=_in_file, help="Kernel measured by OVMF's hashes table."),
        click.option("--initrd", type=_in_file, help="Initrd (absent: hash of nothing)."),
        click.option("--cmdline", help="Kernel command line (hashed with a trailing NUL)."),
        click.option("--num-cpus", type=click.IntRange(min=1), help="SEV-ES: number of vCPUs."),
        click.option("--vmsa-cpu0", type=_in_file, help="SEV-ES: the boot vCPU's VMSA."),
        click.option("--vmsa-cpu1", type=_in_file, help="SEV-ES: the other vCPUs' VMSA."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _version(api_major: int, api_minor: int, build_id: int) -> PlatformVersion:
    from sevtool.measurement import PlatformVersion

    return PlatformVersion(api_major, api_minor, build_id)


def _digest(launch_digest: str | None, image: GuestImage | None, policy: int) -> bytes:
    from sevtool.errors import SevInputError
    from sevtool.measurement import launch_digest as compute
    from sevtool.session import read_value

    if (launch_digest is None) == (image is None):
        raise SevInputError("give one of --launch-digest or --firmware")
    if launch_digest is not None:
        return read_value(launch_digest, "--launch-digest", 32)
    assert image is not None
    return compute(image, policy)


def _image(
    firmware: Path | None,
    kernel: Path | None,
    initrd: Path | None,
    cmdline: str | None,
    es: tuple[int | None, Path | None, Path | None] = (None, None, None),
) -> GuestImage | None:
    from sevtool.errors import SevInputError
    from sevtool.measurement import GuestImage

    if firmware is None:
        if kernel or initrd or cmdline is not None or any(es):
            raise SevInputError("--kernel, --initrd, --cmdline and the VMSAs need --firmware")
        return None
    return GuestImage(firmware, kernel, initrd, cmdline, es[0] or 0, es[1], es[2])


def _keys(tik: str | None, tek: str | None, tk: Path | None, *, need_tek: bool) -> TransportKeys:
    from sevtool.session import read_transport_keys

    return read_transport_keys(tik, tek, tk, need_tek=need_tek)


@measurement.command("build")
@_measurement_options
@click.option("--nonce", metavar="FILE|BASE64", help="The mnonce (16 bytes).")
@click.option(
    "--launch-measure-blob",
    metavar="FILE|BASE64",
    help="LAUNCH_MEASURE output (QEMU query-sev-launch-measure): its nonce is used.",
)
@click.option("--outfile", type=_out_file, help="Write the 48 bytes here instead of base64.")
@json_option
def measurement_build(
    api_major: int,
    api_minor: int,
    build_id: int,
    policy: int,
    tik: str | None,
    tk: Path | None,
    launch_digest: str | None,
    firmware: Path | None,
    kernel: Path | None,
    initrd: Path | None,
    cmdline: str | None,
    num_cpus: int | None,
    vmsa_cpu0: Path | None,
    vmsa_cpu1: Path | None,
    nonce: str | None,
    launch_measure_blob: str | None,
    outfile: Path | None,
    as_json: bool,
) -> None:
    """Print the expected measurement: base64 of measure || nonce, as sevctl does."""
    from memcrypt.files import write_atomic
    from sevtool.measurement import build_measurement

    mnonce = _mnonce(nonce, launch_measure_blob)
    keys = _keys(tik, None, tk, need_tek=False)
    image = _image(firmware, kernel, initrd, cmdline, (num_cpus, vmsa_cpu0, vmsa_cpu1))
    digest = _digest(launch_digest, image, policy)
    result = build_measurement(
        keys.tik, _version(api_major, api_minor, build_id), policy, digest, mnonce
    )
    if outfile is not None:
        write_atomic(outfile, result.blob)
        click.echo(f"sevtool: wrote {outfile}", err=True)
    if as_json:
        emit_json(result.as_json())
    elif outfile is None:
        click.echo(base64.b64encode(result.blob).decode())


def _mnonce(nonce: str | None, launch_measure_blob: str | None) -> bytes:
    """The nonce from --nonce, or bytes 32-48 of --launch-measure-blob (sevctl's rule)."""
    from sevtool.errors import SevInputError
    from sevtool.measurement import split_measure_blob
    from sevtool.session import read_value

    if nonce is not None and launch_measure_blob is None:
        return read_value(nonce, "--nonce", 16)
    if launch_measure_blob is not None and nonce is None:
        blob = read_value(launch_measure_blob, "--launch-measure-blob", MEASURE_SIZE)
        return split_measure_blob(blob).mnonce
    raise SevInputError("give one of --nonce or --launch-measure-blob")


@measurement.command("verify")
@_measurement_options
@click.option("--tek", metavar="FILE|BASE64", help="The TEK, to tell a swapped TIK/TEK.")
@click.option(
    "--launch-measure-blob",
    metavar="FILE|BASE64",
    required=True,
    help="What the host reports (QEMU query-sev-launch-measure, virsh domlaunchsecinfo).",
)
@json_option
def measurement_verify(
    api_major: int,
    api_minor: int,
    build_id: int,
    policy: int,
    tik: str | None,
    tk: Path | None,
    launch_digest: str | None,
    firmware: Path | None,
    kernel: Path | None,
    initrd: Path | None,
    cmdline: str | None,
    num_cpus: int | None,
    vmsa_cpu0: Path | None,
    vmsa_cpu1: Path | None,
    tek: str | None,
    launch_measure_blob: str,
    as_json: bool,
) -> None:
    """Check the platform's measurement; exit 1 if it is not what these inputs give."""
    from sevtool.measurement import MeasurementMismatch, verify_measurement
    from sevtool.session import read_value

    reported = read_value(launch_measure_blob, "--launch-measure-blob", MEASURE_SIZE)
    keys = _keys(tik, tek, tk, need_tek=False)
    image = _image(firmware, kernel, initrd, cmdline, (num_cpus, vmsa_cpu0, vmsa_cpu1))
    digest = _digest(launch_digest, image, policy)
    version = _version(api_major, api_minor, build_id)
    try:
        result = verify_measurement(
            keys,
            version,
            policy,
            digest,
            reported,
            image=image,
            tek_given=tek is not None or tk is not None,
        )
    except MeasurementMismatch as exc:
        if as_json:
            emit_json(_verdict(exc.expected.as_json(), reported, exc.finding))
        raise
    if as_json:
        emit_json(_verdict(result.as_json(), reported, None, match=True))
    else:
        click.echo("measurement matches")


def _verdict(
    expected: dict[str, Any], reported: bytes, finding: str | None, *, match: bool = False
) -> dict[str, Any]:
    return {
        "match": match,
        "expected": expected,
        "reported": base64.b64encode(reported).decode(),
        "finding": finding,
    }


# -- secret ----------------------------------------------------------------------------------


@click.group()
def secret() -> None:
    """Package a launch secret (LAUNCH_SECRET) for a measured guest, or check a packet."""


def _key_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--tk", type=_in_file, help="TEK || TIK file (libvirt).")(f)
    f = click.option("--tek", metavar="FILE|BASE64", help="The session's TEK.")(f)
    f = click.option("--tik", metavar="FILE|BASE64", help="The session's TIK.")(f)
    return click.option(
        "--launch-measure-blob",
        metavar="FILE|BASE64",
        required=True,
        help="The measurement the secret is for (LAUNCH_MEASURE output, as checked).",
    )(f)


@secret.command("build")
@_key_options
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="GUID:FILE",
    help="A secret to inject (repeatable); GUID luks-key = the disk passphrase GUID.",
)
@click.option("--iv", metavar="BASE64", help="Fixed IV (for reproducible output only).")
@click.option("--base64", "as_base64", is_flag=True, help="Write base64 text (QMP, libvirt).")
@click.argument("header", type=_out_file)
@click.argument("payload", type=_out_file)
@json_option
def secret_build(
    launch_measure_blob: str,
    tik: str | None,
    tek: str | None,
    tk: Path | None,
    secrets: tuple[str, ...],
    iv: str | None,
    as_base64: bool,
    header: Path,
    payload: Path,
    as_json: bool,
) -> None:
    """Write the packet's HEADER (flags, IV, MAC) and PAYLOAD (the encrypted secret table)."""
    from memcrypt.files import write_atomic
    from sevtool.measurement import split_measure_blob
    from sevtool.secret import build_packet, parse_secret_option
    from sevtool.session import read_value

    keys = _keys(tik, tek, tk, need_tek=True)
    blob = split_measure_blob(
        read_value(launch_measure_blob, "--launch-measure-blob", MEASURE_SIZE)
    )
    fixed_iv = read_value(iv, "--iv", 16) if iv is not None else None
    entries = [parse_secret_option(value) for value in secrets]
    packet = build_packet(keys, blob.measure, entries, iv=fixed_iv)
    encode = base64.b64encode if as_base64 else bytes
    write_atomic(header, encode(packet.header.pack()))
    write_atomic(payload, encode(packet.payload))
    if as_json:
        emit_json({"header": str(header), "payload": str(payload), **packet.as_json()})
    else:
        click.echo(str(header))
        click.echo(str(payload))


@secret.command("verify")
@_key_options
@click.argument("header", type=_in_file)
@click.argument("payload", type=_in_file)
@json_option
def secret_verify(
    launch_measure_blob: str,
    tik: str | None,
    tek: str | None,
    tk: Path | None,
    header: Path,
    payload: Path,
    as_json: bool,
) -> None:
    """Check a packet as the firmware will; list its secrets' GUIDs and sizes (not data)."""
    from hwsim.sev.arch import SECRET_HEADER_SIZE
    from memcrypt.files import read_file
    from sevtool.measurement import split_measure_blob
    from sevtool.secret import MAX_SECRET_PAYLOAD, open_packet
    from sevtool.session import read_blob, read_value

    keys = _keys(tik, tek, tk, need_tek=True)
    blob = split_measure_blob(
        read_value(launch_measure_blob, "--launch-measure-blob", MEASURE_SIZE)
    )
    head = read_blob(header, "secret header", SECRET_HEADER_SIZE)
    body = _payload_bytes(read_file(payload, "secret payload", max_size=2 * MAX_SECRET_PAYLOAD))
    entries = open_packet(keys, head, body, blob.measure)
    if as_json:
        emit_json({"secrets": [{"guid": str(g), "size": len(d)} for g, d in entries]})
        return
    for guid, data in entries:
        click.echo(f"{guid} {len(data)}")


def _payload_bytes(data: bytes) -> bytes:
    """A payload file as written raw or as base64: random ciphertext is never all base64."""
    try:
        return base64.b64decode(b"".join(data.split()), validate=True) or data
    except ValueError:
        return data
