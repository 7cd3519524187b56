"""``hwsim vendor`` (the simulated SGX vendor) and ``hwsim sgx`` (launch control).

Thin commands: each parses its options, calls one function of :mod:`hwsim.sgx.launch`
and prints the result (``--json`` for scripts). Heavy imports happen inside the commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from hwsim.climachine import cli_machine, machine_option
from memcrypt.cli import emit_json, json_option

if TYPE_CHECKING:
    from hwsim.sgx.launch import LaunchControl

__all__ = ["sgx", "vendor"]

_POLICIES = ("vendor-key", "flc-open", "flc-locked")


@click.group()
@machine_option
def vendor() -> None:
    """Play the simulated SGX vendor: its key, Launch Enclave and allow-list."""


@vendor.command("show")
@json_option
def vendor_show(as_json: bool) -> None:
    """Show the vendor key hash, the Launch Enclave identity and the allow-list size."""
    from hwsim.sgx.launch import vendor_info
    from hwsim.sgx.le import LE_ISVPRODID, le_mrenclave

    info = vendor_info(cli_machine())
    out = {
        "vendor_key_hash": info.key_hash.hex(),
        "launch_enclave": {"mrenclave": le_mrenclave().hex(), "mrsigner": info.key_hash.hex(),
                           "isvprodid": LE_ISVPRODID},
        "allow_list": {"version": info.allow.version, "signers": len(info.allow.signers)},
    }  # fmt: skip
    if as_json:
        emit_json(out)
        return
    click.echo(f"vendor key hash (LE MRSIGNER): {info.key_hash.hex()}")
    click.echo(f"Launch Enclave MRENCLAVE:      {le_mrenclave().hex()}")
    click.echo(
        f"allow-list:                    version {info.allow.version}, "
        f"{len(info.allow.signers)} approved signer(s)"
    )


@vendor.command("list")
@json_option
def vendor_list(as_json: bool) -> None:
    """List the signers approved for production enclaves."""
    from hwsim.sgx.launch import vendor_info

    allow = vendor_info(cli_machine()).allow
    if as_json:
        emit_json({"version": allow.version, "signers": [s.hex() for s in allow.signers]})
        return
    for signer in allow.signers:
        click.echo(signer.hex())


@vendor.command("approve")
@click.argument("signer")
def vendor_approve(signer: str) -> None:
    """Approve SIGNER (MRSIGNER hex, or a PEM key) for production launch tokens."""
    from hwsim.sgx.launch import approve_signer, parse_signer

    mrsigner = parse_signer(signer)
    allow = approve_signer(cli_machine(), mrsigner)
    click.echo(f"approved {mrsigner.hex()} (allow-list version {allow.version})")


@vendor.command("revoke")
@click.argument("signer")
def vendor_revoke(signer: str) -> None:
    """Withdraw SIGNER's approval; its production enclaves get no more tokens."""
    from hwsim.sgx.launch import parse_signer, revoke_signer

    mrsigner = parse_signer(signer)
    allow = revoke_signer(cli_machine(), mrsigner)
    click.echo(f"revoked {mrsigner.hex()} (allow-list version {allow.version})")


@click.group()
@machine_option
def sgx() -> None:
    """SGX platform settings: launch control."""


@sgx.group("launch-control")
def launch_control_group() -> None:
    """Show or set the launch policy (vendor-key, flc-open, flc-locked)."""


@launch_control_group.command("show")
@json_option
def launch_control_show(as_json: bool) -> None:
    """Show the launch policy in force, the LE hash MSRs and the owner allow-list."""
    from hwsim.sgx.launch import launch_control

    _render(launch_control(cli_machine()), as_json)


@launch_control_group.command("set")
@click.argument("policy", type=click.Choice(_POLICIES))
@click.option(
    "--owner-key",
    metavar="SIGNER",
    help="flc-locked: lock the MSRs to this signer (MRSIGNER hex or PEM key).",
)
@click.option(
    "--allow",
    "allow",
    metavar="SIGNER",
    multiple=True,
    help="flc-locked: let the kernel launch this signer (repeatable).",
)
@click.option(
    "--power-cycle",
    "cycle",
    is_flag=True,
    help="Power-cycle now so that the new BIOS settings take effect.",
)
@json_option
def launch_control_set(
    policy: str, owner_key: str | None, allow: tuple[str, ...], cycle: bool, as_json: bool
) -> None:  # fmt: skip
    """Set the launch POLICY (BIOS settings apply at the next power cycle)."""
    from hwsim.sgx.launch import LaunchPolicy, launch_control, parse_signer, set_launch_policy

    machine = cli_machine()
    owner = None if owner_key is None else parse_signer(owner_key)
    result = set_launch_policy(
        machine, LaunchPolicy(policy), owner_key_hash=owner,
        allow=tuple(parse_signer(s) for s in allow),
    )  # fmt: skip
    if cycle:
        machine.power_cycle()
        result = launch_control(machine)
    _render(result, as_json)


def _render(lc: LaunchControl, as_json: bool) -> None:
    if as_json:
        emit_json(lc.as_json())
        return
    click.echo(f"policy:          {lc.policy.value}")
    click.echo(f"LE hash MSRs:    {lc.msr_hash.hex()}")
    click.echo(f"MSRs writable:   {'yes (FLC, SGX_LC set)' if lc.msrs_writable else 'no'}")
    click.echo(f"vendor key hash: {lc.vendor_hash.hex()}")
    for signer in lc.owner_allow:
        click.echo(f"owner allows:    {signer.hex()}")
    if lc.after_power_cycle is not None:
        click.echo(
            f"pending:         {lc.after_power_cycle.value} after the next power cycle "
            "(hwsim power-cycle)"
        )
