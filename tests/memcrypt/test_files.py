"""The rules for output files (issue 10 items 7 and 8): modes, temporary files, device
targets, and files that change together, proved by killing writers at every point."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from memcrypt.errors import InvalidInput
from memcrypt.files import Output, check_distinct, read_file, write_atomic, write_files

REPO = Path(__file__).resolve().parents[2]

# Runs ACTION with os.replace and os.unlink counting: the KILL_AT-th call SIGKILLs the
# process before it happens, so every step of a write can be the last one.
_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    kill_at, action, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    calls = 0
    def counting(real):
        def call(*a, **k):
            global calls
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        return call
    os.replace, os.unlink = counting(os.replace), counting(os.unlink)
    if action == "pair":
        from pathlib import Path
        from memcrypt.files import Output, write_files
        a, b, tag = args
        pair = [Output(Path(a), f"{tag} a".encode(), 0o600), Output(Path(b), f"{tag} b".encode())]
        write_files(pair)
    elif action == "sgxtool":
        import sgxtool.keys
        from sgxtool.keys import load_private_key
        new_key = args.pop(0)
        sgxtool.keys.generate_key = lambda: load_private_key(new_key)
        from sgxtool._cli import main
        main(args)
    elif action == "sevtool":
        from sevtool._cli import main
        main(args)
    """
)


def _killed_at(kill_at: int, *args: str) -> int:
    """Run the killer; its return code (-9 when it was killed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLER, str(kill_at), *args],
        env=env,
        capture_output=True,
        check=False,
    )
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.decode()
    return proc.returncode


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_a_pair_is_old_or_new_after_a_kill_at_every_step(tmp_path: Path) -> None:
    a, b = tmp_path / "key", tmp_path / "cert"
    write_files([Output(a, b"old a", 0o600), Output(b, b"old b")])
    kill_at = 1
    while _killed_at(kill_at, "pair", str(a), str(b), "new") != 0:
        # Either file read first: the read finishes or drops the killed write.
        first, second = (a, b) if kill_at % 2 else (b, a)
        got = {first: read_file(first, "x"), second: read_file(second, "x")}
        tags = {got[a].split()[0], got[b].split()[0]}
        assert len(tags) == 1, f"kill at step {kill_at} left a mixed pair: {got}"
        write_files([Output(a, b"old a", 0o600), Output(b, b"old b")])
        assert _leftovers(tmp_path) == [], f"kill at step {kill_at} left {_leftovers(tmp_path)}"
        kill_at += 1
    assert kill_at > 4  # the temporary files, the commit records and both renames were hit
    assert (a.read_bytes(), b.read_bytes()) == (b"new a", b"new b")
    assert stat.S_IMODE(a.stat().st_mode) == 0o600


def _pair_matches(private: Path, public: Path) -> bytes:
    from sgxtool.keys import load_private_key, load_public_key

    key = load_private_key(private)
    assert key.public_key() == load_public_key(public), "private and public key do not match"
    return key.public_key().public_numbers().n.to_bytes(384, "little")


def test_keygen_killed_between_its_two_files(
    tmp_path: Path, sgxtool_keys: tuple[Path, Path]
) -> None:
    old, new = sgxtool_keys
    key, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    from sgxtool.keys import load_private_key, save_key_pair

    save_key_pair(load_private_key(old), key, pub)
    old_n = _pair_matches(key, pub)
    outcomes = set()
    for kill_at in range(1, 8):
        args = ("sgxtool", str(new), "keygen", str(key), "--public", str(pub), "--force")
        _killed_at(kill_at, *args)
        n = _pair_matches(key, pub)
        outcomes.add(n == old_n)
        save_key_pair(load_private_key(old), key, pub)
    assert outcomes == {True, False}  # some kills kept the old pair, later ones the new


def test_sevtool_generate_killed_between_its_two_files(tmp_path: Path) -> None:
    from sevtool.owner import load_owner_key

    cert, key = tmp_path / "oca.cert", tmp_path / "oca.key"
    args = ("sevtool", "generate", str(cert), str(key), "--force")
    assert _killed_at(0, *args) == 0
    for kill_at in range(1, 8):
        _killed_at(kill_at, *args)
        load_owner_key(cert, key)  # refuses a key that does not belong to the certificate


@pytest.fixture(scope="session")
def sgxtool_keys(vector: Callable[[str], Path]) -> tuple[Path, Path]:
    """Two RSA-3072 e=3 keys from the shared vectors (making them would take seconds)."""
    return (
        vector("sgx/fortanix-rust-sgx/sig1.key.pem"),
        vector("sgx/intel-linux-sgx/ref_le_enclave_private_test_key.pem"),
    )


# -- modes ----------------------------------------------------------------------------------


def test_replacing_a_private_file_keeps_it_private(tmp_path: Path) -> None:
    out = tmp_path / "unsealed"
    out.write_bytes(b"secret")
    out.chmod(0o600)
    write_atomic(out, b"new secret")  # asks for 0644, as `sgxtool run --out` does
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_the_umask_applies(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "new", b"x")
        write_files([Output(tmp_path / "p1", b"1"), Output(tmp_path / "p2", b"2", 0o755)])
    finally:
        os.umask(old)
    for name in ("new", "p1", "p2"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600 | (0o100 * (name == "p2"))


# -- temporary files ------------------------------------------------------------------------

_KILLED_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from memcrypt.files import atomic_open
    with atomic_open(sys.argv[1], mode=0o600) as f:
        f.write(b"-----BEGIN PRIVATE KEY----- complete")
        f.flush()
        os.kill(os.getpid(), signal.SIG"""
    + "{sig})\n"
)


