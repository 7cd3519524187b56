"""Bad input through the real command lines: damaged files get one clear error, never a
traceback, and never damage what is already on disk.

Every property feeds mutated inputs (bit flips, truncations, extensions, random bytes,
overwritten fields, swapped files) to ``sgxtool`` and ``sevtool`` in-process and checks:

- the exit code is 1 (failed check) or 2 (unreadable or invalid input), or 0 only when the
  mutation is semantically neutral (an unchanged file, bytes no check covers);
- stderr is ``prog: error: ...`` plus at most a ``prog: hint: ...`` line, no traceback;
- an output file that existed before a failed command is byte for byte unchanged, and no
  temporary file is left beside it.

Examples are few here so that the file stays fast in CI; ``bench/fuzz_cli.py`` runs the
same properties with many more (``MEMCRYPT_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hwsim.machine import Machine
from tests.cli.conftest import Result, Runner

Vector = Callable[[str], Path]

_EXAMPLES = int(os.environ.get("MEMCRYPT_FUZZ_EXAMPLES", "0"))


def examples(n: int) -> settings:
    """``n`` examples in CI; ``MEMCRYPT_FUZZ_EXAMPLES`` (bench/fuzz_cli.py) overrides it."""
    return settings(
        max_examples=_EXAMPLES or n,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


SIG1_HASH = "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"
SENTINEL = b"existing output that a failed command must leave alone\n"
SEV = "sev/virtee-sev"
SEV_NAMES = ("cek", "oca", "pek", "pdh")
SEV_SIGNED_LEN = 0x414  # SEV certificate bytes both signatures cover


# -- mutations ------------------------------------------------------------------------------

_EXTREMES = st.sampled_from(
    [0, 1, 0x7F, 0xFF, 0xFFFF, 0xFFFF_FFFF, 1 << 31, 1 << 47, 1 << 63, (1 << 64) - 1]
)


@st.composite
def mutated(draw: st.DrawFn, data: bytes, region: tuple[int, int] | None = None) -> bytes:
    """``data`` damaged in one of the ways files get damaged; ``region`` limits where."""
    lo, hi = region or (0, len(data))
    at = st.integers(lo, max(lo, hi - 1))
    kind = draw(
        st.sampled_from(["flip", "truncate", "extend", "overwrite", "field", "random", "empty"])
    )
    out = bytearray(data)
    if kind == "flip":
        for i in draw(st.lists(at, min_size=1, max_size=8)):
            out[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del out[draw(st.integers(0, max(0, len(out) - 1))) :]
    elif kind == "extend":
        out += draw(st.binary(min_size=1, max_size=4096))
    elif kind == "overwrite":
        i = draw(at)
        patch = draw(st.binary(min_size=1, max_size=64))
        out[i : i + len(patch)] = patch
    elif kind == "field":  # a length, offset or count set to an absurd value
        i = draw(at)
        width = draw(st.sampled_from([2, 4, 8]))
        value = draw(_EXTREMES) & ((1 << (8 * width)) - 1)
        out[i : i + width] = value.to_bytes(width, "little")
    elif kind == "random":
        return draw(st.binary(max_size=4096))
    else:
        return b""
    return bytes(out)


def flipped(data: bytes, region: tuple[int, int]) -> st.SearchStrategy[bytes]:
    """``data`` with one to four bits flipped inside ``region`` (never equal to ``data``)."""

    def apply(flips: list[tuple[int, int]]) -> bytes:
        out = bytearray(data)
        for i, bit in flips:
            out[i] ^= 1 << bit
        return bytes(out)

    flip = st.tuples(st.integers(region[0], region[1] - 1), st.integers(0, 7))
    return (st.lists(flip, min_size=1, max_size=4, unique_by=lambda f: f[0]).map(apply)).filter(
        lambda d: d != data
    )


# -- checks ---------------------------------------------------------------------------------


def clean(result: Result, prog: str, *, ok: bool = True) -> None:
    """A successful run (when ``ok`` allows one), or a refusal in the standard form."""
    assert "Traceback" not in result.err, result.err
    if result.code == 0 and ok:
        return
    assert result.code in (1, 2), (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.err
    assert lines[0].startswith(f"{prog}: error: "), result.err
    assert len(lines) == 1 or lines[1].startswith(f"{prog}: hint: "), result.err


def refused(result: Result, prog: str) -> None:
    clean(result, prog, ok=False)


class Outputs:
    """Output files that exist before a command; after a failure they must be untouched."""

    def __init__(self, directory: Path, *names: str) -> None:
        self.directory = directory
        self.paths = [directory / n for n in names]

    def prepare(self) -> list[str]:
        for p in self.paths:
            p.write_bytes(SENTINEL)
            p.chmod(0o640)
        return [str(p) for p in self.paths]

    def check(self, result: Result) -> None:
        if result.code == 0:
            return
        for p in self.paths:
            assert p.read_bytes() == SENTINEL, f"{p} changed by a failed command"
            assert stat.S_IMODE(p.stat().st_mode) == 0o640
        assert not list(self.directory.glob(".*.tmp")), "temporary file left behind"


_MEASURE_LIMIT = 64 << 20


def quick_to_measure(path: Path, config: Path | None = None) -> bool:
    """Whether measuring ``path`` is quick. A mutation can make a valid but huge enclave
    (a bss of 1 TiB): measuring it in full is correct and slow, so such examples skip the
    commands that measure. Library errors other than memcrypt's still fail the test."""
    from memcrypt.errors import MemcryptError
    from sgxtool.build import layout_of
    from sgxtool.config import EnclaveConfig, load_config
    from sgxtool.image import ImageKind, detect, read_image

    try:
        if config is not None:
            cfg = load_config(config)
        elif detect(path) is ImageKind.SIGNED_ELF:
            cfg = read_image(path).config
        else:
            cfg = EnclaveConfig()
        return layout_of(path, cfg).measured_bytes <= _MEASURE_LIMIT
    except MemcryptError:
        return True


