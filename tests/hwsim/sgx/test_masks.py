"""Attribute masks, bit by bit, against Intel's files and documented defaults.

A mask written as ``~SomeIntFlag`` holds all 64 bits on Python 3.10 and only the flag's
defined bits on 3.11+; every mask here is checked as a whole 64-bit value on whatever
Python runs the suite.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hwsim.sgx.arch import AttributeFlag
from hwsim.sgx.le import LE_TOKEN_MASK
from sgxtool.intelso import read_metadata
from sgxtool.intelxml import import_intel_config

Vector = Callable[[str], Path]
U64 = (1 << 64) - 1


def bits(value: int) -> set[int]:
    return {i for i in range(64) if value >> i & 1}


def test_le_token_mask_is_every_bit_but_mode64bit() -> None:
    assert bits(LE_TOKEN_MASK) == set(range(64)) - {2}


def test_sgx_sign_default_flags_mask(vector: Vector) -> None:
    """Current sgx_sign: ~(DEBUG | bits 55:48) (manage_metadata.cpp), with DisableDebug=0."""
    cfg, _ = import_intel_config(vector("sgx/intel-linux-sgx/SampleEnclave_Enclave.config.xml"))
    assert cfg.attributes_mask == 0xFF00_FFFF_FFFF_FFFD
    assert bits(cfg.attributes_mask) == set(range(64)) - {1} - set(range(48, 56))


@pytest.mark.parametrize(
    "folder", ["ShuntaIshihara+test_hash_SGX", "njuyuanrui+testEnclaveSO", "DongpingZ+SgxRandTest"]
)
def test_intel_enclaves_masks(vector: Vector, folder: str) -> None:
    """SDK 2.0/2.13 signed with ~DEBUG (flags) and ~AVX512-not-required xfrm (SOURCE.txt)."""
    sig = read_metadata(vector(f"sgx/intel-sdk-enclaves/{folder}/enclave.signed.so"))[0].sigstruct
    assert bits(sig.attributemask.flags) == set(range(64)) - {
        int(AttributeFlag.DEBUG).bit_length() - 1
    }
    assert sig.attributemask.flags == U64 & ~int(AttributeFlag.DEBUG)
