"""Bad input through ``hwsim``, ``sgxtool token`` and ``sgxtool run``: one clear error,
never a traceback, and nothing on disk damaged by a failed command.

The properties feed damaged machines (mutated or truncated state.db and machine.toml,
files where directories belong), random option values (MSR numbers, CPUID leaves, BIOS
settings, signers, launch policies) and mutated signed images to the real command lines
in-process, and run enclaves that fault, loop or hand the runtime bad lengths. Each
checks what ``tests/cli/test_robustness.py`` checks: exit 1 or 2 (0 only when the input
is harmless), ``prog: error: ...`` plus at most a hint line, and that machine.toml,
state.db and existing output files are byte for byte as before a failed command.

Examples are few so that CI stays fast; ``bench/fuzz_cli.py`` runs more
(``MEMCRYPT_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwsim.machine import Machine
from hwsim.sgx.arch import PAGE_SIZE
from tests.cli.conftest import Result, Runner
from tests.cli.test_robustness import SENTINEL, clean, examples, mutated, refused, write
from tests.examples.build import compile_enclave, sign_image

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

Vector = Callable[[str], Path]
_COPIES = itertools.count()
HASH = "ab" * 32


# -- machines ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def templates(
    tmp_path_factory: pytest.TempPathFactory, sgx_vendor_key: RSAPrivateKey
) -> dict[str, Path]:
    """Pristine, closed machines to copy: ``sim`` (flc-open) and ``skylake`` (vendor-key)."""
    root = tmp_path_factory.mktemp("templates")
    made = {}
    for profile in ("sim", "skylake"):
        Machine.init(root / profile, profile, vendor_key=sgx_vendor_key).close()
        made[profile] = root / profile
    return made


def fresh(template: Path, where: Path) -> Path:
    """A private copy of a template machine that a test may damage."""
    return Path(shutil.copytree(template, where / f"m{next(_COPIES)}"))


def files(machine: Path) -> dict[str, bytes]:
    return {name: (machine / name).read_bytes() for name in ("machine.toml", "state.db")}


def untouched_if_failed(result: Result, machine: Path, before: dict[str, bytes]) -> None:
    if result.code != 0:
        for name, data in before.items():
            assert (machine / name).read_bytes() == data, f"a failed command changed {name}"


def state_rows(machine: Path) -> list[tuple[object, ...]]:
    """state.db's rows, read without hwsim (the WAL of open connections included)."""
    db = sqlite3.connect(f"file:{machine / 'state.db'}?mode=ro", uri=True)
    try:
        return [*db.execute("SELECT * FROM kv ORDER BY ns, key"), *db.execute("SELECT * FROM dram")]
    finally:
        db.close()


_READS = [
    ("status", "--json"),
    ("msr", "read", "IA32_FEATURE_CONTROL"),
    ("cpuid", "0x12", "2"),
    ("config", "get"),
    ("vendor", "list"),
    ("sgx", "launch-control", "show", "--json"),
]
_WRITES = [
    ("power-cycle",),
    ("reset", "--yes"),
    ("msr", "write", "IA32_SGXLEPUBKEYHASH0", "5"),
    ("config", "set", "epc_size", "64M"),
    ("vendor", "approve", HASH),
    ("sgx", "launch-control", "set", "flc-open", "--power-cycle"),
]


# -- state.db -----------------------------------------------------------------------------


@examples(40)
@given(data=st.data())
def test_mutated_state_db(
    hwsim: Runner, templates: dict[str, Path], tmp_path: Path, data: st.DataObject
) -> None:
    m = fresh(templates["sim"], tmp_path)
    golden = (m / "state.db").read_bytes()
    # The whole file, its 100-byte header, or the first 64 KiB page (schema and kv root).
    region = data.draw(st.sampled_from([(0, len(golden)), (0, 100), (0, 65536)]))
    (m / "state.db").write_bytes(data.draw(mutated(golden, region)))
    before = files(m)
    command = data.draw(st.sampled_from(_READS + _WRITES))
    result = hwsim("--machine", str(m), *command)
    clean(result, "hwsim")
    untouched_if_failed(result, m, before)


