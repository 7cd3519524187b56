"""Signing Intel SDK enclaves as sgx_sign does: each shared enclave, its metadata note blanked
back to what the SDK's linker leaves, signed again with its key and date, must give the
shipped file byte for byte; with another key, everything but the signature fields."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from elftools.elf.elffile import ELFFile

from sgxtool.intelso import read_metadata
from tests.cli.conftest import Runner, make_runner
from tests.sgxtool.conftest import compile_c
from tests.sgxtool.test_intelso import ENCLAVES, so_path
from tests.softhsm import PIN

Vector = Callable[[str], Path]
FOLDERS = [folder for folder, _, _ in ENCLAVES]
SAMPLE_KEY = "sgx/intel-linux-sgx/SampleEnclave_Enclave_private_test.pem"  # signed all three
OTHER_KEY = "sgx/intel-linux-sgx/ref_le_enclave_private_test_key.pem"
# SIGSTRUCT bytes that depend on the key: MODULUS, EXPONENT, SIGNATURE; Q1, Q2
_KEYED = [(128, 900), (1040, 1808)]


@pytest.fixture
def sgxtool(capsys: pytest.CaptureFixture[str]) -> Runner:
    from sgxtool._cli import main

    return make_runner(main, capsys)


def unsigned(vector: Vector, folder: str, tmp: Path) -> tuple[Path, Path, str]:
    """The enclave as the SDK's linker wrote it (tRTS metadata_sec.S: note name
    "sgx_metadata", type 1, a descriptor of zeros), its XML and its signing date."""
    signed = so_path(vector, folder)
    data = bytearray(signed.read_bytes())
    with signed.open("rb") as f:
        section = ELFFile(f).get_section_by_name(".note.sgxmeta")
        assert section is not None
        at = section["sh_offset"]
    namesz, descsz, kind = struct.unpack_from("<III", data, at)
    assert (namesz, kind, bytes(data[at + 12 : at + 25])) == (13, 1, b"sgx_metadata\0")
    data[at + 25 : at + 25 + descsz] = bytes(descsz)
    out = tmp / f"{folder}.so"
    out.write_bytes(data)
    date = read_metadata(signed)[0].sigstruct.date
    return out, signed.parent / "Enclave.config.xml", f"{date:08x}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_signing_again_gives_the_shipped_file(
    sgxtool: Runner, vector: Vector, tmp_path: Path, folder: str
) -> None:
    so, xml, date = unsigned(vector, folder, tmp_path)
    out = tmp_path / "enclave.signed.so"
    r = sgxtool("sign", str(so), "-c", str(xml), "-k", str(vector(SAMPLE_KEY)), "--date", date,
                "-o", str(out), "-s", str(tmp_path / "css.bin"))  # fmt: skip
    assert r.code == 0, r.err
    shipped = so_path(vector, folder)
    assert (tmp_path / "css.bin").read_bytes() == read_metadata(shipped)[0].sigstruct_raw
    assert out.read_bytes() == shipped.read_bytes()
    assert out.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("folder", FOLDERS)
def test_another_key_changes_only_the_signature_fields(
    sgxtool: Runner, vector: Vector, tmp_path: Path, folder: str
) -> None:
    so, xml, date = unsigned(vector, folder, tmp_path)
    out = tmp_path / "other.so"
    r = sgxtool("sign", str(so), "-c", str(xml), "-k", str(vector(OTHER_KEY)), "--date", date,
                "-o", str(out))  # fmt: skip
    assert r.code == 0, r.err
    ours, theirs = read_metadata(out), read_metadata(so_path(vector, folder))
    assert [c.version for c in ours] == [c.version for c in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert _unkeyed(a.data) == _unkeyed(b.data)
        assert a.sigstruct.mrsigner != b.sigstruct.mrsigner
    note = ours[0].file_offset
    shipped = so_path(vector, folder).read_bytes()
    assert out.read_bytes()[:note] == shipped[:note]


def _unkeyed(copy: bytes) -> bytes:
    data = bytearray(copy)
    for start, end in _KEYED:
        data[64 + start : 64 + end] = bytes(end - start)
    return bytes(data)


@pytest.mark.parametrize("folder", FOLDERS)
def test_two_step_signing_gives_the_shipped_file(
    sgxtool: Runner, vector: Vector, tmp_path: Path, folder: str
) -> None:
    so, xml, date = unsigned(vector, folder, tmp_path)
    hashed = tmp_path / "hash.dat"
    r = sgxtool("gendata", str(so), "-c", str(xml), "--date", date, "-o", str(hashed))
    assert r.code == 0, r.err
    key = serialization.load_pem_private_key(vector(SAMPLE_KEY).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    (tmp_path / "sig.bin").write_bytes(
        key.sign(hashed.read_bytes(), padding.PKCS1v15(), hashes.SHA256())
    )
    (tmp_path / "pub.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    out = tmp_path / "out.so"
    r = sgxtool("catsig", str(so), "-c", str(xml), "--data", str(hashed), "--signature",
                str(tmp_path / "sig.bin"), "--public-key", str(tmp_path / "pub.pem"), "-o",
                str(out), "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert out.read_bytes() == so_path(vector, folder).read_bytes()


def test_catsig_refuses_data_of_another_configuration(
    sgxtool: Runner, vector: Vector, tmp_path: Path
) -> None:
    so, xml, date = unsigned(vector, "ShuntaIshihara+test_hash_SGX", tmp_path)
    other = tmp_path / "other.xml"
    other.write_text(xml.read_text().replace("<ISVSVN>0</ISVSVN>", "<ISVSVN>1</ISVSVN>"))
    hashed = tmp_path / "hash.dat"
    r = sgxtool("gendata", str(so), "-c", str(other), "--date", date, "-o", str(hashed))
    assert r.code == 0, r.err
    (tmp_path / "sig.bin").write_bytes(bytes(384))
    r = sgxtool("catsig", str(so), "-c", str(xml), "--data", str(hashed), "--signature",
                str(tmp_path / "sig.bin"), "--public-key", str(vector(SAMPLE_KEY)), "-o",
                str(tmp_path / "out.so"))  # fmt: skip
    assert r.code == 1
    assert "does not match this enclave" in r.one_error_line()
    assert not (tmp_path / "out.so").exists()


def test_pkcs11_key_signs_the_same_bytes(
    token: str,
    sgxtool: Runner,
    vector: Vector,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The token holds Fortanix's sig1 key, which is Intel's sample key."""
    so, xml, date = unsigned(vector, "DongpingZ+SgxRandTest", tmp_path)
    monkeypatch.setenv("HSM_PIN", PIN)
    uri = f"pkcs11:token=memcrypt-test;object=sgx?module-path={token}"
    out = tmp_path / "hsm.so"
    r = sgxtool("sign", str(so), "-c", str(xml), "-k", uri, "--passphrase-env", "HSM_PIN",
                "--date", date, "-o", str(out))  # fmt: skip
    assert r.code == 0, r.err
    assert out.read_bytes() == so_path(vector, "DongpingZ+SgxRandTest").read_bytes()


