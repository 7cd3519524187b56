"""``hwsim mem``: read and write physical memory through a view, and the memory map.

Thin commands over :mod:`hwsim.memview`; a hex dump for people, ``--raw`` (the bytes) and
``--json`` for scripts.
"""

from __future__ import annotations

import sys

import click

from hwsim.climachine import cli_machine, machine_option
from memcrypt.cli import emit_json, number_callback, print_records
from memcrypt.errors import InvalidInput

__all__ = ["mem"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
_VIEW_HELP = (
    "Whose view: physical (the DIMM), device (DMA), host (host kernel), guest:ASID (an SEV guest)."
)


def _view(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, int | None]:
    name, _, asid = value.partition(":")
    if name not in ("physical", "device", "host", "guest"):
        raise click.BadParameter(f"{value!r}: use physical, device, host or guest:ASID")
    if (name == "guest") != bool(asid):
        raise click.BadParameter(f"{value!r}: the guest view is guest:ASID (e.g. guest:16)")
    try:
        return name, int(asid, 0) if asid else None
    except ValueError:
        raise click.BadParameter(f"{value!r}: the ASID is not a number") from None


_view_option = click.option(
    "--view", "view", default="physical", show_default=True, metavar="VIEW",
    callback=_view, help=_VIEW_HELP,
)  # fmt: skip


@click.group()
@machine_option
def mem() -> None:
    """Physical memory through the eyes of the DIMM, the host or a guest; the memory map."""


@mem.command("read")
@click.argument("address", callback=number_callback)
@click.argument("length", default="64", callback=number_callback)
@_view_option
@click.option("--raw", is_flag=True, help="Write the bytes themselves to standard output.")
@_json_option
def mem_read(
    address: int, length: int, view: tuple[str, int | None], raw: bool, as_json: bool
) -> None:
    """Read LENGTH bytes (default 64) at system physical ADDRESS as VIEW sees them."""
    from hwsim.memview import hex_lines, read_view

    data = read_view(cli_machine(), view[0], address, length, view[1])  # type: ignore[arg-type]
    if as_json:
        emit_json({"address": f"{address:#x}", "length": len(data), "view": view[0],
                   "asid": view[1], "hex": data.hex()})  # fmt: skip
    elif raw:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        for line in hex_lines(data, address):
            click.echo(line.rstrip())


@mem.command("write")
@click.argument("address", callback=number_callback)
@click.argument("data", metavar="HEX")
@_view_option
@_json_option
def mem_write(address: int, data: str, view: tuple[str, int | None], as_json: bool) -> None:
    """Write the bytes HEX at system physical ADDRESS as VIEW's actor would (the host
    through its mapping: the C-bit where the booted kernel's SME map sets it)."""
    from hwsim.memview import write_view

    try:
        raw = bytes.fromhex(data)
    except ValueError:
        raise InvalidInput(f"{data!r} is not hex bytes (e.g. 48656c6c6f)") from None
    write_view(cli_machine(), view[0], address, raw, view[1])  # type: ignore[arg-type]
    shown = view[0] if view[1] is None else f"guest:{view[1]}"
    if as_json:
        emit_json({"address": f"{address:#x}", "length": len(raw), "view": view[0],
                   "asid": view[1]})  # fmt: skip
    else:
        click.echo(f"wrote {len(raw)} bytes at {address:#x} through the {shown} view")


@mem.command("map")
@_json_option
def mem_map(as_json: bool) -> None:
    """The physical memory map: host ranges (encrypted or not, and why), EPC, guests' pages,
    key ids."""
    from hwsim.memview import MAP_COLUMNS, map_rows, memory_map

    regions = memory_map(cli_machine())
    if as_json:
        emit_json([r.as_json() for r in regions])
        return
    print_records(MAP_COLUMNS, map_rows(regions), title="physical memory map")
