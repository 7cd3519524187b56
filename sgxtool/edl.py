"""Intel's Enclave Definition Language: the ECALLs and OCALLs of an Intel SDK enclave.

Reads the subset Intel's samples use: ``trusted``/``untrusted`` blocks, ``public``,
``allow(...)``, ``from "x.edl" import *|names;``, ``include``, ``struct``/``union``/``enum``
definitions, scalar, pointer and array parameters with ``[in]``, ``[out]``, ``[in, out]``,
``[user_check]``, ``[string]``, ``[wstring]``, ``size=``, ``count=``, ``isptr``, ``isary``,
``readonly``. Function indices follow edger8r (linux-sgx ``sdk/edger8r/linux/CodeGen.ml``
``reduce_import``): the root file's functions first, then each import depth-first in order,
a file reached again adding only what is still missing (``shared/reference/intel-sdk.md`` 4).

The SDK's own ``sgx_tstdc.edl`` is not a file users have beside their enclave; its OCALLs
(the ``sgx_oc_cpuidex`` and ``sgx_thread_*`` event calls) are declared here, from the
SDK's published interface.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from memcrypt.files import read_file
from sgxtool.errors import ConfigError

__all__ = ["CType", "Edl", "EdlError", "Function", "Param", "load_edl", "parse_type"]

MAX_EDL_SIZE = 1 << 20

# The SDK's built-in OCALL declarations (common/inc/sgx_tstdc.edl), as edger8r sees them.
_BUILTIN = {
    "sgx_tstdc.edl": """
enclave {
    untrusted {
        [cdecl] void sgx_oc_cpuidex([out] int cpuinfo[4], int leaf, int subleaf);
        [cdecl] int sgx_thread_wait_untrusted_event_ocall([user_check] const void *self);
        [cdecl] int sgx_thread_set_untrusted_event_ocall([user_check] const void *waiter);
        [cdecl] int sgx_thread_setwait_untrusted_events_ocall([user_check] const void *waiter,
                                                              [user_check] const void *self);
        [cdecl] int sgx_thread_set_multiple_untrusted_events_ocall(
            [in, count = total] const void **waiters, size_t total);
    };
};
""",
}


class EdlError(ConfigError):
    """An EDL file that cannot be read or uses something this reader does not know."""


@dataclass(frozen=True)
class CType:
    """A C type as x86-64 Linux (LP64) lays it out."""

    name: str
    size: int
    align: int
    kind: str  # int, float, pointer, struct, union, void
    signed: bool = False
    pointee: CType | None = None
    dims: tuple[int, ...] = ()  # a fixed-size array of this type
    fields: tuple[tuple[str, CType, int], ...] = ()  # struct/union members with offsets

    @property
    def elem(self) -> CType:
        """The element type of an array (this type without its dimensions)."""
        return CType(self.name, self.size, self.align, self.kind, self.signed, self.pointee,
                     (), self.fields)  # fmt: skip

    @property
    def total(self) -> int:
        n = self.size
        for d in self.dims:
            n *= d
        return n


def _scalar(name: str, size: int, kind: str = "int", signed: bool = True) -> CType:
    return CType(name, size, size, kind, signed)


_VOID = CType("void", 0, 1, "void")
_BASIC = {
    "char": _scalar("char", 1), "signed char": _scalar("signed char", 1),
    "unsigned char": _scalar("unsigned char", 1, signed=False),
    "short": _scalar("short", 2), "unsigned short": _scalar("unsigned short", 2, signed=False),
    "int": _scalar("int", 4), "signed": _scalar("int", 4),
    "unsigned": _scalar("unsigned", 4, signed=False),
    "unsigned int": _scalar("unsigned int", 4, signed=False),
    "long": _scalar("long", 8), "unsigned long": _scalar("unsigned long", 8, signed=False),
    "long long": _scalar("long long", 8),
    "unsigned long long": _scalar("unsigned long long", 8, signed=False),
    "float": _scalar("float", 4, "float"), "double": _scalar("double", 8, "float"),
    "long double": CType("long double", 16, 16, "float"),
    "size_t": _scalar("size_t", 8, signed=False), "ssize_t": _scalar("ssize_t", 8),
    "wchar_t": _scalar("wchar_t", 4), "bool": _scalar("bool", 1, signed=False),
    "int8_t": _scalar("int8_t", 1), "uint8_t": _scalar("uint8_t", 1, signed=False),
    "int16_t": _scalar("int16_t", 2), "uint16_t": _scalar("uint16_t", 2, signed=False),
    "int32_t": _scalar("int32_t", 4), "uint32_t": _scalar("uint32_t", 4, signed=False),
    "int64_t": _scalar("int64_t", 8), "uint64_t": _scalar("uint64_t", 8, signed=False),
    "sgx_status_t": _scalar("sgx_status_t", 4, signed=False), "void": _VOID,
}  # fmt: skip


def pointer_to(t: CType) -> CType:
    return CType(f"{t.name} *", 8, 8, "pointer", False, t)


@dataclass(frozen=True)
class Param:
    """One parameter: its declared type, name and edger8r attributes."""

    name: str
    ctype: CType
    attrs: frozenset[str] = frozenset()
    size: str | None = None  # size= : a number or another parameter's name
    count: str | None = None

    @property
    def direction(self) -> str:
        """ "in", "out", "in,out", "user_check" or "value"."""
        inout = [d for d in ("in", "out") if d in self.attrs]
        if inout:
            return ",".join(inout)
        return "user_check" if self.ctype.kind == "pointer" or self.ctype.dims else "value"

    @property
    def is_string(self) -> bool:
        return "string" in self.attrs or "wstring" in self.attrs

    @property
    def ms_type(self) -> CType:
        """The member's type in the marshalling structure (arrays become pointers)."""
        if self.ctype.dims or "isary" in self.attrs:
            return pointer_to(self.ctype.elem)
        return self.ctype