def test_without_xml_sgx_sign_defaults_apply(
    sgxtool: Runner, vector: Vector, tmp_path: Path
) -> None:
    so, _, _ = unsigned(vector, "ShuntaIshihara+test_hash_SGX", tmp_path)
    out = tmp_path / "out.so"
    r = sgxtool("sign", str(so), "-k", str(vector(SAMPLE_KEY)), "-o", str(out))
    assert r.code == 0, r.err
    (primary, *_) = read_metadata(out)
    assert primary.tcs_min_pool == 1 and primary.enclave_size == 0x2000000  # 16 MiB heap
    assert sgxtool("verify", str(out)).code == 0


_TOO_FAR = [
    ("<TCSNum>0</TCSNum>", "<TCSNum> 0x0 is out of range"),
    ("<StackMaxSize>0x1000</StackMaxSize>", "<StackMaxSize> 0x1000 is out of range"),
    ("<HeapMaxSize>0x1800</HeapMaxSize>", "<HeapMaxSize> must be a multiple of 4 KiB"),
    ("<StackMinSize>0x4000</StackMinSize><StackMaxSize>0x2000</StackMaxSize>",
     "StackMinSize is larger than StackMaxSize"),
    ("<HeapInitSize>0x2000</HeapInitSize><HeapMaxSize>0x1000</HeapMaxSize>",
     "HeapInitSize is larger than HeapMaxSize"),
    ("<TCSNum>4</TCSNum><TCSMaxNum>2</TCSMaxNum>", "TCSMaxNum is smaller than TCSNum"),
    ("<HeapMaxSize>0x7000000000000000</HeapMaxSize>", "more than the 0x800000000000"),
    ("<ProdID>-1</ProdID>", "not an unsigned number"),
    ("<HW>1</HW>", "HW and LaunchKey go together"),
    ("<ISVFAMILYID_L>1</ISVFAMILYID_L>", "need EnableKSS=1"),
    ("<ReservedMemMaxSize>0x1000</ReservedMemMaxSize>", "reserved memory"),
    ("<TCSNum>1</TCSNum><TCSNum>2</TCSNum>", "appears twice"),
    ("<ELRangeSize>0x1000</ELRangeSize>", "not an element this sgx_sign release knows"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), _TOO_FAR)
