"""No secret leaks: every command of the three programs that handles a private key, sealed
data or the machine's secrets is run, with and without --debug (also on a failure path),
and none of the secret bytes - raw, hex or base64 - may appear in its stdout, its stderr
or any file it did not mean to write.

A later command that handles a secret (TEK, TIK, launch secrets) adds a row to COMMANDS;
a new kind of secret adds a source to ``_secrets_of``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shutil
import sqlite3
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hwsim.machine import Machine
from hwsim.sgx.launch import LaunchPolicy, set_launch_policy
from tests.examples.build import make_example, sign_image

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

REPO = Path(__file__).resolve().parents[1]
PASSPHRASE = "correct horse battery staple 42"
SEALED_TEXT = "the launch code is 0451-1138-2187"


@dataclass(frozen=True)
class Command:
    """One run: ``argv`` with {placeholders}; ``keeps`` the files meant to hold secrets."""

    program: str
    argv: tuple[str, ...]
    keeps: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


_PASS = (("SECRET_PASS", PASSPHRASE),)
_WRONG = (("SECRET_PASS", "not the passphrase"),)
M = ("--machine", "{machine}")

COMMANDS = [
    # sgxtool: signing keys
    Command("sgxtool", ("keygen", "{w}/new.pem", "--public", "{w}/new.pub"), ("new.pem",)),
    Command("sgxtool", ("keygen", "{w}/enc.pem", "--passphrase-env", "SECRET_PASS"),
            ("enc.pem",), _PASS),
    Command("sgxtool", ("sign", "{w}/enclave.elf", "-k", "{w}/key.pem", "-o", "{w}/s.elf",
                        "-s", "{w}/s.sig", "--json")),
    Command("sgxtool", ("sign", "{w}/enclave.elf", "-k", "{w}/key.enc.pem", "--passphrase-env",
                        "SECRET_PASS", "-s", "{w}/s.sig"), (), _PASS),
    Command("sgxtool", ("sign", "{w}/enclave.elf", "-k", "{w}/key.enc.pem", "--passphrase-env",
                        "SECRET_PASS", "-s", "{w}/s.sig"), (), _WRONG),
    Command("sgxtool", ("sign", "{w}/enclave.elf", "-k", "{w}/enclave.toml", "-s", "{w}/x")),
    # sgxtool: the Launch Enclave (vendor key) and sealed data
    Command("sgxtool", ("token", "{w}/sealing.elf", "-o", "{w}/token", "--json", *M)),
    Command("sgxtool", ("run", "{w}/sealing.elf", "seal_enclave", "--in-text", SEALED_TEXT,
                        "--out", "{w}/new.sealed", *M)),
    Command("sgxtool", ("run", "{w}/sealing.elf", "unseal", "--in", "{w}/secret.sealed",
                        "--out", "{w}/plain", *M), ("plain",)),
    Command("sgxtool", ("run", "{w}/sealing.elf", "unseal", "--in", "{w}/secret.sealed",
                        "--json", "--out", "{w}/plain", *M), ("plain",)),
    Command("sgxtool", ("run", "{w}/sealing.elf", "unseal", "--in-hex", "00" * 80, *M)),
    # hwsim: commands that read a key file, and the machine's own secrets
    Command("hwsim", (*M, "vendor", "approve", "{w}/key.pem")),
    Command("hwsim", (*M, "sgx", "launch-control", "set", "flc-locked", "--owner-key",
                      "{w}/key.pem", "--power-cycle", "--json")),
    Command("hwsim", (*M, "status", "--json")),
    Command("hwsim", (*M, "status")),
    Command("hwsim", (*M, "vendor", "show", "--json")),
    # the attack lab prints what attackers read: planted secrets, never the machine's keys
    Command("hwsim", (*M, "attack", "hv-read", "--target", "sev", "--json")),
    Command("hwsim", (*M, "attack", "asid-swap", "--target", "sev")),
    Command("hwsim", (*M, "attack", "dma", "--target", "enclave", "--json")),
    Command("hwsim", (*M, "attack", "kernel-read")),
    Command("sevtool", ("sme", "enable", *M)),
    Command("sevtool", ("sme", "status", "--json", *M)),
    Command("hwsim", (*M, "power-cycle")),
    Command("hwsim", (*M, "reset", "--yes")),
    # sevtool: the owner's OCA key and the platform's PEK/PDH
    Command("sevtool", ("generate", "{w}/o.cert", "{w}/o.key"), ("o.key",)),
    Command("sevtool", ("generate", "{w}/o.cert", "{w}/o.key", "--passphrase-env",
                        "SECRET_PASS"), ("o.key",), _PASS),
    Command("sevtool", ("provision", "{w}/oca.cert", "{w}/oca.key", "--json", *M)),
    Command("sevtool", ("provision", "{w}/oca.cert", "{w}/oca.enc.key", "--passphrase-env",
                        "SECRET_PASS", *M), (), _WRONG),
    Command("sevtool", ("pek", "sign", "{w}/pek.csr", "{w}/oca.cert", "{w}/oca.key",
                        "{w}/pek.cert")),
    Command("sevtool", ("rotate", "--pek", "--json", *M)),
    Command("sevtool", ("export", "{w}/chain", "--full", *M)),
    Command("sevtool", ("show", *M)),
    # sevtool: SEV guests (the firmware's TEK/TIK and the guest's VEK live in state.db)
    Command("sevtool", (*M, "guest", "launch", "{w}/guest.bin", "--policy", "0x1", "--json")),
    # refused: the policy asks for firmware API 255
    Command("sevtool", (*M, "guest", "launch", "{w}/guest.bin", "--policy", "0xff0001")),
]  # fmt: skip


# -- the secrets and their encodings --------------------------------------------------------


def _needles(secret: bytes) -> list[bytes]:
    """``secret`` as raw bytes, hex (both cases, both byte orders) and base64 at each of
    the three alignments it can have inside a longer base64 text."""
    if len(secret) < 16:  # too short to tell from chance
        return [secret] if len(secret) >= 12 else []
    found = []
    for form in (secret, secret[::-1]):
        found += [form, form.hex().encode(), form.hex().upper().encode()]
    for shift in range(3):
        text = base64.b64encode(secret[shift:])
        found.append(text[4:-4])
    return found


def _key_secrets(pem_or_der: bytes, password: bytes | None = None) -> list[bytes]:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import (
        load_der_private_key,
        load_pem_private_key,
    )

    load = load_pem_private_key if pem_or_der.startswith(b"-----") else load_der_private_key
    key = load(pem_or_der, password)
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        ints = [n.d, n.p, n.q, n.dmp1, n.dmq1, n.iqmp]
        return [i.to_bytes((i.bit_length() + 7) // 8, "big") for i in ints]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return [key.private_numbers().private_value.to_bytes(48, "big")]


def _machine_secrets(machine: Path) -> list[bytes]:
    """Fused and boot roots, memory-encryption keys, SEV private keys, the vendor's key."""
    db = sqlite3.connect(f"file:{machine / 'state.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT ns, key, value FROM kv").fetchall()
    finally:
        db.close()
    found: list[bytes] = []
    for ns, key, value in rows:
        if ns in ("fused", "boot.secret", "boot.keys") or str(key).endswith(".key"):
            found.append(bytes(value))
        if (ns, key) == ("vendor", "signing_key"):
            found += [bytes(value), *_key_secrets(bytes(value))]
    return found


