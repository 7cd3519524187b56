"""edger8r's marshalling, from the untrusted side: ECALL arguments and OCALL service.

An Intel SDK ECALL takes one pointer: a ``ms_<fn>_t`` structure in host memory holding the
return value slot and each parameter, pointers to host buffers for ``[in]``/``[out]``
data (the trusted bridge copies them in and out of the enclave). An OCALL hands the host
the same kind of structure, built by the trusted proxy on the untrusted stack. Layouts and
length rules: linux-sgx ``sdk/edger8r/linux/CodeGen.ml`` (``mk_ms_member_decl``,
``gen_ptr_size``), ``shared/reference/intel-sdk.md`` section 4.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sgxtool.edl import CType, EdlError, Function, Param

__all__ = [
    "EcallFrame",
    "HostMemory",
    "OcallCall",
    "marshal_ecall",
    "ms_layout",
    "serve_ocall",
    "unmarshal_ecall",
]

Value = int | float | bytes | bytearray | str | list[int] | None
_SIZE_T = CType("size_t", 8, 8, "int")
# The longest [string] an OCALL may hand the host; the proxy copied strlen+1 bytes.
MAX_STRING = 1 << 20


class HostMemory(Protocol):
    """Untrusted memory the host and the enclave both see."""

    def alloc(self, n: int) -> int: ...
    def read(self, address: int, n: int) -> bytes: ...
    def write(self, address: int, data: bytes) -> None: ...


@dataclass(frozen=True)
class Member:
    name: str
    ctype: CType
    offset: int
    param: Param | None = None  # None for ms_retval and a string's _len


def ms_layout(f: Function, *, string_len: bool) -> tuple[list[Member], int]:
    """The members of ``ms_<fn>_t`` with their offsets, and its size (natural alignment).

    ``string_len``: SDK 2.2 and later follow each ECALL ``[in]`` string by ``size_t _len``.
    """
    members: list[tuple[str, CType, Param | None]] = []
    if f.ret.kind != "void":
        members.append(("ms_retval", f.ret, None))
    for p in f.params:
        members.append((f"ms_{p.name}", p.ms_type, p))
        if string_len and f.trusted and p.is_string and "in" in p.attrs:
            members.append((f"ms_{p.name}_len", _SIZE_T, None))
    out, offset, align = [], 0, 1
    for name, ctype, param in members:
        a = ctype.align if not ctype.dims else ctype.elem.align
        offset = -(-offset // a) * a
        out.append(Member(name, ctype, offset, param))
        offset += ctype.total
        align = max(align, a)
    return out, -(-offset // align) * align


# -- scalars -----------------------------------------------------------------------------


def _fmt(t: CType) -> str:
    if t.kind == "float":
        return {4: "<f", 8: "<d"}[t.size]
    if t.kind == "pointer":
        return "<Q"
    letter = {1: "b", 2: "h", 4: "i", 8: "q"}[t.size]
    return "<" + (letter if t.signed else letter.upper())


def pack_scalar(t: CType, value: Value, what: str) -> bytes:
    """``value`` as C stores a ``t``: ints wrap like C's conversion, structs from bytes."""
    if t.kind in ("struct", "union") or t.size not in (1, 2, 4, 8):
        data = _as_bytes(value, t.size, what)
        return data.ljust(t.size, b"\0")
    if t.kind == "float":
        return struct.pack(_fmt(t), float(_number(value, what)))
    n = int(_number(value, what)) % (1 << (8 * t.size))
    return n.to_bytes(t.size, "little", signed=False)


def unpack_scalar(t: CType, data: bytes) -> int | float | bytes:
    if t.kind in ("struct", "union") or t.size not in (1, 2, 4, 8):
        return data
    value: int | float = struct.unpack(_fmt(t), data[: t.size])[0]
    return value


