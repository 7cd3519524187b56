"""sgxtool end to end, as users run it: outputs, exit codes, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from sgxtool.image import read_image
from sgxtool.keys import load_private_key
from tests.cli.conftest import Runner
from tests.sgxtool.conftest import ENCLAVE_C, compile_c

Vector = Callable[[str], Path]
SIG1_HASH = "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"


@pytest.fixture
def work(tmp_path: Path, enclave_elf: Path) -> Path:
    (tmp_path / "enclave.elf").write_bytes(enclave_elf.read_bytes())
    (tmp_path / "enclave.toml").write_text("[enclave]\nisvprodid = 2\nisvsvn = 1\n")
    return tmp_path


def test_sig1_via_cli(sgxtool: Runner, vector: Vector, tmp_path: Path) -> None:
    cfg = tmp_path / "sig1.toml"
    cfg.write_text("[security]\nattributes_mask = 0xFFFFFFFFFFFFFFFD\n")
    r = sgxtool(
        "sign",
        "--enclave-hash",
        SIG1_HASH,
        "-c",
        str(cfg),
        "-k",
        str(vector("sgx/fortanix-rust-sgx/sig1.key.pem")),
        "--date",
        "2016-01-09",
        "--sig",
        str(tmp_path / "s.sig"),
    )
    assert r.code == 0, r.err
    golden = vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin").read_bytes()
    assert (tmp_path / "s.sig").read_bytes() == golden


def test_sign_verify_dump_measure(sgxtool: Runner, sample_key: Path, work: Path) -> None:
    elf, image = work / "enclave.elf", work / "enclave.signed"
    measured = sgxtool("measure", str(elf), "-c", str(work / "enclave.toml"))
    assert measured.code == 0
    r = sgxtool(
        "sign",
        str(elf),
        "-k",
        str(sample_key),
        "-o",
        str(image),
        "-s",
        str(work / "e.sig"),
        "--json",
    )
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["mrenclave"] == measured.out.strip()
    assert read_image(image).sigstruct.pack() == (work / "e.sig").read_bytes()
    assert sgxtool("measure", str(image)).out.strip() == info["mrenclave"]
    v = sgxtool("verify", str(image))
    assert v.code == 0 and "ok  MRENCLAVE" in v.out
    d = json.loads(sgxtool("dump", str(image), "--json").out)
    assert d["sigstruct"]["isvprodid"] == 2 and d["mrsigner"] == info["mrsigner"]
    assert d["sigstruct"]["attributes"]["flag_names"] == ["MODE64BIT"]
    assert d["sigstruct"]["debug_enforced"] is True
    assert "MODE64BIT" in sgxtool("dump", str(work / "e.sig")).out
    raw = sgxtool(
        "verify", str(work / "e.sig"), "--enclave", str(elf), "-c", str(work / "enclave.toml")
    )
    assert raw.code == 0 and "ok  MRENCLAVE" in raw.out
    layout = json.loads(sgxtool("layout", str(elf), "--json").out)
    assert {r["kind"] for r in layout["regions"]} >= {"code", "heap", "stack", "tcs", "ssa"}


def test_reproducible(
    sgxtool: Runner, sample_key: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    outs = []
    for name in ("a", "b"):
        assert (
            sgxtool(
                "sign", str(work / "enclave.elf"), "-k", str(sample_key), "-o", str(work / name)
            ).code
            == 0
        )
        outs.append((work / name).read_bytes())
    assert outs[0] == outs[1]
    assert read_image(work / "a").sigstruct.date == 0x20231114


def test_tampered_image_names_mrenclave(sgxtool: Runner, sample_key: Path, work: Path) -> None:
    image = work / "signed"
    assert (
        sgxtool("sign", str(work / "enclave.elf"), "-k", str(sample_key), "-o", str(image)).code
        == 0
    )
    data = bytearray(image.read_bytes())
    data[0x1000] ^= 1  # the code segment
    image.write_bytes(bytes(data))
    r = sgxtool("verify", str(image))
    assert r.code == 1
    assert "MRENCLAVE mismatch" in r.one_error_line()


def test_altered_and_truncated_sigstruct(sgxtool: Runner, sample_key: Path, work: Path) -> None:
    sig = work / "e.sig"
    assert (
        sgxtool("sign", str(work / "enclave.elf"), "-k", str(sample_key), "-s", str(sig)).code == 0
    )
    data = bytearray(sig.read_bytes())
    data[1026] ^= 1  # ISVSVN
    (work / "bad.sig").write_bytes(bytes(data))
    r = sgxtool("verify", str(work / "bad.sig"))
    assert r.code == 1 and "signature" in r.one_error_line()
    (work / "short.sig").write_bytes(bytes(data[:1000]))
    r = sgxtool("verify", str(work / "short.sig"))
    assert r.code == 2 and "not an ELF, signed image, SIGSTRUCT" in r.one_error_line()


def test_two_step_signing(sgxtool: Runner, sample_key: Path, work: Path) -> None:
    elf, data = work / "enclave.elf", work / "data.bin"
    assert sgxtool("gendata", str(elf), "-o", str(data), "--date", "2024-05-06").code == 0
    assert data.stat().st_size == 256
    key = load_private_key(sample_key)
    # What `openssl pkeyutl -sign -pkeyopt digest:sha256` writes: raw big-endian bytes.
    (work / "sig.bin").write_bytes(key.sign(data.read_bytes(), padding.PKCS1v15(), hashes.SHA256()))
    r = sgxtool(
        "catsig",
        str(elf),
        "--data",
        str(data),
        "--signature",
        str(work / "sig.bin"),
        "--public-key",
        str(sample_key),
        "-o",
        str(work / "two"),
    )
    assert r.code == 0, r.err
    assert (
        sgxtool(
            "sign", str(elf), "-k", str(sample_key), "--date", "2024-05-06", "-o", str(work / "one")
        ).code
        == 0
    )
    assert (work / "two").read_bytes() == (work / "one").read_bytes()
    (work / "bad.bin").write_bytes(bytes(384))
    r = sgxtool(
        "catsig",
        str(elf),
        "--data",
        str(data),
        "--signature",
        str(work / "bad.bin"),
        "--public-key",
        str(sample_key),
        "-o",
        str(work / "three"),
    )
    assert r.code == 1 and "does not verify" in r.one_error_line()
    assert not (work / "three").exists()
    (work / "other.toml").write_text("[enclave]\nisvprodid = 2\nisvsvn = 9\n")
    r = sgxtool(
        "catsig",
        str(elf),
        "-c",
        str(work / "other.toml"),
        "--data",
        str(data),
        "--signature",
        str(work / "sig.bin"),
        "--public-key",
        str(sample_key),
        "-o",
        str(work / "four"),
    )
    assert r.code == 1 and "ISVSVN differs" in r.one_error_line()


def test_keygen(sgxtool: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "k.pem"
    monkeypatch.setenv("PW", "correct horse")
    r = sgxtool("keygen", str(key), "--passphrase-env", "PW", "--public", str(tmp_path / "p"))
    assert r.code == 0, r.err
    assert key.stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED" in key.read_bytes()
    before = key.read_bytes()
    r = sgxtool("keygen", str(key))
    assert r.code == 2 and key.read_bytes() == before
    (tmp_path / "pw").write_text("wrong\n")
    r = sgxtool(
        "sign",
        "--enclave-hash",
        SIG1_HASH,
        "-k",
        str(key),
        "--passphrase-file",
        str(tmp_path / "pw"),
        "-s",
        str(tmp_path / "s"),
    )
    assert r.code == 2 and "wrong passphrase" in r.one_error_line()
    r = sgxtool(
        "sign",
        "--enclave-hash",
        SIG1_HASH,
        "-k",
        str(key),
        "--passphrase-env",
        "PW",
        "-s",
        str(tmp_path / "s"),
    )
    assert r.code == 0, r.err


def test_bad_inputs_are_one_line(
    sgxtool: Runner, sample_key: Path, work: Path, vector: Vector
) -> None:
    (work / "notelf").write_text("hello")
    (work / "bad.toml").write_text("[memory]\nthreads = 0\n")
    out = work / "out.img"
    out.write_bytes(b"precious")
    cases = [
        (
            ["sign", str(work / "notelf"), "-k", str(sample_key), "-o", str(out)],
            2,
            "not an ELF, signed image",
        ),
        (
            [
                "sign",
                str(work / "enclave.elf"),
                "-c",
                str(work / "bad.toml"),
                "-k",
                str(sample_key),
                "-o",
                str(out),
            ],
            2,
            "memory.threads = 0",
        ),
        (
            ["sign", str(work / "enclave.elf"), "-k", str(work / "enclave.toml"), "-o", str(out)],
            2,
            "not a private key",
        ),
        (["sign", str(work / "enclave.elf"), "-k", str(sample_key)], 2, "no output"),
        (["measure", str(vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin"))], 2, "is a SIGSTRUCT"),
        (["dump", str(work / "enclave.elf")], 2, "unsigned ELF"),
    ]
    for args, code, message in cases:
        r = sgxtool(*args)
        assert r.code == code, (args, r.err)
        assert message in r.one_error_line(), r.err
    assert out.read_bytes() == b"precious"
    assert sgxtool("sign", "--bogus").code == 2


def test_non_pie_via_cli(sgxtool: Runner, sample_key: Path, tmp_path: Path) -> None:
    elf = compile_c(ENCLAVE_C, tmp_path / "exec.elf", ["-O2", "-nostdlib", "-static", "-no-pie"])
    r = sgxtool("measure", str(elf))
    assert r.code == 2 and "not position-independent" in r.one_error_line()


def test_startup_imports_nothing_heavy() -> None:
    code = (
        "import sys\nfrom sgxtool._cli import main\n"
        "for args in (['--version'], ['--help'], ['sign', '--help']):\n"
        "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('rich', 'cryptography', 'unicorn', 'elftools')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_vector_sigstructs_dump_and_verify(sgxtool: Runner, vectors: Path) -> None:
    files = sorted(vectors.glob("sgx/**/*.sigstruct.bin"))
    assert files, "no SIGSTRUCT vectors found"
    for path in files:
        assert sgxtool("dump", str(path)).code == 0
        assert sgxtool("verify", str(path)).code == 0


def test_import_config(sgxtool: Runner, vector: Vector, tmp_path: Path) -> None:
    out = tmp_path / "enclave.toml"
    xml = vector("sgx/intel-linux-sgx/SampleEnclave_config.01.xml")
    r = sgxtool("import-config", str(xml), "-o", str(out))
    assert r.code == 0 and "note: TCSPolicy" in r.err
    from sgxtool.config import load_config

    assert load_config(out).threads == 10


def test_token_needs_a_signed_enclave(sgxtool: Runner, work: Path) -> None:
    r = sgxtool("token", str(work / "enclave.elf"))
    assert r.code == 2 and "unsigned ELF" in r.one_error_line()


# An "HSM" for tests: signs stdin with the key named in argv[1] and writes the raw signature.
HSM = (
    "import sys\n"
    "from cryptography.hazmat.primitives import hashes, serialization\n"
    "from cryptography.hazmat.primitives.asymmetric import padding\n"
    "key = serialization.load_pem_private_key(open(sys.argv[1], 'rb').read(), None)\n"
    "sys.stdout.buffer.write(key.sign(sys.stdin.buffer.read(), padding.PKCS1v15(),"
    " hashes.SHA256()))\n"
)


def test_sign_command(sgxtool: Runner, sample_key: Path, work: Path) -> None:
    """One-step signing through an external program, as with an HSM's command-line tool."""
    import shlex

    hsm = work / "hsm.py"
    hsm.write_text(HSM)
    command = shlex.join([sys.executable, str(hsm), str(sample_key)])
    elf = str(work / "enclave.elf")
    r = sgxtool("sign", elf, "--sign-command", command, "--public-key", str(sample_key),
                "--date", "2024-05-06", "-o", str(work / "hsm.img"))  # fmt: skip
    assert r.code == 0, r.err
    assert sgxtool("sign", elf, "-k", str(sample_key), "--date", "2024-05-06", "-o",
                   str(work / "key.img")).code == 0  # fmt: skip
    assert (work / "hsm.img").read_bytes() == (work / "key.img").read_bytes()
    other = work / "other.pem"
    assert sgxtool("keygen", str(other)).code == 0
    r = sgxtool("sign", elf, "--sign-command", command, "--public-key", str(other), "-o",
                str(work / "bad.img"))  # fmt: skip
    assert r.code == 1 and "does not verify" in r.one_error_line()
    r = sgxtool("sign", elf, "--sign-command", "false", "--public-key", str(sample_key), "-o",
                str(work / "bad.img"))  # fmt: skip
    assert r.code == 1 and "exited with status 1" in r.one_error_line()
    assert not (work / "bad.img").exists()
    r = sgxtool("sign", elf, "--sign-command", command, "-o", str(work / "bad.img"))
    assert r.code == 2 and "needs --public-key" in r.one_error_line()
    r = sgxtool("sign", elf, "-o", str(work / "bad.img"))
    assert r.code == 2 and "either --key or --sign-command" in r.one_error_line()


def test_paths_are_not_markup(sgxtool: Runner, sample_key: Path, work: Path) -> None:
    """Tables show file names as given, even ones that look like rich markup."""
    odd = work / "x[" / "]y[bold]"  # the path reads ".../x[/]y[bold]"
    odd.mkdir(parents=True)
    elf = odd / "enclave.elf"
    elf.write_bytes((work / "enclave.elf").read_bytes())
    r = sgxtool("layout", str(elf))
    assert r.code == 0 and "x[/]y[bold]" in "".join(r.out.split())
    assert sgxtool("sign", str(elf), "-k", str(sample_key), "-o", str(odd / "s")).code == 0
    r = sgxtool("dump", str(odd / "s"))
    assert r.code == 0 and "x[/]y[bold]" in "".join(r.out.split())
