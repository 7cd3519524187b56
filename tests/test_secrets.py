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
from hwsim.sev.arch import LaunchSession
from hwsim.sev.guestfw import GuestContext
from hwsim.sev.psp import GUEST_NS
from hwsim.sev.session import TransportKeys
from hwsim.sgx.launch import LaunchPolicy, set_launch_policy
from tests.examples.build import make_example, sign_image
from tests.softhsm import PIN, SoftHsm

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
WRONG_PIN = "not-the-pin-93e1d7b04c"
_PIN = (("SECRET_PIN", PIN),)
_WRONG_PIN = (("SECRET_PIN", WRONG_PIN),)
M = ("--machine", "{machine}")
MB = ("--machine", "{b}")  # the migration's target machine
HSM = ("--passphrase-env", "SECRET_PIN")

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
    # sevtool: migration (the transport holds the guest's pages and keys, wrapped)
    Command("sevtool", (*M, "guest", "send", "--guest", "mig", "--to", "{w}/b.chain", "-o",
                        "{w}/t2.bin", "--json")),
    Command("sevtool", (*M, "guest", "send", "--guest", "mig", "--to", "{w}/b.chain", "-o",
                        "{w}/t2.bin")),
    Command("sevtool", (*MB, "guest", "receive", "{w}/t.bin", "--json")),
    Command("sevtool", (*MB, "guest", "receive", "{w}/t.bin", "--name", "moved")),
    # refused: the transport is for the other machine's PDH
    Command("sevtool", (*M, "guest", "receive", "{w}/t.bin")),
    # keys in a PKCS#11 token: the PIN is a secret too, from the environment or the URI
    Command("sevtool", ("generate", "{w}/t.cert", "--key", "{hsm_owner}", *HSM), (), _PIN),
    Command("sevtool", ("generate", "{w}/t.cert", "--key", "{hsm_owner}", *HSM), (),
            _WRONG_PIN),
    Command("sevtool", ("generate", "{w}/t.cert", "--key", "{hsm_owner_pin}")),
    Command("sevtool", ("generate", "{w}/t.cert", "--key", "{hsm_owner_wrong_pin}")),
    Command("sevtool", ("provision", "{w}/hsm.cert", "{hsm_owner}", *HSM, "--json", *M), (),
            _PIN),
    Command("sevtool", ("pek", "sign", "{w}/pek.csr", "{hsm_owner}", "{w}/hsm-pek.cert",
                        "--oca-out", "{w}/hsm-oca.cert", *HSM), (), _PIN),
    Command("sgxtool", ("sign", "{w}/enclave.elf", "-k", "{hsm_sgx}", *HSM, "-s", "{w}/s.sig"),
            (), _PIN),
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
    """Fused and boot roots, memory-encryption keys, SEV private keys, the vendor's key, and
    each SEV guest's keys (VEK, the launch's TEK/TIK, the migration's)."""
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
        if ns == GUEST_NS:
            guest = GuestContext.loads(bytes(value))
            found += [guest.vek, guest.tek, guest.tik, guest.transfer]
    return found


def _record_transport_keys(mp: pytest.MonkeyPatch, into: list[bytes]) -> None:
    """Keep the TEK and TIK each SEND_START makes: SEND_FINISH erases them from the guest's
    context, so state.db never shows them once a send is over."""
    from hwsim.sev.session import wrap_session as real

    def wrap(z: bytes, keys: TransportKeys, policy: int, **rest: bytes) -> LaunchSession:
        into.extend((keys.tek, keys.tik, keys.pack()))
        return real(z, keys, policy, **rest)

    mp.setattr("hwsim.sev.migrate.wrap_session", wrap)