def test_a_config_out_of_sgx_sign_limits_is_refused(
    sgxtool: Runner, vector: Vector, tmp_path: Path, body: str, message: str
) -> None:
    so, _, _ = unsigned(vector, "ShuntaIshihara+test_hash_SGX", tmp_path)
    xml = tmp_path / "Enclave.config.xml"
    xml.write_text(f"<EnclaveConfiguration>{body}</EnclaveConfiguration>")
    _refused(sgxtool, vector, tmp_path, so, xml, message)


def test_kss_elements_are_unknown_to_sdk_2_0(
    sgxtool: Runner, vector: Vector, tmp_path: Path
) -> None:
    so, _, _ = unsigned(vector, "njuyuanrui+testEnclaveSO", tmp_path)
    xml = tmp_path / "Enclave.config.xml"
    xml.write_text("<EnclaveConfiguration><EnableKSS>1</EnableKSS></EnclaveConfiguration>")
    _refused(sgxtool, vector, tmp_path, so, xml, "<EnableKSS> is not an element")


def test_an_already_signed_enclave_is_refused_as_sgx_sign_does(
    sgxtool: Runner, vector: Vector, tmp_path: Path
) -> None:
    shipped = so_path(vector, "ShuntaIshihara+test_hash_SGX")
    _refused(sgxtool, vector, tmp_path, shipped, shipped.parent / "Enclave.config.xml",
             "already signed")  # fmt: skip


def test_an_elf_that_is_not_an_intel_enclave_is_refused(
    sgxtool: Runner, vector: Vector, tmp_path: Path, enclave_elf: Path
) -> None:
    xml = so_path(vector, "ShuntaIshihara+test_hash_SGX").parent / "Enclave.config.xml"
    _refused(sgxtool, vector, tmp_path, enclave_elf, xml, "not an Intel SGX SDK enclave")


_BLANK_NOTE = (
    r'__asm__(".section .note.sgxmeta,\"\",@note\n.p2align 2\n.long 13\n'
    r".long 0x5000\n.long 1\n.asciz \"sgx_metadata\"\n.fill 0x5000,1,0\n"
    r'.p2align 2\n.text\n");'
)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("int f(void) { return 1; }", "no g_global_data in .dynsym"),
        ("extern int missing(void); int f(void) { return missing(); }",
         "symbol 'missing' is undefined"),
    ],
)  # fmt: skip
def test_a_blank_note_without_the_sdk_trts_is_refused(
    sgxtool: Runner, vector: Vector, tmp_path: Path, code: str, message: str
) -> None:
    so = compile_c(
        f"{_BLANK_NOTE}\n{code}\n", tmp_path / "fake.so", ["-shared", "-fPIC", "-nostdlib"]
    )
    _refused(sgxtool, vector, tmp_path, so, None, message)


def _refused(sgxtool: Runner, vector: Vector, tmp: Path, so: Path, xml: Path | None,
             message: str) -> None:  # fmt: skip
    """Exit 2, one line naming the problem, the existing output left as it was."""
    out = tmp / "out.so"
    out.write_bytes(b"previous")
    config = ["-c", str(xml)] if xml else []
    for args in (["sign", "-k", str(vector(SAMPLE_KEY)), "-o", str(out)],
                 ["gendata", "-o", str(out)]):  # fmt: skip
        r = sgxtool(args[0], str(so), *config, *args[1:])
        assert r.code == 2, r.err
        assert message in r.one_error_line()
        assert out.read_bytes() == b"previous"