@pytest.mark.parametrize(
    "damage",
    ["empty", "directory", "devnull", "foreign", "foreign-v2", "bad-v1", "future", "truncated"],
)
def test_unusable_state_db(
    hwsim: Runner, templates: dict[str, Path], tmp_path: Path, damage: str
) -> None:
    m = fresh(templates["sim"], tmp_path)
    db = m / "state.db"
    golden = db.read_bytes()
    db.unlink()
    if damage == "empty":
        db.write_bytes(b"")
    elif damage == "directory":
        db.mkdir()
    elif damage == "devnull":
        db.symlink_to("/dev/null")
    elif damage == "truncated":
        db.write_bytes(golden[:5000])
    else:  # a database made by another program, or claiming a schema it does not have
        sql = {
            "foreign": "CREATE TABLE notes (a, b)",
            "foreign-v2": "CREATE TABLE notes (a); PRAGMA user_version = 2",
            "bad-v1": "CREATE TABLE kv (ns, key, value); PRAGMA user_version = 1;"
            "INSERT INTO kv VALUES ('dram', 'not-hex', x'00')",
            "future": "CREATE TABLE kv (a); PRAGMA user_version = 99",
        }[damage]
        conn = sqlite3.connect(db)
        conn.executescript(sql)
        conn.close()
    before = db.read_bytes() if db.is_file() else None
    toml = (m / "machine.toml").read_bytes()
    for command in (("status",), ("power-cycle",), ("msr", "read", "0x3a")):
        result = hwsim("--machine", str(m), *command)
        refused(result, "hwsim")
        assert "state" in result.err
        if damage in ("directory", "devnull"):
            assert "is not a regular file" in result.err
        assert (m / "machine.toml").read_bytes() == toml
        if before is not None:
            assert db.read_bytes() == before, "a refused state.db was changed"


@pytest.mark.parametrize("sql", ['CREATE TABLE dram (page "\n', 'CREATE TABLE dram (page "\xff'])
def test_damaged_schema_text(
    hwsim: Runner, templates: dict[str, Path], tmp_path: Path, sql: str
) -> None:
    """SQLite quotes a damaged schema in its message (a newline in it, or bytes that are
    not UTF-8, which the sqlite3 module fails to decode): still one line."""
    m = fresh(templates["sim"], tmp_path)
    conn = sqlite3.connect(m / "state.db")
    conn.execute("PRAGMA writable_schema = ON")
    text = sql.encode("latin-1")
    conn.execute("UPDATE sqlite_master SET sql = CAST(? AS TEXT) WHERE name = 'dram'", (text,))
    conn.commit()
    conn.close()
    before = files(m)
    for command in (("status",), ("power-cycle",)):
        result = hwsim("--machine", str(m), *command)
        refused(result, "hwsim")
        assert "state database" in result.err
    assert files(m) == before


def test_state_db_values_of_the_wrong_shape(
    hwsim: Runner, templates: dict[str, Path], tmp_path: Path
) -> None:
    """Rows a SQL-level edit (or bit rot) left with the wrong size or encoding."""
    from hwsim.errors import HwsimError

    damage = [
        ("machine", "profile", b"\xff\xfe"),
        ("machine", "boot_count", b""),
        ("boot.bios", "config", b"{not json"),
        ("boot.bios", "config", b"\xff"),
        ("boot.bios", "config", b'{"epc_size": []}'),
        ("boot.bios", "config", b'"sgx_enabled"'),
        ("vendor", "mrsigner", b"short"),
        ("vendor", "signing_key", b"not DER"),
        ("vendor", "sgx.allow-list", b"HWSIMAL1" + b"\xff" * 8),
        ("boot.keys", "x", bytes(32)),
        ("boot.msr", "0000003a", b"\xff" * 20),
        ("sgx.owner", "allow", b"abc"),
        ("fused", "root", b""),
        ("boot.keys", "0", b"odd length"),
    ]
    lc_set = ("sgx", "launch-control", "set", "flc-locked", "--allow", HASH)
    commands = [*_READS, *_WRITES, lc_set, ("status",), ("vendor", "show")]
    for ns, key, value in damage:
        m = fresh(templates["sim"], tmp_path)
        conn = sqlite3.connect(m / "state.db")
        conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (ns, key, value))
        conn.commit()
        conn.close()
        for command in commands:
            rows = state_rows(m)
            result = hwsim("--machine", str(m), *command)
            clean(result, "hwsim")
            if result.code:
                assert state_rows(m) == rows, (ns, key, command)
    with Machine.open(m) as opened, opened.transaction() as txn:
        txn.put("boot.keys", "0", b"odd length")  # the commands above made a new SME key
        with pytest.raises(HwsimError, match="slot 0 is corrupt"):
            txn.dram_read(0, 16, 0)


# -- machine.toml ---------------------------------------------------------------------------

_TOML_KEYS = ["profile", "bogus", "bios.sgx_enabled", "bios.lc_locked", "bios.le_pubkey_hash",
              "bios.sme_enabled", "bios.epc_size", "bios.nope"]  # fmt: skip