@pytest.mark.parametrize("sig", ["KILL", "TERM"])
def test_temporary_files_do_not_outlive_their_writer(tmp_path: Path, sig: str) -> None:
    """SIGKILL leaves a temporary file that the next write removes; on SIGTERM (an exit
    the process controls, through run_main's handler) none is left at all."""
    out = tmp_path / "key.pem"
    script = _KILLED_MID_WRITE.format(sig=sig)
    if sig == "TERM":
        script = "from memcrypt.cli import exit_on_signals\nexit_on_signals()\n" + script
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out)], env=env, capture_output=True, check=False
    )
    assert proc.returncode != 0
    left = _leftovers(tmp_path)
    assert bool(left) == (sig == "KILL"), left
    write_atomic(out, b"fresh")
    assert _leftovers(tmp_path) == []
    assert out.read_bytes() == b"fresh"


def test_a_live_writers_temporary_file_is_kept(tmp_path: Path) -> None:
    """Another process writing the same file right now keeps its temporary file."""
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as sleeper:
        theirs = tmp_path / f".out.{sleeper.pid}.abcdefgh.tmp"
        dead = tmp_path / ".out.999999999.abcdefgh.tmp"
        theirs.write_bytes(b"")
        dead.write_bytes(b"")
        write_atomic(tmp_path / "out", b"x")
        sleeper.kill()
    assert theirs.exists() and not dead.exists()


def test_a_taken_temporary_name_is_never_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name already on disk (even a symlink planted there) is passed over, not opened."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"not yours")
    draws = iter([b"\x00" * 4, b"\x00" * 4, b"\x01" * 4])
    monkeypatch.setattr(os, "urandom", lambda n: next(draws))
    (tmp_path / f".key.{os.getpid()}.00000000.tmp").symlink_to(elsewhere)
    write_atomic(tmp_path / "key", b"secret", mode=0o600)
    assert (tmp_path / "key").read_bytes() == b"secret"
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    assert elsewhere.read_bytes() == b"not yours"


# -- where outputs may go -------------------------------------------------------------------


def test_devices_are_refused_even_through_a_symlink(tmp_path: Path) -> None:
    link = tmp_path / "null"
    link.symlink_to(os.devnull)
    for target in (Path(os.devnull), link):
        with pytest.raises(InvalidInput, match="is a device"):
            write_atomic(target, b"x")
        with pytest.raises(InvalidInput, match="is a device"):
            write_files([Output(target, b"x")])
    assert link.is_symlink()


def test_a_symlink_to_a_file_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "v2.pem"
    real.write_bytes(b"old")
    link = tmp_path / "current.pem"
    link.symlink_to(real.name)
    write_atomic(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_dash_is_standard_output(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    write_atomic("-", b"to stdout")
    assert capfdbinary.readouterr().out == b"to stdout"


def test_the_same_file_twice_is_refused(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_bytes(b"keep")
    (tmp_path / "hard").hardlink_to(a)
    (tmp_path / "soft").symlink_to(a)
    for other in ("a", "hard", "soft", "./a"):
        with pytest.raises(InvalidInput, match="name the same file"):
            check_distinct([("--out", a), ("--sig", tmp_path / other)])
    with pytest.raises(InvalidInput, match="name the same file"):
        write_files([Output(tmp_path / "n", b"1"), Output(tmp_path / "n", b"2")])
    check_distinct([("--out", a), ("--sig", None), ("-o", "-"), ("-s", "-")])
    assert a.read_bytes() == b"keep" and not (tmp_path / "n").exists()
