"""enclave.toml: defaults, every key, and messages that name key, value and rule."""

from __future__ import annotations

import pytest

from hwsim.sgx.arch import AttributeFlag
from sgxtool.config import EnclaveConfig, parse_config, parse_size
from sgxtool.errors import ConfigError


def test_defaults_enforce_debug_bit() -> None:
    cfg = parse_config("")
    assert cfg == EnclaveConfig()
    assert cfg.attribute_flags == AttributeFlag.MODE64BIT
    assert cfg.attributes_mask & AttributeFlag.DEBUG


def test_every_key() -> None:
    cfg = parse_config("""
[enclave]
isvprodid = 7
isvsvn = 9
debug = true
vendor = 0x8086
size = "8M"
[memory]
heap_size = "2M"
heap_measured = true
stack_size = "128K"
threads = 3
ssa_frames = 4
ssa_frame_size = 2
guard_pages = 0
[security]
miscselect = 1
miscmask = 0xFFFFFFFE
attributes = ["PROVISIONKEY", "AEXNOTIFY"]
attributes_mask = 0xFFFFFFFFFFFFFFFD
xfrm = 0x7
xfrm_mask = 0
[kss]
isvfamilyid = "00112233445566778899aabbccddeeff"
isvextprodid = "ffeeddccbbaa99887766554433221100"
""")
    assert (cfg.isvprodid, cfg.isvsvn, cfg.debug, cfg.vendor, cfg.size) == (
        7,
        9,
        True,
        0x8086,
        8 << 20,
    )
    assert (cfg.heap_size, cfg.heap_measured, cfg.stack_size, cfg.threads) == (
        2 << 20,
        True,
        128 << 10,
        3,
    )
    assert (cfg.ssa_frames, cfg.ssa_frame_size, cfg.guard_pages) == (4, 2, 0)
    assert cfg.attribute_flags == (
        AttributeFlag.MODE64BIT
        | AttributeFlag.DEBUG
        | AttributeFlag.PROVISIONKEY
        | AttributeFlag.AEXNOTIFY
        | AttributeFlag.KSS
    )
    assert cfg.isvfamilyid.hex() == "00112233445566778899aabbccddeeff"
    assert parse_config(_dump(cfg)) == cfg


def _dump(cfg: EnclaveConfig) -> str:
    import tomli_w

    return tomli_w.dumps(cfg.to_toml_dict())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[enclave]\nisvsvn = 70000", "enclave.isvsvn = 70000: must be between 0 and 0xffff"),
        ("[enclave]\nisvsvn = -1", "enclave.isvsvn = -1: must be between"),
        ("[enclave]\ndebug = 1", "enclave.debug = 1: must be true or false"),
        ("[enclave]\nvendor = 5", "enclave.vendor = 0x5: must be 0 or 0x8086"),
        ('[enclave]\nsize = "3M"', "must be a power of two"),
        ("[enclave]\nbogus = 1", "unknown key enclave.bogus"),
        ("[enclaev]\nisvsvn = 1", "unknown table [enclaev]"),
        ('[memory]\nheap_size = "lots"', "memory.heap_size = 'lots': must be an integer"),
        ("[memory]\nheap_size = 100", "must be a multiple of 4096"),
        ("[memory]\nthreads = 0", "memory.threads = 0: must be between 1"),
        ('[security]\nattributes = ["DEBUG"]', "unknown attribute 'DEBUG'"),
        ('[security]\nattributes = "KSS"', "must be a list of attribute names"),
        ("[security]\nxfrm = 1", "must include x87 and SSE"),
        ('[kss]\nisvfamilyid = "abc"', "must be 32 hex digits"),
        ("memory = 3", "memory must be a table"),
        ("[memory\n", "invalid TOML"),
    ],
)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "e.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("e.toml: ")
    assert info.value.exit_code == 2


def test_sizes() -> None:
    assert [parse_size(v) for v in ("4096", "64K", "1M", "2GiB", 8192)] == [
        4096,
        64 << 10,
        1 << 20,
        2 << 30,
        8192,
    ]