def _secrets_of(w: Path, machine: Path) -> list[bytes]:
    found = [PASSPHRASE.encode(), SEALED_TEXT.encode(), *_machine_secrets(machine)]
    names = ("key.pem", "new.pem", "oca.key", "o.key", "key.enc.pem", "enc.pem", "oca.enc.key")
    for path in (w / name for name in names if (w / name).is_file()):
        data = path.read_bytes()
        password = PASSPHRASE.encode() if b"ENCRYPTED" in data else None
        found += _key_secrets(data, password)
    return found


# -- running ----------------------------------------------------------------------------------


def _main(program: str) -> Callable[[list[str]], None]:
    from hwsim._cli import main as hwsim_main
    from sevtool._cli import main as sevtool_main
    from sgxtool._cli import main as sgxtool_main

    return {"sgxtool": sgxtool_main, "hwsim": hwsim_main, "sevtool": sevtool_main}[program]


def _run(main: Callable[[list[str]], None], argv: list[str]) -> str:
    """Run in-process; with --debug an error escapes as it would to the interpreter,
    which prints its traceback: returned here as text for the stderr check."""
    try:
        main(argv)
    except SystemExit:
        pass
    except Exception:
        return traceback.format_exc()
    return ""


def _snapshot(root: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def template(
    tmp_path_factory: pytest.TempPathFactory,
    sgx_vendor_key: RSAPrivateKey,
    vector: Callable[[str], Path],
) -> Path:
    """A work directory with keys, an enclave, a sealed blob and a vendor-key machine."""
    from sevtool._cli import main as sevtool_main
    from sgxtool.keys import load_private_key, save_private_key

    root = tmp_path_factory.mktemp("secrets")
    w = root / "w"
    w.mkdir()
    shutil.copy(vector("sgx/fortanix-rust-sgx/sig1.key.pem"), w / "key.pem")
    (w / "guest.bin").write_bytes(bytes(64 << 10))
    save_private_key(load_private_key(w / "key.pem"), w / "key.enc.pem", PASSPHRASE.encode())
    elf = make_example("sealing", root / "build", "sealing.elf")
    shutil.copy(elf, w / "enclave.elf")
    (w / "enclave.toml").write_text((REPO / "examples" / "sealing" / "enclave.toml").read_text())
    sign_image(
        elf, REPO / "examples" / "sealing" / "enclave.toml", w / "key.pem", w / "sealing.elf"
    )
    machine = Machine.init(root / "machine", "sim", vendor_key=sgx_vendor_key)
    set_launch_policy(machine, LaunchPolicy.VENDOR_KEY)
    machine.power_cycle()
    m = ["--machine", str(machine.path)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SECRET_PASS", PASSPHRASE)
        sevtool_main_args = [
            ["generate", str(w / "oca.cert"), str(w / "oca.key")],
            ["generate", str(w / "oca2.cert"), str(w / "oca.enc.key"), "--passphrase-env",
             "SECRET_PASS"],
            [*m, "pek", "csr", str(w / "pek.csr")],
        ]  # fmt: skip
        for args in sevtool_main_args:
            with contextlib.suppress(SystemExit):
                sevtool_main(args)
        from sgxtool._cli import main as sgxtool_main

        with contextlib.suppress(SystemExit):
            sgxtool_main(["run", str(w / "sealing.elf"), "seal_enclave", "--in-text",
                          SEALED_TEXT, "--out", str(w / "secret.sealed"), *m])  # fmt: skip
    machine.close()
    assert (w / "secret.sealed").is_file() and (w / "pek.csr").is_file()
    return root


@contextlib.contextmanager
def _fresh_copy(template: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    root = tmp_path / "run"
    shutil.copytree(template, root, symlinks=True)
    yield root / "w", root / "machine"


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize(
    "command", COMMANDS, ids=[f"{c.program}-{'-'.join(c.argv[:3])}" for c in COMMANDS]
)
def test_no_secret_in_any_output(
    command: Command,
    debug: bool,
    template: Path,
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _fresh_copy(template, tmp_path) as (w, machine):
        for name, value in command.env:
            monkeypatch.setenv(name, value)
        argv = [a.format(w=w, machine=machine) for a in command.argv]
        before = _snapshot(tmp_path)
        secrets = _secrets_of(w, machine)
        capsysbinary.readouterr()
        escaped = _run(_main(command.program), argv + (["--debug"] if debug else []))
        out, err = capsysbinary.readouterr()
        secrets += _secrets_of(w, machine)  # keys made or rotated by the command
        meant = {w / name for name in command.keeps} | {
            p for p in machine.iterdir() if p.name.startswith("state.db")
        }
        changed = [
            p for p, digest in _snapshot(tmp_path).items()
            if before.get(p) != digest and p not in meant
        ]  # fmt: skip
        places = {"stdout": out, "stderr": err + escaped.encode()}
        places |= {str(p.relative_to(tmp_path)): p.read_bytes() for p in changed}
        for secret in secrets:
            for needle in _needles(secret):
                for where, data in places.items():
                    assert needle not in data, f"a secret ({needle[:12]!r}...) is in {where}"


def test_the_check_finds_a_leak(template: Path) -> None:
    """The search itself works: the key's PEM contains its secrets in base64, at some
    alignment, and a hex dump of the seed is found."""
    pem = (template / "w" / "key.pem").read_bytes()
    der = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    secrets = _key_secrets(pem)
    assert all(any(n in der for n in _needles(s)) for s in secrets)
    b64 = base64.b64encode(der)
    assert all(any(n in b64 for n in _needles(s)) for s in secrets)
    root = _machine_secrets(template / "machine")[0]
    assert any(n in f"dump: {root.hex()}\n".encode() for n in _needles(root))