_TOML_VALUES = st.one_of(
    st.integers(-(1 << 70), 1 << 70),
    st.booleans().map(lambda b: str(b).lower()),
    st.floats(allow_nan=True).map(lambda f: repr(f).replace("inf", "inf").lower()),
    st.sampled_from(['"sim"', '"skylake"', '"epyc-naples"', '"64M"', '"1G"', '"4K"', '"0"',
                     '"9" ', f'"{HASH}"', '""', '"zz"', "[1]", "{ a = 1 }", "1979-05-27",
                     "9" * 5000, '"' + "9" * 5000 + 'K"', "[" * 2000 + "]" * 2000]),
    st.text(max_size=30).map(lambda s: '"' + s.encode("unicode_escape").decode() + '"'),
)  # fmt: skip


@st.composite
def machine_toml(draw: st.DrawFn, golden: bytes) -> bytes:
    """machine.toml with settings set to drawn values, or its bytes damaged."""
    if draw(st.booleans()):
        return draw(mutated(golden))
    top: list[str] = []
    bios: list[str] = []
    for key in draw(st.lists(st.sampled_from(_TOML_KEYS), max_size=4, unique=True)):
        line = f"{key.removeprefix('bios.')} = {draw(_TOML_VALUES)}"
        (bios if key.startswith("bios.") else top).append(line)
    return "\n".join([*top, "[bios]", *bios, ""]).encode("utf-8", "surrogateescape")


@examples(50)
@given(data=st.data())
def test_mutated_machine_toml(
    hwsim: Runner, templates: dict[str, Path], tmp_path: Path, data: st.DataObject
) -> None:
    m = fresh(templates["sim"], tmp_path)
    (m / "machine.toml").write_bytes(data.draw(machine_toml((m / "machine.toml").read_bytes())))
    before = files(m)
    command = data.draw(st.sampled_from([*_READS, *_WRITES]))
    result = hwsim("--machine", str(m), *command)
    clean(result, "hwsim")
    untouched_if_failed(result, m, before)


@pytest.mark.parametrize("damage", ["missing", "directory", "devnull", "fifo"])
def test_machine_toml_not_a_file(
    hwsim: Runner, templates: dict[str, Path], tmp_path: Path, damage: str
) -> None:
    m = fresh(templates["sim"], tmp_path)
    toml = m / "machine.toml"
    toml.unlink()
    if damage == "directory":
        toml.mkdir()
    elif damage == "devnull":
        toml.symlink_to("/dev/null")
    elif damage == "fifo":
        os.mkfifo(toml)
    db = (m / "state.db").read_bytes()
    result = hwsim("--machine", str(m), "status")
    refused(result, "hwsim")
    assert "machine.toml" in result.err
    assert (m / "state.db").read_bytes() == db


@pytest.mark.parametrize("where", ["file", "devnull", "missing", "empty-dir", "under-a-file"])
def test_machine_directory_not_a_machine(hwsim: Runner, tmp_path: Path, where: str) -> None:
    (tmp_path / "afile").write_bytes(SENTINEL)
    (tmp_path / "empty").mkdir()
    path = {
        "file": tmp_path / "afile",
        "devnull": Path("/dev/null"),
        "missing": tmp_path / "missing",
        "empty-dir": tmp_path / "empty",
        "under-a-file": tmp_path / "afile" / "m",
    }[where]
    for command in (("status",), ("power-cycle",), ("config", "set", "sgx_enabled", "false")):
        refused(hwsim("--machine", str(path), *command), "hwsim")
    assert (tmp_path / "afile").read_bytes() == SENTINEL
    assert not any((tmp_path / "empty").iterdir())
    if where in ("file", "devnull", "under-a-file"):
        refused(hwsim("init", str(path)), "hwsim")
        assert (tmp_path / "afile").read_bytes() == SENTINEL


# -- option values --------------------------------------------------------------------------

_NUMBERS = st.one_of(
    st.integers(-(1 << 70), 1 << 70).map(str),
    st.integers(0, 1 << 70).map(hex),
    st.sampled_from(["0x3a", "0x8c", "0x8f", "0xc0010010", "0xc0010131", "0x12", "0x7",
                     "0x8000001f", "0x100000012", "-1", "-0x3a", "0x", "", " ", "1_0", "0b101",
                     "0o17", "1e3", "٣", "9" * 5000, "0x" + "f" * 5000, "IA32_FEATURE_CONTROL",
                     "ia32_sgxlepubkeyhash3", "SYSCFG", "SEV_STATUS", "nope", "\x00"]),
)  # fmt: skip
_SETTING_NAMES = st.sampled_from(
    ["sgx_enabled", "lc_locked", "le_pubkey_hash", "sme_enabled", "epc_size", "nope", ""]
)
_SETTING_VALUES = st.one_of(
    _NUMBERS,
    st.sampled_from(["true", "off", "Enabled", "64M", "256M", "4k", "1G", "12K", "64 MiB", "0",
                     HASH, HASH[:-1], HASH.upper(), "9" * 5000 + "K", "-4K"]),
    st.text(max_size=20),
)  # fmt: skip
_POLICIES = st.sampled_from(["vendor-key", "flc-open", "flc-locked", "bogus"])


