"""Declarative fixed-size binary layouts.

A structure is a dataclass whose fields are declared once, each with the spec's name, its
byte offset and its struct format (``flags: int = at(0, "Q")``); subclassing
:class:`Packed` with the structure's name and size collects those into a :class:`Layout`
and gives ``pack()``/``unpack()`` with the size checked. Bytes no field covers are
reserved: they are written as zeros and :meth:`Layout.nonzero_reserved` reports any that
are not.
"""

from __future__ import annotations

import dataclasses
import operator
import struct
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from memcrypt.errors import FormatError

__all__ = ["Layout", "Packed", "at"]

_T = TypeVar("_T", bound="Packed")


class Layout:
    """Byte layout of one structure: endianness, total size and named fields."""

    def __init__(
        self,
        name: str,
        size: int,
        rows: Sequence[tuple[int, str, str]],
        *,
        big_endian: bool = False,
    ) -> None:
        self.name = name
        self.size = size
        order = ">" if big_endian else "<"
        self.fields = [(off, fname, struct.Struct(order + fmt)) for off, fname, fmt in rows]
        self._reserved = _reserved_runs(name, size, self.fields)

    def offset(self, field: str) -> int:
        """The byte offset of a named field."""
        for off, fname, _ in self.fields:
            if fname == field:
                return off
        raise KeyError(field)

    def pack(self, values: dict[str, Any]) -> bytes:
        buf = bytearray(self.size)
        for off, fname, st in self.fields:
            try:
                st.pack_into(buf, off, values[fname])
            except struct.error as exc:
                raise FormatError(f"{self.name}.{fname}: {exc}") from exc
        return bytes(buf)

    def unpack(self, data: bytes) -> dict[str, Any]:
        if len(data) != self.size:
            raise FormatError(f"{self.name} must be {self.size} bytes, got {len(data)}")
        return {fname: st.unpack_from(data, off)[0] for off, fname, st in self.fields}

    def nonzero_reserved(self, data: bytes) -> list[tuple[int, int]]:
        """(offset, length) of every reserved run of ``data`` holding a non-zero byte."""
        return [(o, n) for o, n in self._reserved if any(data[o : o + n])]


def _reserved_runs(
    name: str, size: int, fields: Sequence[tuple[int, str, struct.Struct]]
) -> list[tuple[int, int]]:
    """(offset, length) of each gap between the fields, in offset order; a field that
    overlaps the one before it or overruns ``size`` is refused."""
    runs: list[tuple[int, int]] = []
    end = 0
    for off, fname, st in sorted(fields):  # (offset, name) is unique: Structs never compared
        if off < end or off + st.size > size:
            raise ValueError(f"{name}.{fname} overlaps or overruns the structure")
        if off > end:
            runs.append((end, off - end))
        end = off + st.size
    if end < size:
        runs.append((end, size - end))
    return runs


_AT = "hwsim.layout"  # the field metadata key holding (offset, format)


def at(offset: int, fmt: str, default: Any = None) -> Any:
    """A field at byte ``offset`` packed with struct format ``fmt``; its default is
    ``default``, else zero (zero bytes for an ``"Ns"`` field)."""
    if default is None:
        default = bytes(int(fmt[:-1] or 1)) if fmt.endswith("s") else 0
    return dataclasses.field(default=default, metadata={_AT: (offset, fmt)})


class Packed:
    """Base of a dataclass whose fields are all declared with :func:`at`::

    @dataclass(repr=False, eq=False)
    class Secinfo(Packed, name="SECINFO", size=64):
        flags: int = at(0, "Q")

    ``repr=False, eq=False``: this class gives the repr and equality @dataclass would, from
    the layout's fields, so that @dataclass compiles only ``__init__`` for each structure
    (the generated methods were most of what importing an ``arch`` module cost). As with a
    mutable dataclass, instances are unhashable.
    """

    LAYOUT: ClassVar[Layout]
    _values: ClassVar[operator.attrgetter[Any]]  # an instance's field values, in field order

    def __init_subclass__(cls, *, name: str, size: int, big_endian: bool = False) -> None:
        # Runs before @dataclass, so the class body still holds the fields as declared.
        rows = [
            (f.metadata[_AT][0], fname, f.metadata[_AT][1])
            for fname, f in vars(cls).items()
            if isinstance(f, dataclasses.Field) and _AT in f.metadata
        ]
        cls.LAYOUT = Layout(name, size, rows, big_endian=big_endian)
        cls._values = operator.attrgetter(*(fname for _, fname, _ in rows))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(self._values(self) == self._values(other))

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable (as dataclass makes it)

    def __repr__(self) -> str:
        values = (f"{fname}={getattr(self, fname)!r}" for _, fname, _ in self.LAYOUT.fields)
        return f"{self.__class__.__qualname__}({', '.join(values)})"

    def pack(self) -> bytes:
        return self.LAYOUT.pack(vars(self))  # the fields, by name (no deep copy, unlike asdict)

    @classmethod
    def unpack(cls: type[_T], data: bytes) -> _T:
        return cls(**cls.LAYOUT.unpack(bytes(data)))
