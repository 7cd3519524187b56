"""examples/signing-oracle: the host gets signatures, never the key (the seed article's case)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from hwsim.machine import Machine
from hwsim.sgx.device import HOST_BASE
from hwsim.sgx.errors import SgxFault
from sgxtool.runtime import Enclave, EnclaveCallError
from tests.conftest import MachineFactory
from tests.examples.build import EXAMPLES, sign_image
from tests.examples.conftest import Built


def public_of(seed: bytes) -> bytes:
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def symbol(image: Path, name: str) -> int:
    with image.open("rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        found = symtab.get_symbol_by_name(name)
        assert found, f"{image} has no symbol {name}"
        return int(found[0]["st_value"])


def test_signatures_verify_and_the_key_survives_restarts(
    signed_example: Built, machine: Machine
) -> None:
    image = signed_example("signing-oracle", "oracle")
    with Enclave.load(image, machine=machine) as oracle:
        sealed = oracle.call("generate")
        public = oracle.call("public_key")
        signatures = {m: oracle.call("sign", m) for m in (b"", b"pay 10 EUR to Bob", b"x" * 300)}
    verifier = Ed25519PublicKey.from_public_bytes(public)
    for message, signature in signatures.items():
        verifier.verify(signature, message)
    with pytest.raises(InvalidSignature):
        verifier.verify(signatures[b"pay 10 EUR to Bob"], b"pay 99 EUR to Bob")
    with Enclave.load(image, machine=machine) as restarted:
        assert restarted.call("load", sealed) == public
        verifier.verify(restarted.call("sign", b"again"), b"again")


def test_the_sealed_key_is_useless_elsewhere(
    signed_example: Built, machine: Machine, machine_factory: MachineFactory
) -> None:
    image = signed_example("signing-oracle", "oracle")
    with Enclave.load(image, machine=machine) as oracle:
        sealed = oracle.call("generate")
    with (
        Enclave.load(image, machine=machine_factory("sim", "stolen-disk")) as thief,
        pytest.raises(EnclaveCallError, match="unsealing failed"),
    ):
        thief.call("load", sealed)


def test_no_host_path_reveals_the_key(signed_example: Built, machine: Machine) -> None:
    image = signed_example("signing-oracle", "oracle")
    with Enclave.load(image, machine=machine) as oracle:
        sealed = oracle.call("generate")
        public = oracle.call("public_key")
        outputs = sealed + public + oracle.call("sign", b"m")
        at = oracle.base + symbol(image, "seed")
        index = oracle.device.enclave.page(at & ~0xFFF)
        epc = oracle.device.epc
        # Control: the CPU-internal view (not an attacker's) holds the key right there.
        seed = epc.read(index)[at & 0xFFF :][:32]
        assert public_of(seed) == public
        # Host loads from ELRANGE get the abort page; DRAM holds only ciphertext.
        assert oracle.device.host_read(at, 32) == b"\xff" * 32
        for page in oracle.device.enclave.pages.values():
            assert seed not in epc.read_ciphertext(page)
        # A debugger cannot read a production enclave; untrusted memory never saw the key.
        with pytest.raises(SgxFault, match="not a debug enclave"):
            oracle.device.debug_read(at - oracle.base, 32)
        assert seed not in oracle.device.host_read(HOST_BASE, 16 << 20)
        assert seed not in outputs


def test_a_debug_build_is_open_to_the_debugger(
    tmp_path: Path, signed_example: Built, machine: Machine, sample_key: Path
) -> None:
    """The contrast: DEBUG=1 lets EDBGRD read the key (which is why production is 0)."""
    production = signed_example("signing-oracle", "oracle")
    elf = production.with_name("oracle.elf")
    config = (EXAMPLES / "signing-oracle" / "enclave.toml").read_text()
    debug = sign_image(
        elf, config.replace("debug = false", "debug = true"), sample_key, tmp_path / "d.elf"
    )
    with Enclave.load(debug, machine=machine) as oracle:
        oracle.call("generate")
        public = oracle.call("public_key")
        at = oracle.base + symbol(debug, "seed")
        dumped = oracle.device.debug_read(at - oracle.base, 32)  # EDBGRD, word by word
    assert public_of(dumped) == public


def test_the_enclave_debugger_reads_the_key_of_a_debug_build_only(
    tmp_path: Path,
    signed_example: Built,
    machine: Machine,
    sample_key: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's ``sgxtool debug`` lines: EDBGRD gives a debug build's key away and
    refuses the production build with the CPU's reason."""
    import json

    from sgxtool._cli import main
    from tests.cli.conftest import make_runner

    sgxtool = make_runner(main, capsys)

    production = signed_example("signing-oracle", "oracle")
    config = (EXAMPLES / "signing-oracle" / "enclave.toml").read_text()
    debug = sign_image(production.with_name("oracle.elf"),
                       config.replace("debug = false", "debug = true"), sample_key,
                       tmp_path / "oracle.debug.elf")  # fmt: skip
    m = ["--machine", str(machine.path)]
    script = ["call generate", "call public_key", "read seed 32"]
    run = sgxtool("debug", str(debug), *script, "--json", *m)
    assert run.code == 0, run.err
    steps = json.loads(run.out)
    public, seed = bytes.fromhex(steps[1]["hex"]), bytes.fromhex(steps[2]["hex"])
    assert public_of(seed) == public
    refused = sgxtool("debug", str(production), "read seed 32", *m)
    assert refused.code == 1
    line = refused.one_error_line()
    assert "EDBGRD" in line and "not a debug enclave (ATTRIBUTES.DEBUG=0)" in line
    assert seed.hex() not in refused.out + refused.err
