"""The ``hwsim`` command: simulated machines, vendor roles and the attack lab.

Each command parses its options, makes one library call and renders the result. Other
modules contribute command groups through the explicit list at the end of this file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from hwsim import __version__
from hwsim.climachine import cli_machine, machine_dir, machine_option
from hwsim.profiles import DEFAULT_PROFILE, PROFILES
from memcrypt.cli import emit_json, json_option, number_callback, run_main
from memcrypt.manual import help_command

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hwsim")
@machine_option
def cli() -> None:
    """Create and manage simulated machines with SGX and SME/SEV."""


@cli.command()
@click.option(
    "--profile",
    type=click.Choice(list(PROFILES)),
    default=DEFAULT_PROFILE,
    show_default=True,
    help="CPU part to simulate (see `hwsim profiles`).",
)
@click.argument("directory", required=False, type=click.Path(file_okay=False))
def init(profile: str, directory: str | None) -> None:
    """Create a machine in DIRECTORY (default: --machine, else the default machine)."""
    from hwsim.machine import Machine, default_machine_path

    machine = Machine.init(directory or machine_dir() or default_machine_path(), profile)
    click.echo(f"created machine {os.path.abspath(machine.path)} (profile {machine.profile.name})")


@cli.command()
@json_option
def status(as_json: bool) -> None:
    """Show the machine's part, BIOS settings, MSRs, key slots and DRAM use."""
    from hwsim._render_machine import render_status
    from hwsim.status import machine_status

    snapshot = machine_status(cli_machine())
    if as_json:
        emit_json(snapshot.as_json())
    else:
        render_status(snapshot)


@cli.command()
@json_option
def profiles(as_json: bool) -> None:
    """List the CPU profiles and their features."""
    from hwsim._render_machine import render_profiles
    from hwsim.status import profile_dict

    if as_json:
        emit_json([profile_dict(p) for p in PROFILES.values()])
    else:
        render_profiles(list(PROFILES.values()))


@cli.command("power-cycle")
def power_cycle() -> None:
    """Power off and on: boot keys and volatile state are lost, BIOS settings applied."""
    machine = cli_machine()
    machine.power_cycle()
    click.echo(f"power-cycled {machine.path} (boot {machine.boot_count})")


@cli.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(yes: bool) -> None:
    """Back to factory state: new fused secrets, empty DRAM and PSP storage."""
    machine = cli_machine()
    if not yes:
        click.confirm(
            f"Reset {machine.path} to factory state (all keys and state are lost)?", abort=True
        )
    machine.reset()
    click.echo(f"reset {machine.path} to factory state")


@cli.group()
def config() -> None:
    """Read or change BIOS settings (machine.toml); changes apply at the next power cycle."""


@config.command("get")
@click.argument("key", required=False)
@json_option
def config_get(key: str | None, as_json: bool) -> None:
    """Print one BIOS setting, or all of them."""
    from memcrypt.errors import InvalidInput

    settings = cli_machine().config.as_dict()
    if key is not None and key not in settings:
        raise InvalidInput(f"unknown BIOS setting {key!r}; allowed: {', '.join(settings)}")
    chosen = settings if key is None else {key: settings[key]}
    if as_json:
        emit_json(chosen)
    else:
        for name, value in chosen.items():
            click.echo(f"{name} = {_show(value)}")


@config.command("set")
@click.argument("key")
@click.argument("value")
def config_set(key: str, value: str) -> None:
    """Change one BIOS setting (takes effect at the next power cycle)."""
    machine = cli_machine()
    new = machine.set_config(key, value)
    click.echo(f"{key} = {_show(new.as_dict()[key])} (takes effect at the next power-cycle)")


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else f'"{value}"'