@st.composite
def hwsim_argv(draw: st.DrawFn, signers: st.SearchStrategy[str]) -> list[str]:
    kind = draw(st.sampled_from(["msr-read", "msr-write", "cpuid", "config", "vendor", "lc"]))
    if kind == "msr-read":
        return ["msr", "read", "--", draw(_NUMBERS)]
    if kind == "msr-write":
        return ["msr", "write", "--", draw(_NUMBERS), draw(_NUMBERS)]
    if kind == "cpuid":
        return ["cpuid", "--", *draw(st.lists(_NUMBERS, min_size=1, max_size=2))]
    if kind == "config":
        return ["config", "set", "--", draw(_SETTING_NAMES), draw(_SETTING_VALUES)]
    if kind == "vendor":
        return ["vendor", draw(st.sampled_from(["approve", "revoke"])), "--", draw(signers)]
    argv = ["sgx", "launch-control", "set", draw(_POLICIES)]
    if draw(st.booleans()):
        argv += ["--owner-key", draw(signers)]
    for signer in draw(st.lists(signers, max_size=2)):
        argv += ["--allow", signer]
    return argv + draw(st.sampled_from([[], ["--power-cycle"], ["--json"]]))


@pytest.fixture(scope="module")
def signer_files(tmp_path_factory: pytest.TempPathFactory, vector: Vector) -> dict[str, str]:
    """Signer arguments of every kind: keys of the right and wrong type, and non-keys."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    d = tmp_path_factory.mktemp("signers")
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    alien = b"\x30\x0b\x30\x05\x06\x03\x2a\x03\x04\x03\x02\x00\x01"  # SPKI of OID 1.2.3.4
    alien_pem = (
        b"-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(alien) + b"\n-----END PUBLIC KEY-----\n"
    )
    return {
        "rsa3072": str(vector("sgx/fortanix-rust-sgx/sig1.key.pem")),
        "ec": write(d, "ec.pem", ec_key),
        "alien": write(d, "alien.pem", alien_pem),
        "garbage": write(d, "garbage.pem", b"-----BEGIN PUBLIC KEY-----\nzz\n"),
        "binary": write(d, "binary", bytes(range(256))),
        "dir": str(d),
        "zero": "/dev/zero",
        "missing": str(d / "missing"),
    }  # fmt: skip


@examples(80)
@given(data=st.data())
def test_random_hwsim_options(
    hwsim: Runner,
    templates: dict[str, Path],
    signer_files: dict[str, str],
    tmp_path: Path,
    data: st.DataObject,
) -> None:
    signers = st.one_of(
        st.sampled_from(list(signer_files.values())),
        st.sampled_from([HASH, HASH[:-1], HASH + "0", " " + HASH, "", "zz" * 32]),
    )
    profile = data.draw(st.sampled_from(["sim", "skylake"]))
    m = fresh(templates[profile], tmp_path)
    before = files(m)
    result = hwsim("--machine", str(m), *data.draw(hwsim_argv(signers)))
    clean(result, "hwsim")
    untouched_if_failed(result, m, before)


def test_numbers_beyond_the_digit_limit(hwsim: Runner, machine: Machine) -> None:
    """Python refuses int() of more than 4300 digits with ValueError (CVE-2020-10735)."""
    m = str(machine.path)
    for argv in (
        ("config", "set", "epc_size", "9" * 5000),
        ("config", "set", "epc_size", "9" * 5000 + "K"),
    ):
        result = hwsim("--machine", m, *argv)
        refused(result, "hwsim")
        assert result.code == 2 and "epc_size" in result.err
    for text in (f"epc_size = {'9' * 5000}", f'epc_size = "{"9" * 5000}M"'):
        (machine.path / "machine.toml").write_text(f'profile = "sim"\n[bios]\n{text}\n')
        result = hwsim("--machine", m, "status")
        refused(result, "hwsim")
        assert "machine.toml" in result.err


def test_deeply_nested_machine_toml(hwsim: Runner, machine: Machine) -> None:
    """tomllib recurses once per nesting level: RecursionError is invalid TOML too."""
    for text in ("a = " + "[" * 5000 + "]" * 5000, "a = " + "{b=" * 3000 + "1" + "}" * 3000):
        (machine.path / "machine.toml").write_text(text)
        result = hwsim("--machine", str(machine.path), "status")
        refused(result, "hwsim")
        assert "machine.toml" in result.err and "TOML" in result.err


@pytest.mark.parametrize(("leaf", "subleaf"), [("0x100000000", "0"), ("-1", "0"), ("7", "-1"),
                                               ("0x12", "0x100000000")])  # fmt: skip
def test_cpuid_operands_are_32_bit(
    hwsim: Runner, machine: Machine, leaf: str, subleaf: str
) -> None:
    result = hwsim("--machine", str(machine.path), "cpuid", "--", leaf, subleaf)
    refused(result, "hwsim")
    assert result.code == 2 and "32 bits" in result.err


@pytest.mark.parametrize("register", ["-1", "0x10000003a", "-0x3a"])
def test_msr_index_is_32_bit(hwsim: Runner, machine: Machine, register: str) -> None:
    for argv in (("read", "--", register), ("write", "--", register, "0")):
        result = hwsim("--machine", str(machine.path), "msr", *argv)
        refused(result, "hwsim")
        assert result.code == 2 and "32 bits" in result.err


def test_signer_keys_of_unknown_algorithm(
    hwsim: Runner, machine: Machine, signer_files: dict[str, str]
) -> None:
    before = files(machine.path)
    for key in ("alien", "ec", "garbage"):
        for argv in (("vendor", "approve", signer_files[key]),
                     ("sgx", "launch-control", "set", "flc-locked", "--owner-key",
                      signer_files[key])):  # fmt: skip
            result = hwsim("--machine", str(machine.path), *argv)
            refused(result, "hwsim")
            assert result.code == 2
    assert files(machine.path) == before


# -- enclaves that misbehave ------------------------------------------------------------------

ENCLAVE = r"""
#include <enclave.h>
static uint64_t arg(const uint8_t *in, size_t n) {
    uint64_t v = 0;
    memcpy(&v, in, n < 8 ? n : 8);
    return v;
}
/* Leave through the stub's exit path with chosen RDI, RSI, RDX: what a buggy or hostile
 * enclave can hand the host runtime. */