def _number(value: Value, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise EdlError(f"{what}: expected a number, got {type(value).__name__}")
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            try:
                return float(value)
            except ValueError as exc:
                raise EdlError(f"{what}: {value!r} is not a number") from exc
    return value


def _as_bytes(value: Value, length: int, what: str, elem: CType | None = None) -> bytes:
    if value is None:
        return bytes(length)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if elem is not None and isinstance(value, list):
        return b"".join(pack_scalar(elem, v, what) for v in value)
    if elem is not None and isinstance(value, (int, float)):
        return pack_scalar(elem, value, what)
    raise EdlError(f"{what}: expected bytes or text, got {type(value).__name__}")


# -- lengths -----------------------------------------------------------------------------


def _element(p: Param) -> CType:
    if p.ctype.dims:
        return p.ctype.elem
    pointee = p.ctype.pointee
    if pointee is None:
        raise EdlError(f"parameter {p.name}: [in]/[out] needs a pointer or an array")
    return pointee


def buffer_length(p: Param, scalars: dict[str, int | float | bytes], value: Value = None) -> int:
    """Bytes edger8r copies for ``p`` (``gen_ptr_size``)."""
    if p.ctype.dims:
        return p.ctype.elem.size * math.prod(p.ctype.dims)
    if "string" in p.attrs:
        return len(_as_bytes(value, 0, p.name)) + 1
    if "wstring" in p.attrs:
        return (len(str(value or "")) + 1) * 4
    size = _expr(p.size, scalars, p) if p.size else _element(p).size
    if not size:
        raise EdlError(f"parameter {p.name}: a void pointer needs size=")
    return size * (_expr(p.count, scalars, p) if p.count else 1)


def _expr(expr: str, scalars: dict[str, int | float | bytes], p: Param) -> int:
    if expr.isdigit() or expr.lower().startswith("0x"):
        return int(expr, 0)
    found = scalars.get(expr)
    if not isinstance(found, int):
        raise EdlError(f"parameter {p.name}: its length {expr!r} is not an integer parameter")
    if found < 0:
        raise EdlError(f"parameter {p.name}: its length {expr} is negative ({found})")
    return found


# -- ECALL -------------------------------------------------------------------------------


@dataclass
class EcallFrame:
    """What the host prepared for one ECALL: the ms structure and its buffers."""

    function: Function
    ms_address: int
    ms_size: int
    members: list[Member]
    buffers: dict[str, tuple[int, int]] = field(default_factory=dict)  # param -> (address, len)


def marshal_ecall(f: Function, args: dict[str, Value], mem: HostMemory, *,
                  string_len: bool) -> EcallFrame:  # fmt: skip
    """Build ``ms_<fn>_t`` and its buffers in host memory from Python values by name."""
    unknown = set(args) - {p.name for p in f.params}
    if unknown:
        raise EdlError(f"{f.name} has no parameter {sorted(unknown)[0]!r}")
    scalars = {p.name: _scalar_value(p, args.get(p.name)) for p in f.params if _is_value(p)}
    members, size = ms_layout(f, string_len=string_len)
    frame = EcallFrame(f, mem.alloc(max(size, 1)), size, members)
    ms = bytearray(size)
    for m in members:
        p = m.param
        if p is None:
            continue
        raw = _ecall_member(p, args.get(p.name), scalars, mem, frame)
        ms[m.offset : m.offset + len(raw)] = raw
        if m.name.endswith("_len") or not p.is_string:
            continue
        length_member = next((x for x in members if x.name == f"{m.name}_len"), None)
        if length_member is not None:
            ms[length_member.offset : length_member.offset + 8] = struct.pack(
                "<Q", frame.buffers.get(p.name, (0, 0))[1]
            )
    mem.write(frame.ms_address, bytes(ms))
    return frame


def _is_value(p: Param) -> bool:
    return p.direction == "value"


def _scalar_value(p: Param, value: Value) -> int | float | bytes:
    return unpack_scalar(p.ctype, pack_scalar(p.ctype, 0 if value is None else value, p.name))


def _ecall_member(p: Param, value: Value, scalars: dict[str, int | float | bytes],
                  mem: HostMemory, frame: EcallFrame) -> bytes:  # fmt: skip
    direction = p.direction
    if direction == "value":
        return pack_scalar(p.ctype, 0 if value is None else value, p.name)
    if direction == "user_check":
        return struct.pack("<Q", int(_number(value or 0, p.name)))
    if value is None and "in" in p.attrs and "out" not in p.attrs:
        return struct.pack("<Q", 0)  # a NULL [in] pointer: the bridge passes NULL on
    length = buffer_length(p, scalars, value)
    data = bytes(length)
    if "in" in p.attrs:
        given = _as_bytes(value, length, p.name, _element(p))
        if p.is_string:
            given = (given + b"\0")[:length]
        if len(given) > length:
            raise EdlError(f"{p.name}: {len(given)} bytes given, the buffer holds {length}")
        data = given.ljust(length, b"\0")
    address = mem.alloc(max(length, 1))
    mem.write(address, data)
    frame.buffers[p.name] = (address, length)
    return struct.pack("<Q", address)


@dataclass(frozen=True)
class EcallResult:
    retval: int | float | bytes | None
    outputs: dict[str, object]


def unmarshal_ecall(frame: EcallFrame, mem: HostMemory) -> EcallResult:
    """The return value and every ``[out]`` buffer after the ECALL returned."""
    ms = mem.read(frame.ms_address, frame.ms_size)
    retval = None
    f = frame.function
    if f.ret.kind != "void":
        retval = unpack_scalar(f.ret, ms[: f.ret.size])
    outputs: dict[str, object] = {}
    for p in f.params:
        if "out" in p.attrs and p.name in frame.buffers:
            address, length = frame.buffers[p.name]
            outputs[p.name] = decode_buffer(p, mem.read(address, length))
    return EcallResult(retval, outputs)


def decode_buffer(p: Param, data: bytes) -> object:
    """A buffer as a Python value: text for strings, numbers for typed arrays, else bytes."""
    if "string" in p.attrs:
        return data.split(b"\0", 1)[0].decode(errors="replace")
    elem = _element(p)
    if elem.kind in ("int", "float") and elem.size > 1 and len(data) % elem.size == 0:
        values = [
            unpack_scalar(elem, data[i : i + elem.size]) for i in range(0, len(data), elem.size)
        ]
        return values[0] if len(values) == 1 and not p.ctype.dims and not p.count else values
    return bytes(data)


# -- OCALL -------------------------------------------------------------------------------


@dataclass
class OcallCall:
    """One OCALL as its handler sees it: values by parameter name; ``[out]`` parameters are
    zeroed ``bytearray``s the handler fills."""

    function: Function
    values: dict[str, object]


OcallHandler = Callable[[OcallCall], object]


def serve_ocall(f: Function, ms_address: int, mem: HostMemory, handler: OcallHandler) -> None:
    """Read ``ms_<fn>_t`` at ``ms_address``, call ``handler``, write back results."""
    members, size = ms_layout(f, string_len=False)
    ms = bytearray(mem.read(ms_address, size))
    field_of = {m.param.name: m for m in members if m.param is not None}
    scalars: dict[str, int | float | bytes] = {}
    for p in f.params:
        if _is_value(p):
            m = field_of[p.name]
            scalars[p.name] = unpack_scalar(p.ctype, bytes(ms[m.offset : m.offset + m.ctype.size]))
    values: dict[str, object] = {}
    buffers: dict[str, tuple[int, int]] = {}
    for p in f.params:
        m = field_of[p.name]
        raw = bytes(ms[m.offset : m.offset + m.ctype.total])
        if p.direction == "value":
            values[p.name] = scalars[p.name]
            continue
        address = struct.unpack("<Q", raw[:8])[0]
        if p.direction == "user_check" or address == 0:
            values[p.name] = address
            continue
        length = _read_string_length(mem, address) if p.is_string else buffer_length(p, scalars)
        buffers[p.name] = (address, length)
        data = mem.read(address, length) if "in" in p.attrs else bytes(length)
        values[p.name] = bytearray(data) if "out" in p.attrs else decode_buffer(p, data)
    result = handler(OcallCall(f, values))
    for name, (address, length) in buffers.items():
        out = values[name]
        if "out" in f.param(name).attrs and isinstance(out, (bytes, bytearray)):
            mem.write(address, bytes(out[:length]).ljust(length, b"\0"))
    if f.ret.kind != "void":
        ms[: f.ret.size] = pack_scalar(f.ret, 0 if result is None else result, f"{f.name} result")  # type: ignore[arg-type]
        mem.write(ms_address, bytes(ms[: f.ret.size]))


def _read_string_length(mem: HostMemory, address: int) -> int:
    """strlen+1 of a NUL-terminated string in host memory, read in small steps."""
    length = 0
    while length < MAX_STRING:
        at = address + length
        chunk = mem.read(at, 256 - at % 256)  # never past the page the string ends in
        nul = chunk.find(b"\0")
        if nul >= 0:
            return length + nul + 1
        length += len(chunk)
    raise EdlError(f"an OCALL string at {address:#x} is longer than {MAX_STRING} bytes")