@dataclass(frozen=True)
class Function:
    """An ECALL (``trusted``) or OCALL (``untrusted``)."""

    name: str
    ret: CType
    params: tuple[Param, ...]
    trusted: bool
    public: bool = False
    allow: tuple[str, ...] = ()

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass
class Edl:
    """The functions an enclave's EDL gives it, indexed as edger8r numbers them."""

    ecalls: list[Function] = field(default_factory=list)
    ocalls: list[Function] = field(default_factory=list)

    def ecall(self, name: str) -> tuple[int, Function]:
        for i, f in enumerate(self.ecalls):
            if f.name == name:
                return i, f
        names = ", ".join(f.name for f in self.ecalls) or "none"
        raise EdlError(f"the EDL has no ECALL named {name!r} (it has: {names})")


# -- tokens -------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s+|/\*.*?\*/|//[^\n]*|"[^"]*"|[A-Za-z_]\w*|0[xX][0-9a-fA-F]+|\d+|\S', re.S)


class _Tokens:
    def __init__(self, text: str, where: str) -> None:
        self.where = where
        self.items = [
            t for t in _TOKEN.findall(text) if t.strip() and not t.startswith(("/*", "//"))
        ]
        self.pos = 0

    def peek(self, ahead: int = 0) -> str:
        i = self.pos + ahead
        return self.items[i] if i < len(self.items) else ""

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if not tok or (expected is not None and tok != expected):
            want = f"{expected!r}" if expected else "more input"
            raise EdlError(f"{self.where}: expected {want}, found {tok or 'the end'!r}")
        self.pos += 1
        return tok

    def take_if(self, tok: str) -> bool:
        if self.peek() == tok:
            self.pos += 1
            return True
        return False

    def until(self, stop: str) -> list[str]:
        out = []
        while self.peek() != stop:
            out.append(self.take())
        return out


# -- parsing ------------------------------------------------------------------------------


@dataclass
class _File:
    functions: list[Function] = field(default_factory=list)
    imports: list[tuple[str, list[str] | None]] = field(default_factory=list)  # None = *