static void leave(uint64_t rdi, uint64_t rsi, uint64_t rdx) {
    __asm__ volatile("mov %0, %%rdi\n\tmov %1, %%rsi\n\tmov %2, %%rdx\n\tjmp __sgx_eexit"
                     :: "r"(rdi), "r"(rsi), "r"(rdx) : "rdi", "rsi", "rdx", "memory");
}

SGX_ECALL(echo) {
    size_t n = in_len < out_cap ? in_len : out_cap;
    memcpy(out, in, n);
    return (long)n;
}
SGX_ECALL(spin) { for (;;) __asm__ volatile(""); }
SGX_ECALL(null_deref) { return *(volatile long *)arg(in, in_len); }
SGX_ECALL(ud) { __asm__ volatile("ud2"); return 0; }
SGX_ECALL(jump) { ((void (*)(void))arg(in, in_len))(); return 0; }
SGX_ECALL(result_length) { leave(0, arg(in, in_len), 0); return 0; }
SGX_ECALL(ocall_length) { leave(1, 1, arg(in, in_len)); return 0; }
SGX_ECALL(ocall_number) { leave(1, arg(in, in_len), 8); return 0; }
SGX_ECALL(exit_code) { leave(arg(in, in_len), 0, 0); return 0; }
SGX_ECALL(bare_exit) { sgx_exit(arg(in, in_len)); }
SGX_ECALL(returns) { return (long)arg(in, in_len); }
SGX_ECALL(missing_ocall) { return sgx_ocall("no-such-handler", in, in_len, out, out_cap); }
/* EGETKEY with a KEYREQUEST, and EREPORT with a TARGETINFO and REPORTDATA, of any bytes. */
SGX_ECALL(getkey_any) {
    static sgx_keyrequest_t req;
    uint8_t key[16];
    memcpy(&req, in, in_len < sizeof req ? in_len : sizeof req);
    long status = sgx_getkey(&req, key);
    memcpy(out, &status, 8);
    return 8;
}
SGX_ECALL(report_any) {
    static sgx_targetinfo_t target;
    static sgx_reportdata_t data;
    static sgx_report_t report;
    memcpy(&target, in, in_len < sizeof target ? in_len : sizeof target);
    if (in_len > sizeof target) memcpy(&data, in + sizeof target, in_len - sizeof target);
    sgx_report(&target, &data, &report);
    return 0;
}
/* ENCLU with chosen RAX, RBX, RCX, RDX; bit i of the fifth word adds the enclave base to
 * register i + 1, so that operands can point into (or just past) ELRANGE. */
