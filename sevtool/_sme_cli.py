"""``sevtool sme``: SME boot configuration of a simulated machine (status, enable, disable).

Each command calls one function of :mod:`sevtool.sme` and renders the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from hwsim.climachine import cli_machine, machine_option
from memcrypt.cli import emit_json, json_option, print_fields, print_records

if TYPE_CHECKING:
    from sevtool.sme import SmeStatus

__all__ = ["sme"]


def _yes(on: bool) -> str:
    return "yes" if on else "no"


@click.group()
def sme() -> None:
    """SME boot configuration: BIOS setting, kernel command line, what the kernel maps."""


@sme.command("status")
@machine_option
@json_option
def status_cmd(as_json: bool) -> None:
    """Supported, Enabled, Active and TSME; the C-bit; the next boot; the memory map."""
    from sevtool.sme import sme_status

    info = sme_status(cli_machine())
    if as_json:
        emit_json(info.as_json())
    else:
        _render(info)


def _render(info: SmeStatus) -> None:
    from hwsim.memview import MAP_COLUMNS, map_rows

    k = info.kernel
    nxt = "active" if info.next_active else f"not active (missing: {info.missing})"
    rows = [
        ("profile", info.profile),
        ("supported", f"{_yes(info.supported.ok)} ({info.supported.seen})"),
        ("enabled", f"{_yes(info.enabled.ok)} ({info.enabled.seen})"),
        ("active", f"{_yes(k.sme_active)} ({k.why})"),
        ("tsme", _yes(k.tsme)),
        ("kernel", f"era {k.era}, command line {k.cmdline or '(no mem_encrypt=)'}"),
        ("c-bit", str(info.cbit)),
        ("phys addr reduction", str(info.reduction)),
        ("next boot", nxt),
    ]
    if info.fix:
        rows.append(("fix", info.fix))
    print_fields(rows, title="SME")
    print_records(MAP_COLUMNS, map_rows(info.map), title="physical memory map (this boot)")


def _change_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--kernel-era",
        type=click.Choice(["new", "old"]),
        help="The kernel's default: old (ACTIVE_BY_DEFAULT=y) or new (off unless mem_encrypt=on).",
    )(f)
    return machine_option(f)


@sme.command("enable")
@click.option("--tsme", is_flag=True, help="Also turn on Transparent SME in the BIOS.")
@_change_options
def enable_cmd(tsme: bool, kernel_era: str | None) -> None:
    """BIOS MemEncryptionModEn on and mem_encrypt=on (applied at the next power cycle)."""
    _change(True, tsme, kernel_era)


@sme.command("disable")
@click.option("--tsme", is_flag=True, help="Only turn Transparent SME off.")
@_change_options
def disable_cmd(tsme: bool, kernel_era: str | None) -> None:
    """mem_encrypt=off and TSME off (MemEncryptionModEn stays set: SEV needs it)."""
    _change(False, tsme, kernel_era)


def _change(enable: bool, tsme: bool, era: str | None) -> None:
    from sevtool.sme import configure

    config = configure(cli_machine(), enable=enable, tsme=tsme, era=era)
    k = config.kernel
    click.echo(
        f"sme_enabled = {str(config.sme_enabled).lower()}, tsme = {str(config.tsme).lower()}, "
        f"kernel {k.cmdline or '(no mem_encrypt=)'} (era {k.era}); "
        "takes effect at the next power-cycle"
    )