@cli.command()
@click.argument("leaf", metavar="LEAF", callback=number_callback)
@click.argument("subleaf", metavar="[SUBLEAF]", default="0", callback=number_callback)
@json_option
def cpuid(leaf: int, subleaf: int, as_json: bool) -> None:
    """Execute CPUID with EAX=LEAF, ECX=SUBLEAF and print EAX..EDX."""
    regs = dict(zip(("eax", "ebx", "ecx", "edx"), cli_machine().cpuid(leaf, subleaf), strict=True))
    if as_json:
        emit_json({"leaf": leaf, "subleaf": subleaf, **{k: f"{v:#010x}" for k, v in regs.items()}})
    else:
        click.echo(" ".join(f"{k}={v:#010x}" for k, v in regs.items()))


@cli.group()
def msr() -> None:
    """Read and write model-specific registers, with the hardware's access rules."""


@msr.command("read")
@click.argument("register")
@json_option
def msr_read(register: str, as_json: bool) -> None:
    """RDMSR: REGISTER is a name (IA32_FEATURE_CONTROL) or a number (0x3a)."""
    from hwsim.cpu import msr_index

    index = msr_index(register)
    with cli_machine().transaction(write=False) as txn:
        value = txn.rdmsr(index)
    if as_json:
        emit_json({"index": f"{index:#x}", "value": f"{value:#018x}"})
    else:
        click.echo(f"{value:#018x}")


@msr.command("write")
@click.argument("register")
@click.argument("value", callback=number_callback)
def msr_write(register: str, value: int) -> None:
    """WRMSR: refused with #GP for absent, locked or read-only registers."""
    from hwsim.cpu import msr_index

    index = msr_index(register)
    with cli_machine().transaction() as txn:
        txn.wrmsr(index, value)
    click.echo(f"wrote {value:#018x} to MSR {index:#x}")


@cli.command()
@click.argument("name", metavar="NAME", required=False)
@click.option(
    "--target",
    type=click.Choice(["host", "sev", "sev-es", "enclave"]),
    default="host",
    show_default=True,
    help="Whose secrets: the host's (and a plain VM's), an SEV or SEV-ES guest's, an enclave's.",
)
@click.option("--matrix", is_flag=True, help="Every attack under every protection.")
@click.option(
    "--profile",
    type=click.Choice(list(PROFILES)),
    help="With --matrix: the part the columns use where it fits (default: the machine's).",
)
@json_option
def attack(name: str | None, target: str, matrix: bool, profile: str | None, as_json: bool) -> None:
    """Run attack NAME against the machine as configured, or --matrix on scratch machines."""
    from hwsim._render_attacks import render_matrix, render_result

    if matrix:
        from hwsim.attacks.matrix import run_matrix

        if name is not None:
            raise click.UsageError("give an attack NAME or --matrix, not both")
        table = run_matrix(profile or _machine_profile())
        emit_json(table.as_json()) if as_json else render_matrix(table)
        return
    if name is None:
        raise click.UsageError("give an attack NAME (see hwsim(1) ATTACKS) or --matrix")
    from hwsim.attacks import Target, run_attack

    result = run_attack(cli_machine(), name, Target(target))
    emit_json(result.as_json()) if as_json else render_result(result)


def _machine_profile() -> str:
    """The profile of the machine --matrix would otherwise be about, without making one."""
    from hwsim.bios import profile_named_in
    from hwsim.machine import TOML_NAME, default_machine_path

    named = profile_named_in(Path(machine_dir() or default_machine_path()) / TOML_NAME)
    return named if named in PROFILES else DEFAULT_PROFILE


# Command groups contributed by other modules, registered explicitly. Each module keeps
# its import light (no rich, cryptography or unicorn at import time) and uses
# ``hwsim.machine.machine_option`` / ``cli_machine()`` to reach the machine.
from hwsim._memcli import mem  # noqa: E402  (memory views and the memory map)
from hwsim.sgx._cli import sgx, vendor  # noqa: E402  (the SGX vendor role, launch control)

_CONTRIBUTED: list[click.Command] = [mem, sgx, vendor]

for _command in _CONTRIBUTED:
    cli.add_command(_command)
cli.add_command(help_command("hwsim"))  # the shipped manual pages (memcrypt.manual)


def main(argv: Sequence[str] | None = None) -> None:
    run_main(cli, "hwsim", argv)