SGX_ECALL(raw_enclu) {
    uint64_t r[5] = {0};
    memcpy(r, in, in_len < sizeof r ? in_len : sizeof r);
    for (int i = 0; i < 3; i++)
        if (r[4] >> i & 1) r[i + 1] += (uint64_t)sgx_enclave_base();
    uint64_t rax = r[0], rbx = r[1], rcx = r[2], rdx = r[3];
    __asm__ volatile("enclu" : "+a"(rax), "+b"(rbx), "+c"(rcx), "+d"(rdx) :: "memory", "cc");
    memcpy(out, &rax, 8);
    return 8;
}
"""

ENCLAVE_CONFIG = """
[enclave]
debug = true
[memory]
heap_size = "128K"
stack_size = "32K"
threads = 1
"""


@pytest.fixture(scope="module")
def bad_enclave(tmp_path_factory: pytest.TempPathFactory, vector: Vector) -> Path:
    out = tmp_path_factory.mktemp("bad-enclave")
    elf = compile_enclave(ENCLAVE, out / "bad.elf")
    key = vector("sgx/fortanix-rust-sgx/sig1.key.pem")
    return sign_image(elf, ENCLAVE_CONFIG, key, out / "bad.img")


def u64(value: int) -> str:
    return struct.pack("<Q", value & ((1 << 64) - 1)).hex()


@pytest.mark.parametrize(
    ("entry", "value", "expect"),
    [
        ("spin", 0, "ran 20000 instructions (its budget for one call)"),
        ("null_deref", 0, "#PF"),
        ("null_deref", 1 << 63, "#GP (error code 0x0) at enclave offset"),
        ("null_deref", (1 << 47) + 8, "#GP (error code 0x0)"),
        ("ud", 0, "#UD"),
        ("jump", 0x1000_0000, "#GP"),  # a code fetch outside ELRANGE, in host memory
        ("jump", 0, "#GP"),
        ("result_length", 1 << 40, "more than the 65536-byte output buffer"),
        ("result_length", (1 << 63) - 1, "more than the"),
        ("result_length", 65537, "claims 65537 bytes of output"),
        ("ocall_length", 1 << 62, "ECALL ocall_length failed"),
        ("ocall_number", 7, "ECALL ocall_number failed"),
        ("exit_code", 7, "unknown exit code"),
        ("bare_exit", 0, "output buffer"),  # RSI still holds a pointer
        ("returns", -4, "does not fit"),
        ("returns", -(1 << 40), "enclave-defined error"),
        ("missing_ocall", 0, "ECALL missing_ocall failed"),
    ],
)
def test_misbehaving_enclave(
    sgxtool: Runner,
    bad_enclave: Path,
    machine: Machine,
    tmp_path: Path,
    entry: str,
    value: int,
    expect: str,
) -> None:
    out = tmp_path / "out"
    out.write_bytes(SENTINEL)
    result = sgxtool(
        "run", str(bad_enclave), entry, "--in-hex", u64(value), "--budget", "20000",
        "--out", str(out), "--machine", str(machine.path),
    )  # fmt: skip
    clean(result, "sgxtool", ok=False)
    assert result.code == 1 and expect in result.err, result.err
    assert out.read_bytes() == SENTINEL


# -- mutated signed images through run and token -----------------------------------------------


def loads_quickly(image: Path) -> bool:
    """Whether loading ``image`` adds few pages. A mutation can make a valid but huge
    layout (a bss of 1 TiB), which is slow to load though correct; such examples skip the
    commands that load. Errors other than memcrypt's still fail the test."""
    from memcrypt.errors import MemcryptError
    from sgxtool.build import layout_of
    from sgxtool.image import read_image

    try:
        return layout_of(image, read_image(image).config).size <= 4 << 20
    except MemcryptError:
        return True