# -- inputs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, enclave_elf: Path, sample_key: Path) -> Path:
    """A signed image of the test enclave (with its enclave.toml next to it)."""
    from sgxtool.build import Target, sign_enclave
    from sgxtool.config import parse_config
    from sgxtool.keys import load_private_key
    from sgxtool.sign import KeySigner, signing_date

    d = tmp_path_factory.mktemp("signed")
    cfg = parse_config("[enclave]\nisvprodid = 7\n[memory]\nthreads = 2\n")
    out = d / "signed.elf"
    signer = KeySigner(load_private_key(sample_key))
    sign_enclave(Target(cfg, enclave_elf), signer, signing_date("2024-01-02"), out=out)
    return out


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    return d


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def write(directory: Path, name: str, data: bytes) -> str:
    path = directory / name
    path.write_bytes(data)
    return str(path)


# -- SIGSTRUCT ------------------------------------------------------------------------------


@examples(40)
@given(data=st.data())
def test_mutated_sigstruct(
    sgxtool: Runner, vector: Vector, inputs: Path, data: st.DataObject
) -> None:
    golden = vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin").read_bytes()
    bad = data.draw(mutated(golden))
    sig = write(inputs, "s.sig", bad)
    verify = sgxtool("verify", sig)
    clean(verify, "sgxtool", ok=bad == golden)
    clean(sgxtool("dump", sig, "--json"), "sgxtool")
    refused(sgxtool("measure", sig), "sgxtool")


@examples(25)
@given(data=st.data())
def test_sigstruct_bit_flip_fails_verify(
    sgxtool: Runner, vector: Vector, inputs: Path, data: st.DataObject
) -> None:
    golden = vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin").read_bytes()
    sig = write(inputs, "s.sig", data.draw(flipped(golden, (0, len(golden)))))
    result = sgxtool("verify", sig)
    refused(result, "sgxtool")
    assert result.code == 1


# -- signed images --------------------------------------------------------------------------


@examples(30)
@given(data=st.data())
def test_mutated_signed_image(
    sgxtool: Runner, signed: Path, inputs: Path, outdir: Path, data: st.DataObject
) -> None:
    golden = signed.read_bytes()
    tail = len(golden) - 4096  # the metadata and footer sit in the last few KiB
    region = data.draw(st.sampled_from([(0, len(golden)), (max(0, tail), len(golden))]))
    image = write(inputs, "image", data.draw(mutated(golden, region)))
    clean(sgxtool("dump", image), "sgxtool")
    if not quick_to_measure(Path(image)):
        return
    clean(sgxtool("verify", image), "sgxtool")
    clean(sgxtool("measure", image, "--json"), "sgxtool")
    outs = Outputs(outdir, "sgxs")
    (sgxs,) = outs.prepare()
    result = sgxtool("sgxs", image, "-o", sgxs)
    clean(result, "sgxtool")
    outs.check(result)