def test_usage_errors(sgxtool: Runner, vector: Vector, tmp_path: Path) -> None:
    so, xml, _ = unsigned(vector, "ShuntaIshihara+test_hash_SGX", tmp_path)
    key = str(vector(SAMPLE_KEY))
    r = sgxtool("sign", str(so), "-c", str(xml), "-k", key, "-s", str(tmp_path / "s"))
    assert r.code == 2 and "give --out" in r.one_error_line()
    r = sgxtool("sign", str(so), "-c", str(xml), "-k", key, "-o", str(so))
    assert r.code == 2 and not (tmp_path / "s").exists()
    r = sgxtool("sign", str(so), "--enclave-hash", "00" * 32, "-k", key, "-o", str(tmp_path / "o"))
    assert r.code == 2 and "--enclave-hash" in r.one_error_line()


@pytest.mark.parametrize("sample", ["config.01", "config.02", "config.03", "config.04"])
@pytest.mark.parametrize("folder", ["ShuntaIshihara+test_hash_SGX", "njuyuanrui+testEnclaveSO"])
def test_every_copy_of_other_layouts_measures_the_same(
    vector: Vector, tmp_path: Path, folder: str, sample: str
) -> None:
    """Intel's sample configurations (min pool, EREMOVE and dynamic threads, heap growth,
    fixed stacks): the copy for 1.x loaders, folded into groups, measures as the primary
    and holds TCSNum threads; the primary's dynamic threads are not added."""
    from sgxtool.intelsign import sign_so
    from sgxtool.intelso import intel_layout
    from sgxtool.keys import load_private_key
    from sgxtool.measure import mrenclave
    from sgxtool.sign import KeySigner

    so, _, _ = unsigned(vector, folder, tmp_path)
    xml = vector(f"sgx/intel-linux-sgx/SampleEnclave_{sample}.xml")
    out = tmp_path / "out.so"
    signer = KeySigner(load_private_key(vector(SAMPLE_KEY), None))
    css = sign_so(so, xml, signer, 0x20250101, out=out)
    copies = read_metadata(out)
    assert len(copies) == (3 if folder.startswith("Shunta") else 2)
    for copy in copies:
        layout = intel_layout(out, copy)
        assert mrenclave(layout) == css.enclavehash
        assert len(layout.threads) == 10  # TCSNum in all four


def test_large_work_policy_applies(sgxtool: Runner, vector: Vector, tmp_path: Path) -> None:
    """A 1 TiB heap: the cost is said and refused (exit 1) before anything is hashed."""
    so, _, _ = unsigned(vector, "ShuntaIshihara+test_hash_SGX", tmp_path)
    xml = tmp_path / "Enclave.config.xml"
    xml.write_text("<EnclaveConfiguration><HeapMaxSize>0x10000000000</HeapMaxSize>"
                   "</EnclaveConfiguration>")  # fmt: skip
    out = tmp_path / "out.so"
    r = sgxtool("gendata", str(so), "-c", str(xml), "-o", str(out))
    assert r.code == 1
    assert "above the limit" in r.one_error_line()
    assert not out.exists()


@pytest.mark.parametrize(
    ("folder", "outcome"),
    [("ShuntaIshihara+test_hash_SGX", None), ("njuyuanrui+testEnclaveSO", "release it was built")],
)
def test_without_the_trts_version_string(
    sgxtool: Runner, vector: Vector, tmp_path: Path, folder: str, outcome: str | None
) -> None:
    """As a simulation tRTS links (it has no SGX_TRTS_VERSION string): 2.13 is known from
    g_global_data's sdk_version and laid out the same (the string is measured, so only
    ENCLAVEHASH and the signature differ); 2.0 has no sdk_version and is refused."""
    so, xml, date = unsigned(vector, folder, tmp_path)
    so.write_bytes(so.read_bytes().replace(b"SGX_TRTS_VERSION_", b"XXX_XXXX_XXXXXXX_"))
    out = tmp_path / "out.so"
    if outcome is not None:
        _refused(sgxtool, vector, tmp_path, so, xml, outcome)
        return
    r = sgxtool("sign", str(so), "-c", str(xml), "-k", str(vector(SAMPLE_KEY)), "--date", date,
                "-o", str(out))  # fmt: skip
    assert r.code == 0, r.err
    for a, b in zip(read_metadata(out), read_metadata(so_path(vector, folder)), strict=True):
        assert a.data[:64] + a.data[64 + 1808 :] == b.data[:64] + b.data[64 + 1808 :]
        assert a.sigstruct.enclavehash != b.sigstruct.enclavehash