def _secrets_of(w: Path, machine: Path) -> list[bytes]:
    found = [PASSPHRASE.encode(), SEALED_TEXT.encode(), PIN.encode(), WRONG_PIN.encode()]
    found += _machine_secrets(machine) + _machine_secrets(machine.parent / "b")
    sent = (w.parent / "transport.keys").read_bytes()  # the template's send (t.bin)
    found += [sent[i : i + 16] for i in range(0, len(sent), 16)] + [sent]
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
    Machine.init(root / "b", "sim", vendor_key=sgx_vendor_key).close()
    m = ["--machine", str(machine.path)]
    sent: list[bytes] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SECRET_PASS", PASSPHRASE)
        _record_transport_keys(mp, sent)
        sevtool_main_args = [
            ["generate", str(w / "oca.cert"), str(w / "oca.key")],
            ["generate", str(w / "oca2.cert"), str(w / "oca.enc.key"), "--passphrase-env",
             "SECRET_PASS"],
            [*m, "pek", "csr", str(w / "pek.csr")],
            # migration: B's chain, guest mig to send, guest gone sent already (t.bin)
            ["--machine", str(root / "b"), "export", "--full", str(w / "b.chain")],
            *_running_guest(m, w / "guest.bin", "mig"),
            *_running_guest(m, w / "guest.bin", "gone"),
            [*m, "guest", "send", "--guest", "gone", "--to", str(w / "b.chain"), "-o",
             str(w / "t.bin")],
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
    assert (w / "t.bin").is_file() and len(sent) == 3
    (root / "transport.keys").write_bytes(sent[-1])
    return root


def _running_guest(m: list[str], image: Path, name: str) -> list[list[str]]:
    launch = [*m, "guest", "launch", str(image), "--policy", "0x1", "--name", name]
    return [launch, *([*m, "guest", step, "--guest", name] for step in ("measure", "finish"))]


def _token(softhsm: SoftHsm, w: Path) -> tuple[dict[str, str], list[bytes]]:
    """The {hsm_...} placeholders, with the OCA certificate of the token's owner key in
    w/hsm.cert; and the secrets of the token's keys."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from memcrypt.signer import ECDSA_SHA256, KeySigner
    from sevtool.owner import self_signed_oca

    owner = softhsm.keys["owner"]
    assert isinstance(owner, ec.EllipticCurvePrivateKey)
    (w / "hsm.cert").write_bytes(self_signed_oca(KeySigner(owner, ECDSA_SHA256)).cert.pack())
    uris = {
        "hsm_owner": softhsm.uri("owner"),
        "hsm_owner_pin": softhsm.uri("owner", f"pin-value={PIN}"),
        "hsm_owner_wrong_pin": softhsm.uri("owner", f"pin-value={WRONG_PIN}"),
        "hsm_sgx": softhsm.uri("sgx"),
    }
    return uris, [owner.private_numbers().private_value.to_bytes(48, "big")]


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
    request: pytest.FixtureRequest,
) -> None:
    with _fresh_copy(template, tmp_path) as (w, machine):
        for name, value in command.env:
            monkeypatch.setenv(name, value)
        values: dict[str, str | Path] = {"w": w, "machine": machine, "b": machine.parent / "b"}
        secrets: list[bytes] = []
        if any("{hsm" in a for a in command.argv):
            uris, secrets = _token(request.getfixturevalue("softhsm"), w)
            values |= uris
        argv = [a.format(**values) for a in command.argv]
        before = _snapshot(tmp_path)
        secrets += _secrets_of(w, machine)
        _record_transport_keys(monkeypatch, secrets)
        capsysbinary.readouterr()
        escaped = _run(_main(command.program), argv + (["--debug"] if debug else []))
        out, err = capsysbinary.readouterr()
        secrets += _secrets_of(w, machine)  # keys made or rotated by the command
        meant = {w / name for name in command.keeps} | {
            p for m in (machine, machine.parent / "b") for p in m.iterdir()
            if p.name.startswith("state.db")
        }  # fmt: skip
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


def test_guest_keys_are_searched(template: Path) -> None:
    """Both guests' VEK and TEK/TIK, and the migration's TEK/TIK of the one sent, are
    searched for."""
    db = sqlite3.connect(f"file:{template / 'machine' / 'state.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT value FROM kv WHERE ns = ?", (GUEST_NS,)).fetchall()
    finally:
        db.close()
    guests = [GuestContext.loads(bytes(value)) for (value,) in rows]
    found = _machine_secrets(template / "machine")
    assert len(guests) == 2 and all(len(g.vek) == len(g.tek) == len(g.tik) == 16 for g in guests)
    assert all(k in found for g in guests for k in (g.vek, g.tek, g.tik))
    sent = _secrets_of(template / "w", template / "machine")
    assert len((template / "transport.keys").read_bytes()) == 32
    assert (template / "transport.keys").read_bytes() in sent
