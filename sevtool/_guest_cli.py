"""``sevtool guest``: the hypervisor's side of SEV guests on a simulated machine.

Each command parses options, calls one function of :mod:`sevtool.guest` and renders the
result; library modules are imported inside the commands, to keep ``--help`` fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hwsim.climachine import cli_machine, machine_option
from memcrypt.cli import console, emit_json, json_option

if TYPE_CHECKING:
    from sevtool.guest import GuestInfo

__all__ = ["guest"]

_path = click.Path(path_type=Path)
_in_file = click.Path(path_type=Path, exists=True, dir_okay=False)


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


@click.group()
def guest() -> None:
    """SEV guests on the machine: launch, measure, inject a secret, run, inspect, end."""


def _render_guest(info: GuestInfo, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    if as_json:
        emit_json({**info.as_json(), **(extra or {})})
        return
    rows = [
        ("handle", str(info.handle)),
        ("name", info.name),
        ("state", info.state),
        ("asid", str(info.asid or "-")),
        ("policy", f"{info.policy:#x}"),
        ("vm", info.status),
        ("memory", f"{info.memory >> 20} MiB"),
        ("secret area", f"{info.secret_gpa:#x}+{info.secret_size:#x}" if info.secret_size else "-"),
    ]
    _table([*rows, *((k, str(v)) for k, v in (extra or {}).items())], header=None)


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...] | None) -> None:
    """A rich table on a terminal; piped, aligned lines of whole values, no trailing space."""
    out = console()
    if out.is_terminal:
        from rich.markup import escape
        from rich.table import Table

        table = Table(show_header=header is not None, box=None, pad_edge=False)
        for column in header or ("",) * len(rows[0] if rows else ()):
            table.add_column(column)
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        out.print(table)
        return
    lines = [header, *rows] if header else rows
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))] if lines else []
    for line in lines:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


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
@json_option
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
@json_option
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
@json_option
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
@json_option
def guest_finish(guest: str | None, as_json: bool) -> None:
    """LAUNCH_FINISH: the launch is over and the guest can run."""
    from sevtool.guest import finish

    _render_guest(finish(cli_machine(), guest), as_json)


@guest.command("run")
@machine_option
@_guest_option
@click.option("--budget", **_INT, default="100000000", show_default=True,
              help="Instructions to run at most.")  # fmt: skip
@json_option
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
@json_option
def guest_list(as_json: bool) -> None:
    """The SEV guests on the machine."""
    from sevtool.guest import list_guests

    guests = list_guests(cli_machine())
    if as_json:
        emit_json([g.as_json() for g in guests])
        return
    rows = [(str(g.handle), g.name, g.state, str(g.asid or "-"), f"{g.policy:#x}", g.status)
            for g in guests]  # fmt: skip
    _table(rows, header=("handle", "name", "state", "asid", "policy", "vm"))


@guest.command("status")
@machine_option
@_guest_option
@json_option
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
@json_option
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
@json_option
def guest_debug_decrypt(
    guest: str | None, gpa: int, length: int, outfile: Path | None, as_json: bool
) -> None:
    """DBG_DECRYPT: guest memory through the guest's key (refused under NODBG)."""
    from sevtool.guest import debug_decrypt

    _render_bytes(debug_decrypt(cli_machine(), gpa, length, guest), gpa, outfile, as_json)


@guest.command("decommission")
@machine_option
@_guest_option
@json_option
def guest_decommission(guest: str | None, as_json: bool) -> None:
    """DEACTIVATE and DECOMMISSION the guest; its memory is freed."""
    from sevtool.guest import decommission

    handle = decommission(cli_machine(), guest)
    if as_json:
        emit_json({"handle": handle, "decommissioned": True})
    else:
        click.echo(f"sevtool: guest {handle} decommissioned", err=True)
