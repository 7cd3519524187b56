"""How ``hwsim attack`` prints one result and the matrix (tables on a terminal, plain
lines when piped)."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import click

from memcrypt.cli import is_plain, print_fields, print_records

if TYPE_CHECKING:
    from hwsim.attacks import AttackResult
    from hwsim.attacks.matrix import Matrix

__all__ = ["render_matrix", "render_result"]


def render_result(result: AttackResult) -> None:
    rows = [
        ("attack", f"{result.attack} ({result.attacker})"),
        ("target", f"{result.target.value} on profile {result.profile}"),
        ("outcome", result.cell),
        ("attacker read", result.excerpt() or "-"),
    ]
    for s in result.secrets:
        mark = "recovered" if s.recovered else "not recovered"
        rows.append((s.name, f"{mark}: {s.why}"))
        if s.region is not None:
            r = s.region
            key = "no key" if r.keyid is None else f"key id {r.keyid:#x}"
            rows.append(("", f"memory map: {r.kind} {r.start:#x}-{r.end:#x} ({key}), {r.owner}"))
    if result.power_cycled:
        rows.append(("machine", "power-cycled (the attack took the power away)"))
    print_fields(rows, title=f"hwsim attack {result.attack}")


def render_matrix(matrix: Matrix) -> None:
    names = [c.name for c in matrix.columns]
    rows = [
        [attack, *(matrix.cell(attack, c).cell for c in names)]
        for attack in dict.fromkeys(a for a, _ in matrix.cells)
    ]
    header = [f"{c} ({matrix.profiles[c]})" for c in names]
    print_records(["attack", *header], rows, title="what each protection stops")
    from hwsim.attacks.matrix import DESIGNED_FOR

    click.echo()
    for name in names:
        line = f"{name}: {DESIGNED_FOR[name]}"
        click.echo(line if is_plain() else textwrap.fill(line, 100, subsequent_indent="  "))