class _Parser:
    def __init__(self, typedefs: dict[str, CType]) -> None:
        self.types: dict[str, CType] = dict(_BASIC)
        self.types.update(typedefs)

    def parse(self, text: str, where: str) -> _File:
        t = _Tokens(text, where)
        out = _File()
        t.take("enclave")
        t.take("{")
        while not t.take_if("}"):
            self._item(t, out)
        t.take_if(";")
        return out

    def _item(self, t: _Tokens, out: _File) -> None:
        tok = t.take()
        if tok == "include":
            t.take()  # the header is C's business; its typedefs come from the caller
        elif tok == "from":
            name = t.take().strip('"')
            t.take("import")
            names = None if t.take_if("*") else [n for n in t.until(";") if n != ","]
            out.imports.append((name, names))
            t.take(";")
        elif tok == "import":
            out.imports.append((t.take().strip('"'), None))
            t.take(";")
        elif tok in ("struct", "union", "enum"):
            self._aggregate(t, tok)
        elif tok in ("trusted", "untrusted"):
            t.take("{")
            while not t.take_if("}"):
                out.functions.append(self._function(t, tok == "trusted"))
            t.take(";")
        else:
            raise EdlError(f"{t.where}: unexpected {tok!r} in enclave block")

    def _aggregate(self, t: _Tokens, kind: str) -> None:
        name = t.take()
        t.take("{")
        if kind == "enum":
            t.until("}")
            t.take("}")
            self.types[f"enum {name}"] = _scalar(f"enum {name}", 4)
        else:
            members = []
            while not t.take_if("}"):
                ctype, member = self._declaration(t)
                members.append((member, ctype))
                t.take(";")
            self.types[f"{kind} {name}"] = _layout(f"{kind} {name}", kind, members)
        t.take(";")

    def _function(self, t: _Tokens, trusted: bool) -> Function:
        public = t.take_if("public")
        if t.take_if("["):  # calling-convention attributes ([cdecl], [dllimport])
            t.until("]")
            t.take("]")
        ret = self._type(t)
        name = t.take()
        t.take("(")
        params: list[Param] = []
        if not (t.peek() == "void" and t.peek(1) == ")"):
            while t.peek() != ")":
                params.append(self._param(t))
                t.take_if(",")
        else:
            t.take("void")
        t.take(")")
        allow: list[str] = []
        while t.peek() != ";":
            word = t.take()
            if word == "allow":
                t.take("(")
                allow = [n for n in t.until(")") if n != ","]
                t.take(")")
            # transition_using_threads, propagate_errno and the like change nothing here
        t.take(";")
        return Function(name, ret, tuple(params), trusted, public, tuple(allow))

    def _param(self, t: _Tokens) -> Param:
        attrs: set[str] = set()
        sizes: dict[str, str] = {}
        if t.take_if("["):
            while not t.take_if("]"):
                word = t.take()
                if t.take_if("="):
                    expr = []
                    while t.peek() not in (",", "]"):
                        expr.append(t.take())
                    sizes[word] = "".join(expr)
                elif word != ",":
                    attrs.add(word)
        ctype, name = self._declaration(t)
        return Param(name, ctype, frozenset(attrs), sizes.get("size"), sizes.get("count"))

    def _declaration(self, t: _Tokens) -> tuple[CType, str]:
        ctype = self._type(t)
        name = t.take()
        dims = []
        while t.take_if("["):
            dims.append(int(t.take(), 0))
            t.take("]")
        if dims:
            ctype = CType(ctype.name, ctype.size, ctype.align, ctype.kind, ctype.signed,
                          ctype.pointee, tuple(dims), ctype.fields)  # fmt: skip
        return ctype, name

    def _type(self, t: _Tokens) -> CType:
        words: list[str] = []
        while True:
            tok = t.peek()
            if tok == "const":
                t.take()
            elif tok in ("struct", "union", "enum") and not words:
                words.append(f"{t.take()} {t.take()}")
            elif (
                tok in _MODIFIERS
                or (words and words[-1] in _MODIFIERS and tok in _BASE_WORDS)
                or (not words and tok.isidentifier())
            ):
                words.append(t.take())
            else:
                break
        text = " ".join(words)
        base = self.types.get(text) or self.types.get(text.removesuffix(" int"))
        if base is None:
            hint = "declare it with --typedef NAME=C-TYPE (e.g. buffer_t='void *')"
            raise EdlError(f"{t.where}: unknown type {text!r}", hint=hint)
        while t.take_if("*"):
            base = pointer_to(base)
            t.take_if("const")
        return base


