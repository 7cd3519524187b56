"""Packed structures: each field declared once, with its offset and format."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hwsim._layout import Packed, at


@dataclass
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