@examples(15)
@given(data=st.data())
def test_signed_image_code_flip_names_mrenclave(
    sgxtool: Runner, signed: Path, inputs: Path, data: st.DataObject
) -> None:
    golden = signed.read_bytes()
    code = (0x1000, 0x1030)  # inside the test enclave's executable segment
    image = write(inputs, "image", data.draw(flipped(golden, code)))
    result = sgxtool("verify", image)
    refused(result, "sgxtool")
    assert result.code == 1 and "MRENCLAVE" in result.err


# -- ELF inputs and signing outputs ---------------------------------------------------------


@examples(30)
@given(data=st.data())
def test_mutated_elf_sign(
    sgxtool: Runner,
    enclave_elf: Path,
    sample_key: Path,
    inputs: Path,
    outdir: Path,
    data: st.DataObject,
) -> None:
    golden = enclave_elf.read_bytes()
    head = data.draw(st.booleans())  # the ELF and program headers are the parser's input
    elf = write(inputs, "e.elf", data.draw(mutated(golden, (0, 0x280) if head else None)))
    clean(sgxtool("layout", elf, "--json"), "sgxtool")
    if not quick_to_measure(Path(elf)):
        return
    clean(sgxtool("measure", elf, "--json"), "sgxtool")
    outs = Outputs(outdir, "signed", "sig")
    image, sig = outs.prepare()
    result = sgxtool("sign", elf, "-k", str(sample_key), "-o", image, "-s", sig)
    clean(result, "sgxtool")
    outs.check(result)


INTEL = "ShuntaIshihara+test_hash_SGX"
INTEL_KEY = "sgx/intel-linux-sgx/SampleEnclave_Enclave_private_test.pem"


def elf_regions(data: bytes) -> list[tuple[int, int]]:
    """The bytes an ELF reader interprets: headers, header tables, string and symbol
    tables, the dynamic section and the note sgx_sign writes."""
    from sgxtool.elffile import ElfFile

    elf = ElfFile.from_bytes(data)
    h = elf.header
    regions = [(0, 64), (h.e_phoff, h.e_phoff + h.e_phnum * 56),
               (h.e_shoff, h.e_shoff + h.e_shnum * 64)]  # fmt: skip
    wanted = (".dynamic", ".dynsym", ".dynstr", ".shstrtab", ".note.sgxmeta", ".rela.dyn")
    regions += [(s.sh_offset, s.sh_offset + min(s.sh_size, 4096))
                for s in elf.sections if s.name in wanted]  # fmt: skip
    return regions


@examples(20)
@given(data=st.data())
def test_mutated_intel_so_sign(
    sgxtool: Runner, vector: Vector, inputs: Path, outdir: Path, data: st.DataObject
) -> None:
    """An Intel SDK .so damaged where the ELF reader looks: signed, or one line."""
    from tests.sgxtool.test_intelsign import unsigned

    so, xml, date = unsigned(vector, INTEL, inputs)
    golden = so.read_bytes()
    region = data.draw(st.sampled_from(elf_regions(golden)))
    bad = write(inputs, "bad.so", data.draw(mutated(golden, region)))
    outs = Outputs(outdir, "signed.so")
    (out,) = outs.prepare()
    key = str(vector(INTEL_KEY))
    result = sgxtool("sign", bad, "-c", str(xml), "-k", key, "--date", date, "--max-size", "64M",
                     "-o", out)  # fmt: skip
    clean(result, "sgxtool")
    outs.check(result)


@examples(20)
@given(data=st.data())
def test_mutated_intel_signed_so(
    sgxtool: Runner, vector: Vector, inputs: Path, data: st.DataObject
) -> None:
    """A signed Intel SDK .so damaged where the ELF reader looks: read, or one line."""
    golden = vector(f"sgx/intel-sdk-enclaves/{INTEL}/enclave.signed.so").read_bytes()
    region = data.draw(st.sampled_from(elf_regions(golden)))
    bad = write(inputs, "bad.so", data.draw(mutated(golden, region)))
    clean(sgxtool("dump", bad), "sgxtool")
    clean(sgxtool("measure", bad, "--max-size", "64M"), "sgxtool")


# -- SGXS streams ---------------------------------------------------------------------------