_MODIFIERS = ("unsigned", "signed", "long", "short")
_BASE_WORDS = ("int", "char", "double", "long", "short")


def _layout(name: str, kind: str, members: list[tuple[str, CType]]) -> CType:
    """A struct or union with natural alignment, as the C compiler lays it out."""
    offset = size = 0
    align = 1
    fields = []
    for member, ctype in members:
        a = ctype.align
        align = max(align, a)
        at = 0 if kind == "union" else -(-offset // a) * a
        fields.append((member, ctype, at))
        offset = at + ctype.total
        size = max(size, offset)
    size = -(-size // align) * align
    return CType(name, size, align, kind, False, None, (), tuple(fields))


def parse_type(text: str, typedefs: dict[str, CType] | None = None) -> CType:
    """A C type written as text (``void *``, ``int[10]``): for ``--typedef`` values."""
    parser = _Parser(typedefs or {})
    m = re.fullmatch(r"(.*?)\s*((?:\[\s*\d+\s*\])*)", text.strip())
    assert m is not None  # the pattern matches any string
    ctype = parser._type(_Tokens(m[1], "--typedef"))
    dims = tuple(int(d) for d in re.findall(r"\d+", m[2]))
    if dims:
        ctype = CType(ctype.name, ctype.size, ctype.align, ctype.kind, ctype.signed,
                      ctype.pointee, dims, ctype.fields)  # fmt: skip
    return ctype


def load_edl(path: str | Path, *, typedefs: dict[str, str] | None = None,
             search: tuple[Path, ...] = ()) -> Edl:  # fmt: skip
    """The ECALLs and OCALLs of the EDL at ``path`` with everything it imports."""
    root = Path(path)
    resolved: dict[str, CType] = {}
    for name, text in (typedefs or {}).items():
        resolved[name] = parse_type(text, resolved)
    parser = _Parser(resolved)
    edl = Edl()
    seen: dict[Path | str, _File] = {}

    def load(where: Path | str) -> _File:
        if where not in seen:
            if isinstance(where, str):
                seen[where] = parser.parse(_BUILTIN[where], where)
            else:
                text = read_file(where, "EDL file", max_size=MAX_EDL_SIZE)
                try:
                    seen[where] = parser.parse(text.decode("utf-8"), str(where))
                except UnicodeDecodeError as exc:
                    raise EdlError(f"{where}: not UTF-8 text") from exc
        return seen[where]

    def find(name: str, base: Path) -> Path | str:
        for d in (base.parent, *search):
            if (d / name).is_file():
                return d / name
        if name in _BUILTIN:
            return name
        hint = "give the directories that hold imported EDLs with --edl-path"
        raise EdlError(f"{base}: imports {name!r}, which is not beside it", hint=hint)

    def add(f: Function) -> None:
        table = edl.ecalls if f.trusted else edl.ocalls
        if all(g.name != f.name for g in table):
            table.append(f)

    def walk(where: Path | str, wanted: list[str] | None, base: Path) -> None:
        parsed = load(where)
        for f in parsed.functions:
            if wanted is None or f.name in wanted:
                add(f)
        for name, names in parsed.imports:
            # `from X import a, b` narrows what X's own imports may contribute too.
            narrowed = names if wanted is None else [n for n in names or wanted if n in wanted]
            walk(find(name, where if isinstance(where, Path) else base), narrowed, base)

    walk(root, None, root)
    return edl
