"""Packed structures: each field declared once, with its offset and format."""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass

import pytest

from hwsim._layout import Packed, at
from hwsim.sev import arch as sev_arch
from hwsim.sgx import arch as sgx_arch


@dataclass(repr=False, eq=False)
class _Pair(Packed, name="PAIR", size=16, big_endian=True):
    kind: int = at(0, "H", 7)
    blob: bytes = at(4, "4s")
    count: int = at(8, "Q")


def test_layout_comes_from_the_fields() -> None:
    assert [(off, name) for off, name, _ in _Pair.LAYOUT.fields] == [
        (0, "kind"),
        (4, "blob"),
        (8, "count"),
    ]
    assert _Pair() == _Pair(7, bytes(4), 0)
    raw = _Pair(1, b"abcd", 2).pack()
    assert raw == b"\0\1\0\0abcd" + (2).to_bytes(8, "big")
    assert _Pair.unpack(raw) == _Pair(1, b"abcd", 2)
    assert _Pair.LAYOUT.nonzero_reserved(raw[:2] + b"\1" + raw[3:]) == [(2, 2)]


def test_overlap_refused_when_declared() -> None:
    with pytest.raises(ValueError, match=r"BAD\.b overlaps"):

        @dataclass
        class _Bad(Packed, name="BAD", size=8):
            a: int = at(0, "I")
            b: int = at(2, "I")


@dataclass(repr=False, eq=False)
class _Other(Packed, name="OTHER", size=16, big_endian=True):
    kind: int = at(0, "H", 7)
    blob: bytes = at(4, "4s")
    count: int = at(8, "Q")


def test_equality_repr_and_hash_are_a_dataclasses() -> None:
    assert _Pair(1, b"abcd", 2) == _Pair(1, b"abcd", 2)
    assert _Pair(1, b"abcd", 2) != _Pair(1, b"abcd", 3)
    assert _Pair() != _Other() and _Pair() != (7, bytes(4), 0)
    assert repr(_Pair(1, b"ab\0\0", 2)) == "_Pair(kind=1, blob=b'ab\\x00\\x00', count=2)"
    with pytest.raises(TypeError, match="unhashable"):
        hash(_Pair())


def _structures() -> list[type[Packed]]:
    found = [c for m in (sgx_arch, sev_arch) for c in vars(m).values() if isinstance(c, type)]
    return [c for c in found if issubclass(c, Packed) and c is not Packed]


def test_every_structure_is_declared_whole_by_its_layout() -> None:
    """Packed's equality and repr read the layout's fields: each arch structure has no
    other field, and leaves both methods to Packed (no generated ones to compile)."""
    structures = _structures()
    assert len(structures) == 20
    for cls in structures:
        assert is_dataclass(cls)
        assert [f.name for f in fields(cls)] == [name for _, name, _ in cls.LAYOUT.fields]
        assert cls.__eq__ is Packed.__eq__ and cls.__repr__ is Packed.__repr__, cls.__name__
        assert cls.__hash__ is None