@examples(40)
@given(data=st.data())
def test_mutated_sgxs(
    sgxtool: Runner,
    vector: Vector,
    sample_key: Path,
    inputs: Path,
    outdir: Path,
    data: st.DataObject,
) -> None:
    golden = vector("sgx/fortanix-rust-sgx/report.sgxs").read_bytes()
    stream = write(inputs, "e.sgxs", data.draw(mutated(golden)))
    sig = str(vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin"))
    clean(sgxtool("measure", stream), "sgxtool")
    clean(sgxtool("dump", stream, "--json"), "sgxtool")
    refused(sgxtool("verify", sig, "--enclave", stream), "sgxtool")  # sig1 is not for it
    outs = Outputs(outdir, "sig")
    (out,) = outs.prepare()
    result = sgxtool("sign", stream, "-k", str(sample_key), "-s", out, "--date", "2020-02-02")
    clean(result, "sgxtool")
    outs.check(result)


# -- enclave.toml ---------------------------------------------------------------------------

_KEYS = {
    "enclave": ["isvprodid", "isvsvn", "debug", "vendor", "size", "bogus"],
    "memory": ["heap_size", "heap_measured", "stack_size", "threads", "ssa_frames", "guard_pages"],
    "security": ["miscselect", "miscmask", "attributes", "attributes_mask", "xfrm", "xfrm_mask"],
    "kss": ["isvfamilyid", "isvextprodid"],
    "extra": ["x"],
}
_TOML_VALUES = st.one_of(
    st.integers(-(1 << 70), 1 << 70),
    _EXTREMES,
    st.booleans(),
    st.floats(allow_nan=True),
    st.sampled_from(['"64K"', '"1M"', '"4G"', '"0x1000"', '"-1K"', '"9T"', '"KB"', '""']),
    st.text(max_size=40).map(lambda s: '"' + s.encode("unicode_escape").decode() + '"'),
    st.sampled_from(['["KSS"]', '["DEBUG"]', "[1, 2]", "{ a = 1 }", "[[[[1]]]]", "1979-05-27"]),
)


@st.composite
def toml_text(draw: st.DrawFn) -> str:
    lines = []
    for table, keys in draw(st.dictionaries(st.sampled_from(list(_KEYS)), st.just(0))).items():
        lines.append(f"[{table}]")
        for key in draw(st.lists(st.sampled_from(_KEYS[table]), max_size=4, unique=True)):
            value = draw(_TOML_VALUES)
            lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
        del keys
    text = "\n".join(lines) + "\n"
    if draw(st.booleans()):  # and damage the text itself
        raw = draw(mutated(text.encode()))
        return raw.decode("utf-8", "surrogateescape")
    return text


@examples(60)
@given(text=toml_text())
def test_mutated_enclave_toml(
    sgxtool: Runner, enclave_elf: Path, inputs: Path, outdir: Path, text: str
) -> None:
    cfg = inputs / "enclave.toml"
    cfg.write_bytes(text.encode("utf-8", "surrogateescape"))
    clean(sgxtool("layout", str(enclave_elf), "-c", str(cfg)), "sgxtool")
    if not quick_to_measure(enclave_elf, cfg):
        return
    clean(sgxtool("measure", str(enclave_elf), "-c", str(cfg)), "sgxtool")
    outs = Outputs(outdir, "data")
    (out,) = outs.prepare()
    result = sgxtool("gendata", str(enclave_elf), "-c", str(cfg), "-o", out, "--date", "20240101")
    clean(result, "sgxtool")
    outs.check(result)


def test_deeply_nested_toml_is_refused(sgxtool: Runner, enclave_elf: Path, inputs: Path) -> None:
    for text in ("a = " + "[" * 5000 + "]" * 5000, "a = " + "{b=" * 3000 + "1" + "}" * 3000):
        cfg = inputs / "enclave.toml"
        cfg.write_text(text)
        result = sgxtool("measure", str(enclave_elf), "-c", str(cfg))
        refused(result, "sgxtool")
        assert result.code == 2


# -- PEM keys -------------------------------------------------------------------------------


@examples(30)
@given(data=st.data())
def test_mutated_pem_keys(
    sgxtool: Runner, sample_key: Path, inputs: Path, outdir: Path, data: st.DataObject
) -> None:
    golden = sample_key.read_bytes()
    body = (golden.index(b"\n") + 1, golden.rindex(b"-----END"))
    key = write(
        inputs, "k.pem", data.draw(mutated(golden, data.draw(st.sampled_from([body, None]))))
    )
    outs = Outputs(outdir, "sig")
    (out,) = outs.prepare()
    signing = sgxtool("sign", "--enclave-hash", SIG1_HASH, "-k", key, "-s", out)
    clean(signing, "sgxtool")
    outs.check(signing)
    gendata = outdir / "data"
    assert sgxtool("gendata", "--enclave-hash", SIG1_HASH, "-o", str(gendata)).code == 0
    signature = write(inputs, "sig.bin", data.draw(st.binary(min_size=380, max_size=390)))
    outs.prepare()
    assembled = sgxtool(
        "catsig", "--enclave-hash", SIG1_HASH, "--data", str(gendata),
        "--signature", signature, "--public-key", key, "-s", out,
    )  # fmt: skip
    refused(assembled, "sgxtool")  # a random signature never verifies
    outs.check(assembled)


# -- SEV certificates -----------------------------------------------------------------------


def sev_chain(vector: Vector, gen: str, into: Path) -> dict[str, Path]:
    """A full chain of real certificates for ``gen`` (naples or rome) copied to ``into``."""
    files = {n: vector(f"{SEV}/{gen}/{n}.cert") for n in SEV_NAMES}
    files |= {n: vector(f"{SEV}/builtin-sev/{gen}/{n}.cert") for n in ("ark", "ask")}
    out = {}
    for name, src in files.items():
        out[name] = into / f"{name}.cert"
        shutil.copyfile(src, out[name])
    return out


@pytest.mark.parametrize("gen", ["naples", "rome"])
def test_real_chain_verifies(sevtool: Runner, vector: Vector, inputs: Path, gen: str) -> None:
    sev_chain(vector, gen, inputs)
    result = sevtool("verify", str(inputs))
    assert result.code == 0, result.err


@examples(40)
@given(data=st.data())
def test_mutated_sev_certificate(
    sevtool: Runner, vector: Vector, inputs: Path, data: st.DataObject
) -> None:
    gen = data.draw(st.sampled_from(["naples", "rome"]))
    chain = sev_chain(vector, gen, inputs)
    name = data.draw(st.sampled_from(sorted(chain)))
    golden = chain[name].read_bytes()
    bad = data.draw(mutated(golden))
    if data.draw(st.booleans()):  # AMD and sev-tool also publish certificates as hex text
        bad = bad.hex().encode()
    chain[name].write_bytes(bad)
    clean(sevtool("verify", str(inputs)), "sevtool")
    clean(sevtool("verify", "--json", str(inputs)), "sevtool")
    only = sevtool("verify", "--partial", f"--{name}", str(chain[name]))
    clean(only, "sevtool")


@examples(40)
@given(data=st.data())
def test_sev_signed_bytes_flip_fails(
    sevtool: Runner, vector: Vector, inputs: Path, data: st.DataObject
) -> None:
    gen = data.draw(st.sampled_from(["naples", "rome"]))
    chain = sev_chain(vector, gen, inputs)
    name = data.draw(st.sampled_from(sorted(chain)))
    golden = chain[name].read_bytes()
    # SEV certificates: the signed 0x414 bytes; ARK/ASK: all of it (header, key, signature).
    region = (0, SEV_SIGNED_LEN) if name in SEV_NAMES else (0, len(golden))
    chain[name].write_bytes(data.draw(flipped(golden, region)))
    result = sevtool("verify", str(inputs))
    refused(result, "sevtool")


@examples(20)
@given(data=st.data())
def test_swapped_sev_certificates(
    sevtool: Runner, vector: Vector, inputs: Path, data: st.DataObject
) -> None:
    gen = data.draw(st.sampled_from(["naples", "rome"]))
    chain = sev_chain(vector, gen, inputs)
    names = sorted(chain)
    order = data.draw(st.permutations(names))
    assume(order != names)
    args = [
        a for name, src in zip(names, order, strict=True) for a in (f"--{name}", str(chain[src]))
    ]
    if data.draw(st.booleans()):  # or another generation's root
        other = "rome" if gen == "naples" else "naples"
        args += ["--ask", str(vector(f"{SEV}/builtin-sev/{other}/ask.cert"))]
    refused(sevtool("verify", *args), "sevtool")


@examples(20)
@given(data=st.data())
def test_mutated_ark_signature_file(
    sevtool: Runner, vector: Vector, inputs: Path, data: st.DataObject
) -> None:
    ark = inputs / "ark.cert"
    shutil.copyfile(vector(f"{SEV}/naples/ark.cert.bad"), ark)
    golden = vector(f"{SEV}/naples/ark.cert.sig").read_bytes()
    bad = data.draw(mutated(golden))
    sig = write(inputs, "ark.cert.sig", bad)
    result = sevtool("verify", "--partial", "--ark", str(ark), "--ark-sig", sig)
    clean(result, "sevtool", ok=bad == golden)


# -- options and special paths --------------------------------------------------------------

_TOKENS = st.sampled_from(
    ["--json", "-c", "--config", "--enclave", "-o", "--out", "-s", "--sig", "-k", "--date",
     "--enclave-hash", "--bogus", "--", "-", "", "x" * 300, "2024-13-45", SIG1_HASH, "zz"]
)  # fmt: skip


@examples(40)
@given(
    command=st.sampled_from(["dump", "measure", "verify", "layout", "sign", "gendata", "nope"]),
    tokens=st.lists(st.one_of(_TOKENS, st.sampled_from(["FILE", "DIR", "MISSING"])), max_size=6),
)
def test_random_options(
    sgxtool: Runner, vector: Vector, inputs: Path, command: str, tokens: list[str]
) -> None:
    paths = {
        "FILE": str(vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin")),
        "DIR": str(inputs),
        "MISSING": str(inputs / "missing" / "file"),
    }
    argv = [paths.get(t, t) for t in tokens]
    before = sorted(inputs.iterdir())
    clean(sgxtool(command, *argv), "sgxtool")
    assert sorted(inputs.iterdir()) == before


@pytest.mark.parametrize("special", ["dir", "devnull", "empty", "one-byte", "missing"])
def test_special_input_paths(sgxtool: Runner, sevtool: Runner, inputs: Path, special: str) -> None:
    path = {
        "dir": inputs,
        "devnull": Path(os.devnull),
        "empty": inputs / "empty",
        "one-byte": inputs / "one",
        "missing": inputs / "missing",
    }[special]
    (inputs / "empty").write_bytes(b"")
    (inputs / "one").write_bytes(b"\x7f")
    for command in ("dump", "measure", "verify", "layout"):
        r = sgxtool(command, str(path))
        refused(r, "sgxtool")
        assert r.code == 2
    r = sevtool("verify", "--partial", "--pek", str(path))
    refused(r, "sevtool")
    assert r.code == 2


def test_output_paths(sgxtool: Runner, sevtool: Runner, sample_key: Path, tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    for out in (tmp_path / "missing" / "o.sig", tmp_path / "adir", tmp_path):
        r = sgxtool("sign", "--enclave-hash", SIG1_HASH, "-k", str(sample_key), "-s", str(out))
        refused(r, "sgxtool")
        assert r.code == 2, r.err
        refused(sgxtool("gendata", "--enclave-hash", SIG1_HASH, "-o", str(out)), "sgxtool")
        refused(sevtool("generate", str(out), str(tmp_path / "new.key")), "sevtool")
        assert not (tmp_path / "new.key").exists(), "a failed generate left its key behind"
    # A device (through a symlink, so that a regression replaces only the link): refused
    # (issue 10 item 8: `-o` into a device is never what was meant; `-o -` is stdout),
    # and the link is left as it was.
    link = tmp_path / "null-link"
    link.symlink_to(os.devnull)
    r = sgxtool("sign", "--enclave-hash", SIG1_HASH, "-k", str(sample_key), "-s", str(link))
    refused(r, "sgxtool")
    assert r.code == 2 and "is a device" in r.err, r.err
    assert link.is_symlink() and stat.S_ISCHR(link.stat().st_mode)


def test_private_keys_are_0600(sgxtool: Runner, sevtool: Runner, tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(SENTINEL)
    key.chmod(0o644)
    assert sgxtool("keygen", str(key), "--force").code == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    oca = tmp_path / "oca.key"
    assert sevtool("generate", str(tmp_path / "oca.cert"), str(oca)).code == 0
    assert stat.S_IMODE(oca.stat().st_mode) == 0o600


def test_unsupported_key_types(
    sgxtool: Runner, sevtool: Runner, vector: Vector, inputs: Path
) -> None:
    """PEM keys of an algorithm cryptography does not know (OID 1.2.3.4)."""
    import base64

    alg = bytes.fromhex("3005060" + "32a0304")
    spki = b"\x30\x0b" + alg + bytes.fromhex("03020001")
    pkcs8 = b"\x30\x0e\x02\x01\x00" + alg + bytes.fromhex("04020001")

    def pem(label: str, der: bytes) -> str:
        b64 = base64.b64encode(der).decode()
        return write(
            inputs, label, f"-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n".encode()
        )

    public, private = pem("PUBLIC KEY", spki), pem("PRIVATE KEY", pkcs8)
    data = inputs / "data"
    assert sgxtool("gendata", "--enclave-hash", SIG1_HASH, "-o", str(data)).code == 0
    sig = write(inputs, "sig", bytes(384))
    for key in (public, private):
        r = sgxtool(
            "catsig", "--enclave-hash", SIG1_HASH, "--data", str(data), "--signature", sig,
            "--public-key", key, "-s", str(inputs / "o.sig"),
        )  # fmt: skip
        refused(r, "sgxtool")
        assert r.code == 2
    r = sgxtool("sign", "--enclave-hash", SIG1_HASH, "-k", private, "-s", str(inputs / "o.sig"))
    refused(r, "sgxtool")
    pek = str(vector(f"{SEV}/naples/pek.cert"))
    oca = str(vector(f"{SEV}/naples/oca.cert"))
    r = sevtool("pek", "sign", pek, oca, private, str(inputs / "signed.pek"))
    refused(r, "sevtool")
    assert r.code == 2


# -- regressions found by these properties and by review -------------------------------------


def test_sgxs_page_type_eadd_cannot_add(
    sgxtool: Runner, vector: Vector, inputs: Path, sample_key: Path
) -> None:
    stream = bytearray(vector("sgx/fortanix-rust-sgx/report.sgxs").read_bytes())
    eadd = stream.index(b"EADD\0\0\0\0")
    stream[eadd + 17] = 0x7F  # SECINFO.FLAGS.PAGE_TYPE
    sgxs = write(inputs, "bad.sgxs", bytes(stream))
    sig = str(vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin"))
    for args in (("measure", sgxs), ("verify", sig, "--enclave", sgxs)):
        r = sgxtool(*args)
        refused(r, "sgxtool")
        assert r.code == 2 and "page type 127" in r.err


@pytest.mark.parametrize(("vaddr", "memsz"), [(0xFFFF_FFFF_FFFF_0000, 0x2000), (0x3F00, 1 << 63)])
def test_elf_segment_beyond_largest_enclave(
    sgxtool: Runner, enclave_elf: Path, inputs: Path, vaddr: int, memsz: int
) -> None:
    import struct

    from elftools.elf.elffile import ELFFile

    data = bytearray(enclave_elf.read_bytes())
    with enclave_elf.open("rb") as f:
        elf = ELFFile(f)
        phoff, phentsize = elf["e_phoff"], elf["e_phentsize"]
        last = max(i for i, s in enumerate(elf.iter_segments()) if s["p_type"] == "PT_LOAD")
    struct.pack_into("<QQ", data, phoff + last * phentsize + 16, vaddr, vaddr)
    struct.pack_into("<Q", data, phoff + last * phentsize + 40, memsz)
    elf_path = write(inputs, "e.elf", bytes(data))
    for command in ("measure", "layout"):
        r = sgxtool(command, elf_path)
        refused(r, "sgxtool")
        assert r.code == 2 and "beyond the largest enclave" in r.err


def test_layout_beyond_largest_enclave(sgxtool: Runner, enclave_elf: Path, inputs: Path) -> None:
    cfg = inputs / "enclave.toml"
    cfg.write_text('[memory]\nthreads = 4096\nstack_size = "1T"\n')
    r = sgxtool("measure", str(enclave_elf), "-c", str(cfg))
    refused(r, "sgxtool")
    assert r.code == 2 and "largest enclave" in r.err


@pytest.mark.parametrize("value", ["-1", "0x10000000000000000"])
def test_intel_xml_value_out_of_range(
    sgxtool: Runner, inputs: Path, outdir: Path, value: str
) -> None:
    xml = inputs / "Enclave.config.xml"
    xml.write_text(
        f"<EnclaveConfiguration><ISVFAMILYID_L>{value}</ISVFAMILYID_L></EnclaveConfiguration>"
    )
    outs = Outputs(outdir, "enclave.toml")
    (out,) = outs.prepare()
    r = sgxtool("import-config", str(xml), "-o", out)
    refused(r, "sgxtool")
    assert r.code == 2 and "ISVFAMILYID_L" in r.err
    outs.check(r)


def test_endless_device_inputs_are_bounded(
    sgxtool: Runner, sevtool: Runner, enclave_elf: Path, sample_key: Path, tmp_path: Path
) -> None:
    """/dev/zero has st_size 0 and never ends: size limits must hold while reading."""
    zero, out = "/dev/zero", str(tmp_path / "o.sig")
    runs = [
        (sgxtool, ("measure", str(enclave_elf), "-c", zero)),
        (sgxtool, ("sign", "--enclave-hash", SIG1_HASH, "-k", zero, "-s", out)),
        (sgxtool, ("sign", "--enclave-hash", SIG1_HASH, "-k", str(sample_key), "-s", out,
                   "--passphrase-file", zero)),
        (sevtool, ("verify", zero)),
        (sevtool, ("verify", "--partial", "--pek", zero)),
    ]  # fmt: skip
    for run, args in runs:
        r = run(*args)
        refused(r, "sevtool" if run is sevtool else "sgxtool")
        assert r.code == 2 and "larger than" in r.err, r.err


@examples(25)
@given(data=st.data())
def test_mutated_pek_import(
    sevtool: Runner, machine: Machine, tmp_path: Path, data: st.DataObject
) -> None:
    """PEK_CERT_IMPORT of a damaged owner-signed PEK or OCA: refused, platform unchanged."""
    m = str(machine.path)  # one machine for all examples
    d = tmp_path / "owner"
    if not d.exists():
        d.mkdir()
        assert sevtool("generate", str(d / "oca.cert"), str(d / "oca.key")).code == 0
    if not (d / "pek.signed").exists():
        assert sevtool("--machine", m, "pek", "csr", str(d / "pek.csr")).code == 0
        sign = ("pek", "sign", str(d / "pek.csr"), str(d / "oca.cert"), str(d / "oca.key"))
        assert sevtool(*sign, str(d / "pek.signed")).code == 0
    name = data.draw(st.sampled_from(["pek.signed", "oca.cert"]))
    golden = (d / name).read_bytes()
    flip = data.draw(st.booleans())
    bad = data.draw(flipped(golden, (0, SEV_SIGNED_LEN)) if flip else mutated(golden))
    files = {n: str(d / n) for n in ("pek.signed", "oca.cert")}
    files[name] = write(tmp_path, "bad.cert", bad)
    before = sevtool("--machine", m, "show", "--json").out
    r = sevtool("--machine", m, "pek", "import", files["pek.signed"], files["oca.cert"])
    clean(r, "sevtool", ok=not flip)
    if r.code:
        assert sevtool("--machine", m, "show", "--json").out == before
    else:  # a neutral change (an unused slot): back to self-owned with a new CSR
        assert sevtool("--machine", m, "reset").code == 0
        (d / "pek.signed").unlink()


def test_dynamic_section_without_string_table(
    sgxtool: Runner, enclave_elf: Path, sample_key: Path, inputs: Path, outdir: Path
) -> None:
    """.dynamic's sh_link naming section 0, not a string table (found by fuzzing `run`)."""
    from elftools.elf.elffile import ELFFile

    data = bytearray(enclave_elf.read_bytes())
    with enclave_elf.open("rb") as f:
        elf = ELFFile(f)
        index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == ".dynamic")
        at = elf["e_shoff"] + index * elf["e_shentsize"] + 0x28  # Elf64_Shdr.sh_link
    data[at : at + 4] = bytes(4)
    elf_path = write(inputs, "e.elf", bytes(data))
    outs = Outputs(outdir, "signed")
    (out,) = outs.prepare()
    for args in (("measure", elf_path), ("sign", elf_path, "-k", str(sample_key), "-o", out)):
        r = sgxtool(*args)
        refused(r, "sgxtool")
        assert r.code == 2 and "corrupt ELF" in r.err
    outs.check(r)


def test_passphrase_env_not_utf8(
    sgxtool: Runner, sample_key: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passphrase variable holding non-UTF-8 bytes is used as those bytes."""
    from sgxtool.keys import load_private_key, save_private_key

    secret = b"\xff\xfe pass"
    key = tmp_path / "enc.pem"
    save_private_key(load_private_key(sample_key), key, secret)
    monkeypatch.setenv("PW", os.fsdecode(secret))
    monkeypatch.setenv("WRONG", os.fsdecode(b"\xff"))
    sign = ("sign", "--enclave-hash", SIG1_HASH, "-k", str(key), "-s", str(tmp_path / "o.sig"))
    assert sgxtool(*sign, "--passphrase-env", "PW").code == 0
    wrong = sgxtool(*sign, "--passphrase-env", "WRONG")
    refused(wrong, "sgxtool")
    assert wrong.code == 2 and "wrong passphrase" in wrong.err
