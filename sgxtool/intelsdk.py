"""What ``sgx_sign`` does differently from one Intel SGX SDK release to the next.

An enclave must be signed as the signer of its own SDK release lays it out: the tRTS
reads ``g_global_data`` with that release's ``global_data_t``, and the uRTS of that release
picks the metadata copy it knows. Each :class:`SdkProfile` records one release's facts,
from linux-sgx at the release tag (``common/inc/internal/metadata.h``, ``global_data.h``,
``se_version.h``, ``sgx_attributes.h``, ``sdk/sign_tool/SignTool``; summary in
``shared/reference/intel-sdk.md`` sections 1.5 and 6). Only releases checked byte for byte
against enclaves that Intel's own signer produced are listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sgxtool.errors import UsageError

__all__ = ["PROFILES", "SdkProfile", "profile_for"]


@dataclass(frozen=True)
class SdkProfile:
    """One SDK release, as its ``sgx_sign`` and tRTS see an enclave."""

    release: str
    version: tuple[int, int]  # metadata major.minor of the primary copy
    compat: tuple[tuple[int, int], ...]  # versions of the copies after it, in file order
    metadata_size: int  # METADATA_SIZE, the note's descriptor size
    global_data_size: int  # sizeof(global_data_t)
    global_words: tuple[str, ...]  # the sys_word_t fields before td_template
    stack_size_min: int  # STACK_SIZE_MIN, the XML's lower bound
    size_max: int  # ENCLAVE_MAX_SIZE_64 (binparser.h); the XML bounds are half of it
    xfrm_features: int  # XFRM bits the release knows; the rest are SGX_XFRM_RESERVED (mask 1)
    xsave_sizes: tuple[tuple[int, int], ...]  # (XFRM bits, XSAVE bytes), ascending
    utility_stack_grows: bool  # the utility thread's STACK_MAX may be added/removed (EDMM)
    kss: bool  # the XML knows EnableKSS and the ISV family / extended product ids
    sdk_version_field: bool  # global_data_t starts with sdk_version (checked against ours)

    @property
    def td_template_at(self) -> int:
        return 8 * len(self.global_words)


PROFILES = {
    "2.0": SdkProfile(
        release="2.0",
        version=(2, 1),
        compat=((1, 4),),
        metadata_size=0x3000,
        global_data_size=1488,
        global_words=("enclave_size", "heap_offset", "heap_size", "thread_policy"),
        stack_size_min=0x1000,
        size_max=0x1F_FFFF_FFFF,
        xfrm_features=0x7,  # LEGACY | AVX
        xsave_sizes=((0x3, 576), (0x6, 832), (0x18, 912), (0xE6, 2512)),
        utility_stack_grows=False,
        kss=False,
        sdk_version_field=False,
    ),
    "2.13": SdkProfile(
        release="2.13",
        version=(2, 4),
        compat=((2, 1), (1, 4)),
        metadata_size=0x5000,
        global_data_size=1656,
        global_words=(
            "sdk_version",
            "enclave_size",
            "heap_offset",
            "heap_size",
            "rsrv_offset",
            "rsrv_size",
            "rsrv_executable",
            "thread_policy",
            "tcs_max_num",
        ),
        stack_size_min=0x2000,
        size_max=(1 << 64) - 1,
        xfrm_features=0xE7,  # LEGACY | AVX | AVX512
        xsave_sizes=((0x3, 576), (0x6, 832), (0x18, 1088), (0xE6, 2688)),
        utility_stack_grows=True,
        kss=True,
        sdk_version_field=True,
    ),
}

# The tRTS names its release in a string (sdk/trts, "SGX_TRTS_VERSION_" STRFILEVER).
_TRTS_VERSION = re.compile(rb"SGX_TRTS_VERSION_(\d+)\.(\d+)\.(\d+)")


def profile_for(
    image: bytes, name: str, first_word: int
) -> tuple[SdkProfile, tuple[int, int, int]]:
    """The profile of the SDK release whose tRTS ``image`` was linked with, and the
    release's full version (major, minor, revision). The hardware tRTS names its release in
    a string; the simulation tRTS has no such string, but from 2.13 on ``g_global_data``
    starts with ``sdk_version`` (``first_word``: major << 32 | minor << 16 | revision)."""
    found = _TRTS_VERSION.search(image)
    if found is not None:
        major, minor, revision = (int(x) for x in found.groups())
    else:
        major, minor, revision = first_word >> 32, first_word >> 16 & 0xFFFF, first_word & 0xFFFF
        if major != 2 or not 13 <= minor < 100:  # sdk_version came with 2.13
            raise UsageError(
                f"{name}: neither an SGX_TRTS_VERSION string nor an sdk_version in "
                "g_global_data: the SDK release it was built with is unknown",
                hint="sgxtool signs enclaves of Intel SGX SDK " + ", ".join(PROFILES),
            )
    profile = PROFILES.get(f"{major}.{minor}")
    if profile is None:
        known = ", ".join(PROFILES)
        raise UsageError(
            f"{name}: built with Intel SGX SDK {major}.{minor}; sgxtool signs enclaves of SDK "
            f"{known} (the releases checked byte for byte against sgx_sign's output)",
            hint="sign this one with the sgx_sign of its own SDK release",
        )
    return profile, (major, minor, revision)
