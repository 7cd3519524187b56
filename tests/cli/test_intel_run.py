"""sgxtool run on Intel SDK enclaves (--edl, --arg) and on SGXS streams (--sig, --token)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from hwsim.machine import Machine
from sgxtool.image import read_image
from tests.cli.conftest import Runner
from tests.examples.conftest import Built, signed_example

__all__ = ["signed_example"]

Vector = Callable[[str], Path]
HASH = "sgx/intel-sdk-enclaves/ShuntaIshihara+test_hash_SGX"
RSA = "sgx/intel-sdk-enclaves/njuyuanrui+testEnclaveSO"
SAMPLE = "sgx/intel-sdk-enclaves/DongpingZ+SgxRandTest"


def enclave_args(vector: Vector, folder: str) -> list[str]:
    so = vector(f"{folder}/enclave.signed.so")
    return [str(so), "--edl", str(so.parent / "Enclave.edl")]


def test_run_test_hash_sgx(sgxtool: Runner, vector: Vector, machine: Machine) -> None:
    so, *edl = enclave_args(vector, HASH)
    result = sgxtool("run", so, "ecall_test", *edl, "--arg", "message=Hello Enclave.",
                     "--arg", "message_len=14", "--machine", str(machine.path))  # fmt: skip
    assert (result.code, result.out, result.err) == (0, "retval 31337\n", "1176122782\n")


def test_run_calcu_json(sgxtool: Runner, vector: Vector, machine: Machine) -> None:
    so, *edl = enclave_args(vector, RSA)
    values = {"a_enc": 23299030, "b_enc": 34996265, "c_enc": 74534944, "d_enc": 84141560,
              "pubkey_n": 100761443, "pubkey_e": 257}  # fmt: skip
    args = [x for k, v in values.items() for x in ("--arg", f"{k}={v}")]
    result = sgxtool("run", so, "calcu", *edl, "--typedef", "buffer_t=void *", *args, "--json",
                     "--machine", str(machine.path))  # fmt: skip
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    assert (shown["retval"], shown["outputs"]) == (36983334, {})
    assert shown["mrenclave"].startswith("b705015b")


def test_run_sampleenclave_outputs(sgxtool: Runner, vector: Vector, machine: Machine) -> None:
    so, *edl = enclave_args(vector, SAMPLE)
    types = ["--typedef", "buffer_t=void *", "--typedef", "array_t=int[10]"]
    result = sgxtool("run", so, "ecall_pointer_count", *edl, *types, "--arg", "arr=1,2,3,4",
                     "--arg", "cnt=4", "--machine", str(machine.path))  # fmt: skip
    assert (result.code, result.out) == (0, "arr 3,2,1,0\n")
    result = sgxtool("run", so, "ecall_pointer_size", *edl, *types, "--arg", "ptr=hex:61626364",
                     "--arg", "len=4", "--json", "--machine", str(machine.path))  # fmt: skip
    assert json.loads(result.out)["outputs"] == {"ptr": {"hex": b"0987".hex()}}


def test_an_unserved_ocall_is_one_line(
    sgxtool: Runner, vector: Vector, machine: Machine, tmp_path: Path
) -> None:
    so, _, original = enclave_args(vector, HASH)
    edl = tmp_path / "Enclave.edl"
    edl.write_text(Path(original).read_text().replace("ocall_print(", "ocall_show("))
    result = sgxtool("run", so, "ecall_test", "--edl", str(edl), "--arg", "message=Hello Enclave.",
                     "--arg", "message_len=14", "--machine", str(machine.path))  # fmt: skip
    assert result.code == 1
    assert "OCALL ocall_show(str=1176122782)" in result.one_error_line()


def test_usage_errors(sgxtool: Runner, vector: Vector, machine: Machine) -> None:
    so, *edl = enclave_args(vector, HASH)
    m = ["--machine", str(machine.path)]
    assert "give its EDL with --edl" in sgxtool("run", so, "ecall_test", *m).one_error_line()
    bad = sgxtool("run", so, "ecall_test", *edl, "--arg", "nope=1", *m)
    assert bad.code == 2 and "no parameter 'nope'" in bad.one_error_line()
    assert sgxtool("run", so, "missing", *edl, *m).code == 2
    assert sgxtool("run", so, "ecall_test", *edl, "--arg", "message", *m).code == 2


def test_run_sgxs_with_sig_and_token(
    sgxtool: Runner, signed_example: Built, machine_factory: Callable[..., Machine],
    tmp_path: Path,
) -> None:  # fmt: skip
    """An SGXS stream and its SIGSTRUCT run from the CLI (TCS found from the EADD
    records); on a vendor-key machine with a token from `sgxtool token`."""
    image = signed_example("hello", "hello")
    stream, sig, token = tmp_path / "hello.sgxs", tmp_path / "hello.sig", tmp_path / "tok"
    elf = image.with_name("hello.elf")
    config = Path(__file__).parents[2] / "examples" / "hello" / "enclave.toml"
    assert sgxtool("sgxs", str(elf), "-c", str(config), "-o", str(stream)).code == 0
    sig.write_bytes(read_image(image).sigstruct.pack())
    flc = machine_factory("sim", "flc")
    ran = sgxtool("run", str(stream), "0", "--sig", str(sig), "--in-text", "LE",
                  "--machine", str(flc.path))  # fmt: skip
    assert (ran.code, ran.out) == (0, "Hello, LE!\n"), ran.err
    legacy = machine_factory("skylake", "legacy")
    got = sgxtool("token", str(sig), "-o", str(token), "--machine", str(legacy.path))
    assert got.code == 0, got.err
    ran = sgxtool("run", str(stream), "0", "--sig", str(sig), "--token", str(token),
                  "--in-text", "tok", "--machine", str(legacy.path))  # fmt: skip
    assert (ran.code, ran.out) == (0, "Hello, tok!\n"), ran.err
