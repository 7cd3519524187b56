"""EDL files of Intel's SDK enclaves: indices as edger8r assigns them, and marshalling."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from sgxtool.edl import Edl, EdlError, load_edl
from sgxtool.marshal import OcallCall, marshal_ecall, ms_layout, serve_ocall, unmarshal_ecall

Vector = Callable[[str], Path]
# What the two EDLs' `include "user_types.h"` defines (vectors/README.md).
USER_TYPES = {"buffer_t": "void *", "array_t": "int[10]"}


def edl(vector: Vector, folder: str) -> Edl:
    return load_edl(vector(f"sgx/intel-sdk-enclaves/{folder}/Enclave.edl"), typedefs=USER_TYPES)


class Memory:
    """Host memory for the marshalling code: a bump allocator over a bytearray."""

    def __init__(self, base: int = 0x10000) -> None:
        self.base, self.data, self.next = base, bytearray(1 << 16), base

    def alloc(self, n: int) -> int:
        address = self.next
        self.next += -(-n // 16) * 16
        return address

    def read(self, address: int, n: int) -> bytes:
        return bytes(self.data[address - self.base : address - self.base + n])

    def write(self, address: int, data: bytes) -> None:
        self.data[address - self.base : address - self.base + len(data)] = data


def test_sampleenclave_indices_match_the_binary(vector: Vector) -> None:
    """SOURCE.txt: 32 ECALLs and 11 OCALLs, in the order edger8r gave the built enclave."""
    e = edl(vector, "DongpingZ+SgxRandTest")
    assert len(e.ecalls) == 32 and len(e.ocalls) == 11
    assert [f.name for f in e.ecalls[:2]] == ["ecall_type_char", "ecall_type_int"]
    assert e.ecall("ocall_pointer_attr")[0] == 17  # a trusted function despite its name
    assert [f.name for f in e.ecalls[-3:]] == ["ecall_increase_counter", "ecall_producer",
                                              "ecall_consumer"]  # fmt: skip
    assert [f.name for f in e.ocalls] == [
        "ocall_print_string", "ocall_pointer_user_check", "ocall_pointer_in", "ocall_pointer_out",
        "ocall_pointer_in_out", "ocall_function_allow", "sgx_oc_cpuidex",
        "sgx_thread_wait_untrusted_event_ocall", "sgx_thread_set_untrusted_event_ocall",
        "sgx_thread_setwait_untrusted_events_ocall",
        "sgx_thread_set_multiple_untrusted_events_ocall",
    ]  # fmt: skip
    assert e.ecalls[24].name == "ecall_function_private" and not e.ecalls[24].public
    assert e.ocalls[5].allow == ("ecall_function_private",)


def test_ms_layouts(vector: Vector) -> None:
    """intel-sdk.md 5: ms_ecall_test_t is retval@0, message@8, message_len@16 (24 bytes);
    ms_calcu_t is seven 64-bit words."""
    _, test = edl(vector, "ShuntaIshihara+test_hash_SGX").ecall("ecall_test")
    members, size = ms_layout(test, string_len=True)
    assert [(m.name, m.offset) for m in members] == [
        ("ms_retval", 0), ("ms_message", 8), ("ms_message_len", 16)]  # fmt: skip
    assert size == 24
    _, calcu = edl(vector, "njuyuanrui+testEnclaveSO").ecall("calcu")
    assert ms_layout(calcu, string_len=True)[1] == 56
    _, string = edl(vector, "DongpingZ+SgxRandTest").ecall("ecall_pointer_string")
    names = [m.name for m in ms_layout(string, string_len=True)[0]]
    assert names == ["ms_str", "ms_str_len"]  # SDK 2.2+: [in] strings carry their length
    assert [m.name for m in ms_layout(string, string_len=False)[0]] == ["ms_str"]


def test_marshal_in_out_buffers(vector: Vector) -> None:
    e = edl(vector, "DongpingZ+SgxRandTest")
    mem = Memory()
    _, f = e.ecall("ecall_pointer_count")
    frame = marshal_ecall(f, {"arr": [1, 2, 3], "cnt": 3}, mem, string_len=True)
    address, length = frame.buffers["arr"]
    assert length == 12 and mem.read(address, 12) == struct.pack("<3i", 1, 2, 3)
    ms = mem.read(frame.ms_address, frame.ms_size)
    assert struct.unpack("<QQ", ms) == (address, 3)
    mem.write(address, struct.pack("<3i", -1, -2, -3))  # what the enclave copied back
    assert unmarshal_ecall(frame, mem).outputs == {"arr": [-1, -2, -3]}
    _, cpuid = e.ecall("ecall_sgx_cpuid")
    frame = marshal_ecall(cpuid, {"leaf": 0}, mem, string_len=True)
    assert frame.buffers["cpuinfo"][1] == 16  # [out] int cpuinfo[4], zeroed


def test_marshal_refusals(vector: Vector) -> None:
    e = edl(vector, "DongpingZ+SgxRandTest")
    _, f = e.ecall("ecall_pointer_size")
    with pytest.raises(EdlError, match="has no parameter 'nope'"):
        marshal_ecall(f, {"nope": 1}, Memory(), string_len=True)
    with pytest.raises(EdlError, match="8 bytes given, the buffer holds 4"):
        marshal_ecall(f, {"ptr": b"12345678", "len": 4}, Memory(), string_len=True)
    with pytest.raises(EdlError, match="no ECALL named 'missing'"):
        e.ecall("missing")


def test_serve_ocall_string_and_out(vector: Vector) -> None:
    e = edl(vector, "DongpingZ+SgxRandTest")
    mem = Memory()
    text = mem.alloc(16)
    mem.write(text, b"hi there\0")
    ms = mem.alloc(8)
    mem.write(ms, struct.pack("<Q", text))
    seen: list[OcallCall] = []
    serve_ocall(e.ocalls[0], ms, mem, seen.append)
    assert seen[0].values == {"str": "hi there"}

    def cpuid(call: OcallCall) -> None:
        out = call.values["cpuinfo"]
        assert isinstance(out, bytearray) and len(out) == 16
        out[:] = struct.pack("<4i", 7, 8, 9, 10)

    buf = mem.alloc(16)
    ms = mem.alloc(16)
    mem.write(ms, struct.pack("<Qii", buf, 1, 0))
    serve_ocall(e.ocalls[6], ms, mem, cpuid)
    assert mem.read(buf, 16) == struct.pack("<4i", 7, 8, 9, 10)


def test_unknown_type_and_missing_import(tmp_path: Path) -> None:
    bad = tmp_path / "a.edl"
    bad.write_text("enclave { trusted { public void f(mystery_t x); }; };")
    with pytest.raises(EdlError, match="unknown type 'mystery_t'"):
        load_edl(bad)
    bad.write_text('enclave { from "missing.edl" import *; };')
    with pytest.raises(EdlError, match=r"imports 'missing\.edl'"):
        load_edl(bad)
