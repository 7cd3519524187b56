"""``sgxtool token|run|debug``: enclaves on the simulated machine (a Launch Enclave's
token, ECALLs with their OCALLs, the debugger). Library modules are imported inside the
commands so that ``sgxtool --help`` stays fast."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from hwsim.climachine import cli_machine, machine_option
from memcrypt.cli import emit_json, json_option, read_input, write_output
from memcrypt.work import work_options
from sgxtool._largework import large_work

__all__ = ["debug", "run", "token"]

_path = click.Path(path_type=Path)
_in_file = click.Path(path_type=Path, exists=True, dir_okay=False)


@click.command()
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


@click.command()
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


@click.command()
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