def image_regions(image: bytes) -> dict[str, tuple[int, int]]:
    """Where a signed image's parsed parts are: program headers (they decide the layout),
    section headers and the metadata tail (neither is measured)."""
    (e_shoff,) = struct.unpack_from("<Q", image, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", image, 0x3A)
    (elf_size,) = struct.unpack_from("<Q", image, len(image) - 32)
    (e_phoff,) = struct.unpack_from("<Q", image, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", image, 0x36)
    return {
        "all": (0, len(image)),
        "program-headers": (e_phoff, e_phoff + e_phentsize * e_phnum),
        "section-headers": (e_shoff, e_shoff + e_shentsize * e_shnum),
        "metadata": (elf_size, len(image)),
    }


@examples(30)
@given(data=st.data())
def test_run_mutated_image(
    sgxtool: Runner, bad_enclave: Path, machine: Machine, tmp_path: Path, data: st.DataObject
) -> None:
    golden = bad_enclave.read_bytes()
    regions = image_regions(golden)
    region = regions[data.draw(st.sampled_from(sorted(regions)))]
    image = Path(write(tmp_path, "image", data.draw(mutated(golden, region))))
    if not loads_quickly(image):
        return
    out = tmp_path / "out"
    out.write_bytes(SENTINEL)
    result = sgxtool(
        "run", str(image), "echo", "--in-text", "hi", "--budget", "200000", "--out", str(out),
        "--machine", str(machine.path),
    )  # fmt: skip
    clean(result, "sgxtool")
    if result.code:
        assert out.read_bytes() == SENTINEL


@examples(25)
@given(data=st.data())
def test_token_mutated_image(
    sgxtool: Runner,
    bad_enclave: Path,
    vector: Vector,
    templates: dict[str, Path],
    tmp_path: Path,
    data: st.DataObject,
) -> None:
    m = tmp_path / "skylake"
    if not m.exists():  # one vendor-key machine for all examples
        shutil.copytree(templates["skylake"], m)
    if data.draw(st.booleans()):
        golden = bad_enclave.read_bytes()
        regions = image_regions(golden)
        region = regions[data.draw(st.sampled_from(sorted(regions)))]
    else:  # a detached SIGSTRUCT (a production enclave: refused unless the vendor approves)
        golden = vector("sgx/fortanix-rust-sgx/sig1.sigstruct.bin").read_bytes()
        region = (0, len(golden))
    image = write(tmp_path, "image", data.draw(mutated(golden, region)))
    out = tmp_path / "token"
    out.write_bytes(SENTINEL)
    toml = (m / "machine.toml").read_bytes()
    result = sgxtool("token", image, "-o", str(out), "--machine", str(m))
    clean(result, "sgxtool")
    if result.code:
        assert out.read_bytes() == SENTINEL
    assert (m / "machine.toml").read_bytes() == toml


_RUN_OPTIONS = st.lists(
    st.sampled_from(
        ["--budget", "--out-size", "--in-hex", "--in-text", "--in", "--out", "--json", "0", "-1",
         "1", "99999999999999999999999", "9" * 5000, "zz", "0f0", "", "/dev/zero",
         "/dev/null", "MISSING", "DIR", "echo", "spin", "returns", "nope", "é"]
    ),
    max_size=6,
)  # fmt: skip


@examples(40)
@given(entry=st.sampled_from(["echo", "spin", "nope", "", "returns"]), tokens=_RUN_OPTIONS)
def test_random_run_options(
    sgxtool: Runner, bad_enclave: Path, machine: Machine, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, entry: str, tokens: list[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # a drawn `--out echo` writes ./echo
    paths = {"MISSING": str(tmp_path / "missing" / "file"), "DIR": str(tmp_path)}
    argv = [paths.get(t, t) for t in tokens]
    argv += ["--budget", "100000"]  # the last wins: a "spin" must not run for long
    result = sgxtool("run", str(bad_enclave), entry, *argv, "--machine", str(machine.path))
    clean(result, "sgxtool")


@pytest.mark.parametrize(
    ("field", "value"),
    [("e_shoff", 1 << 63), ("e_shoff", (1 << 64) - 64), ("sh_offset", 1 << 63)],
)
def test_section_offsets_beyond_seek(
    sgxtool: Runner, bad_enclave: Path, machine: Machine, tmp_path: Path, field: str, value: int
) -> None:
    """Section headers are not measured: offsets seek() cannot reach are a corrupt image."""
    data = bytearray(bad_enclave.read_bytes())
    e_shoff = struct.unpack_from("<Q", data, 0x28)[0]
    if field == "e_shoff":
        struct.pack_into("<Q", data, 0x28, value)
    else:  # every section's sh_offset, .sgx_ecalls among them
        (e_shnum,) = struct.unpack_from("<H", data, 0x3C)
        for i in range(1, e_shnum):
            struct.pack_into("<Q", data, e_shoff + 64 * i + 0x18, value)
    image = write(tmp_path, "image", bytes(data))
    result = sgxtool("run", image, "echo", "--in-text", "hi", "--machine", str(machine.path))
    refused(result, "sgxtool")
    assert result.code == 2, result.err


_OPERANDS = st.one_of(
    st.sampled_from([0, 8, 64, 0xFFF, 0x1000, 0x1FE0, 0x2000, 0x10000, 0x20000, 0x3F000,
                     0x40000, 0x1000_0000, 1 << 47, (1 << 64) - 512]),
    st.integers(0, (1 << 64) - 1),
)  # fmt: skip


@examples(40)
@given(
    leaf=st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 0xFFFF_FFFF, 1 << 40]),
    regs=st.lists(_OPERANDS, min_size=3, max_size=3),
    mask=st.integers(0, 7),
)
def test_enclu_with_random_operands(
    sgxtool: Runner, bad_enclave: Path, machine: Machine, leaf: int, regs: list[int], mask: int
) -> None:
    """Every ENCLU leaf with operands anywhere: a status, a fault, or an exit the host
    refuses, each reported in one line (exit 1), never a traceback."""
    argument = struct.pack("<5Q", leaf, *regs, mask).hex()
    result = sgxtool(
        "run", str(bad_enclave), "raw_enclu", "--in-hex", argument, "--budget", "100000",
        "--machine", str(machine.path),
    )  # fmt: skip
    clean(result, "sgxtool")
    assert result.code in (0, 1)


def _immutable(path: Path, on: bool) -> bool:
    """chattr +i / -i: what makes a file unwritable even for root (when permitted)."""
    import subprocess

    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    flag = "+i" if on else "-i"
    done = subprocess.run([chattr, flag, str(path)], check=False, capture_output=True)
    return done.returncode == 0


@pytest.mark.parametrize("target", ["machine.toml", "directory"])
def test_unwritable_machine(
    hwsim: Runner, templates: dict[str, Path], tmp_path: Path, target: str
) -> None:
    """Tests run as root, so permissions do not stop writes; the immutable flag does."""
    m = fresh(templates["sim"], tmp_path)
    locked = m / "machine.toml" if target == "machine.toml" else m
    before = files(m)
    if not _immutable(locked, True):
        pytest.skip("chattr +i is not permitted here")
    try:
        commands = [
            ("config", "set", "sgx_enabled", "false"),
            ("sgx", "launch-control", "set", "flc-locked", "--allow", HASH),
            ("power-cycle",),
        ]
        for command in commands:
            result = hwsim("--machine", str(m), *command)
            if target == "machine.toml" and command[0] == "power-cycle":
                assert result.code == 0, result.err  # reads machine.toml only
                before = files(m)
                continue
            refused(result, "hwsim")
            assert files(m) == before, command
    finally:
        _immutable(locked, False)
    # The refused launch-control set stored no owner allow-list either.
    assert ("sgx.owner", "allow", bytes.fromhex(HASH)) not in state_rows(m)


def test_evict_with_a_full_version_array(machine: Machine, bad_enclave: Path) -> None:
    """Every slot of the VA page taken: the next eviction makes a second VA page, as
    Linux's driver does (it once crashed with ValueError, then was refused)."""
    from sgxtool.runtime import Enclave

    with Enclave.load(bad_enclave, machine=machine) as enclave:
        device = enclave.device
        device.evict(0)
        (first,) = device.va_pages
        device._va._free[first].clear()  # as if 511 more pages were out
        device.evict(PAGE_SIZE)
        assert device.va_pages[0] == first and len(device.va_pages) == 2
        device.reload(PAGE_SIZE)  # its VA page is empty again: it leaves the EPC
        assert device.va_pages == [first]


@pytest.mark.parametrize("name", ["a[/]b", "[bold]m[/bold]", "x[red"])
def test_status_of_a_machine_whose_path_looks_like_markup(
    hwsim: Runner, templates: dict[str, Path], tmp_path: Path, name: str
) -> None:
    m = shutil.copytree(templates["sim"], tmp_path / name)
    result = hwsim("--machine", str(m), "status")
    assert result.code == 0, result.err
    assert name in result.out.replace("\n", "")


@examples(40)
@given(entry=st.sampled_from(["getkey_any", "report_any"]), blob=st.binary(max_size=576))
def test_egetkey_ereport_with_any_bytes(
    sgxtool: Runner, bad_enclave: Path, machine: Machine, entry: str, blob: bytes
) -> None:
    """Every KEYREQUEST / TARGETINFO an enclave can pass: a key, a status or a report."""
    result = sgxtool(
        "run", str(bad_enclave), entry, "--in-hex", blob.hex(), "--budget", "200000",
        "--machine", str(machine.path),
    )  # fmt: skip
    clean(result, "sgxtool")
    assert result.code in (0, 1)
